// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// What carries a server's channel broadcasts to the other servers of a cluster. The library
// vigil_redis has one over Redis pub/sub (`vigil::redis_fanout`, <vigil/redis.hpp>); an
// application may write its own over another bus.

#include <vigil/error.hpp>

#include <functional>
#include <string>
#include <string_view>

namespace vigil {

/// A bus between the nodes of a cluster, given to `vigil::server` through
/// `server_config::fanout`. The server hands it opaque messages (they carry the channel, the
/// publishing node and a sequence number); the fan-out delivers each one to every node's
/// receiver, the publisher's own included or not (a server ignores its own). It must keep
/// the order of one node's messages; it may lose messages (a server reports the gap at the
/// next message from that node, `server_events::on_fanout_gap`) but must never duplicate one.
///
/// **Thread safety:** `publish` and `set_receiver` may be called from any thread.
class fanout {
public:
    using receiver = std::function<void(std::string_view message)>;
    using completion = std::function<void(error_code)>;

    virtual ~fanout() = default;

    /// Sends `message` to every node. Calls `done` exactly once, on any thread: with an
    /// empty code once the bus accepted it for every node, or with why it did not (it may
    /// then have reached no node, or, for `error::delivery_unconfirmed`, some). Messages
    /// published by one thread are delivered in the order published.
    virtual void publish(std::string message, completion done) = 0;

    /// Where messages from every node go from now on; an empty function: nowhere. Once it
    /// returns, the previous receiver is not called again and is destroyed. The receiver is
    /// called on any thread, one message at a time, and must be quick.
    virtual void set_receiver(receiver r) = 0;
};

}  // namespace vigil
