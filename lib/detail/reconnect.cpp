// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "reconnect.hpp"

#include <boost/asio/error.hpp>

#include <algorithm>

namespace vigil::detail {

using kind = reconnect_action::kind;

namespace {

reconnect_action just(kind what)
{
    reconnect_action a;
    a.what = what;
    return a;
}

}  // namespace

reconnect_action reconnect_fsm::start()
{
    // A stop() made while no run() was in progress ends this one at once.
    if (state_ == reconnect_state::stopping)
        return finish(reconnect_state::stopped, {});
    streak_ = 0;
    state_ = reconnect_state::connecting;
    return just(kind::connect);
}

reconnect_action reconnect_fsm::connected()
{
    if (state_ == reconnect_state::stopping)
        return just(kind::close_session);
    state_ = reconnect_state::running_hook;
    up_since_ = {};
    return just(kind::run);
}

void reconnect_fsm::hook_succeeded(time_point now) noexcept
{
    if (state_ != reconnect_state::running_hook)
        return;
    state_ = reconnect_state::up;
    up_since_ = now;
}

reconnect_action reconnect_fsm::attempt_ended(const attempt_result& r, time_point now)
{
    if (state_ == reconnect_state::stopping)
        return finish(reconnect_state::stopped, {});  // however the session closed
    if (r.reason == boost::asio::error::operation_aborted)
        return finish(reconnect_state::stopped, r.reason);
    // Only a connection that stayed up resets the streak: a server that accepts and drops
    // every connection meets growing delays, not a reconnect loop.
    const bool was_up = state_ == reconnect_state::up || state_ == reconnect_state::replacing;
    if (was_up && up_since_ != time_point{} && now - up_since_ >= s_.stable_after) {
        policy_->reset();
        streak_ = 0;
    }
    if (state_ == reconnect_state::replacing) {
        // Planned: however the old session ended, the next attempt starts now, and the
        // streak stays what it was (a planned reconnect is neither a failure nor a success).
        state_ = reconnect_state::connecting;
        return just(kind::connect);
    }
    if (!r.reason)
        return finish(reconnect_state::stopped, {});  // the application closed it cleanly
    if (permanent(r.reason))
        return finish(reconnect_state::gave_up, r.reason);
    return retry_after_failure(r, now);
}

reconnect_action reconnect_fsm::retry_after_failure(const attempt_result& r, time_point now)
{
    if (++streak_ == 1) {
        streak_began_ = now;
        last_delay_ = {};
    }
    if (s_.max_attempts > 0 && streak_ >= s_.max_attempts)
        return finish(reconnect_state::gave_up, error::retries_exhausted);
    retry_context ctx;
    ctx.attempt = streak_;
    ctx.reason = r.reason;
    ctx.retry_after = r.retry_after;
    ctx.failing_for = std::chrono::duration_cast<std::chrono::milliseconds>(now - streak_began_);
    ctx.previous_delay = last_delay_;
    ctx.last = r.last;
    // The floor comes last, so that no policy (a user's own included) can cause a tight loop.
    auto delay = std::max(policy_->next_delay(ctx), s_.min_delay);
    if (s_.max_retry_after > std::chrono::milliseconds::zero() && r.retry_after > std::chrono::milliseconds::zero())
        delay = std::max(delay, std::min(r.retry_after, s_.max_retry_after));
    // 1008 is how exchanges say "too many requests": it passes, but a quick retry would
    // only prolong a rate-limit ban.
    if (close_code_of(r.reason) == 1008)
        delay = std::max(delay, s_.policy_violation_delay);
    last_delay_ = delay;
    state_ = reconnect_state::waiting;
    wait_until_ = now + delay;
    return {kind::wait, delay, streak_, r.reason};
}

reconnect_action reconnect_fsm::time_up(time_point now)
{
    if (state_ == reconnect_state::stopped)
        return just(kind::stop);  // stop() ended the wait
    if (state_ != reconnect_state::waiting || now < wait_until_)
        return {kind::wait, std::chrono::ceil<std::chrono::milliseconds>(wait_until_ - now), streak_, {}};
    state_ = reconnect_state::connecting;
    return just(kind::connect);
}

reconnect_action reconnect_fsm::cancelled()
{
    // Cancelled while a stop() was under way: the stop is what the caller asked for.
    return finish(reconnect_state::stopped, state_ == reconnect_state::stopping
                                                ? error_code{}
                                                : error_code(boost::asio::error::operation_aborted));
}

reconnect_interrupt reconnect_fsm::stop()
{
    switch (state_) {
    case reconnect_state::idle:
    case reconnect_state::stopped:
    case reconnect_state::gave_up:
        state_ = reconnect_state::stopping;  // ends the next run() at once
        return reconnect_interrupt::none;
    case reconnect_state::connecting:
        state_ = reconnect_state::stopping;
        return reconnect_interrupt::abort_attempt;
    case reconnect_state::running_hook:
    case reconnect_state::up:
        state_ = reconnect_state::stopping;
        return reconnect_interrupt::close_session;
    case reconnect_state::replacing:
        state_ = reconnect_state::stopping;  // the close is under way already
        return reconnect_interrupt::none;
    case reconnect_state::waiting:
        state_ = reconnect_state::stopped;
        return reconnect_interrupt::cancel_wait;
    case reconnect_state::stopping:
        return reconnect_interrupt::none;
    }
    return reconnect_interrupt::none;
}

reconnect_interrupt reconnect_fsm::retry_now(time_point now)
{
    // Only a wait can be cut short; connecting or connected, there is nothing to hurry.
    if (state_ != reconnect_state::waiting)
        return reconnect_interrupt::none;
    wait_until_ = std::min(wait_until_, now);
    return reconnect_interrupt::cancel_wait;
}

reconnect_interrupt reconnect_fsm::reconnect(time_point now)
{
    switch (state_) {
    case reconnect_state::running_hook:
    case reconnect_state::up:
        state_ = reconnect_state::replacing;
        return reconnect_interrupt::close_session;
    case reconnect_state::waiting:
        return retry_now(now);
    default:
        return reconnect_interrupt::none;
    }
}

reconnect_action reconnect_fsm::finish(reconnect_state how, error_code reason)
{
    state_ = how;
    return {how == reconnect_state::gave_up ? kind::give_up : kind::stop, {}, 0, reason};
}

bool reconnect_fsm::permanent(const error_code& ec) const
{
    return s_.is_permanent ? s_.is_permanent(ec) : is_permanent(ec);
}

}  // namespace vigil::detail
