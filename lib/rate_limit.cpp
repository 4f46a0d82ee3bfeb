// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/rate_limit.hpp>

#include "detail/window_limit.hpp"

namespace vigil {

error_code validate(const rate_limits& limits, std::string* detail)
{
    auto fail = [&](std::string what) {
        if (detail)
            *detail = std::move(what);
        return error_code(error::invalid_config);
    };
    if (limits.connects > 0 && limits.connect_window.count() <= 0)
        return fail("rate_limits.connect_window (" + std::to_string(limits.connect_window.count()) +
                    " ms) must be positive when connects is set");
    if (limits.messages > 0 && limits.message_window.count() <= 0)
        return fail("rate_limits.message_window (" + std::to_string(limits.message_window.count()) +
                    " ms) must be positive when messages is set");
    return {};
}

rate_limiter::clock_type::time_point rate_limiter::reserve_connect(clock_type::time_point now)
{
    std::lock_guard lock(mutex_);
    ++reserved_;
    return detail::reserve_in_window(reserved_turns_, limits_.connects, limits_.connect_window, now);
}

rate_limiter::clock_type::time_point rate_limiter::begin_connect(clock_type::time_point now)
{
    std::lock_guard lock(mutex_);
    return detail::admit_in_window(begun_, limits_.connects, limits_.connect_window, now);
}

std::size_t rate_limiter::connects_reserved() const
{
    std::lock_guard lock(mutex_);
    return reserved_;
}

}  // namespace vigil
