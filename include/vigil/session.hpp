// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/config.hpp>
#include <vigil/detail/async_send.hpp>
#include <vigil/diagnosis.hpp>
#include <vigil/error.hpp>
#include <vigil/message_type.hpp>
#include <vigil/metrics.hpp>
#include <vigil/retry_after.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace vigil {

namespace detail {
class session_core;
struct session_access;
}  // namespace detail

/// Where a data message came from: which connection, and where in it. A feed's own
/// sequence numbers then tell a gap across a reconnect (the connection changed) from a gap
/// mid-stream (it did not).
struct message_meta {
    /// The connection that carried the message: a number given when a connection opens,
    /// unique within the process and larger for every later connection (whichever session
    /// or supervisor opened it), never 0. `session::connection_id()` reads it back.
    std::uint64_t connection = 0;
    /// 1 for the first message the application got on that connection, then 2, 3 ...
    std::uint64_t sequence = 0;
};

/// The `on_message` handler: a callable taking `(std::string_view data, message_type type)`,
/// or `(std::string_view data, message_type type, const message_meta& meta)` for where the
/// message came from. Empty by default (messages are then dropped).
class message_handler {
public:
    message_handler() noexcept = default;
    message_handler(std::nullptr_t) noexcept {}
    template <class F>
        requires std::invocable<F&, std::string_view, message_type, const message_meta&>
    message_handler(F f) : f_(std::move(f))
    {
    }
    template <class F>
        requires(!std::invocable<F&, std::string_view, message_type, const message_meta&> &&
                 std::invocable<F&, std::string_view, message_type>)
    message_handler(F f)
        : f_([g = std::move(f)](std::string_view data, message_type type, const message_meta&) mutable {
              g(data, type);
          })
    {
    }

    explicit operator bool() const noexcept { return static_cast<bool>(f_); }
    void operator()(std::string_view data, message_type type, const message_meta& meta) const { f_(data, type, meta); }
    /// For calling a handler by hand: `meta` is then all zeros.
    void operator()(std::string_view data, message_type type) const { f_(data, type, message_meta{}); }

private:
    std::function<void(std::string_view, message_type, const message_meta&)> f_;
};

/// Why and how a connection ended, as `session::last_disconnect()` and the
/// `on_disconnected` event report it.
struct disconnect_info {
    /// The reason; the same code `run()` or `connect()` returned.
    error_code reason;
    /// Human-readable context: which field, which host, what the peer said.
    std::string detail;
    /// HTTP status of a rejected upgrade, else 0 (also inside `reason`).
    unsigned http_status = 0;
    /// Close code the peer sent, else 0 (also inside `reason`).
    unsigned close_code = 0;
    /// Close reason text the peer sent.
    std::string close_reason;
    /// How long the server asked us to wait, from the `Retry-After` header of a rejected
    /// upgrade (seconds or an HTTP date), else 0. The supervisor honours it.
    std::chrono::milliseconds retry_after{0};
    /// Time from the last frame received (any kind) to the end. For a dead peer this is
    /// the detection latency: at most `ping_interval + pong_timeout` plus 10 ms (see
    /// `session_config::pong_timeout`), plus however late the event loop itself was.
    std::chrono::milliseconds silent_for{0};
    /// Whose fault a liveness verdict (`pong_timeout`, `idle_timeout`, `write_timeout`,
    /// `close_timeout`) was: `network`, `peer_unresponsive`, `local_stall`, or `unknown`
    /// where the platform cannot tell. `none` for every other end. See `vigil::diagnosis`.
    vigil::diagnosis diagnosis = vigil::diagnosis::none;
};

/// Observers for what a session does. Each may be left empty: an empty one costs a branch.
/// Handlers run on the session's executor, inline with the I/O, so they must be quick. Set
/// them before `connect()`; changing them while the session runs is a data race.
///
/// **Exceptions (the one policy for every vigil event: session, supervisor and server).**
/// An event handler must not throw. If one does, vigil catches the exception, ends what
/// the event belongs to as it would end for any other reason (a session's connection with
/// `error::handler_exception`; a supervisor or a server: `run()` stops, closing what it
/// holds), and the `run()` that owns it rethrows the exception once the teardown is done.
/// `on_connected` throwing ends the connection and `connect()` rethrows; `on_disconnected`
/// throwing is rethrown by the operation that ended the connection (`run()`, `connect()`,
/// `close()`), or after `cancel()` of a session that was open but not running, by the next
/// `connect()`. Never lost, never left half done.
struct session_events {
    /// The WebSocket handshake succeeded.
    std::function<void()> on_connected;
    /// A heartbeat ping is being sent (called just before it is written, so that a fast
    /// pong can never be reported before its ping).
    std::function<void()> on_ping;
    /// The pong for our last ping arrived; `rtt` is measured from the ping's send.
    std::function<void(std::chrono::microseconds rtt)> on_pong;
    /// A data message arrived. `data` (and `meta`, for a handler that takes it) is valid
    /// only during the call.
    message_handler on_message;
    /// The connection ended (also after a failed `connect()`).
    std::function<void(const disconnect_info&)> on_disconnected;
    /// Our own event loop was late: one of this session's timer wake-ups ran `lateness`
    /// after its time, more than `session_config::stall_threshold`. Something blocked the
    /// thread (a slow handler, a stopped process, an overloaded machine). No deadline is
    /// held against the peer for that time: what the peer sent meanwhile is read before any
    /// verdict falls.
    std::function<void(std::chrono::milliseconds lateness)> on_stall;
    /// Early warning, before `pong_timeout` runs out: the kernel retransmitted what we sent
    /// after our last ping and nothing acknowledged it, so the path looks dead (`why` is
    /// `diagnosis::network`). Called at most once per ping, and only while a handler is set
    /// or `session_config::end_on_suspect` is on (the session then looks at the kernel's
    /// view of the connection every `pong_timeout / 10`, at least 50 ms, while a pong is
    /// awaited). Linux only: elsewhere it never fires.
    std::function<void(diagnosis why)> on_suspect;
};

/// A client WebSocket connection that always finds out when it is dead.
///
/// `connect()` opens the connection with a deadline on every step; `run()` then reads,
/// heartbeats and watches deadlines until the connection ends, and returns why. One
/// session object holds one connection at a time; after `run()` returns, `connect()` may be
/// called again (that is what a supervisor does).
///
/// **Thread safety:** all of a session's work runs on its executor (`get_executor()`): the
/// executor given to the constructor if it is a strand; the executor itself if it belongs to
/// an `io_context` constructed with concurrency hint 1 (Asio's promise that one thread runs
/// it); otherwise a strand made over it. So `connect`, `run`, `send`, `close` and `cancel`
/// may be called from coroutines on any thread. Distinct sessions are independent.
/// `events()` and `last_disconnect()` are not synchronised: touch them only while no
/// operation runs, or from the handlers themselves.
///
/// **Performance and cancellation:** await the session's operations from coroutines
/// running on `get_executor()` where you can. Sends then complete without a trip through the
/// scheduler, `run()` holds no extra coroutine for the connection's life, and a cancellation
/// of the awaiting coroutine is delivered at once rather than posted across executors.
///
/// **Object lifetimes:** the session must outlive every operation started on it.
class session {
public:
    /// Creates an unconnected session whose work runs on `ex` (see Thread safety). `cfg` is
    /// checked by `connect()`, not here, so that a bad config surfaces as an `error_code`.
    explicit session(boost::asio::any_io_executor ex, session_config cfg = {});
    /// The same, with a config shared by many sessions (a fleet of clients, a server's
    /// connections): each holds a pointer instead of its own copy. The config is never
    /// changed through it; `set_config()` gives this session a copy of its own. Null: the
    /// defaults.
    session(boost::asio::any_io_executor ex, std::shared_ptr<const session_config> cfg);
    ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    using executor_type = boost::asio::any_io_executor;
    /// The executor all of this session's work runs on.
    executor_type get_executor() const noexcept;

    const session_config& config() const noexcept;
    /// Replaces the config used by the next `connect()`. Not while connecting or running.
    void set_config(session_config cfg);

    /// Event observers; see `session_events`.
    session_events& events() noexcept;

    /// Opens a connection to a `ws://` or `wss://` URL:
    /// - parses the URL and validates the config;
    /// - resolves the host and connects over TCP (all addresses in turn), within `connect_timeout`;
    /// - for `wss://`, runs the TLS handshake with SNI and certificate + host name
    ///   verification, within `tls_handshake_timeout`;
    /// - sends the upgrade request and reads the response, within `handshake_timeout`.
    ///
    /// Returns an empty code when the connection is open (and `on_connected` has run).
    ///
    /// **Errors:** `invalid_url`, `unsupported_scheme`, `invalid_host`, `invalid_port`,
    /// `invalid_config`, `connect_timeout`, `tls_handshake_timeout`, `handshake_timeout`; an
    /// HTTP status in `http_status_category()` when the upgrade is refused; resolver, socket
    /// and SSL codes as Asio reports them (`host_not_found`, `connection_refused`, certificate
    /// verification failures ...); `already_running` if a connection is open or being opened.
    /// `last_disconnect()` has the detail.
    ///
    /// **Per-operation cancellation:** terminal, partial and total cancellation of the
    /// awaiting coroutine abort the attempt, close the socket and return `operation_aborted`.
    boost::asio::awaitable<error_code> connect(std::string url);

    /// Runs the open connection until it ends, and returns why. Three tasks run together on
    /// the session's executor, and the first to finish ends the others:
    /// - the **reader** keeps a read pending at all times (so that the peer's pings are
    ///   answered and our pongs seen) and hands data messages to `on_message`;
    /// - the **heartbeat** pings as `ping_mode` says (once nothing has arrived for
    ///   `ping_interval`, or on a fixed schedule);
    /// - the **watchdog** ends the connection when nothing arrived within `pong_timeout` of
    ///   a ping, and enforces `idle_timeout`, `write_timeout` and `close_timeout`.
    ///
    /// Messages are written one at a time in `send()` order meanwhile. When the connection
    /// ends, the transport is torn down (a close handshake bounded by `close_timeout` where
    /// the peer is still alive), messages still queued complete with the returned code, and
    /// `on_disconnected` runs.
    ///
    /// **Result:** empty after the application's own `close()`; otherwise `pong_timeout`,
    /// `idle_timeout`, `write_timeout`, `close_timeout`, a code in `close_code_category()`
    /// when the peer closed (1005 when it gave none), the protocol error when the peer broke
    /// the protocol (`bad_reserved_bits`, `message_too_big` ...: Beast sends the close frame,
    /// and the connection ends within `close_timeout` of it), the network error (`eof`,
    /// `connection_reset` ...), `not_connected` without an open connection, `already_running`
    /// if `run()` is already in progress, `operation_aborted` when cancelled. Network errors
    /// are returned, not thrown; only an event handler's exception is rethrown.
    ///
    /// **Per-operation cancellation:** terminal, partial and total. Cancelling the awaiting
    /// coroutine (or calling `cancel()`) ends `run()` promptly with `operation_aborted`; no
    /// timer or operation of the session is left pending afterwards. Awaited on the session's
    /// executor, `run()` runs inside the awaiting coroutine and leaves its cancellation state
    /// as it was (its filter decides which cancellation types reach `run()`; the default
    /// filter of `co_spawn` lets terminal in); from another executor it hops to the session's
    /// in a coroutine of its own, which lets all three in.
    boost::asio::awaitable<error_code> run();

    /// Queues a message and completes when it has been written to the socket, or with the
    /// reason it never will be. Messages are written in the order `send` was called.
    ///
    /// **Errors:** `not_connected` when no connection is open or it is closing (nothing is
    /// queued); `send_queue_full` when `send_queue_limit` messages are waiting (or
    /// `slow_consumer` under `overflow_policy::disconnect`, which also ends the connection);
    /// the write's own error; the code `run()` returned, for messages still queued when the
    /// connection ended. Completing without error means the bytes were handed to the TCP
    /// stack, not that the peer read them.
    ///
    /// **Per-operation cancellation:** not supported: once queued, a message completes when
    /// written or when the connection ends, so that no message is lost silently.
    ///
    /// Completion signature `void(error_code)`; any Asio completion token works.
    template <class CompletionToken>
    auto async_send(std::string data, message_type type, CompletionToken&& token)
    {
        return detail::initiate_send(
            std::forward<CompletionToken>(token),
            [this](std::string d, message_type t, detail::send_handler h) { start_send(std::move(d), t, std::move(h)); },
            std::move(data), type);
    }

    /// The same for bytes the caller shares instead of handing over: nothing is copied, and
    /// the session holds a reference until the send completes. For sending one prepared
    /// message many times, or to many sessions. A null `data` completes with
    /// `boost::asio::error::invalid_argument`.
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

    /// `async_send` as an awaitable that returns the error code instead of throwing.
    boost::asio::awaitable<error_code> send(std::string data, message_type type = message_type::text);
    boost::asio::awaitable<error_code> send(std::shared_ptr<const std::string> data,
                                            message_type type = message_type::text);

    /// Starts the close handshake with `code` and `reason` and completes when it is done:
    /// the peer's close frame arrived and the socket is closed, or `close_timeout` passed
    /// (then the socket is torn down and the result is `close_timeout`). A running `run()`
    /// then returns an empty code. Messages queued before `close()` are written first.
    ///
    /// **Errors:** `not_connected`, `already_running` (a close is already under way),
    /// `close_timeout`, network errors.
    boost::asio::awaitable<error_code> close(std::uint16_t code = 1000, std::string reason = {});

    /// Aborts whatever the session is doing, as terminal cancellation would: a running
    /// `connect()` or `run()` returns `operation_aborted` soon after. Safe from any thread.
    void cancel();

    /// True while a connection is open (between a successful `connect()` and the end of
    /// `run()`). Racy by nature when read from another thread.
    bool is_open() const noexcept;

    /// Why the last connection (or connection attempt) ended.
    const disconnect_info& last_disconnect() const noexcept;

    /// The open connection's number (`message_meta::connection`); after it ended, the last
    /// one's; 0 before the first connection opened.
    std::uint64_t connection_id() const noexcept;

    /// The subprotocol the server chose among `session_config::subprotocols` in the last
    /// successful upgrade; empty when none was offered or chosen. Cleared when `connect()`
    /// starts, set when it succeeds, unchanged until the next `connect()`: read it from the
    /// session's executor or between connects.
    const std::string& subprotocol() const noexcept;

    /// True when the open connection (after it ended: the last one) uses permessage-deflate:
    /// `session_config::deflate` was enabled and the server accepted it. False before the
    /// first connection, and whenever the server declined. Racy like `is_open()` when read
    /// from another thread.
    bool compressed() const noexcept;

    /// Data messages and payload bytes received and sent over every connection this
    /// session has had (see `traffic_counts`). Safe from any thread: each field is exact,
    /// but read while traffic flows, the four fields may be a message apart.
    traffic_counts traffic() const noexcept;

    /// What waits now: messages queued by `send()` and not yet written whole (see
    /// `queue_depths`; `receive_messages` is always 0 for a client session). Any thread.
    queue_depths queues() const noexcept;

private:
    friend struct detail::session_access;
    void start_send(std::string data, message_type type, detail::send_handler handler);
    void start_send(std::shared_ptr<const std::string> data, message_type type, detail::send_handler handler);

    std::unique_ptr<detail::session_core> core_;
};

}  // namespace vigil
