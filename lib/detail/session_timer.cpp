// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "session_timer.hpp"

#include <boost/asio/io_context.hpp>

namespace vigil::detail {

session_timer::session_timer(const boost::asio::any_io_executor& ex, callback fire, callback settled, void* owner)
    : fire_(fire), settled_(settled), owner_(owner)
{
    // The session runs on the context's own executor only when one thread runs the context
    // (detail::serialized()); then it may share the context's wheel.
    if (const auto* io = ex.target<boost::asio::io_context::executor_type>()) {
        wheel_ = &boost::asio::use_service<timer_wheel>(io->context());
        entry_.fire = &session_timer::on_wheel;
        entry_.arg = this;
    } else {
        timer_ = std::make_unique<boost::asio::steady_timer>(ex);
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
    if (waits_ > 0 && armed_at_ <= when)
        return;
    timer_->expires_at(when);  // cancels the pending wait, if any
    armed_at_ = when;
    ++waits_;
    timer_->async_wait(wait_handler{this});
}

void session_timer::stop() noexcept
{
    if (state_ == state::stopped)
        return;
    state_ = state::stopped;
    if (wheel_) {
        wheel_->cancel(entry_);  // at once: nothing stays pending
        return;
    }
    if (waits_ > 0)
        timer_->cancel();
}

void session_timer::on_wheel(void* self)
{
    auto& t = *static_cast<session_timer*>(self);
    if (t.state_ == state::running)
        t.fire_(t.owner_);
}

void session_timer::on_wait(error_code ec)
{
    --waits_;
    if (waits_ == 0)
        armed_at_ = time_point::max();
    if (state_ == state::stopped) {
        if (waits_ == 0)
            settled_(owner_);
        return;
    }
    if (!ec)
        fire_(owner_);
}

}  // namespace vigil::detail
