// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The heartbeat, an arm of run(): it pings when the liveness rules say a ping is due (idle
// or fixed mode, ping_jitter, confirmation pings for delivery_guarantee::confirmed), as a
// protocol ping frame or as the application-level heartbeat's message.
//
// It is not a coroutine loop. The session's one timer wakes it (heartbeat_tick, from the
// tick it shares with the watchdog), and a ping's write completes into a plain handler; the
// arm's coroutine only waits for the heartbeat to end. A heartbeat is then two timer
// expiries and no coroutine resumption, which is what 10,000 idle connections cost.

#include "session_core.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>

namespace vigil::detail {

/// A protocol ping's completion handler: a named type, small and with no executor of its
/// own, so that Beast completes it on the stream's (the strand) without copying one.
struct session_core::ping_done {
    session_core* self;
    void operator()(error_code ec) const { self->on_ping_written(ec); }
};

asio::awaitable<error_code> session_core::heartbeat()
{
    co_await asio::this_coro::throw_if_cancelled(false);
    if (phase_ != phase::running)
        co_return conn_.end.code();
    // Completed by conclude() with the end, or with operation_aborted when `||` or the
    // caller cancels (the watchdog tears down then).
    auto [ec] = co_await heartbeat_stop_.async_wait(asio::as_tuple(asio::deferred));
    co_return ec;
}

void session_core::heartbeat_tick(time_point now)
{
    if (live_.ping_due() <= now)
        send_ping(now);
}

void session_core::confirm_writes(time_point now)
{
    // At once, not at the next grid point: a confirmation then costs one round trip.
    if (phase_ == phase::running && live_.confirmation_due())
        send_ping(now);
    reschedule();
}

void session_core::send_ping(time_point now)
{
    // Before the ping is written, so that a fast pong is never reported before its ping.
    emit(&session_events::on_ping);
    if (phase_ != phase::running)
        return;  // on_ping threw
    if (conn_.app_heartbeat) {
        // A data message: it goes through the writer, which owns data frames.
        live_.ping_sent(now, ping_carrier::message);
        std::string ping;
        try {
            ping = conn_.app_heartbeat->make_ping();
        } catch (...) {
            handler_threw(std::current_exception());
            return;
        }
        send_heartbeat_message(std::move(ping));
        return;
    }
    // Not awaited: a ping stuck behind a stalled write must not also stall the verdicts.
    live_.ping_sent(now, ping_carrier::control_frame);
    ++conn_.ping_seq;
    ++conn_.pending_ops;
    const ping_text text(conn_.ping_seq);  // Beast copies it into the frame before returning
    ws_->async_ping(websocket::ping_data(text.buf, text.len), ping_done{this});
}

void session_core::on_ping_written(error_code ec)
{
    live_.ping_write_done();
    // `closed`: Beast is closing on its own, and the reader reports why.
    if (phase_ == phase::running && ec && ec != websocket::error::closed)
        conclude(end_reason::kind::failure, ec, with_context("sending a ping", ec));
    reschedule();
    op_done();
}

}  // namespace vigil::detail
