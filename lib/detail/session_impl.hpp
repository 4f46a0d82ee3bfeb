// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The state behind vigil::session. Everything here runs on `strand_`; the arms of run()
// (reader.ipp, timekeeper.ipp, writer.ipp) share it without locks for that reason.

#include "any_stream.hpp"
#include "session_access.hpp"
#include "timer_wheel.hpp"
#include "wakeup.hpp"
#include "with_deadline.hpp"

#include <vigil/server.hpp>
#include <vigil/session.hpp>
#include <vigil/url.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/container/deque.hpp>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>

namespace vigil {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
using clock_type = std::chrono::steady_clock;

namespace detail {

/// The payload of protocol ping number `seq`, its decimal digits. A session keeps the
/// number, not the text: a ping_data is 127 bytes that every connection would hold.
struct ping_text {
    explicit ping_text(std::uint64_t seq) noexcept
        : len(static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, seq).ptr - buf))
    {
    }
    std::string_view view() const noexcept { return {buf, len}; }

    char buf[20];
    std::size_t len;
};

}  // namespace detail

struct session::impl {
    using handler_type = asio::any_completion_handler<void(error_code)>;
    using ws_stream = websocket::stream<detail::any_stream>;

    enum class state { idle, connecting, open, running, closing };

    /// One entry of the send queue: a data message, or the application's close request,
    /// which waits its turn so that messages sent before close() are written first.
    /// Built with its handler in place and never assigned to: Boost 1.81's
    /// any_completion_handler move assignment wraps the handler in itself endlessly.
    struct outgoing {
        std::string data;
        message_type type = message_type::text;
        bool is_close = false;
        /// Only for a close: a close_reason is 130 bytes that every queued message would carry.
        std::unique_ptr<websocket::close_reason> close;
        handler_type handler;
        /// A broadcast shares one copy of its bytes between every connection's queue.
        std::shared_ptr<const std::string> shared = {};
        /// Ours, not the application's (heartbeat pings and answers, broadcasts, the
        /// slow-consumer close): no handler to complete.
        bool internal = false;

        asio::const_buffer bytes() const noexcept
        {
            return shared ? asio::buffer(*shared) : asio::buffer(data);
        }
    };

    /// A DNS lookup in progress; see resolve_and_connect().
    struct lookup {
        explicit lookup(const asio::any_io_executor& ex) : done(ex, clock_type::time_point::max()) {}
        asio::steady_timer done;
        error_code ec;
        asio::ip::tcp::resolver::results_type results;
        bool finished = false;
    };

    impl(asio::any_io_executor ex, std::shared_ptr<const session_config> cfg);
    ~impl() { cancel_wheel(); }
    impl(const impl&) = delete;
    impl& operator=(const impl&) = delete;
    /// Unlinks the timekeeper from the wheel (run() always has by the time it returns).
    void cancel_wheel() noexcept
    {
        if (wheel_)
            wheel_->cancel(tk_entry_);
    }

    // Operations behind the public functions; each runs on strand_.
    asio::awaitable<error_code> connect_op(std::string url);
    asio::awaitable<error_code> run_op(bool own_coroutine = false);
    asio::awaitable<error_code> run_from_elsewhere();
    /// What run() does once its arms have ended: the result, the teardown, the events.
    error_code end_run(bool cancelled);
    asio::awaitable<error_code> close_op(std::uint16_t code, std::string reason);
    void enqueue(outgoing msg);
    /// Queues a heartbeat message ahead of the application's (behind the one being written).
    void enqueue_internal(std::string data);

    // The server side (see detail/session_access.hpp and accept.ipp).
    asio::awaitable<detail::accept_result> accept_op(asio::ip::tcp::socket sock, detail::accept_params params);
    asio::awaitable<error_code> read_upgrade(detail::accept_params& params, detail::accept_result& result);
    asio::awaitable<error_code> respond(unsigned status, std::string body, std::string retry_after);
    asio::awaitable<error_code> tls_accept();
    asio::awaitable<received> receive_op();
    detail::accept_result accept_failed(detail::accept_result& result, error_code ec);
    void start_connection();
    void cancel_now();

    // The arms of run(); each returns why it stopped and never throws.
    asio::awaitable<error_code> reader();
    /// The reader's steps between reads: why a failed read ends the session, and what a
    /// message that arrived does (an error when it ends the session).
    error_code read_failed(error_code ec);
    std::optional<error_code> delivered(std::size_t n);
    /// Waits while the receive queue is full; false when cancelled.
    asio::awaitable<bool> paused();
    asio::awaitable<error_code> timekeeper();
    /// Every arm returns through this: the first result is why the session ended. (Not a
    /// wrapping coroutine: a frame per arm is memory every idle connection holds.)
    error_code first(error_code ec);

    // The timekeeper's callback side (timekeeper.ipp).
    struct tick_handler;
    struct ping_handler;
    void tk_start();
    void tk_stop();
    void tk_check();
    bool tk_ping(clock_type::time_point now);
    void tk_arm(clock_type::time_point when);
    void tk_timer_done(error_code ec);
    static void tk_fired(void* self);  // the wheel's callback
    void tk_ping_done(error_code ec);
    void tk_conclude(error_code ec);
    /// After a handler's operation ended: once stopped and the last one is in, the
    /// timekeeper's coroutine may finish (it waits for the drain).
    void tk_drain_check()
    {
        if (!tk_running_ && tk_ops_ == 0)
            tk_wake_.notify_later();
    }

    // The writer (writer.ipp): completion handlers, not an arm.
    struct write_handler;
    struct close_handler;
    void write_next();
    void wr_done(error_code ec);
    void wr_close_done(error_code ec);

    // Single operations, shaped for with_deadline().
    asio::awaitable<error_code> resolve_and_connect(const endpoint& ep);
    asio::awaitable<error_code> tls_handshake();
    asio::awaitable<error_code> ws_handshake(websocket::response_type& res, const endpoint& ep);
    asio::awaitable<error_code> close_frame(websocket::close_reason reason);

    // Helpers.
    error_code fail_connect(error_code ec, std::string detail);
    error_code setup_tls_context(std::string& detail);
    void on_control_frame(websocket::frame_type kind, beast::string_view payload);
    /// Offers an incoming text message to the application-level heartbeat; true when it was
    /// a heartbeat message (consumed unless deliver_heartbeat_messages).
    bool heartbeat_consumed(std::string_view data);
    /// Draws how early the next ping may go (ping_jitter).
    clock_type::duration draw_ping_early();
    /// Ends the connection as a slow consumer (overflow_policy::disconnect).
    void overflow();
    /// Ends a live connection with a close handshake through the writer (the reader goes on,
    /// so the peer's answer is seen), reporting `as` however the handshake goes.
    void say_goodbye(error_code as, std::string detail, websocket::close_reason why);
    /// The pong for our last ping arrived (protocol or application-level).
    void pong_arrived(clock_type::time_point now);
    /// A deadline moved sooner (a write, a close, a failure): the timekeeper looks again then.
    void set_deadline(clock_type::time_point when);
    /// Completes a send or close. `inline_ok` only for the writer's own completions, the hot
    /// path; initiating functions and teardown post.
    void complete(handler_type h, error_code ec, bool inline_ok = true);
    void fail_queue(error_code ec, bool with_inflight = true);
    void wake_writer();
    void end_connection(error_code ec, std::string detail);
    void close_socket() noexcept;
    void record_handler_exception();
    template <class F, class... Args>
    void notify(const F& f, Args&&... args);

    asio::any_io_executor strand_;  // see detail::serialized()
    std::shared_ptr<const session_config> cfg_;  // shared by a server's connections
    session_events events_;
    disconnect_info last_;
    std::atomic<state> state_{state::idle};  // atomic only so that is_open() may peek from any thread

    std::shared_ptr<asio::ssl::context> tls_ctx_;  // the user's, or ours built from cfg_->tls
    std::optional<ws_stream> ws_;
    std::unique_ptr<asio::ip::tcp::resolver> resolver_;  // a client's, from its first connect()
    std::shared_ptr<lookup> lookup_;
    beast::flat_buffer rx_;

    // Liveness bookkeeping, all on strand_.
    clock_type::time_point last_rx_{};       // any frame, control frames included
    clock_type::time_point last_data_{};     // data messages only (idle_timeout)
    clock_type::time_point ping_sent_{};     // last heartbeat ping
    std::uint64_t ping_seq_ = 0;             // the last ping's number, its payload (ping_text)
    bool ping_outstanding_ = false;
    clock_type::time_point write_started_{}; // while writing_
    bool writing_ = false;
    clock_type::time_point close_started_{}; // while closing_
    bool closing_ = false;
    bool close_requested_ = false;           // the application's close handshake has begun
    bool close_queued_ = false;              // close() is waiting in the send queue
    bool cancel_requested_ = false;
    std::exception_ptr handler_error_;
    std::optional<error_code> cause_;        // why run() ends: the first arm's result
    std::optional<error_code> end_as_;       // reported instead (slow_consumer, server_shutdown)

    // Delivery confirmation for the supervisor (see session_access::track_writes): a pong
    // answers a ping written after every message counted in ping_covers_, and TCP delivers
    // in order, so the peer has read all of them.
    std::function<void(std::uint64_t)> on_confirmed_;
    std::uint64_t written_ = 0;               // application messages written, this connection
    std::uint64_t ping_covers_ = 0;           // written_ when the outstanding ping was sent
    std::string end_as_detail_;
    std::string server_name_;                // server side: the Server header
    bool overflowed_ = false;

    // Application-level heartbeat: this connection's own copy of the policy.
    std::optional<any_heartbeat> heartbeat_;
    clock_type::duration ping_early_{};      // ping_jitter: this ping goes this much early
    std::minstd_rand rng_;

    // Server side: received messages wait in inbox_ for connection::receive(); when it is
    // full the reader pauses (TCP pushes back on the client) and the heartbeat verdict is
    // suspended, since the silence is ours, not the peer's.
    bool inbox_mode_ = false;
    std::size_t inbox_limit_ = 0;
    // boost::container::deque allocates nothing until the first element: libstdc++'s
    // std::deque allocates 576 bytes up front, which every idle connection would hold.
    boost::container::deque<received> inbox_;
    bool paused_ = false;
    bool ended_ = false;                     // the connection is over; receive() says why
    error_code ended_with_;
    detail::wakeup<asio::any_io_executor> inbox_wake_;    // receive() waits here
    detail::wakeup<asio::any_io_executor> reader_resume_; // a paused reader waits here

    // The timekeeper's one timer, pending until tk_at_ (tk_waits_ waits, of which all but
    // the newest were cancelled by re-arming). tk_running_: the timekeeper and the writer
    // are live (run() is running). tk_ops_ counts the pending operations whose handlers
    // point into this object (timer waits, a protocol ping, a write or the close), which
    // must all have run before run() returns.
    // On an io_context without strands the timekeeper uses the context's timer_wheel
    // (wheel_, tk_entry_) and has no steady_timer: a scheduled entry is no pending
    // operation (tk_ops_ does not count it) and tk_stop() unlinks it at once.
    detail::timer_wheel* wheel_ = nullptr;
    detail::wheel_entry tk_entry_;
    std::unique_ptr<asio::steady_timer> timer_;
    clock_type::time_point tk_at_ = clock_type::time_point::max();
    unsigned tk_waits_ = 0;
    unsigned tk_ops_ = 0;
    bool tk_running_ = false;
    bool ping_writing_ = false;               // a protocol ping is being written
    std::optional<error_code> tk_verdict_;
    clock_type::time_point tk_next_fixed_{};  // ping_mode::fixed: the next ping
    detail::wakeup<asio::any_io_executor> tk_wake_;  // the arm waits here for a verdict

    bool wr_busy_ = false;  // a write or the close is in progress
    boost::container::deque<outgoing> queue_;
    std::optional<outgoing> inflight_;           // the message being written
    std::optional<handler_type> close_handler_;  // close() in progress inside run()
};

template <class F, class... Args>
void session::impl::notify(const F& f, Args&&... args)
{
    if (!f)
        return;
    try {
        f(std::forward<Args>(args)...);
    } catch (...) {
        record_handler_exception();
    }
}

}  // namespace vigil
