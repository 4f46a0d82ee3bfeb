// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A session's one timer, which the heartbeat and the watchdog share: each says when it must
// look again, and the timer wakes the session at the earliest of those times, rounded up to
// the 10 ms grid. Frames arriving only move time stamps; a wake-up that comes early for
// nothing is cheaper than moving the timer on every frame, so a wake-up is re-armed only
// when it must come sooner.
//
// On an io_context that one thread runs (no strands) it is an entry in the context's timer
// wheel (timer_wheel.hpp): a list operation, nothing pending. Otherwise a steady_timer of its
// own, whose cancelled waits still complete later: `pending()` counts them, and the owner's
// `settled` callback runs when the last one is in after stop().

#include "liveness.hpp"
#include "timer_wheel.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>

namespace vigil::detail {

class session_timer {
public:
    using callback = void (*)(void* owner);

    /// `fire(owner)` runs at each wake-up; `settled(owner)` when, after stop(), no wait
    /// pointing here is left. Both on `ex` (the session's strand).
    session_timer(const boost::asio::any_io_executor& ex, callback fire, callback settled, void* owner);
    ~session_timer();
    session_timer(const session_timer&) = delete;
    session_timer& operator=(const session_timer&) = delete;

    /// Wake-ups may be armed again (a new connection).
    void start() noexcept { state_ = state::running; }
    /// Ensures a wake-up no later than `on_grid(when)`; `time_point::max()` asks for none.
    /// Ignored once stopped.
    void arm(time_point when);
    /// No more wake-ups.
    void stop() noexcept;
    /// During `fire`: the time the wake-up was meant for (how late it runs is now - due()).
    time_point due() const noexcept { return wheel_ ? entry_.when : own_->fired_for; }
    /// Waits still to complete (steady_timer only).
    unsigned pending() const noexcept { return own_ ? own_->waits : 0; }

private:
    /// A timer of the session's own, when there is no wheel to share.
    struct own_timer {
        own_timer(const boost::asio::any_io_executor& ex, callback fire, callback settled)
            : timer(ex), fire(fire), settled(settled)
        {
        }
        boost::asio::steady_timer timer;
        time_point armed_at = time_point::max();  // what the newest wait waits for
        unsigned waits = 0;  // pending waits, all but the newest cancelled
        time_point fired_for{};  // what the wait completing now waited for
        callback fire;
        callback settled;
    };
    struct wait_handler {
        session_timer* self;
        void operator()(error_code ec) const { self->on_wait(ec); }
    };
    void on_wait(error_code ec);

    enum class state { running, stopped };

    // On the wheel, the entry's `fire` and `arg` are the owner's callback and the owner.
    timer_wheel* wheel_ = nullptr;  // single-threaded io_context
    wheel_entry entry_;  // ... this session's place in it
    std::unique_ptr<own_timer> own_;  // otherwise
    void* owner_;
    state state_ = state::running;
};

}  // namespace vigil::detail
