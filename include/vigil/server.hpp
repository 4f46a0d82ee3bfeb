// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/config.hpp>
#include <vigil/error.hpp>
#include <vigil/session.hpp>

#include <vigil/detail/async_send.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace vigil {

namespace detail {
template <class T>
struct connection_allocator;
}

/// The session settings a server starts from: the client defaults, plus ping timers spread
/// over 20% of the interval and slow consumers disconnected instead of refused.
session_config server_session_defaults();

/// TLS for a `wss://` server. Either a certificate chain and key in PEM files, or a context
/// the caller configured (client certificates, ciphers); neither: plain `ws://`.
struct server_tls_config {
    /// PEM certificate chain, leaf first.
    std::string cert_file;
    /// PEM private key of the leaf certificate.
    std::string key_file;
    /// The caller's own server context; when set, the two files are ignored.
    std::shared_ptr<boost::asio::ssl::context> context;
};

/// Everything a server can be told. Durations are milliseconds.
struct server_config {
    /// Address to listen on. Default 127.0.0.1 (loopback); "0.0.0.0" or "::" for all.
    std::string bind = "127.0.0.1";
    /// Port; 0 (default) lets the system pick one (`server::port()` tells which).
    std::uint16_t port = 0;

    /// The settings of every accepted connection: heartbeat (`ping_interval`,
    /// `pong_timeout`, `heartbeat` for application-level pings), `idle_timeout`,
    /// `write_timeout`, `close_timeout`, `max_message_size`, `send_queue_limit` and
    /// `send_queue_overflow`. `tls_handshake_timeout` bounds a client's TLS handshake and
    /// `handshake_timeout` its whole upgrade request (a client that sends nothing, or
    /// dribbles its request, is dropped then). Client-only fields (`connect_timeout`,
    /// `user_agent`, `headers`, `tls`) are ignored. Default `server_session_defaults()`.
    session_config session = server_session_defaults();

    /// Most open connections (handshakes in progress included). Beyond it a new client's
    /// upgrade request is answered `503 Service Unavailable` with `Retry-After`, which a
    /// vigil supervisor treats as transient. Default 10,000. Must be positive.
    std::size_t max_connections = 10000;

    /// The `Retry-After` sent with that 503. Default 5 s; rounded up to whole seconds.
    std::chrono::milliseconds retry_after{5000};

    /// Messages a connection may hold received but not yet taken by `connection::receive()`.
    /// When full, the server stops reading from that client (TCP pushes back on it) and
    /// suspends its heartbeat verdict until the application catches up, so a slow handler
    /// is never mistaken for a dead client. Default 256. Must be positive.
    std::size_t receive_queue_limit = 256;

    /// Largest HTTP upgrade request header accepted, in bytes; a larger one is answered 431.
    /// Default 8 KiB.
    std::size_t max_request_header = 8192;

    /// `Server` header of upgrade responses. Default "vigil".
    std::string server_name = "vigil";

    /// TLS; see `server_tls_config`.
    server_tls_config tls;
};

/// Checks `cfg` (including `cfg.session`); see `validate(const session_config&)`.
error_code validate(const server_config& cfg, std::string* detail = nullptr);

/// A message taken from a connection by `connection::receive()`, or why none will come.
struct received {
    /// Empty for a message; otherwise why the connection ended (as `last_disconnect()`).
    error_code ec;
    std::string data;
    message_type type = message_type::text;
};

/// One accepted client, run by the server as a vigil session (the same reading, heartbeat,
/// deadlines and bounded send queue as a client's) while the application's handler coroutine
/// talks to it.
///
/// **Thread safety:** `send`, `async_send`, `close` and `cancel` are safe from any thread;
/// `receive` is for one coroutine at a time. `id`, `remote` and `target` never change.
/// `last_disconnect()` is stable once `receive()` has reported the end.
///
/// **Lifetime:** shared; the server keeps it until its handler returned and the connection
/// ended. Sending to a connection that has ended fails with `not_connected`.
class connection {
public:
    /// Numbered from 1 in accept order, unique within the server.
    std::uint64_t id() const noexcept;
    /// The client's address, "127.0.0.1:54321" (IPv6 in brackets).
    const std::string& remote() const noexcept;
    /// The request target of the upgrade ("/chat?room=1").
    const std::string& target() const noexcept;

    /// The executor this connection's work runs on (see `session::get_executor`); await
    /// `receive()` from it where you can.
    boost::asio::any_io_executor get_executor() const noexcept;

    /// The next data message, in order of arrival; heartbeat messages are not included
    /// (see `session_config::deliver_heartbeat_messages`). Once the connection has ended,
    /// the messages still held are returned first, then an entry whose `ec` says why it
    /// ended (`last_disconnect().reason`; `not_connected` after the application's own clean
    /// close), and the same again on every later call. A second `receive()` while one is pending gets `already_running`.
    ///
    /// **Per-operation cancellation:** terminal, partial and total: the pending receive
    /// completes with `operation_aborted` and no message is lost.
    boost::asio::awaitable<received> receive();

    /// Queues a message; completes when it was written or with why it never will be
    /// (`not_connected`, `slow_consumer`, the reason the connection ended). Under the
    /// server's default `overflow_policy::disconnect`, a full send queue disconnects the
    /// client instead of failing the send. No per-operation cancellation (see `session`).
    template <class CompletionToken>
    auto async_send(std::string data, message_type type, CompletionToken&& token)
    {
        return detail::initiate_send(
            std::forward<CompletionToken>(token),
            [this](std::string d, message_type t, detail::send_handler h) { start_send(std::move(d), t, std::move(h)); },
            std::move(data), type);
    }

    /// The same for shared bytes, copied nowhere (see `session::async_send`): for one message
    /// sent to chosen connections. A null `data` completes with `boost::asio::error::invalid_argument`.
    template <class CompletionToken>
    auto async_send(std::shared_ptr<const std::string> data, message_type type, CompletionToken&& token)
    {
        return detail::initiate_send(
            std::forward<CompletionToken>(token),
            [this](std::shared_ptr<const std::string> d, message_type t, detail::send_handler h) {
                start_send(std::move(d), t, std::move(h));
            },
            std::move(data), type);
    }

    /// `async_send` as an awaitable returning the code.
    boost::asio::awaitable<error_code> send(std::string data, message_type type = message_type::text);
    boost::asio::awaitable<error_code> send(std::shared_ptr<const std::string> data,
                                            message_type type = message_type::text);

    /// Closes with `code` and `reason` after the messages already queued, bounded by
    /// `close_timeout`. Errors as `session::close()`.
    boost::asio::awaitable<error_code> close(std::uint16_t code = 1000, std::string reason = {});

    /// Tears the connection down at once, without a close handshake. Any thread.
    void cancel();

    /// True until the connection has ended.
    bool is_open() const noexcept;

    /// Why the connection ended; see `disconnect_info`.
    const disconnect_info& last_disconnect() const noexcept;

    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

private:
    friend class server;
    template <class T>
    friend struct detail::connection_allocator;
    struct impl;
    explicit connection(std::shared_ptr<impl> p);
    void start_send(std::string data, message_type type, detail::send_handler handler);
    void start_send(std::shared_ptr<const std::string> data, message_type type, detail::send_handler handler);
    std::shared_ptr<impl> impl_;
};


/// Observers of a server. Handlers run on the connection's executor (connection events and
/// most `on_rejected`) or the server's (`on_accept_error`, and `on_rejected` for a client
/// closed unanswered beyond `max_connections`), possibly on several threads at once when the
/// io_context runs on several; they must be quick. Set them before `run()`. A handler must not
/// throw: one that does stops the server (every connection closed with 1001), and `run()`
/// rethrows the exception once they are all closed (the policy of every vigil event,
/// described on `session_events`).
struct server_events {
    /// A client completed the upgrade; its handler starts right after.
    std::function<void(connection&)> on_connected;
    /// A connection ended; `c.last_disconnect()` says why (`pong_timeout` for a client
    /// that vanished, `slow_consumer`, a close code, `server_shutdown` ...).
    std::function<void(connection&)> on_disconnected;
    /// A client was turned away before it became a connection: `why` is
    /// `handshake_timeout`, `tls_handshake_timeout`, an HTTP status (400 for garbage or a
    /// request that is not a valid upgrade, such as a Sec-WebSocket-Key that is not the
    /// base64 of 16 bytes; 405 for a method other than GET; 426 for a Sec-WebSocket-Version
    /// other than 13; 431; 503 beyond `max_connections`) or a network error; `detail` says
    /// which header or limit.
    std::function<void(const std::string& remote, const error_code& why, const std::string& detail)> on_rejected;
    /// accept() itself failed (out of file descriptors ...); the server pauses 100 ms and
    /// goes on accepting.
    std::function<void(const error_code&)> on_accept_error;
    /// Our own event loop was late: a connection's timer wake-up ran `lateness` after its
    /// time, more than `session.stall_threshold` (default a quarter of `pong_timeout`).
    /// Something blocked a thread that runs the server (a handler that blocks, a stopped
    /// process). Reported once per stall, however many connections it delayed. No client is
    /// evicted for that time: what clients sent meanwhile is read before any verdict.
    std::function<void(std::chrono::milliseconds lateness)> on_stall;
};

/// Counters readable at any time (a consistent snapshot).
struct server_counters {
    std::size_t accepted = 0;      ///< TCP connections accepted
    std::size_t connected = 0;     ///< upgrades completed
    std::size_t open = 0;          ///< connections open now (handshakes included)
    std::size_t rejected = 0;      ///< turned away before the upgrade completed
    std::size_t disconnected = 0;  ///< connections that ended
    std::size_t stalls = 0;        ///< stalls of our own event loop (server_events::on_stall)
};

/// A WebSocket server whose every connection is a vigil session: it answers every ping,
/// pings idle clients (timers spread out) and evicts the ones that stop answering, enforces
/// handshake, write and close deadlines, bounds every queue, and shuts down gracefully.
///
/// For each client that completes the upgrade, `handler(conn)` runs as a coroutine on the
/// connection's executor. When it returns, the connection is closed (1000) if still open;
/// if it throws, the connection is closed with 1011. The connection ending (the client
/// left, was evicted, or the server stops) shows in `conn->receive()`.
///
/// An empty `handler` makes a server that only keeps its connections honest and broadcasts
/// (a feed): received messages are dropped as they arrive, `receive()` reports only the
/// end, and a connection costs less memory (no handler coroutine, no receive queue).
///
/// **Thread safety:** `stop`, `broadcast`, `counters`, `connections` and `port` are safe
/// from any thread; the io_context may run on several threads (each connection then has a
/// strand of its own). On an io_context constructed with concurrency hint 1 (Asio's promise
/// that one thread runs it) everything runs on its executor, without strands.
///
/// **Lifetime:** the server must outlive `run()`.
class server {
public:
    using connection_ptr = std::shared_ptr<connection>;
    using handler_type = std::function<boost::asio::awaitable<void>(connection_ptr)>;

    server(boost::asio::any_io_executor ex, server_config cfg, handler_type handler);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Events; see `server_events`.
    server_events& events() noexcept;

    /// Validates the config, loads the TLS certificate and binds the listening socket, so
    /// that `port()` is known before `run()`. Called by `run()` if not called before.
    /// **Errors:** `invalid_config` (the detail names the field or file), bind errors
    /// (`address_in_use` ...). `*detail` gets a message naming what failed.
    error_code listen(std::string* detail = nullptr);

    /// The port listened on (the one picked when `port` was 0); 0 before `listen()`.
    std::uint16_t port() const noexcept;

    /// Accepts until `stop()`, then completes after every connection has been closed (1001,
    /// each bounded by `close_timeout`) and every handler has returned (a handler still
    /// running `close_timeout` after its connection ended is cancelled). Returns an empty
    /// code after `stop()`, the error of `listen()`, or `operation_aborted` when the
    /// awaiting coroutine is cancelled (connections are then torn down without a close
    /// handshake).
    boost::asio::awaitable<error_code> run();

    /// Graceful shutdown: stop accepting, close every connection with 1001 "going away"
    /// (reason `server_shutdown`), bounded by `close_timeout`. Returns at once; `run()`
    /// completes when it is done. Any thread; idempotent.
    void stop();

    /// Queues `data` to every open connection, sharing one copy of the bytes, and returns
    /// the number of connections it was queued to. Never waits: a client whose send queue is
    /// full is handled by its overflow policy (disconnected by default), so one slow client
    /// cannot stall the others. Any thread.
    std::size_t broadcast(std::string data, message_type type = message_type::text);

    /// A snapshot of the open connections (for the application's own fan-out or admin).
    std::vector<connection_ptr> connections() const;

    /// A snapshot of the counters.
    server_counters counters() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace vigil
