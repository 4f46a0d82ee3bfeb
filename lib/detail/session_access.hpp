// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// What the server and the supervisor need from a session beyond its public API: adopting an
// accepted socket, the receive queue, shared-buffer broadcasts, reporting the end as a
// reason of their own, and delivery confirmation. Implemented in session.cpp and accept.cpp,
// so that server.cpp and supervisor.cpp never instantiate Beast's templates themselves.

#include <vigil/server.hpp>
#include <vigil/session.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace vigil::detail {

class memory_budget;
class budget_account;
struct budget_watch;

struct accept_params {
    boost::asio::ssl::context* tls = nullptr;  // null: plain ws://
    std::size_t max_request_header = 8192;
    std::size_t receive_queue_limit = 256;  // 0: no receiver, messages are dropped
    std::size_t receive_queue_bytes = 0;  // 0: no limit in bytes
    std::shared_ptr<memory_budget> budget;  // the server's; null: none
    budget_watch* watch = nullptr;  // told when the budget is short
    std::string server_name;
    /// Answer the upgrade request with `refuse_status` (503, 429) and this Retry-After
    /// instead of accepting it; `refuse_reason` begins the detail (which limit, whose).
    enum class answer { accept, refuse } verdict = answer::accept;
    std::chrono::milliseconds retry_after{0};
    unsigned refuse_status = 503;
    std::string refuse_reason = "at max_connections";
    /// The server's admission check and subprotocols (server_config's; null or empty: none),
    /// and the client's address for the check's view.
    const upgrade_check* check = nullptr;
    const std::vector<std::string>* subprotocols = nullptr;
    std::string remote;
};

struct accept_result {
    error_code ec;  // empty: the connection is open
    std::string detail;
    std::string target;  // the request target
    // How far the upgrade got, so that a handshake_timeout names what it waited for.
    enum class step { reading, checking, answering } at = step::reading;
    std::string subprotocol;  // agreed; empty: none
    std::shared_ptr<void> user_data;  // from the admission check
};

/// Who hears of a session's figures beyond its own events: a server of its connections'
/// stalls and round trips, a supervisor of its sessions' round trips. Called on the
/// session's strand.
struct connection_observer {
    /// The event loop was late by `lateness` (a client session also reports it through
    /// session_events::on_stall).
    virtual void stalled(std::chrono::steady_clock::duration, std::chrono::steady_clock::time_point) noexcept {}
    /// A ping's (protocol or application-level) answer arrived `rtt` after it was sent.
    virtual void round_trip(std::chrono::microseconds rtt) noexcept = 0;

protected:
    ~connection_observer() = default;
};

struct session_access {
    /// Runs the server side of the handshake on `sock` (TLS within tls_handshake_timeout,
    /// then the upgrade within handshake_timeout) and leaves the session open, ready for
    /// run(). Bad requests are answered with an HTTP error before the socket is closed.
    static boost::asio::awaitable<accept_result> accept(session& s, boost::asio::ip::tcp::socket sock,
                                                        accept_params params);
    /// run() as the server runs it, spawned without a frame of its own around the arms:
    /// begin_run() (false when the session is not open), then spawn arms(), then call
    /// finish_run() on the session's executor when they complete.
    static bool begin_run(session& s);
    static boost::asio::awaitable<std::variant<error_code, error_code, error_code>> arms(session& s);
    static error_code finish_run(session& s) noexcept;
    static boost::asio::awaitable<received> receive(session& s);
    /// The session's strand itself, for what refers to it instead of holding a copy.
    static const boost::asio::any_io_executor& executor(const session& s) noexcept;
    /// Fire and forget: no completion, overflow handled by the session's policy. The step
    /// runs later on the session's strand and holds `owner` (what keeps `s` alive) until then.
    static void send_shared(session& s, std::shared_ptr<void> owner, std::shared_ptr<const std::string> data,
                            message_type type);
    /// Confirmation of delivery: with a callback, the heartbeat pings soon after each write
    /// (not only when idle) and `on_confirmed(n)` runs when a pong proves the peer has read
    /// the first n application messages written on this connection. Empty: off. Call while
    /// the session is idle.
    static void track_writes(session& s, std::function<void(std::uint64_t)> on_confirmed);
    /// The upgrade request's extra headers for the next connect(), instead of
    /// session_config::headers (a supervisor's per-attempt credentials). Null: the config's.
    /// Call while the session is idle; the caller has checked them.
    using header_list = std::vector<std::pair<std::string, std::string>>;
    static void use_headers(session& s, std::shared_ptr<const header_list> headers);
    /// Application messages written so far on this connection (the count a send's
    /// completion leaves behind, read on the session's strand).
    static std::uint64_t writes(const session& s) noexcept;
    /// Tells `o` of every stall of the session's timers and every round trip, from now on
    /// (null: no one). `o` must outlive the session's operations. Call while it is idle.
    static void observe(session& s, connection_observer* o) noexcept;
    /// From now on the session's end is reported as `ec` (unless it ended already). Call on
    /// the session's strand.
    static void report_end_as(session& s, error_code ec, std::string detail);
    /// The connection's share of its server's memory budget (null without one). Its
    /// figures may be read from any thread.
    static budget_account* budget(const session& s) noexcept;
    /// The budget chose this connection: it says goodbye (1009 or 1013) with what it held.
    /// The step runs on the session's strand and holds `owner` until then.
    static void evict(session& s, std::shared_ptr<void> owner);
};

}  // namespace vigil::detail
