// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The time arm of run(): heartbeat pings and every deadline of a running connection (pong,
// idle_timeout, write_timeout, close_timeout) on one timer.
//
// Why it is not a coroutine loop like the other arms: it is the only arm that does work on
// an idle connection, so its cost per heartbeat is the cost of keeping 10,000 connections
// honest (bench/scale). The coroutine here only waits for a verdict; the work is done by
// plain completion handlers on the strand, one timer expiry per step, with no coroutine
// resumption, no second timer and no cancellation to re-arm a deadline. Expiries are rounded
// up to a 10 ms grid so that the timers of many connections fall due together and the
// event loop serves them in one turn (one epoll_wait and one timerfd update for the lot).
//
// A protocol ping is started from here and not awaited: a ping stuck behind a stalled write
// must not also stall the verdicts.

namespace vigil {

namespace detail {

/// Shortest time between two pings sent to confirm writes: under a steady stream of sends,
/// one ping confirms a batch rather than every message costing a ping.
inline constexpr std::chrono::milliseconds confirm_gap{5};

/// The grid that timer expiries are rounded up to (see the top of this file). Small against
/// any sensible timeout; the documented detection bounds include it.
inline constexpr std::chrono::milliseconds timer_grain{10};

inline std::chrono::steady_clock::time_point on_grid(std::chrono::steady_clock::time_point t) noexcept
{
    const auto since = t.time_since_epoch();
    if (since <= std::chrono::steady_clock::duration::zero() || t == std::chrono::steady_clock::time_point::max())
        return t;
    const auto grain = std::chrono::steady_clock::duration(timer_grain);
    const auto rest = since % grain;
    if (rest == std::chrono::steady_clock::duration::zero())
        return t;
    if (t > std::chrono::steady_clock::time_point::max() - grain)
        return std::chrono::steady_clock::time_point::max();
    return t - rest + grain;
}

// Which deadline comes next, and has one passed? (Not a lambda: functions in included files
// must not hold types without linkage.)
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

/// The timer's completion handler: a named type, so that it is small and costs no
/// std::function; it runs on the strand (the timer's executor).
struct session::impl::tick_handler {
    impl* self;
    void operator()(error_code ec) const { self->tk_timer_done(ec); }
};

/// A protocol ping's completion handler; like the writer's, it runs on the stream's
/// executor, the strand.
struct session::impl::ping_handler {
    impl* self;
    void operator()(error_code ec) const { self->tk_ping_done(ec); }
};

asio::awaitable<error_code> session::impl::timekeeper()
{
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation(),
                                                       detail::any_cancellation_as_terminal{});
    co_await asio::this_coro::throw_if_cancelled(false);
    if (detail::cancelled(co_await asio::this_coro::cancellation_state))
        co_return first(asio::error::operation_aborted);
    tk_start();
    // One wait in the loop, for a verdict and then for our handlers to drain: every
    // co_await is state in the frame that each running connection holds.
    error_code result = asio::error::operation_aborted;
    for (;;) {
        if (tk_running_ && tk_verdict_) {
            result = *tk_verdict_;
            tk_stop();
        }
        if (!tk_running_ && tk_ops_ == 0)
            break;
        auto [ec] = co_await tk_wake_.async_wait(asio::as_tuple(asio::deferred));
        // Cancelled: another arm finished first, or run() was. Delivered once; the waits
        // that follow are for the drain.
        if (ec && tk_running_)
            tk_stop();
    }
    co_return first(result);
}

void session::impl::tk_start()
{
    tk_verdict_.reset();
    tk_running_ = true;
    tk_next_fixed_ = clock_type::now() + clock_type::duration(cfg_->ping_interval);
    ping_early_ = draw_ping_early();
    tk_check();
    write_next();  // what was sent before run()
}

void session::impl::tk_stop()
{
    // Our handlers point into this object: none may be left pending when run() returns. The
    // timer completes at once when cancelled; a ping, write or close still in progress
    // completes once the socket is closed, and the session is over whichever arm ended it.
    // The reader's read does not listen for cancellation (reader.ipp): closing the socket
    // is what ends it, however this arm ended (a verdict, or cancelled by `||` or by the
    // caller).
    tk_running_ = false;
    if (wheel_)
        cancel_wheel();  // at once: nothing of ours stays in the wheel
    else
        timer_->cancel();
    close_socket();
}

void session::impl::tk_check()
{
    const auto interval = clock_type::duration(cfg_->ping_interval);
    const bool heartbeat = interval > clock_type::duration::zero();
    for (;;) {
        if (!tk_running_ || tk_verdict_)
            return;
        if (handler_error_)
            return tk_conclude(error::handler_exception);
        const auto now = clock_type::now();
        detail::deadline_scan scan{now};
        // Any frame after the ping proves the peer alive, not only the pong. A paused reader
        // hears nothing, through no fault of the peer: no verdict then.
        if (heartbeat && !paused_ && ping_sent_ > last_rx_ && scan.passed(ping_sent_ + cfg_->pong_timeout)) {
            last_.detail = "nothing received for " + std::to_string(cfg_->pong_timeout.count()) +
                           " ms after a ping (pong_timeout)";
            return tk_conclude(error::pong_timeout);
        }
        if (cfg_->idle_timeout.count() > 0 && !paused_ && !end_as_ && scan.passed(last_data_ + cfg_->idle_timeout)) {
            // The peer still answers pings; it is the data that went stale. Say goodbye
            // properly (close_timeout then bounds it), so that the server does not log an
            // abnormal closure.
            say_goodbye(error::idle_timeout,
                        "no data message for " + std::to_string(cfg_->idle_timeout.count()) + " ms (idle_timeout)",
                        websocket::close_reason(websocket::close_code::normal, "idle_timeout"));
            continue;
        }
        if (writing_ && cfg_->write_timeout.count() > 0 && scan.passed(write_started_ + cfg_->write_timeout)) {
            last_.detail = "a message write made no progress for " + std::to_string(cfg_->write_timeout.count()) +
                           " ms: the peer stopped reading (write_timeout)";
            return tk_conclude(error::write_timeout);
        }
        if (closing_ && scan.passed(close_started_ + cfg_->close_timeout)) {
            last_.detail = "no answer to our close frame within " + std::to_string(cfg_->close_timeout.count()) +
                           " ms (close_timeout)";
            return tk_conclude(error::close_timeout);
        }
        if (heartbeat && !close_requested_ && !closing_) {
            // idle: ping once nothing has arrived for `interval` since the later of the last
            // frame and the last ping; fixed: ping on a steady schedule. ping_early_
            // (ping_jitter) spreads the pings of connections that started together, and
            // drawn anew for every ping it keeps a lead on a peer pinging at the same
            // interval, whose idle timer then never runs out (so only one side pings).
            auto due = (cfg_->ping == ping_mode::idle ? std::max(last_rx_, ping_sent_) + interval : tk_next_fixed_) -
                       ping_early_;
            // Confirming delivery: a ping soon after writes (one in flight at a time, at most
            // one per confirm_gap), whatever arrives meanwhile, since only its pong proves the
            // peer read them.
            if (on_confirmed_ && written_ > ping_covers_ && !ping_outstanding_)
                due = std::min(due, ping_sent_ + detail::confirm_gap);
            // While the reader is paused (the application is behind) the peer cannot be heard,
            // so a ping would prove nothing; nor is a second ping stacked behind one that a
            // stalled write still holds back (write_timeout judges that): look again later.
            if (paused_ || ping_writing_)
                due = std::max(due, now + interval);
            if (due <= now) {
                if (!tk_ping(now))
                    return;
                continue;  // the pong deadline is now the next thing to watch
            }
            scan.passed(due);
        }
        tk_arm(scan.next);
        return;
    }
}

bool session::impl::tk_ping(clock_type::time_point now)
{
    if (cfg_->ping == ping_mode::fixed) {
        const auto interval = clock_type::duration(cfg_->ping_interval);
        tk_next_fixed_ = (tk_next_fixed_ + interval > now) ? tk_next_fixed_ + interval : now + interval;
    }
    ++ping_seq_;
    ping_covers_ = written_;
    ping_sent_ = now;
    ping_outstanding_ = true;
    ping_early_ = draw_ping_early();
    notify(events_.on_ping);
    if (heartbeat_) {
        // A data message: it goes through the writer, which owns data frames.
        try {
            enqueue_internal(heartbeat_->make_ping());
        } catch (...) {
            record_handler_exception();
            tk_conclude(error::handler_exception);
            return false;
        }
        return true;
    }
    ping_writing_ = true;
    ++tk_ops_;
    // Beast copies the payload into the frame before this returns.
    const detail::ping_text text(ping_seq_);
    ws_->async_ping(websocket::ping_data(text.buf, text.len), ping_handler{this});
    return true;
}

void session::impl::tk_arm(clock_type::time_point when)
{
    if (!tk_running_ || tk_verdict_ || when == clock_type::time_point::max())
        return;
    when = detail::on_grid(when);
    if (wheel_) {
        // The io_context's shared timer (timer_wheel.hpp): a list operation, no wait.
        if (tk_entry_.linked && tk_entry_.when <= when)
            return;
        wheel_->cancel(tk_entry_);
        wheel_->schedule(tk_entry_, when);
        return;
    }
    // A wait that ends no later already brings us back in time to look again.
    if (tk_waits_ > 0 && tk_at_ <= when)
        return;
    // expires_at() cancels the pending wait, if any: its handler sees operation_aborted.
    timer_->expires_at(when);
    tk_at_ = when;
    ++tk_waits_;
    ++tk_ops_;
    timer_->async_wait(tick_handler{this});
}

void session::impl::tk_fired(void* self)
{
    auto& s = *static_cast<impl*>(self);
    if (s.tk_running_)
        s.tk_check();
}

void session::impl::tk_timer_done(error_code ec)
{
    --tk_waits_;
    --tk_ops_;
    if (tk_waits_ == 0)
        tk_at_ = clock_type::time_point::max();
    if (!tk_running_) {
        tk_drain_check();
        return;
    }
    if (!ec)
        tk_check();
}

void session::impl::tk_ping_done(error_code ec)
{
    ping_writing_ = false;
    --tk_ops_;
    if (!tk_running_) {
        tk_drain_check();
        return;
    }
    if (ec)
        tk_conclude(ec);  // the transport failed under the ping: the session is over
}

void session::impl::tk_conclude(error_code ec)
{
    if (tk_verdict_ || !tk_running_)
        return;
    tk_verdict_ = ec;
    // The cause is this verdict from this instant: what the other arm reports once the
    // socket closes under it (or Beast's read, aborted by our close handshake) comes later.
    first(ec);
    // Through the executor: the arm's coroutine must not resume inside tk_check().
    tk_wake_.notify_later();
}

void session::impl::set_deadline(clock_type::time_point when)
{
    tk_arm(when);
}

}  // namespace vigil
