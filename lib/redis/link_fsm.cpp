// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "link_fsm.hpp"

#include <algorithm>

namespace vigil::detail {

namespace {

using kind = redis_action::kind;

redis_action act(kind k) { return redis_action{k, {}, std::chrono::milliseconds(0), 0, redis_conn::subscriber}; }

}  // namespace

bool redis_link_fsm::setting_up() const noexcept
{
    return phase_ == redis_phase::connecting || phase_ == redis_phase::authenticating ||
           phase_ == redis_phase::subscribing;
}

void redis_link_fsm::reset_connections()
{
    for (auto& c : conns_)
        c = conn_state{};
}

redis_link_fsm::time_point redis_link_fsm::next_deadline() const noexcept
{
    if (phase_ == redis_phase::backing_off)
        return wait_until_;
    if (phase_ == redis_phase::idle || phase_ == redis_phase::stopped)
        return time_point::max();
    time_point t = setting_up() ? setup_deadline_ : time_point::max();
    for (const auto& c : conns_) {
        if (!c.outstanding.empty())
            t = std::min(t, c.outstanding.front().deadline);
        else if (phase_ == redis_phase::ready)
            t = std::min(t, c.last_activity + s_.ping_interval);
    }
    return t;
}

redis_action redis_link_fsm::start(time_point now)
{
    if (phase_ != redis_phase::idle && phase_ != redis_phase::backing_off)
        return act(kind::none);
    reset_connections();
    phase_ = redis_phase::connecting;
    setup_deadline_ = now + s_.connect_timeout;
    return act(kind::connect);
}

redis_action redis_link_fsm::opened(redis_conn c, time_point now)
{
    if (phase_ != redis_phase::connecting)
        return act(kind::none);
    at(c).open = true;
    at(c).last_activity = now;
    if (!conns_[0].open || !conns_[1].open)
        return act(kind::none);
    // Even without a password both connections are asked something first: a Redis that wants
    // one answers NOAUTH there, which is permanent, rather than to a SUBSCRIBE.
    phase_ = redis_phase::authenticating;
    return act(kind::authenticate);
}

void redis_link_fsm::sent(redis_conn c, redis_wait w, time_point now)
{
    auto bound = w == redis_wait::ping ? s_.pong_timeout : s_.command_timeout;
    at(c).outstanding.push_back({now + bound, w});
}

redis_action redis_link_fsm::replied(redis_conn c, time_point now)
{
    auto& st = at(c);
    st.last_activity = now;
    if (!st.outstanding.empty())
        st.outstanding.pop_front();
    if (phase_ == redis_phase::authenticating && conns_[0].outstanding.empty() && conns_[1].outstanding.empty()) {
        phase_ = redis_phase::subscribing;
        return act(kind::subscribe);
    }
    if (phase_ == redis_phase::subscribing && conns_[0].outstanding.empty()) {
        phase_ = redis_phase::ready;
        setup_deadline_ = time_point::max();
        streak_ = 0;
        previous_delay_ = std::chrono::milliseconds(0);
        policy_->reset();
        return act(kind::up);
    }
    return act(kind::none);
}

void redis_link_fsm::received(redis_conn c, time_point now) { at(c).last_activity = now; }

redis_action redis_link_fsm::failed(error_code reason, time_point now)
{
    if (phase_ == redis_phase::idle || phase_ == redis_phase::backing_off || phase_ == redis_phase::stopped)
        return act(kind::none);  // a late report from a connection already closed
    reset_connections();
    if (is_permanent(reason)) {
        phase_ = redis_phase::stopped;
        redis_action a = act(kind::give_up);
        a.reason = reason;
        return a;
    }
    ++streak_;
    if (streak_ == 1)
        first_failure_ = now;
    retry_context ctx;
    ctx.attempt = streak_;
    ctx.reason = reason;
    ctx.failing_for = std::chrono::duration_cast<std::chrono::milliseconds>(now - first_failure_);
    ctx.previous_delay = previous_delay_;
    auto delay = std::max(s_.min_delay, policy_->next_delay(ctx));
    previous_delay_ = delay;
    phase_ = redis_phase::backing_off;
    wait_until_ = now + delay;
    redis_action a = act(kind::back_off);
    a.reason = reason;
    a.delay = delay;
    a.attempt = streak_;
    return a;
}

redis_action redis_link_fsm::tick(time_point now)
{
    if (phase_ == redis_phase::backing_off)
        return now >= wait_until_ ? start(now) : act(kind::none);
    if (setting_up() && now >= setup_deadline_)
        return failed(error::connect_timeout, now);
    if (phase_ != redis_phase::ready && !setting_up())
        return act(kind::none);
    for (std::size_t i = 0; i < conns_.size(); ++i) {
        auto& c = conns_[i];
        if (!c.outstanding.empty()) {
            if (now >= c.outstanding.front().deadline) {
                error_code why = c.outstanding.front().why == redis_wait::ping ? error_code(error::pong_timeout)
                                                                               : error_code(error::redis_command_timeout);
                return failed(why, now);
            }
        } else if (phase_ == redis_phase::ready && now >= c.last_activity + s_.ping_interval) {
            redis_action a = act(kind::ping);
            a.conn = static_cast<redis_conn>(i);
            return a;
        }
    }
    return act(kind::none);
}

redis_action redis_link_fsm::stop()
{
    if (phase_ == redis_phase::stopped)
        return act(kind::none);
    phase_ = redis_phase::stopped;
    reset_connections();
    return act(kind::stop);
}

}  // namespace vigil::detail
