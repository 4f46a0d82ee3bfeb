// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// run(), and how a connection begins and ends: the one place that decides the end
// (conclude), waits for every handler in flight (the drain), and reports it. The arms are in
// detail/reader.cpp, detail/heartbeat.cpp and detail/watchdog.cpp; the writer in
// detail/writer.cpp; connect and accept in detail/connect.cpp and detail/accept.cpp.

#include <vigil/session.hpp>

#include "detail/serialized.hpp"
#include "detail/session_core.hpp"
#include "detail/with_deadline.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <limits>
#include <random>

namespace vigil {

namespace detail {

bool end_reason::record(kind k, error_code code, std::string detail, diagnosis why)
{
    if (k <= kind_)
        return false;
    kind_ = k;
    code_ = code;
    detail_ = std::move(detail);
    fault_ = why;
    return true;
}

namespace {

std::uint32_t draw_seed()
{
    // Seeds differ per session without a system call each: one random_device per thread.
    thread_local std::minstd_rand seeder(std::random_device{}());
    return static_cast<std::uint32_t>(seeder());
}

std::chrono::milliseconds ms_since(time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t);
}

}  // namespace

session_core::session_core(asio::any_io_executor ex, std::shared_ptr<const session_config> cfg)
    : strand_(serialized(std::move(ex))), cfg_(cfg ? std::move(cfg) : std::make_shared<const session_config>()),
      timer_(strand_, &session_core::on_tick, &session_core::on_timer_settled, this), seed_(draw_seed()),
      heartbeat_stop_(strand_), watchdog_done_(strand_)
{
}

session_core::~session_core() = default;

session_events& session_core::events()
{
    if (!events_)
        events_ = std::make_unique<session_events>();
    return *events_;
}

void session_core::set_config(std::shared_ptr<const session_config> cfg)
{
    cfg_ = std::move(cfg);
    if (client_)
        client_->tls_ctx.reset();
}

bool session_core::is_open() const noexcept
{
    const auto p = phase_.load();
    return p == phase::open || p == phase::running;
}

// ---------------------------------------------------------------------------------------
// A connection begins

void session_core::begin_connection()
{
    phase_ = phase::connecting;
    if (last_)
        *last_ = disconnect_info{};
    conn_ = {};
    conn_.app_heartbeat = cfg_->heartbeat;  // a stateful policy starts afresh
    if (queue_)
        queue_->clear();
    if (inbox_)
        inbox_->reset();
}

namespace {

// Connection numbers for message_meta: unique and increasing across the process.
std::uint64_t next_connection_id() noexcept
{
    static std::atomic<std::uint64_t> last{0};
    return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

}  // namespace

void session_core::opened(time_point now)
{
    const auto confirm = client_ && client_->on_confirmed ? write_confirmation::on : write_confirmation::off;
    // Reading the kernel's view while a pong is awaited costs a wake-up per ping: only for
    // a session that listens for the early warning or acts on it.
    const auto watch =
        cfg_->end_on_suspect || (events_ && events_->on_suspect) ? path_watch::on : path_watch::off;
    live_.start(*cfg_, confirm, watch, now, seed_++);
    connection_id_ = next_connection_id();
    rx_.clear();
    // Beast never lets a message grow past max_message_size: nor may its buffer's doubling.
    // One byte more: a compressed message is measured as it inflates, and must be able to
    // inflate past the limit for Beast to fail it with 1009 (a full buffer is a plain error).
    const auto most = cfg_->max_message_size;
    rx_.max_size(most == std::numeric_limits<std::size_t>::max() ? most : most + 1);
    throttle_.start(cfg_->max_receive_rate, now);
    ws_->next_layer().watch_closing(&session_core::on_transport_closing, this);
    phase_ = phase::open;
}

// ---------------------------------------------------------------------------------------
// run

asio::awaitable<error_code> session_core::run_op(bool own_coroutine)
{
    // Awaited from our strand (as advised), run() costs no hop and no co_spawn frame that a
    // long-lived connection would hold for its whole life; from elsewhere, hop.
    if (!own_coroutine && (co_await asio::this_coro::executor) != strand_)
        co_return co_await run_from_elsewhere();
    // Awaited directly, this body runs in the caller's coroutine, whose cancellation state
    // is the caller's: its filter stays, and its throw-if-cancelled setting is put back
    // before returning. Only a coroutine of our own lets every kind of cancellation in.
    if (own_coroutine)
        co_await enter_operation();
    const bool caller_throws = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    error_code ec = phase_ == phase::running || phase_ == phase::ending ? error::already_running : error::not_connected;
    std::exception_ptr failure;
    if (begin_run()) {
        co_await arms();
        // The rest in a plain function: this frame lives as long as the connection.
        try {
            ec = finish_run(cancelled(co_await asio::this_coro::cancellation_state));
        } catch (...) {
            failure = std::current_exception();
        }
    }
    co_await asio::this_coro::throw_if_cancelled(caller_throws);
    if (failure)
        std::rethrow_exception(failure);
    co_return ec;
}

bool session_core::begin_run()
{
    if (phase_ != phase::open)
        return false;
    phase_ = phase::running;
    timer_.start();
    reschedule();
    write_next();  // what was sent before run()
    return true;
}

asio::awaitable<std::variant<error_code, error_code, error_code>> session_core::arms()
{
    using namespace asio::experimental::awaitable_operators;
    // The first to finish ends the others: each arm returns why it ended, never throws
    // (`||` waits for the first arm to succeed, so a throwing arm would not cancel its
    // siblings). Why the connection ended is in conn_.end, not in which arm came first.
    return reader() || heartbeat() || watchdog();
}

// The hop in a coroutine of its own: its co_spawn state is no part of run_op()'s frame when
// run() is awaited on the strand.
asio::awaitable<error_code> session_core::run_from_elsewhere()
{
    co_return co_await asio::co_spawn(strand_, run_op(true), asio::use_awaitable);
}

error_code session_core::finish_run(bool caller_cancelled)
{
    if (caller_cancelled)
        conn_.end.record(end_reason::kind::cancelled, asio::error::operation_aborted, "cancelled");
    const error_code ec = conn_.end.code();
    end_connection();
    if (auto exception = std::exchange(conn_.end.exception, nullptr))
        std::rethrow_exception(exception);
    return ec;
}

// ---------------------------------------------------------------------------------------
// A connection ends

void session_core::conclude(end_reason::kind k, error_code ec, std::string detail, diagnosis fault)
{
    conn_.end.record(k, ec, std::move(detail), fault);
    if (phase_ != phase::running)
        return;
    phase_ = phase::ending;
    // A closed socket makes every operation still pending complete at once, so that `||`
    // cannot be held up by one that ignores cancellation in some state (Beast's close
    // handshake, for one); the reader's read ends the same way.
    close_socket();
    timer_.stop();
    heartbeat_stop_.notify_later(conn_.end.code());
    settle_if_drained();
}

void session_core::handler_threw(std::exception_ptr e)
{
    if (!conn_.end.exception)
        conn_.end.exception = std::move(e);
    conclude(end_reason::kind::failure, error::handler_exception, "an event handler threw");
}

void session_core::op_done() noexcept
{
    --conn_.pending_ops;
    settle_if_drained();
}

void session_core::settle_if_drained()
{
    // Our handlers point into this object: run() returns only once none is in flight.
    if (phase_ == phase::ending && conn_.pending_ops == 0 && timer_.pending() == 0)
        watchdog_done_.notify_later(conn_.end.code());
}

void session_core::on_timer_settled(void* self)
{
    static_cast<session_core*>(self)->settle_if_drained();
}

std::string session_core::default_detail(const error_code& ec) const
{
    if (!ec)
        return "closed by the application";
    if (close_code_of(ec))
        return "peer closed with code " + std::to_string(last().close_code) +
               (last().close_reason.empty() ? std::string() : " \"" + last().close_reason + "\"");
    if (ec == asio::error::operation_aborted)
        return "cancelled";
    return with_context("connection lost", ec);
}

void session_core::end_connection()
{
    // Destroying the stream also stops Beast's own timer and drops a teardown that was cut short.
    close_socket();
    ws_.reset();
    timer_.stop();
    const error_code ec = conn_.end.code();
    record().reason = ec;
    record().detail = conn_.end.detail().empty() ? default_detail(ec) : std::move(conn_.end.detail());
    record().silent_for = ms_since(live_.last_received());
    record().diagnosis = conn_.end.fault();
    phase_ = phase::idle;
    // An application's clean close must still read as an end, never as a message.
    if (inbox_)
        inbox_->end(ec ? ec : error_code(error::not_connected));
    // Nothing queued may vanish: unwritten messages complete with the reason we ended (never
    // with success, even after a clean close). Posted, not run inline: a waiting coroutine
    // resumed in the middle of teardown could be one that is itself being cancelled.
    const error_code unsent = ec ? ec : error_code(error::not_connected);
    if (conn_.inflight) {
        // The oldest first: it was sent before everything still queued. The application's
        // close() learns how the connection ended (empty: it closed cleanly).
        outgoing msg(std::move(*conn_.inflight));
        conn_.inflight.reset();
        left_queue(msg);
        if (msg.from == outgoing::owner::application)
            complete(std::move(msg.handler), msg.kind == outgoing::what::close ? ec : unsent, false);
    }
    fail_queue(unsent);
    // The reader is done with its buffer: a long message's memory goes back now. Nothing is
    // queued any more either (left_queue counted each message out above).
    drop_partial();
    // Nothing is left to end if it throws: the operation that ended the connection (run(),
    // connect(), close()) rethrows it, or, after cancel() of a session open but not
    // running, the next connect().
    if (auto e = events_ ? notify(events_->on_disconnected, std::as_const(record())) : nullptr; e && !conn_.end.exception)
        conn_.end.exception = std::move(e);
}

void session_core::close_socket() noexcept
{
    if (ws_) {
        error_code ignored;
        ws_->next_layer().socket().close(ignored);
    }
}

// ---------------------------------------------------------------------------------------
// Time: the one timer both the heartbeat and the watchdog ask to be woken by

void session_core::reschedule()
{
    if (phase_ == phase::running)
        timer_.arm(live_.next_wakeup());
}

void session_core::on_tick(void* self)
{
    auto& s = *static_cast<session_core*>(self);
    if (s.phase_ != phase::running)
        return;
    const auto now = clock_type::now();
    if (const auto late = s.live_.woke(s.timer_.due(), now)) {
        s.emit(&session_events::on_stall, std::chrono::duration_cast<std::chrono::milliseconds>(*late));
        if (s.observer_)
            s.observer_->stalled(*late, now);
        if (s.phase_ != phase::running)
            return;  // on_stall threw
    }
    s.heartbeat_tick(now);
    s.watchdog_tick(now);
    // A deadline still passed (its verdict waits for a read or for one turn of the loop) is
    // looked at again on the next grid point, not now: the wheel would fire it again at
    // once, before anything else could run.
    if (s.phase_ == phase::running)
        s.timer_.arm(std::max(s.live_.next_wakeup(), now + std::chrono::nanoseconds(1)));
}

bool session_core::on_transport_closing(void* self)
{
    // Beast began a close of its own: it answers the peer's close frame, or it failed the
    // connection after a protocol violation (close code 1002, 1007, 1009 ...) and now waits
    // for the TCP teardown. close_timeout bounds that from here, as it bounds ours.
    auto& s = *static_cast<session_core*>(self);
    if (!s.ws_ || s.ws_->is_open())
        return false;
    if (s.phase_ != phase::running)
        return true;
    if (s.conn_.close != close_state::none && s.conn_.close != close_state::queued)
        return true;
    s.conn_.close = close_state::answering;
    s.live_.close_started(clock_type::now());
    s.reschedule();
    return true;
}

// ---------------------------------------------------------------------------------------
// close and cancel

asio::awaitable<error_code> session_core::close_op(std::uint16_t code, std::string reason)
{
    co_await enter_operation();
    websocket::close_reason why(static_cast<websocket::close_code>(code), reason);
    if (phase_ == phase::running) {
        if (conn_.close != close_state::none)
            co_return error::already_running;  // a close is under way
        auto token = asio::as_tuple(asio::use_awaitable);
        auto [ec] = co_await asio::async_initiate<decltype(token), void(error_code)>(
            [this, &why](auto handler) {
                outgoing msg{.kind = outgoing::what::close, .handler = send_handler(std::move(handler))};
                msg.close = std::make_unique<websocket::close_reason>(why);
                conn_.close = close_state::queued;
                queue().push_back(std::move(msg));
                write_next();
            },
            token);
        co_return ec;
    }
    if (phase_ != phase::open)
        co_return error::not_connected;
    // Open but nobody is running it: do the handshake here.
    phase_ = phase::ending;
    conn_.close = close_state::sent;
    auto ec = co_await with_deadline(
        [](ws_stream& ws, websocket::close_reason r) -> asio::awaitable<error_code> {
            auto [e] = co_await ws.async_close(r, asio::as_tuple(asio::use_awaitable));
            co_return e;
        }(*ws_, why),
        cfg_->close_timeout, error::close_timeout, [this] { close_socket(); });
    conn_.end.record(end_reason::kind::failure, ec, ec ? with_context("closing", ec) : std::string());
    end_connection();
    if (auto exception = std::exchange(conn_.end.exception, nullptr))
        std::rethrow_exception(exception);
    co_return ec;
}

void session_core::cancel_now()
{
    switch (phase_.load()) {
    case phase::idle:
        return;
    case phase::connecting:
        // connect() and accept() see the record and return operation_aborted.
        conn_.end.record(end_reason::kind::cancelled, asio::error::operation_aborted, "cancelled");
        abort_connect();
        return;
    case phase::open:
        // No operation would notice: end the connection here.
        conn_.end.record(end_reason::kind::cancelled, asio::error::operation_aborted, "cancelled");
        end_connection();
        return;
    case phase::running:
    case phase::ending:
        conclude(end_reason::kind::cancelled, asio::error::operation_aborted, "cancelled");
        return;
    }
}

asio::awaitable<received> session_core::receive_op()
{
    if (!inbox_) {
        // A connection that keeps no messages (its server has no handler): the inbox only
        // reports the end, which may have come already.
        inbox_ = std::make_unique<inbox>(strand_, 0);
        if (phase_ == phase::idle)
            inbox_->end(last().reason ? last().reason : error_code(error::not_connected));
    }
    auto r = co_await inbox_->receive();
    meter_.receive_waiting(inbox_->waiting());
    co_return r;
}

void session_core::report_end_as(error_code as, std::string detail)
{
    if (phase_ == phase::open || phase_ == phase::running)
        conn_.end.record(end_reason::kind::goodbye, as, std::move(detail));
}

void session_core::track_writes(std::function<void(std::uint64_t)> on_confirmed)
{
    if (!client_)
        client_ = std::make_unique<client_side>();
    client_->on_confirmed = std::move(on_confirmed);
}

void session_core::use_headers(std::shared_ptr<const std::vector<std::pair<std::string, std::string>>> headers)
{
    if (!client_)
        client_ = std::make_unique<client_side>();
    client_->headers = std::move(headers);
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// The public face: every operation hops onto the strand, so callers may be anywhere.

session::session(boost::asio::any_io_executor ex, session_config cfg)
    : core_(
          std::make_unique<detail::session_core>(std::move(ex), std::make_shared<const session_config>(std::move(cfg))))
{
}

session::session(boost::asio::any_io_executor ex, std::shared_ptr<const session_config> cfg)
    : core_(std::make_unique<detail::session_core>(std::move(ex), std::move(cfg)))
{
}

session::~session() = default;

session::executor_type session::get_executor() const noexcept
{
    return core_->strand();
}

const session_config& session::config() const noexcept
{
    return core_->config();
}

void session::set_config(session_config cfg)
{
    core_->set_config(std::make_shared<const session_config>(std::move(cfg)));
}

session_events& session::events() noexcept
{
    return core_->events();
}

boost::asio::awaitable<error_code> session::connect(std::string url)
{
    co_return co_await boost::asio::co_spawn(core_->strand(), core_->connect_op(std::move(url)),
                                             boost::asio::use_awaitable);
}

boost::asio::awaitable<error_code> session::run()
{
    return core_->run_op(false);  // not a coroutine: a frame that would wait for the whole connection
}

boost::asio::awaitable<error_code> session::close(std::uint16_t code, std::string reason)
{
    co_return co_await boost::asio::co_spawn(core_->strand(), core_->close_op(code, std::move(reason)),
                                             boost::asio::use_awaitable);
}

boost::asio::awaitable<error_code> session::send(std::string data, message_type type)
{
    auto [ec] = co_await async_send(std::move(data), type, boost::asio::as_tuple(boost::asio::use_awaitable));
    co_return ec;
}

boost::asio::awaitable<error_code> session::send(std::shared_ptr<const std::string> data, message_type type)
{
    auto [ec] = co_await async_send(std::move(data), type, boost::asio::as_tuple(boost::asio::use_awaitable));
    co_return ec;
}

void session::start_send(std::string data, message_type type, detail::send_handler handler)
{
    detail::outgoing msg{.data = std::move(data), .type = type, .handler = std::move(handler)};
    boost::asio::dispatch(core_->strand(),
                          [p = core_.get(), msg = std::move(msg)]() mutable { p->send(std::move(msg)); });
}

void session::start_send(std::shared_ptr<const std::string> data, message_type type, detail::send_handler handler)
{
    if (!data) {
        boost::asio::post(core_->strand(), boost::asio::append(std::move(handler),
                                                               error_code(boost::asio::error::invalid_argument)));
        return;
    }
    detail::outgoing msg{.type = type, .handler = std::move(handler), .shared = std::move(data)};
    boost::asio::dispatch(core_->strand(),
                          [p = core_.get(), msg = std::move(msg)]() mutable { p->send(std::move(msg)); });
}

void session::cancel()
{
    boost::asio::dispatch(core_->strand(), [p = core_.get()] { p->cancel_now(); });
}

bool session::is_open() const noexcept
{
    return core_->is_open();
}

bool session::compressed() const noexcept
{
    return core_->compressed();
}

traffic_counts session::traffic() const noexcept
{
    return core_->meter().traffic();
}

queue_depths session::queues() const noexcept
{
    return core_->meter().queues();
}

const disconnect_info& session::last_disconnect() const noexcept
{
    return core_->last();
}

const std::string& session::subprotocol() const noexcept
{
    return core_->subprotocol();
}

std::uint64_t session::connection_id() const noexcept
{
    return core_->connection_id();
}

// ---------------------------------------------------------------------------------------
// The server's and the supervisor's hooks (accept() is in detail/accept.cpp).

boost::asio::awaitable<received> detail::session_access::receive(session& s)
{
    co_return co_await boost::asio::co_spawn(s.core_->strand(), s.core_->receive_op(), boost::asio::use_awaitable);
}

const boost::asio::any_io_executor& detail::session_access::executor(const session& s) noexcept
{
    return s.core_->strand();
}

void detail::session_access::send_shared(session& s, std::shared_ptr<void> owner,
                                         std::shared_ptr<const std::string> data, message_type type)
{
    // A broadcast reaches connections that may end (and be freed) before this step runs.
    boost::asio::dispatch(
        s.core_->strand(), [p = s.core_.get(), owner = std::move(owner), data = std::move(data), type]() mutable {
            p->send(outgoing{.type = type, .from = outgoing::owner::internal, .shared = std::move(data)});
        });
}

bool detail::session_access::begin_run(session& s)
{
    return s.core_->begin_run();
}

boost::asio::awaitable<std::variant<error_code, error_code, error_code>> detail::session_access::arms(session& s)
{
    return s.core_->arms();
}

error_code detail::session_access::finish_run(session& s) noexcept
{
    try {
        return s.core_->finish_run(false);
    } catch (...) {
        // An application-level heartbeat policy threw (a server's sessions have no event
        // handlers): the connection ended with handler_exception, which is all there is to say.
        return error::handler_exception;
    }
}

void detail::session_access::track_writes(session& s, std::function<void(std::uint64_t)> on_confirmed)
{
    s.core_->track_writes(std::move(on_confirmed));
}

void detail::session_access::use_headers(session& s, std::shared_ptr<const header_list> headers)
{
    s.core_->use_headers(std::move(headers));
}

std::uint64_t detail::session_access::writes(const session& s) noexcept
{
    return s.core_->writes();
}

void detail::session_access::observe(session& s, connection_observer* o) noexcept
{
    s.core_->observer_ = o;
}

void detail::session_access::report_end_as(session& s, error_code ec, std::string detail)
{
    s.core_->report_end_as(ec, std::move(detail));
}

detail::budget_account* detail::session_access::budget(const session& s) noexcept
{
    return s.core_->budget();
}

void detail::session_access::evict(session& s, std::shared_ptr<void> owner)
{
    boost::asio::dispatch(s.core_->strand(), [p = s.core_.get(), owner = std::move(owner)] { p->evict(); });
}

}  // namespace vigil
