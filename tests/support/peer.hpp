// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace vigil::test {

/// How a `peer` treats its connections. Switchable at run time with `peer::set_behaviour`.
enum class peer_behaviour {
    /// Echoes every data message (text stays text, binary stays binary). Pings are answered.
    echo,
    /// After the upgrade, neither reads nor writes again but keeps the socket open: pings and
    /// close frames go unanswered, nothing is sent, no FIN, no RST. A live connection switched
    /// to `silent` stays silent; switching back affects only new connections (use `relay`
    /// for a reversible freeze).
    silent,
    /// Echoes, and also sends a text message every `peer_options::stream_period`.
    stream,
    /// Reads (so pings are answered and close frames too) but never sends a data message.
    pong_only,
    /// Completes the upgrade and never reads again, with a small receive buffer, so that a
    /// client's writes stall quickly. Like `silent`, this is one-way for a live connection.
    stop_reading,
    /// Reads and echoes, but never answers a close frame: when one arrives the peer stops
    /// reading and writing and keeps the socket open.
    ignore_close,
    /// Answers the upgrade request with `reject_status`, `reject_headers` and a short body,
    /// then closes. Affects new connections only.
    reject,
    /// Accepts TCP (and TLS, with `tls`), reads the upgrade request and never answers it.
    /// Affects new connections only.
    no_upgrade_answer,
    /// Right after the upgrade, sends a close frame with `close_code` and `close_reason`.
    /// A live connection switched to it is closed the same way.
    close_with,
    /// Right after the upgrade, writes `peer_options::raw_bytes` below the WebSocket layer
    /// (a malformed frame, say), then behaves as `silent`: the socket stays open and nothing
    /// more is read or written, so a client's close frame goes unanswered. Affects new
    /// connections only.
    send_raw,
    /// Answers the upgrade request with `peer_options::raw_bytes` instead of an HTTP
    /// response, then behaves as `silent`. Affects new connections only.
    raw_upgrade_answer,
    /// Reads `slow_read_bytes` of message data, then pauses for `stream_period`, and again: a
    /// thin link that keeps moving. Never writes. New connections only.
    slow_reading,
};

/// How a `peer` starts. Every member has an initializer, so designated initializers
/// (`peer({.behaviour = peer_behaviour::silent})`) compile warning-free.
struct peer_options {
    peer_behaviour behaviour = peer_behaviour::echo;

    /// Serve `wss://` with the certificate chain and key in these PEM files
    /// (`test_pki::server_cert` / `server_key`, for example).
    bool tls = false;
    std::string cert_file{};
    std::string key_file{};

    /// For `reject`: the status and extra headers of the refusal.
    unsigned reject_status = 403;
    std::vector<std::pair<std::string, std::string>> reject_headers{};

    /// For `stream`: time between two unsolicited messages; for `slow_reading`, between two reads.
    std::chrono::milliseconds stream_period{10};

    /// For `slow_reading`: the message bytes read between two pauses.
    std::size_t slow_read_bytes = 16 * 1024;

    /// For `close_with`: what the close frame carries.
    std::uint16_t close_code = 1008;
    std::string close_reason = "policy";

    /// For `send_raw` and `raw_upgrade_answer`: the bytes written as they are.
    std::string raw_bytes{};

    /// The port to listen on; 0 (default) picks an ephemeral one. The listener sets
    /// SO_REUSEADDR, so a test can destroy a peer and start another on the same port at once
    /// (a server killed and restarted) although the old connections linger in TIME_WAIT.
    std::uint16_t port = 0;
};

/// An in-process WebSocket server on 127.0.0.1 (`peer_options::port`, else an ephemeral
/// port) that behaves as told, including badly. It runs its own io_context on its own thread
/// from construction to destruction; every member function may be called from any thread.
/// The counters are updated on the peer's thread and read atomically, so a test that waits
/// for one of them must wait with a bound (`wait_until`) or on a client-side event.
///
/// The server never times out idle connections and sends no keep-alive pings of its own:
/// whatever liveness a test observes is the client's doing.
class peer {
public:
    /// Starts listening at once. Throws `std::system_error` (or `std::runtime_error` for bad
    /// TLS files) when it cannot.
    explicit peer(peer_options opts = {});
    /// Closes every connection (including silent ones) and joins the thread.
    ~peer();
    peer(const peer&) = delete;
    peer& operator=(const peer&) = delete;

    std::uint16_t port() const noexcept;
    /// `ws://host:port/` or `wss://host:port/`; IPv6 hosts are bracketed.
    std::string url(std::string host = "127.0.0.1") const;

    /// Switches the behaviour for new connections and, where it makes sense (see
    /// `peer_behaviour`), for live ones. Returns once live connections have been switched.
    void set_behaviour(peer_behaviour b);
    peer_behaviour behaviour() const noexcept;

    /// TCP connections accepted.
    std::size_t connections() const noexcept;
    /// HTTP requests read in full (upgrade requests, whatever the answer: a `no_upgrade_answer`
    /// peer counts the request it leaves unanswered).
    std::size_t requests() const noexcept;
    /// WebSocket upgrades completed.
    std::size_t upgrades() const noexcept;
    /// Data messages received (text and binary).
    std::size_t messages() const noexcept;
    /// Ping frames received (seen only while the peer reads).
    std::size_t pings() const noexcept;
    /// Close frames received (seen only while the peer reads).
    std::size_t closes() const noexcept;

    /// Aborts every open connection with a TCP reset, as a crashed server would. Returns
    /// once done. Later connections are served normally.
    void reset_all();

    struct impl;

private:
    std::unique_ptr<impl> impl_;
};

}  // namespace vigil::test
