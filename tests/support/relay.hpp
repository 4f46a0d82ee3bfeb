// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace vigil::test {

/// A TCP relay from 127.0.0.1 (an ephemeral port) to a target port, that can go silent.
///
/// It forwards bytes both ways, unchanged (TLS passes through), and propagates a close (FIN)
/// or a reset from either side to the other. `freeze()` stops forwarding in both directions
/// while both TCP connections stay open: no FIN, no RST, nothing at all. To each end the
/// other is then exactly a peer whose network path died silently (a NAT entry expired, a
/// proxy dropped the flow). While frozen, closes are held too.
///
/// It runs its own io_context on its own thread; every member function may be called from
/// any thread.
class relay {
public:
    /// Starts listening at once; throws `std::system_error` when it cannot.
    explicit relay(std::uint16_t target_port, std::string target_host = "127.0.0.1");
    /// Closes every connection and joins the thread.
    ~relay();
    relay(const relay&) = delete;
    relay& operator=(const relay&) = delete;

    std::uint16_t port() const noexcept;
    /// `scheme://host:port/`, for example `relay.url("wss", "localhost")`.
    std::string url(std::string scheme = "ws", std::string host = "127.0.0.1") const;

    /// Stops forwarding in both directions, on live and new connections. Returns once it
    /// holds: no byte read after the return is forwarded until `thaw()`.
    void freeze();
    /// Resumes forwarding, delivering what was held.
    void thaw();
    bool frozen() const noexcept;

    /// Client connections accepted.
    std::size_t connections() const noexcept;

    /// WebSocket ping and pong frames forwarded whole, summed over every connection: to the
    /// client (sent by the target) or to the target (sent by the client). For counting the
    /// heartbeat rounds of a plain ws:// connection ("the server pinged 3 times and was
    /// answered 3 times"); TLS bytes are forwarded but not understood, so a wss:// relay
    /// counts nothing. Frames held while frozen count once a thaw delivers them.
    std::size_t pings_to_client() const noexcept;
    std::size_t pongs_to_client() const noexcept;
    std::size_t pings_to_target() const noexcept;
    std::size_t pongs_to_target() const noexcept;
    /// Connections currently relayed.
    std::size_t active() const noexcept;

    /// Aborts every relayed connection with a TCP reset on both sides.
    void reset_all();

    struct impl;

private:
    std::unique_ptr<impl> impl_;
};

}  // namespace vigil::test
