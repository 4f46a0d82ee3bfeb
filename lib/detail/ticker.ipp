// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The heartbeat arm of run(): sends pings on schedule. It never judges the answer itself;
// it hands the pong deadline to the watchdog, because a ping stuck behind a stalled write
// must not also stall the verdict.

namespace vigil {

namespace detail {
/// Shortest time between two pings sent to confirm writes: under a steady stream of sends,
/// one ping confirms a batch rather than every message costing a ping.
inline constexpr std::chrono::milliseconds confirm_gap{5};
}  // namespace detail

asio::awaitable<error_code> session::impl::ticker()
{
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation(),
                                                       detail::any_cancellation_as_terminal{});
    co_await asio::this_coro::throw_if_cancelled(false);
    const auto interval = clock_type::duration(cfg_.ping_interval);
    if (interval == clock_type::duration::zero()) {
        // Heartbeat off: stay an arm (the `||` expression has a fixed shape) until cancelled.
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        ticker_timer_.expires_at(clock_type::time_point::max());
        auto [ec] = co_await ticker_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        co_return ec ? ec : error_code(asio::error::operation_aborted);
    }
    auto next_fixed = clock_type::now() + interval;
    ping_early_ = draw_ping_early();
    for (;;) {
        // Cancellation is delivered once, to whatever operation is pending at that moment. If
        // that operation still succeeded, the next one would never hear of it: look first.
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        // idle: ping once nothing has arrived for `interval` since the later of the last frame
        // and the last ping; fixed: ping on a steady schedule.
        // ping_early_ (ping_jitter) spreads the pings of connections that started together.
        auto due = (cfg_.ping == ping_mode::idle ? std::max(last_rx_, ping_sent_) + interval : next_fixed) - ping_early_;
        // Confirming delivery: a ping soon after writes (one in flight at a time, at most one
        // per confirm_gap), whatever arrives meanwhile, since only its pong proves the peer
        // read them.
        if (on_confirmed_ && written_ > ping_covers_ && !ping_outstanding_)
            due = std::min(due, ping_sent_ + detail::confirm_gap);
        auto now = clock_type::now();
        // While the reader is paused (the application is behind) the peer cannot be heard,
        // so a ping would prove nothing: look again one interval later.
        if (due > now || paused_) {
            ticker_timer_.expires_at(due > now ? due : now + interval);
            auto [ec] = co_await ticker_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
            // A write or a pong cancels the timer to make us look again (confirmation); only
            // a cancelled coroutine ends the arm.
            if (ec && detail::cancelled(co_await asio::this_coro::cancellation_state))
                co_return ec;
            continue;  // frames may have arrived while we slept: decide again
        }
        if (cfg_.ping == ping_mode::fixed)
            next_fixed = (next_fixed + interval > now) ? next_fixed + interval : now + interval;
        ++ping_seq_;
        ping_covers_ = written_;
        ping_payload_ = std::to_string(ping_seq_);
        ping_sent_ = now;
        ping_outstanding_ = true;
        set_deadline(now + clock_type::duration(cfg_.pong_timeout));
        ping_early_ = draw_ping_early();
        notify(events_.on_ping);
        if (heartbeat_) {
            // A data message: it goes through the writer, which owns data frames.
            try {
                enqueue_internal(heartbeat_->make_ping());
            } catch (...) {
                record_handler_exception();
                co_return error::handler_exception;
            }
            continue;
        }
        auto [ec] = co_await ws_->async_ping(ping_payload_, asio::as_tuple(asio::use_awaitable));
        if (ec)
            co_return ec;
    }
}

}  // namespace vigil
