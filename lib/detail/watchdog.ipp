// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The deadline arm of run(), after Asio's timeout_watchdog example: the other arms only
// move time stamps forward; this one sleeps until the earliest deadline and checks them
// all. One timer per session, woken early only when a sooner deadline appears.

namespace vigil {

namespace detail {

// Which deadline comes next, and has one passed? (Not a lambda: coroutine frames of
// functions in included files must not hold types without linkage.)
struct deadline_scan {
    std::chrono::steady_clock::time_point now;
    std::chrono::steady_clock::time_point next = std::chrono::steady_clock::time_point::max();

    bool passed(std::chrono::steady_clock::time_point deadline) noexcept
    {
        next = std::min(next, deadline);
        return now >= deadline;
    }
};

}  // namespace detail

asio::awaitable<error_code> session::impl::watchdog()
{
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation(),
                                                       detail::any_cancellation_as_terminal{});
    co_await asio::this_coro::throw_if_cancelled(false);
    const bool heartbeat = cfg_.ping_interval.count() > 0;
    for (;;) {
        // Cancellation is delivered once, to whatever operation is pending at that moment. If
        // that operation still succeeded, the next one would never hear of it: look first.
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        if (handler_error_)
            co_return error::handler_exception;
        const auto now = clock_type::now();
        detail::deadline_scan scan{now};
        // Any frame after the ping proves the peer alive, not only the pong. A paused reader
        // hears nothing, through no fault of the peer: no verdict then.
        if (heartbeat && !paused_ && ping_sent_ > last_rx_ && scan.passed(ping_sent_ + cfg_.pong_timeout)) {
            last_.detail = "nothing received for " + std::to_string(cfg_.pong_timeout.count()) +
                           " ms after a ping (pong_timeout)";
            co_return error::pong_timeout;
        }
        if (cfg_.idle_timeout.count() > 0 && !paused_ && !end_as_ && scan.passed(last_data_ + cfg_.idle_timeout)) {
            // The peer still answers pings; it is the data that went stale. Say goodbye
            // properly (the close deadline below then bounds it), so that the server does
            // not log an abnormal closure.
            say_goodbye(error::idle_timeout,
                        "no data message for " + std::to_string(cfg_.idle_timeout.count()) + " ms (idle_timeout)",
                        websocket::close_reason(websocket::close_code::normal, "idle_timeout"));
            continue;
        }
        if (writing_ && cfg_.write_timeout.count() > 0 && scan.passed(write_started_ + cfg_.write_timeout)) {
            last_.detail = "a message write made no progress for " + std::to_string(cfg_.write_timeout.count()) +
                           " ms: the peer stopped reading (write_timeout)";
            co_return error::write_timeout;
        }
        if (closing_ && scan.passed(close_started_ + cfg_.close_timeout)) {
            last_.detail = "no answer to our close frame within " + std::to_string(cfg_.close_timeout.count()) +
                           " ms (close_timeout)";
            co_return error::close_timeout;
        }
        watchdog_at_ = scan.next;
        watchdog_timer_.expires_at(scan.next);
        auto [ec] = co_await watchdog_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        watchdog_at_ = clock_type::time_point::max();
        // set_deadline() cancels the timer to make us look again; only a cancelled
        // coroutine ends the arm.
        if (ec && detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return ec;
    }
}

}  // namespace vigil
