// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The reader, an arm of run(). It keeps one read pending for the whole connection: Beast
// answers the peer's pings and reports pongs (through the control callback) only while a
// read is pending, so a session that stopped reading would look dead to its peer and be
// blind to its own heartbeat. Every frame it sees is reported to the liveness rules; data
// messages go to the application (on_message, or a server connection's inbox).

#include "session_core.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/steady_timer.hpp>

namespace vigil::detail {

namespace {

// The most one read may add to a message. Beast asks for the rest of a compressed frame
// whatever room the buffer has left: held to that room, an inflating bomb reaches
// max_message_size + 1 and Beast ends it with 1009, instead of failing to grow the buffer.
// Never 0 (Beast would read nothing). A server's connection reads read_piece at most.
std::size_t read_limit(const beast::flat_buffer& rx, bool budgeted) noexcept
{
    const auto room = std::max<std::size_t>(rx.max_size() - rx.size(), 1);
    return budgeted ? std::min(read_piece, room) : room;
}

}  // namespace

asio::awaitable<error_code> session_core::reader()
{
    co_await asio::this_coro::throw_if_cancelled(false);
    for (;;) {
        // A cancellation reaches the coroutine's state, not the read (below): look first.
        if (phase_ != phase::running || cancelled(co_await asio::this_coro::cancellation_state))
            co_return conn_.end.code();
        const bool first = rx_.size() == 0;
        // A message about to grow asks the server's memory budget first (clients have none).
        if (!first && budget_ && !co_await room_for_message())
            co_return conn_.end.code();
        auto token = asio::as_tuple(asio::deferred);
        auto [ec, n] = co_await asio::async_initiate<decltype(token), void(error_code, std::size_t)>(
            [this, first](auto handler) { start_read(first, std::move(handler)); }, token);
        // The work between reads is in plain functions: what a coroutine's body holds, its
        // frame holds, for every connection, for as long as the read is pending.
        if (ec)
            co_return read_failed(ec);
        const auto ahead = cfg_->max_receive_rate > 0 ? throttle_.charge(n, clock_type::now()) : duration::zero();
        if (!ws_->is_message_done()) {
            message_progress(first, n);
        } else if (auto end = deliver(first ? std::string_view(first_read_.data(), n) : received_so_far())) {
            co_return *end;
        }
        // A peer ahead of max_receive_rate waits; so does one whose messages the application
        // (or the server's memory) cannot take now. TCP then pushes back on it, and its
        // silence meanwhile is ours, not held against it.
        if (ahead > duration::zero() && !co_await keep_rate(ahead))
            co_return conn_.end.code();
        if (must_pause() && !co_await wait_for_room())
            co_return conn_.end.code();
    }
}

template <class Handler>
void session_core::start_read(bool first, Handler&& handler)
{
    // No cancellation slot: the socket closing ends the read (conclude() closes it, whoever
    // decides the end). A read that listened would install a handler in the slot every time
    // Beast reads from the socket again, every pong, on every connection. (And the reader
    // awaits it as a deferred operation: use_awaitable would add a coroutine frame that an
    // idle connection holds for as long as the read is pending.)
    auto h = asio::bind_cancellation_slot(asio::cancellation_slot(), std::forward<Handler>(handler));
    // Between messages the read goes into the small buffer inside the session: an idle
    // connection holds no read buffer of its own, and most messages (heartbeats, chat lines,
    // ticks) are delivered from it directly. A longer message goes on into rx_, at the cost
    // of one more completion.
    if (first)
        ws_->async_read_some(asio::buffer(first_read_), std::move(h));
    else
        ws_->async_read_some(rx_, read_limit(rx_, budget_ != nullptr), std::move(h));
}

std::string_view session_core::received_so_far() const noexcept
{
    return {static_cast<const char*>(rx_.data().data()), rx_.size()};
}

void session_core::message_progress(bool first, std::size_t n)
{
    if (first) {
        live_.message_begun(clock_type::now());
        // The deadline of a message in progress may be earlier than the timer's.
        if (cfg_->message_timeout > duration::zero())
            reschedule();
    }
    if (conn_.partial == connection_state::partial_message::discard) {
        rx_.clear();  // ended for it: what still arrives of it is read and dropped
        return;
    }
    if (first)
        rx_.commit(asio::buffer_copy(rx_.prepare(n), asio::buffer(first_read_.data(), n)));
    live_.message_grew(rx_.size());
    if (budget_)
        budget_->set(holding_part::message, rx_.capacity());
}

void session_core::drop_partial() noexcept
{
    rx_.clear();
    rx_.shrink_to_fit();
    if (budget_)
        budget_->set(holding_part::message, 0);
}

bool session_core::must_pause() const noexcept
{
    if (inbox_ && inbox_->full())
        return true;
    return budget_ && budget_->must_hold_back() && conn_.partial == connection_state::partial_message::keep;
}

/// How big the message buffer will be after the next read: Beast reads what is left of the
/// frame, at most `read_piece`, and a flat buffer that must grow doubles (rx_.prepare). So a
/// short message asks for its own size, and its connection stays light.
std::size_t session_core::room_wanted()
{
    const auto size = rx_.size();
    const auto next = std::min(read_piece, ws_->read_size_hint(rx_));
    if (rx_.capacity() - size >= next)
        return rx_.capacity();
    return std::min(rx_.max_size(), std::max(2 * size, size + next));
}

asio::awaitable<bool> session_core::room_for_message()
{
    // Over the budget, the heavy wait (TCP pushes back on their peers) until the server's
    // budget watch has ended the heaviest of them or memory was freed otherwise.
    bool paused = false;
    while (conn_.partial == connection_state::partial_message::keep && !budget_->grow_message(room_wanted())) {
        if (!paused) {
            paused = true;
            live_.reading_paused();
        }
        press_budget();
        if (!co_await pause_reading(budget_poll))
            co_return false;
    }
    if (conn_.partial == connection_state::partial_message::discard)
        drop_partial();
    if (paused)
        resume_reading();
    co_return true;
}

asio::awaitable<bool> session_core::pause_reading(duration d)
{
    asio::steady_timer wait(strand_, d);
    co_await wait.async_wait(asio::as_tuple(asio::deferred));  // cancelled or not: look below
    // (Plain statements: g++ 12 miscompiles a co_await inside a co_return's && expression.)
    const auto state = co_await asio::this_coro::cancellation_state;
    if (phase_ != phase::running || cancelled(state))
        co_return false;
    co_return true;
}

asio::awaitable<bool> session_core::keep_rate(duration ahead)
{
    live_.reading_paused();
    const bool go_on = co_await pause_reading(ahead);
    if (!go_on)
        co_return false;
    resume_reading();
    co_return true;
}

asio::awaitable<bool> session_core::wait_for_room()
{
    live_.reading_paused();
    while (must_pause()) {
        if (inbox_ && inbox_->full()) {
            auto [ec] = co_await inbox_->async_wait_for_room(asio::as_tuple(asio::deferred));
            if (ec)
                co_return false;
        } else {
            // Held back by the budget: looked at again, as the budget frees no one in particular.
            press_budget();
            if (!co_await pause_reading(budget_poll))
                co_return false;
        }
        if (phase_ != phase::running || cancelled(co_await asio::this_coro::cancellation_state))
            co_return false;
    }
    resume_reading();
    co_return true;
}

void session_core::press_budget()
{
    // Each look that finds no room presses again: the budget stays short while anyone waits.
    if (budget_->press(clock_type::now()) && budget_watch_)
        budget_watch_->pressed();
}

void session_core::resume_reading()
{
    live_.reading_resumed(clock_type::now());
    reschedule();
}

error_code session_core::read_failed(error_code ec)
{
    std::string detail;
    if (ec == websocket::error::closed) {
        if (conn_.close == close_state::sent) {
            ec = {};  // the answer to our own close: a clean end
        } else {
            const auto& why = ws_->reason();
            record().close_code = why.code ? static_cast<unsigned>(why.code) : 1005u;
            record().close_reason.assign(why.reason.data(), why.reason.size());
            ec = make_close_error(record().close_code);
            if (!close_code_allowed(why.code)) {
                // Beast let it through; our answer said 1002 (see prepare_stream).
                ec = websocket::error::bad_close_code;
                detail = "the peer broke the protocol: close code " + std::to_string(record().close_code) +
                         " is not allowed on the wire (RFC 6455 7.4); answered 1002";
            }
        }
    } else if (ec.category() == websocket::make_error_code(websocket::error::closed).category()) {
        // Beast failed the connection for something the peer sent, and sent a close frame
        // (1002 protocol error, 1007 bad data, 1009 too big) before tearing it down.
        detail = with_context("the peer broke the protocol", ec);
    }
    conclude(end_reason::kind::failure, ec, std::move(detail));
    return conn_.end.code();
}

std::optional<error_code> session_core::deliver(std::string_view data)
{
    const auto now = clock_type::now();
    const auto type = ws_->got_text() ? message_type::text : message_type::binary;
    // Heartbeat messages prove the peer alive but are not data: they must not satisfy
    // idle_timeout, which exists to catch a feed that answers pings and sends nothing.
    // The rest of a message the connection was ended for: not the application's.
    if (conn_.partial == connection_state::partial_message::discard) {
        live_.frame_received(now);
        live_.message_finished();
        conn_.partial = connection_state::partial_message::keep;
        rx_.consume(rx_.size());
        return phase_ == phase::running ? std::nullopt : std::optional<error_code>(conn_.end.code());
    }
    meter_.received(data.size());
    const bool heartbeat = conn_.app_heartbeat && type == message_type::text && heartbeat_consumed(data);
    if (!heartbeat && is_fresh(data, type))
        live_.data_received(now);
    else
        live_.frame_received(now);
    if (phase_ == phase::running && (!heartbeat || cfg_->deliver_heartbeat_messages)) {
        const message_meta meta{connection_id_, ++conn_.delivered};
        if (inbox_ && inbox_->holds()) {
            inbox_->push(received{{}, std::string(data), type});
            meter_.receive_waiting(inbox_->waiting());
        } else
            emit(&session_events::on_message, data, type, meta);
    }
    live_.message_finished();
    conn_.partial = connection_state::partial_message::keep;
    // A server connection gives a long message's buffer back at once: idle connections
    // must not each keep the largest message they ever received.
    if (budget_ && rx_.capacity() > 0)
        drop_partial();
    else
        rx_.consume(rx_.size());
    if (phase_ != phase::running)
        return conn_.end.code();  // a handler threw, closed or cancelled
    return std::nullopt;
}

bool session_core::is_fresh(std::string_view data, message_type type)
{
    // Only what the application's rule calls fresh satisfies idle_timeout (a feed's
    // updates, not the acks of our own requests on the same socket).
    if (!cfg_->is_fresh || cfg_->idle_timeout <= std::chrono::milliseconds::zero())
        return true;
    try {
        return cfg_->is_fresh(data, type);
    } catch (...) {
        handler_threw(std::current_exception());
        return true;
    }
}

bool session_core::heartbeat_consumed(std::string_view data)
{
    auto& policy = *conn_.app_heartbeat;
    try {
        if (policy.is_pong(data)) {
            pong_arrived(clock_type::now());
            return true;
        }
        if (auto reply = policy.answer(data)) {
            send_heartbeat_message(std::move(*reply));
            return true;
        }
    } catch (...) {
        handler_threw(std::current_exception());
        return true;
    }
    return false;
}

void session_core::on_control_frame(websocket::frame_type kind, beast::string_view payload)
{
    const auto now = clock_type::now();
    if (kind == websocket::frame_type::pong &&
        std::string_view(payload.data(), payload.size()) == ping_text(conn_.ping_seq).view())
        pong_arrived(now);
    else
        live_.frame_received(now);
}

void session_core::pong_arrived(time_point now)
{
    const auto news = live_.pong_received(now);
    if (!news)
        return;  // late, or a repeat
    const auto rtt = std::chrono::duration_cast<std::chrono::microseconds>(news->rtt);
    if (observer_)
        observer_->round_trip(rtt);
    emit(&session_events::on_pong, rtt);
    if (!client_ || !client_->on_confirmed)
        return;
    if (auto e = notify(client_->on_confirmed, news->confirmed))
        handler_threw(std::move(e));
    confirm_writes(now);  // messages written since that ping waited for its pong
}

}  // namespace vigil::detail
