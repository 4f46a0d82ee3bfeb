// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/error.hpp>

#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>

namespace vigil {

/// A server's limits, as exchanges publish them (Binance: 300 connects per 5 minutes per
/// IP, 5 messages per second per connection, pings included). Durations are milliseconds;
/// seconds and minutes convert implicitly.
struct rate_limits {
    /// At most this many connection attempts in any `connect_window`, across every
    /// supervisor sharing the limiter. Default 0: no limit.
    std::size_t connects = 0;
    std::chrono::milliseconds connect_window{std::chrono::minutes(5)};

    /// At most this many messages in any `message_window` on each connection, counting the
    /// heartbeat's pings: the supervisor keeps room for as many pings as the heartbeat can
    /// send in a window (`message_window / ping_interval`, rounded up) and paces the outbox
    /// with the rest. Default 0: no limit.
    std::size_t messages = 0;
    std::chrono::milliseconds message_window{1000};
};

/// Checks `limits`: a window must be positive where its count is set.
error_code validate(const rate_limits& limits, std::string* detail = nullptr);

/// Limits shared by many supervisors (`supervisor_config::limiter`), so that a fleet of
/// connections to one exchange stays under its limits by construction: after an outage,
/// hundreds of supervisors reconnecting together take their turns.
///
/// Connection attempts are counted in a sliding window, in two steps. An attempt first
/// reserves its turn: the earliest moment that keeps every window of reservations within
/// `connects`, so that waiting attempts queue in order instead of all waking at once. When
/// its turn comes (and after the supervisor's `before_attempt` hook), it asks to begin: the
/// limiter counts the moment it really begins, and if a busy event loop made earlier
/// attempts begin late, so that a window of real beginnings is full, it names a later moment
/// to ask again. The limit therefore holds for when connects really start, which is what a
/// server counts. The waits are part of the attempt: `stop()` ends them, `retry_now()` does
/// not shorten them, and a reserved turn stays used, erring on the safe side. Message limits
/// apply per connection; the limiter only holds them.
///
/// **Thread safety:** every member function is safe from any thread; supervisors on
/// different threads may share one limiter. Keep it alive as long as a supervisor uses it
/// (they hold it by `shared_ptr`).
class rate_limiter {
public:
    using clock_type = std::chrono::steady_clock;

    /// Limits as given; a supervisor using an invalid one ends `run()` with `invalid_config`.
    explicit rate_limiter(rate_limits limits) : limits_(limits) {}
    rate_limiter(const rate_limiter&) = delete;
    rate_limiter& operator=(const rate_limiter&) = delete;

    const rate_limits& limits() const noexcept { return limits_; }

    /// Reserves a connection attempt's turn, asked for at `now`: returns when to ask
    /// `begin_connect()` (`now`, or later when the window of reservations is full).
    clock_type::time_point reserve_connect(clock_type::time_point now = clock_type::now());

    /// A connection attempt is about to begin at `now`. Returns `now` when it may, and then
    /// counts it; otherwise the moment to ask again (when the oldest beginning in the window
    /// leaves it), and counts nothing.
    clock_type::time_point begin_connect(clock_type::time_point now = clock_type::now());

    /// Connection attempts reserved so far.
    std::size_t connects_reserved() const;

private:
    const rate_limits limits_;
    mutable std::mutex mutex_;
    std::deque<clock_type::time_point> reserved_turns_;  // the last `connects` reservations, in order
    std::deque<clock_type::time_point> begun_;  // the last `connects` real beginnings, in order
    std::size_t reserved_ = 0;
};

}  // namespace vigil
