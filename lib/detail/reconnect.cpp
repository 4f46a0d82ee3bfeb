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
    replacing_ = replacement_phase::none;
    replacement_failures_ = 0;
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
    plan_replacement(now, draw);
}

// The connection came up at `now`: when it is to be replaced unasked.
void reconnect_fsm::plan_replacement(time_point now, double draw)
{
    up_since_ = now;
    replacement_ = {};
    replacement_failures_ = 0;
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
    if (state_ == reconnect_state::up || state_ == reconnect_state::replacing)
        reset_if_stable(now);
    if (state_ == reconnect_state::up && replacing_ != replacement_phase::none)
        return live_ended_while_replacing(r);
    if (state_ == reconnect_state::replacing) {
        // Planned: however the old session ended, the next attempt starts now, and the
        // streak stays what it was (a planned reconnect is neither a failure nor a success).
        // A backup's replacement goes to the primary when failing back is configured.
        endpoint_ = endpoint_for(replacement_.why);
        state_ = reconnect_state::connecting;
        return connect_next();
    }
    return classify_failure(r, now);
}

reconnect_action reconnect_fsm::classify_failure(const attempt_result& r, time_point now)
{
    if (r.reason == boost::asio::error::operation_aborted)
        return finish(reconnect_state::stopped, r.reason);
    if (!r.reason)
        return finish(reconnect_state::stopped, {});  // the application closed it cleanly
    if (permanent(r.reason))
        return finish(reconnect_state::gave_up, r.reason);
    return retry_after_failure(r, now);
}

void reconnect_fsm::reset_if_stable(time_point now)
{
    if (up_since_ != time_point{} && now - up_since_ >= s_.stable_after) {
        policy_->reset();
        streak_ = 0;
    }
}

// Make-before-break: the live connection ended while its replacement was being opened. The
// replacement carries on as the supervisor's attempt (no failure counted: the connection it
// was to replace is the one that ended); stop and a permanent reason end run() as always.
reconnect_action reconnect_fsm::live_ended_while_replacing(const attempt_result& r)
{
    if (r.reason == boost::asio::error::operation_aborted)
        return finish(reconnect_state::stopped, r.reason);
    if (r.reason && permanent(r.reason))
        return finish(reconnect_state::gave_up, r.reason);
    role_ = replacement_role::attempt;
    endpoint_ = replacement_endpoint_;
    state_ = replacing_ == replacement_phase::hooking ? reconnect_state::running_hook : reconnect_state::connecting;
    up_since_ = {};
    replacement_ = {};
    return just(kind::await_replacement);
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
    case reconnect_state::up:
        if (s_.make_before_break)
            return replacing_ == replacement_phase::none ? begin_replacement(replacement::requested)
                                                         : reconnect_interrupt::none;
        [[fallthrough]];
    case reconnect_state::running_hook:
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
    if (state_ != reconnect_state::up || replacing_ != replacement_phase::none ||
        replacement_.why == replacement::none || now < replacement_.at)
        return reconnect_interrupt::none;
    if (s_.make_before_break)
        return begin_replacement(replacement_.why);
    state_ = reconnect_state::replacing;
    return reconnect_interrupt::close_session;
}

reconnect_interrupt reconnect_fsm::begin_replacement(vigil::detail::replacement why)
{
    replacing_ = replacement_phase::opening;
    role_ = replacement_role::beside_live;
    replacement_endpoint_ = endpoint_for(why);
    replacement_ = {time_point::max(), why};  // nothing more is due while it is opened
    return reconnect_interrupt::open_replacement;
}

// A backup's replacement goes to the primary when failing back is configured.
std::size_t reconnect_fsm::endpoint_for(vigil::detail::replacement why) const noexcept
{
    if (why == replacement::failback || (why == replacement::max_connection_age && s_.failback_after.count() > 0))
        return 0;
    return endpoint_;
}

reconnect_action reconnect_fsm::replacement_connected()
{
    switch (state_) {
    case reconnect_state::up:
        replacing_ = replacement_phase::hooking;
        return just(kind::run);
    case reconnect_state::connecting:  // the live connection ended: this is the attempt now
        replacing_ = replacement_phase::hooking;
        state_ = reconnect_state::running_hook;
        return just(kind::run);
    default:  // stop() came: close what was just opened, then report it failed
        return just(kind::close_session);
    }
}

reconnect_action reconnect_fsm::replacement_up(time_point now, double draw)
{
    replacing_ = replacement_phase::none;
    switch (state_) {
    case reconnect_state::up:
        // The old connection's time ends here, as if it had ended: stable, it resets the streak.
        reset_if_stable(now);
        endpoint_ = replacement_endpoint_;
        plan_replacement(now, draw);
        return just(kind::hand_over);
    case reconnect_state::running_hook:
        hook_succeeded(now, draw);
        return just(kind::adopt);
    default:
        return just(kind::stop);  // stop() came: the caller closes it
    }
}

reconnect_action reconnect_fsm::replacement_failed(const attempt_result& r, time_point now)
{
    replacing_ = replacement_phase::none;
    switch (state_) {
    case reconnect_state::up: {
        // The live connection stays. Transient: try again later; permanent (or cancelled):
        // no more tries for this connection, whose own end then leads to a regular attempt.
        if (++replacement_failures_ == 1)
            replacement_failing_since_ = now;
        if (r.reason == boost::asio::error::operation_aborted || permanent(r.reason)) {
            replacement_ = {};
            return {kind::keep, std::chrono::milliseconds::zero(), replacement_endpoint_, replacement_failures_,
                    r.reason};
        }
        const auto delay = replacement_.why == replacement::failback ? s_.failback_after
                                                                     : replacement_retry_delay(r, now);
        replacement_.at = now + delay;
        return {kind::keep, delay, replacement_endpoint_, replacement_failures_, r.reason};
    }
    case reconnect_state::connecting:
    case reconnect_state::running_hook:
        return classify_failure(r, now);  // it was the attempt: a failure like any other
    case reconnect_state::stopping:
        if (role_ == replacement_role::attempt)
            return finish(reconnect_state::stopped, {});
        return just(kind::stop);  // the live connection's end will end run()
    default:
        return just(kind::stop);
    }
}

// The policy's delay (asked as for a streak of this replacement's failures), no later than
// halfway to the moment the server is expected to cut (max_connection_age after the
// connection came up), so that several tries fit before it; then the usual floors.
std::chrono::milliseconds reconnect_fsm::replacement_retry_delay(const attempt_result& r, time_point now)
{
    retry_context ctx;
    ctx.attempt = replacement_failures_;
    ctx.reason = r.reason;
    ctx.retry_after = r.retry_after;
    ctx.failing_for = std::chrono::duration_cast<std::chrono::milliseconds>(now - replacement_failing_since_);
    ctx.previous_delay = replacement_failures_ == 1 ? std::chrono::milliseconds::zero() : replacement_last_delay_;
    ctx.last = r.last;
    auto delay = policy_->next_delay(ctx);
    if (s_.max_connection_age > std::chrono::milliseconds::zero()) {
        const auto cut = up_since_ + s_.max_connection_age;
        if (cut > now)
            delay = std::min(delay, std::chrono::ceil<std::chrono::milliseconds>((cut - now) / 2));
    }
    delay = std::max(delay, s_.min_delay);
    if (s_.max_retry_after > std::chrono::milliseconds::zero() && r.retry_after > std::chrono::milliseconds::zero())
        delay = std::max(delay, std::min(r.retry_after, s_.max_retry_after));
    if (close_code_of(r.reason) == 1008)
        delay = std::max(delay, s_.policy_violation_delay);
    replacement_last_delay_ = delay;
    return delay;
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
