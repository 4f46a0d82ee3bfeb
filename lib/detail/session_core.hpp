// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The state behind vigil::session, and the operations on it. Each part lives in a file of
// its own, named after it: connect.cpp, accept.cpp (the server side), reader.cpp,
// heartbeat.cpp, watchdog.cpp (run()'s three arms), writer.cpp, and session.cpp (run(),
// close, cancel and how a connection ends). The rules of time are not here but in
// liveness.hpp, which the arms consult. Everything runs on `strand_`, so nothing here locks.
// docs/design.md has the picture.

#include "any_stream.hpp"
#include "common.hpp"
#include "inbox.hpp"
#include "liveness.hpp"
#include "memory_budget.hpp"
#include "receive_throttle.hpp"
#include "session_access.hpp"
#include "session_timer.hpp"
#include "traffic_meter.hpp"
#include "wakeup.hpp"

#include <vigil/session.hpp>
#include <vigil/url.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/container/deque.hpp>

#include <array>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace vigil::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;

using ws_stream = websocket::stream<any_stream>;

/// Where a session's connection is in its life.
enum class phase {
    idle,  ///< no connection
    connecting,  ///< connect(), or the server's accept, in progress
    open,  ///< the handshake succeeded; run() has not started (sends are queued)
    running,  ///< run() is in progress
    ending,  ///< run() has its verdict; its arms are winding down
};

/// The close handshake of the connection.
enum class close_state {
    none,  ///< not closing
    queued,  ///< our close frame waits behind the messages sent before it
    sent,  ///< our close frame is out (or being written): the peer's answer and the TCP teardown remain
    answering,  ///< the peer closed first, or broke the protocol, and Beast answers: the TCP teardown remains
};

/// What the writer is doing.
enum class writer_state {
    idle,  ///< nothing in flight
    writing,  ///< a message is being written
    closing,  ///< our close frame is being written and the handshake finished
};

/// Why a connection ended: one record, decided by rank. The first failure (a deadline, the
/// transport, our own close completing) is recorded; a cancellation outranks it, and a
/// goodbye (a close we started on purpose: idle_timeout, slow_consumer, server_shutdown)
/// outranks both, reported however the close handshake then went.
class end_reason {
public:
    enum class kind { none, failure, cancelled, goodbye };

    /// Records `code`, `detail` and whose fault it was as `k` if `k` outranks what is
    /// recorded; returns whether.
    bool record(kind k, error_code code, std::string detail, diagnosis why = diagnosis::none);
    kind decided() const noexcept { return kind_; }
    const error_code& code() const noexcept { return code_; }
    diagnosis fault() const noexcept { return fault_; }
    std::string& detail() noexcept { return detail_; }

    /// An event handler's exception (code `handler_exception`), rethrown by run().
    std::exception_ptr exception;

private:
    kind kind_ = kind::none;
    error_code code_;
    std::string detail_;
    diagnosis fault_ = diagnosis::none;
};

/// A message (or the close frame) waiting for the writer. Built with its handler in place
/// and never assigned to: Boost 1.81's any_completion_handler move assignment wraps the
/// handler in itself endlessly.
struct outgoing {
    enum class what { message, close };
    /// Ours (heartbeat pings and answers, broadcasts, a goodbye) or the application's,
    /// whose handler must complete exactly once.
    enum class owner { application, internal };

    std::string data = {};
    message_type type = message_type::text;
    what kind = what::message;
    owner from = owner::application;
    send_handler handler = {};
    /// A broadcast shares one copy of its bytes between every connection's queue.
    std::shared_ptr<const std::string> shared = {};
    /// Only for a close: a close_reason is 130 bytes that every queued message would carry.
    std::unique_ptr<websocket::close_reason> close = {};

    asio::const_buffer bytes() const noexcept { return shared ? asio::buffer(*shared) : asio::buffer(data); }
};

/// The most bytes of a message written in one go: a longer one is written in frames of this
/// size, and each one written is progress for write_timeout.
inline constexpr std::size_t write_piece_size = 64 * 1024;

/// The most a read adds to a server connection's message in progress, so that its memory
/// budget is asked before every step of a long message's growth.
inline constexpr std::size_t read_piece = 64 * 1024;

/// How often a reader held back by the memory budget looks whether it may go on.
inline constexpr std::chrono::milliseconds budget_poll{20};

/// Everything that belongs to one connection, reset with `= {}` when the next one starts.
struct connection_state {
    end_reason end;
    close_state close = close_state::none;
    writer_state writer = writer_state::idle;
    /// Our completion handlers still in flight, which point into the session: a write, the
    /// close, a protocol ping. run() returns only once they are all in.
    unsigned pending_ops = 0;
    /// The message being written, or our close frame (with the application's close()
    /// handler, completed with run()'s result) until the connection ends.
    std::optional<outgoing> inflight;
    std::size_t inflight_sent = 0;  // bytes of it written so far (a long message goes in pieces)
    std::optional<any_heartbeat> app_heartbeat;  // this connection's copy of the policy
    std::uint64_t ping_seq = 0;  // the last protocol ping's number, its payload
    std::uint64_t delivered = 0;  // messages handed to the application (message_meta::sequence)
    /// A pong or idle verdict found nothing unread and waits one turn of the event loop for
    /// completions already queued (a read that has the pong) before it falls.
    enum class verdict_check { none, queued } verdict = verdict_check::none;
    /// Bytes of the messages waiting to be written and the one in flight (send_queue_bytes).
    std::size_t queued_bytes = 0;
    /// What the reader does with a message in progress: keep it, or (once the connection is
    /// ended for it: message_timeout, the memory budget) drop its bytes as they arrive.
    enum class partial_message { keep, discard } partial = partial_message::keep;
};

/// The payload of protocol ping number `seq`: its decimal digits. A session keeps the
/// number, not the text (a ping_data is 127 bytes that every connection would hold).
struct ping_text {
    explicit ping_text(std::uint64_t seq) noexcept
        : len(static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, seq).ptr - buf))
    {
    }
    std::string_view view() const noexcept { return {buf, len}; }

    char buf[20];
    std::size_t len;
};

class session_core {
public:
    session_core(asio::any_io_executor ex, std::shared_ptr<const session_config> cfg);
    ~session_core();
    session_core(const session_core&) = delete;
    session_core& operator=(const session_core&) = delete;

    // ---- the operations behind the public API; each runs on strand_ ----

    asio::awaitable<error_code> connect_op(std::string url);  // connect.cpp
    asio::awaitable<accept_result> accept_op(asio::ip::tcp::socket, accept_params);  // accept.cpp
    asio::awaitable<error_code> run_op(bool own_coroutine);  // session.cpp
    asio::awaitable<error_code> close_op(std::uint16_t code, std::string reason);  // session.cpp
    void send(outgoing msg);  // writer.cpp
    void cancel_now();  // session.cpp
    void set_config(std::shared_ptr<const session_config> cfg);

    // ---- run()'s arms: each returns why it ended and never throws ----

    /// `reader() || heartbeat() || watchdog()`: what run() awaits between begin_run() and
    /// finish_run(). The server spawns it the same way, without run()'s own frame.
    asio::awaitable<std::variant<error_code, error_code, error_code>> arms();
    asio::awaitable<error_code> reader();  // reader.cpp
    asio::awaitable<error_code> heartbeat();  // heartbeat.cpp
    asio::awaitable<error_code> watchdog();  // watchdog.cpp
    /// Before the arms: an open connection starts running. False when it is not open.
    bool begin_run();
    /// After the arms: the end is reported, everything pending completes, and the reason
    /// is returned (an event handler's exception is rethrown).
    error_code finish_run(bool caller_cancelled);

    // ---- for the server and the supervisor (session_access) ----

    /// Says goodbye with a close handshake through the writer and reports `as` however it
    /// goes (idle_timeout, slow_consumer); only `as` when the connection is not live.
    void say_goodbye(error_code as, std::string detail, websocket::close_reason why,
                     diagnosis fault = diagnosis::none);
    /// The server's memory budget chose this connection: what it queued fails, what it is
    /// receiving is dropped, and it says goodbye with 1009 or 1013 and why.
    void evict();
    budget_account* budget() const noexcept { return budget_.get(); }
    /// From now on the end is reported as `as` (server_shutdown), without sending anything.
    void report_end_as(error_code as, std::string detail);
    /// Delivery confirmation: with a callback, the heartbeat pings soon after writes and
    /// `on_confirmed(n)` runs when a pong proves the first n messages were read.
    void track_writes(std::function<void(std::uint64_t)> on_confirmed);
    void use_headers(std::shared_ptr<const std::vector<std::pair<std::string, std::string>>> headers);
    std::uint64_t writes() const noexcept { return live_.written(); }
    std::uint64_t connection_id() const noexcept { return connection_id_; }
    const std::string& subprotocol() const noexcept { return subprotocol_; }
    /// The next received message, or the end (see inbox.hpp).
    asio::awaitable<received> receive_op();

    const asio::any_io_executor& strand() const noexcept { return strand_; }
    const session_config& config() const noexcept { return *cfg_; }
    session_events& events();
    /// The record of how the last connection ended (an empty one before any ended).
    const disconnect_info& last() const noexcept
    {
        static const disconnect_info none;
        return last_ ? *last_ : none;
    }
    bool is_open() const noexcept;
    /// permessage-deflate is in use on the open (or last) connection (deflate.cpp).
    bool compressed() const noexcept;
    const traffic_meter& meter() const noexcept { return meter_; }

private:
    // session.cpp: a connection's beginning and end.
    void begin_connection();
    void opened(time_point now);
    void conclude(end_reason::kind k, error_code ec, std::string detail, diagnosis fault = diagnosis::none);
    void handler_threw(std::exception_ptr e);
    void settle_if_drained();
    void op_done() noexcept;
    void end_connection();
    std::string default_detail(const error_code& ec) const;
    asio::awaitable<error_code> run_from_elsewhere();
    void close_socket() noexcept;
    void reschedule();
    static void on_tick(void* self);
    static void on_timer_settled(void* self);
    static bool on_transport_closing(void* self);
    template <class Handler, class... Args>
    void emit(Handler session_events::*event, Args&&... args);

    // connect.cpp and accept.cpp
    error_code prepare_connect(const std::string& url, endpoint& ep);
    asio::awaitable<error_code> open_transport(const endpoint& ep);
    asio::awaitable<error_code> open_websocket(const endpoint& ep);
    error_code choose_route(const endpoint& ep, std::string& detail);
    asio::awaitable<error_code> reach(const endpoint& ep);
    asio::awaitable<error_code> resolve(const std::string& host, std::uint16_t port,
                                        asio::ip::tcp::resolver::results_type& out);
    asio::awaitable<error_code> connect_each(const asio::ip::tcp::resolver::results_type& results,
                                             const std::string& where);
    error_code open_bound(const asio::ip::tcp::endpoint& remote);
    std::string explain_connect_timeout(const endpoint& ep) const;
    asio::awaitable<error_code> tls_handshake(asio::ssl::stream_base::handshake_type role);
    asio::awaitable<error_code> upgrade(websocket::response_type& res, const endpoint& ep);
    error_code setup_tls_context(std::string& detail);
    void abort_connect() noexcept;
    error_code fail_connect(error_code ec, std::string detail);
    std::string explain_tls_failure(const error_code& ec, const endpoint& ep);
    std::string explain_upgrade_failure(error_code& ec, const websocket::response_type& res, const endpoint& ep);
    void set_no_delay() noexcept;
    void prepare_stream(websocket::stream_base::decorator decorator);
    asio::awaitable<error_code> read_upgrade(accept_params& params, accept_result& result);
    asio::awaitable<error_code> refuse_upgrade(const accept_params& params, unsigned status, std::string body,
                                               std::string retry_after,
                                               const std::vector<std::pair<std::string, std::string>>& extra = {});
    accept_result accept_failed(accept_result& result, error_code ec);
    // deflate.cpp: the extension offered or accepted before the handshake, and what the
    // handshake's 101 response agreed.
    void apply_deflate(beast::role_type role);
    void note_deflate(const websocket::response_type& res);

    // reader.cpp
    template <class Handler>
    void start_read(bool first, Handler&& handler);
    std::string_view received_so_far() const noexcept;
    error_code read_failed(error_code ec);
    std::optional<error_code> deliver(std::string_view data);
    bool is_fresh(std::string_view data, message_type type);
    bool heartbeat_consumed(std::string_view data);
    void on_control_frame(websocket::frame_type kind, beast::string_view payload);
    void pong_arrived(time_point now);
    asio::awaitable<bool> wait_for_room();
    bool must_pause() const noexcept;
    asio::awaitable<bool> room_for_message();
    std::size_t room_wanted();
    void message_progress(bool first, std::size_t n);
    void drop_partial() noexcept;
    asio::awaitable<bool> pause_reading(duration d);
    asio::awaitable<bool> keep_rate(duration ahead);
    void press_budget();
    void resume_reading();

    // heartbeat.cpp
    void heartbeat_tick(time_point now);
    /// Sends the ping that confirms writes now, if one is due (delivery confirmation).
    void confirm_writes(time_point now);
    void send_ping(time_point now);
    void on_ping_written(error_code ec);

    // watchdog.cpp
    void watchdog_tick(time_point now);
    void liveness_verdict(expiry e, time_point now);
    void message_too_slow(time_point now);
    bool unread_waiting() noexcept;
    void confirm_verdict();
    void look_at_path(time_point now);
    tcp_view kernel_view() noexcept;
    void close_deadline_passed();
    static void on_watchdog_cancelled(void* self);

    // writer.cpp
    void write_next();
    void write_piece();
    void on_piece_written(error_code ec, std::size_t n);
    void start_close();
    void on_written(error_code ec);
    void on_closed(error_code ec);
    void send_heartbeat_message(std::string data);
    void overflow(std::string why);
    void left_queue(const outgoing& m) noexcept;
    void complete(send_handler h, error_code ec, bool inline_ok);
    void fail_queue(error_code ec);

    friend struct session_access;
    struct write_done;
    struct piece_done;
    struct close_done;
    struct ping_done;

    asio::any_io_executor strand_;  // see detail::serialized()
    std::shared_ptr<const session_config> cfg_;  // shared by a server's connections
    std::unique_ptr<session_events> events_;  // made on first use: a server's connections have none
    connection_observer* observer_ = nullptr;  // a server's connection: the server; a supervisor's: it
    // Made when a connection ends (or a connect fails): a live connection holds no record.
    std::unique_ptr<disconnect_info> last_;
    disconnect_info& record()
    {
        if (!last_)
            last_ = std::make_unique<disconnect_info>();
        return *last_;
    }
    std::atomic<phase> phase_{phase::idle};  // atomic only so that is_open() may peek from any thread

    std::optional<ws_stream> ws_;
    std::array<char, 64> first_read_;  // where each message's first bytes are read (reader.cpp)
    beast::flat_buffer rx_;  // the rest of a longer message
    session_timer timer_;
    liveness live_;
    connection_state conn_;
    // Made on the first send: an idle connection holds 8 bytes, not a deque's 80. Not a
    // devector: it moves elements by assignment, which Boost 1.81's any_completion_handler
    // gets wrong.
    using send_queue = boost::container::deque<outgoing>;
    std::unique_ptr<send_queue> queue_;
    send_queue& queue();
    std::uint32_t seed_;  // this session's jitter draws
    std::uint64_t connection_id_ = 0;  // message_meta::connection of the open (or last) one

    // The arms that wait rather than loop park their completion here.
    wakeup<asio::any_io_executor> heartbeat_stop_;  // completed when the heartbeat ends
    wakeup<asio::any_io_executor> watchdog_done_;  // completed with the verdict, once drained

    // Parts only some sessions have: a server connection's inbox, a client's means to
    // connect (made by its first connect()), a supervisor's delivery confirmation.
    struct lookup;
    struct client_side {
        std::shared_ptr<asio::ssl::context> tls_ctx;  // for wss://
        std::unique_ptr<asio::ip::tcp::resolver> resolver;
        std::shared_ptr<lookup> dns;  // a DNS lookup in progress
        std::optional<proxy_endpoint> proxy;  // this attempt's proxy, if any
        // How far the attempt got within connect_timeout, for the timeout's detail.
        enum class step { resolving_target, resolving_proxy, connecting, tunnel } at = step::resolving_target;
        std::function<void(std::uint64_t)> on_confirmed;  // a supervisor confirming delivery
        // A supervisor's per-attempt headers, replacing cfg_->headers when set.
        std::shared_ptr<const std::vector<std::pair<std::string, std::string>>> headers;
    };
    // A server connection's share of its server's memory budget, and whom to tell when the
    // budget is short (see memory_budget.hpp). Before inbox_, which charges it.
    std::unique_ptr<budget_account> budget_;
    budget_watch* budget_watch_ = nullptr;
    std::unique_ptr<inbox> inbox_;
    std::unique_ptr<client_side> client_;
    receive_throttle throttle_;  // max_receive_rate
    traffic_meter meter_;  // read from any thread (traffic(), a server's metrics())
    std::string subprotocol_;  // agreed in the open (or last) connection's upgrade
    // Whether the handshake agreed on permessage-deflate; atomic only so that compressed()
    // may peek from any thread, as is_open() does.
    enum class deflate_use : std::uint8_t { off, on };
    std::atomic<deflate_use> deflate_{deflate_use::off};
};

template <class Handler, class... Args>
void session_core::emit(Handler session_events::*event, Args&&... args)
{
    if (!events_)
        return;
    if (auto e = notify(events_.get()->*event, std::forward<Args>(args)...))
        handler_threw(std::move(e));
}

}  // namespace vigil::detail
