// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// "At most n events in any window of length w", with no clock of its own: each reservation
// gets the earliest moment that keeps every window within n (or, for what cannot wait, a
// yes or the moment to come back). Used for connects shared by many supervisors
// (rate_limiter, under its mutex), for one connection's messages, and for a server's
// connects per client address (address_limits).
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

/// The same rule for an event that happens now or not at all, over the last `count` events
/// counted (oldest first, in any container with `front`, `back`, `push_back`, `pop_front`
/// and `size`): returns `now`, and counts the event, when a window ending now holds fewer
/// than `count`; otherwise counts nothing and returns when the oldest leaves the window, the
/// first moment it may happen. Used for a fleet's real connects (rate_limiter) and for a
/// server's connects per client address (address_limits).
template <class Recent>
std::chrono::steady_clock::time_point admit_in_window(Recent& recent, std::size_t count, std::chrono::milliseconds window,
                                                      std::chrono::steady_clock::time_point now)
{
    if (count == 0)
        return now;
    if (recent.size() >= count && recent.front() + window > now)
        return recent.front() + window;
    // A clock read on another thread may be a little older than the last one counted,
    // which only makes the window look fuller.
    recent.push_back(recent.size() == 0 ? now : std::max(now, recent.back()));
    while (recent.size() > count)
        recent.pop_front();
    return now;
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
