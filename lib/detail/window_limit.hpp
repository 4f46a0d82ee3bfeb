// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// "At most n events in any window of length w", with no clock of its own: each reservation
// gets the earliest moment that keeps every window within n. Used for connects shared by
// many supervisors (rate_limiter, under its mutex) and for one connection's messages.
// Unit-tested with a fake clock (tests/unit/test_rate_limit.cpp).

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <deque>

namespace vigil::detail {

/// The rule itself, over the last `count` reservations (oldest first), which it updates:
/// reserves one event asked for at `now` and returns when it may happen. Reservations come
/// out in order, each no earlier than the one before, so the last `count` decide the next.
inline std::chrono::steady_clock::time_point reserve_in_window(std::deque<std::chrono::steady_clock::time_point>& recent,
                                                               std::size_t count, std::chrono::milliseconds window,
                                                               std::chrono::steady_clock::time_point now)
{
    if (count == 0)
        return now;
    auto at = now;
    if (recent.size() >= count)
        at = std::max(at, recent.front() + window);
    if (!recent.empty())
        at = std::max(at, recent.back());
    recent.push_back(at);
    while (recent.size() > count)
        recent.pop_front();
    return at;
}

class window_limit {
public:
    using time_point = std::chrono::steady_clock::time_point;

    /// `count` zero: no limit.
    window_limit(std::size_t count, std::chrono::milliseconds window) : count_(count), window_(window) {}

    time_point reserve(time_point now) { return reserve_in_window(recent_, count_, window_, now); }

    /// Forgets every reservation (a new connection starts with a fresh count).
    void clear() noexcept { recent_.clear(); }

private:
    std::size_t count_;
    std::chrono::milliseconds window_;
    std::deque<time_point> recent_;
};

}  // namespace vigil::detail
