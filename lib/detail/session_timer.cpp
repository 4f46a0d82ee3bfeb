// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "session_timer.hpp"

#include <boost/asio/io_context.hpp>

namespace vigil::detail {

session_timer::session_timer(const boost::asio::any_io_executor& ex, callback fire, callback settled, void* owner)
    : owner_(owner)
{
    // The session runs on the context's own executor only when one thread runs the context
    // (detail::serialized()); then it may share the context's wheel, whose entries complete
    // nothing when dropped, so `settled` is never needed.
    if (const auto* io = ex.target<boost::asio::io_context::executor_type>()) {
        wheel_ = &boost::asio::use_service<timer_wheel>(io->context());
        entry_.fire = fire;
        entry_.arg = owner;
    } else {
        own_ = std::make_unique<own_timer>(ex, fire, settled);
    }
}

session_timer::~session_timer()
{
    if (wheel_)
        wheel_->cancel(entry_);
}

void session_timer::arm(time_point when)
{
    if (state_ == state::stopped || when == time_point::max())
        return;
    when = on_grid(when);
    if (wheel_) {
        if (entry_.linked && entry_.when <= when)
            return;
        wheel_->cancel(entry_);
        wheel_->schedule(entry_, when);
        return;
    }
    // A wait that ends no later already brings the session back in time to look again.
    if (own_->waits > 0 && own_->armed_at <= when)
        return;
    own_->timer.expires_at(when);  // cancels the pending wait, if any
    own_->armed_at = when;
    ++own_->waits;
    own_->timer.async_wait(wait_handler{this});
}

void session_timer::stop() noexcept
{
    if (state_ == state::stopped)
        return;
    state_ = state::stopped;
    if (wheel_)
        wheel_->cancel(entry_);  // at once: nothing stays pending
    else if (own_->waits > 0)
        own_->timer.cancel();
}

void session_timer::on_wait(error_code ec)
{
    own_->fired_for = own_->timer.expiry();
    --own_->waits;
    if (own_->waits == 0)
        own_->armed_at = time_point::max();
    if (state_ == state::stopped) {
        if (own_->waits == 0)
            own_->settled(owner_);
        return;
    }
    if (!ec)
        own_->fire(owner_);
}

}  // namespace vigil::detail
