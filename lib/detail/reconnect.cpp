// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "reconnect.hpp"

#include <boost/asio/error.hpp>

#include <algorithm>
#include <cstdint>

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
    endpoint_ = 0;
    state_ = reconnect_state::connecting;
    return connect_next();
}

reconnect_action reconnect_fsm::connect_next() const
{
    reconnect_action a;
    a.what = kind::connect;
    a.endpoint = endpoint_;
    return a;
}

reconnect_action reconnect_fsm::connected()
{
    if (state_ == reconnect_state::stopping)
        return just(kind::close_session);
    state_ = reconnect_state::running_hook;
    up_since_ = {};
    replacement_ = {};
    return just(kind::run);
}

void reconnect_fsm::hook_succeeded(time_point now, double draw) noexcept
{
    if (state_ != reconnect_state::running_hook)
        return;
    state_ = reconnect_state::up;
    up_since_ = now;
    replacement_ = {};
    if (s_.max_connection_age > std::chrono::milliseconds::zero()) {
        const auto spread = static_cast<double>(s_.max_connection_age.count()) / 10.0;
        const auto early = std::chrono::milliseconds(static_cast<std::int64_t>(spread * std::clamp(draw, 0.0, 1.0)));
        replacement_ = {now + s_.max_connection_age - early, replacement::max_connection_age};
    }
    // On a backup: back to the primary once this one has proved stable, unless the age
    // limit comes first (that reconnect goes to the primary too: see attempt_ended()).
    if (endpoint_ != 0 && s_.failback_after > std::chrono::milliseconds::zero() &&
        now + s_.failback_after < replacement_.at)
        replacement_ = {now + s_.failback_after, replacement::failback};
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
        // A backup's replacement goes to the primary when failing back is configured.
        if (replacement_.why == replacement::failback ||
            (replacement_.why == replacement::max_connection_age && s_.failback_after.count() > 0))
            endpoint_ = 0;
        state_ = reconnect_state::connecting;
        return connect_next();
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
    // Through the endpoint list at once; the policy's delay comes after each full round, so
    // a dead primary costs one refused connect, not a backoff wait. A streak begins a round
    // (both start over together), so every `endpoints` failures of it make one.
    const std::size_t endpoints = std::max<std::size_t>(s_.endpoints, 1);
    endpoint_ = (endpoint_ + 1) % endpoints;
    const bool round_over = streak_ % endpoints == 0;
    auto delay = std::chrono::milliseconds::zero();
    if (round_over) {
        retry_context ctx;
        ctx.attempt = streak_ / endpoints;
        ctx.reason = r.reason;
        ctx.retry_after = r.retry_after;
        ctx.failing_for = std::chrono::duration_cast<std::chrono::milliseconds>(now - streak_began_);
        ctx.previous_delay = last_delay_;
        ctx.last = r.last;
        // The floor comes after the policy, so that no policy (a user's own included) can
        // cause a tight loop.
        delay = std::max(policy_->next_delay(ctx), s_.min_delay);
    }
    // The server's own floors hold within a round too: a rate limit is usually the client's
    // (its IP, its key), whichever endpoint it tries next.
    if (s_.max_retry_after > std::chrono::milliseconds::zero() && r.retry_after > std::chrono::milliseconds::zero())
        delay = std::max(delay, std::min(r.retry_after, s_.max_retry_after));
    // 1008 is how exchanges say "too many requests": it passes, but a quick retry would
    // only prolong a rate-limit ban.
    if (close_code_of(r.reason) == 1008)
        delay = std::max(delay, s_.policy_violation_delay);
    if (round_over)
        last_delay_ = delay;
    state_ = reconnect_state::waiting;
    wait_until_ = now + delay;
    return {kind::wait, delay, endpoint_, streak_, r.reason};
}

reconnect_action reconnect_fsm::time_up(time_point now)
{
    if (state_ == reconnect_state::stopped)
        return just(kind::stop);  // stop() ended the wait
    if (state_ != reconnect_state::waiting || now < wait_until_)
        return {kind::wait, std::chrono::ceil<std::chrono::milliseconds>(wait_until_ - now), endpoint_, streak_, {}};
    state_ = reconnect_state::connecting;
    return connect_next();
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
        replacement_ = {};  // asked for: the same endpoint again
        return reconnect_interrupt::close_session;
    case reconnect_state::waiting:
        return retry_now(now);
    default:
        return reconnect_interrupt::none;
    }
}

reconnect_interrupt reconnect_fsm::replacement_due(time_point now)
{
    if (state_ != reconnect_state::up || replacement_.why == replacement::none || now < replacement_.at)
        return reconnect_interrupt::none;
    state_ = reconnect_state::replacing;
    return reconnect_interrupt::close_session;
}

reconnect_action reconnect_fsm::finish(reconnect_state how, error_code reason)
{
    state_ = how;
    return {how == reconnect_state::gave_up ? kind::give_up : kind::stop, {}, 0, 0, reason};
}

bool reconnect_fsm::permanent(const error_code& ec) const
{
    return s_.is_permanent ? s_.is_permanent(ec) : is_permanent(ec);
}

}  // namespace vigil::detail
