// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// session_config::max_receive_rate: a token bucket over the bytes read from one peer, with
// no clock of its own. The reader charges what each read brought and, when the peer is
// ahead of its rate, stops reading for as long as the bucket needs to refill: TCP then slows
// the peer down, and nothing is dropped. Unit-tested with a fake clock
// (tests/unit/test_memory_budget.cpp).

#include <algorithm>
#include <chrono>
#include <cstddef>

namespace vigil::detail {

class receive_throttle {
public:
    using time_point = std::chrono::steady_clock::time_point;
    using duration = std::chrono::steady_clock::duration;

    /// `rate` bytes per second (zero: no limit), with a burst of one second's worth.
    void start(std::size_t rate, time_point now) noexcept
    {
        rate_ = static_cast<double>(rate);
        tokens_ = rate_;
        at_ = now;
    }

    /// `bytes` arrived at `now`: how long to stop reading before the next read (zero: go on).
    duration charge(std::size_t bytes, time_point now) noexcept
    {
        if (rate_ <= 0)
            return duration::zero();
        const std::chrono::duration<double> passed = now - at_;
        at_ = now;
        tokens_ = std::min(rate_, tokens_ + passed.count() * rate_) - static_cast<double>(bytes);
        if (tokens_ >= 0)
            return duration::zero();
        return std::chrono::duration_cast<duration>(std::chrono::duration<double>(-tokens_ / rate_));
    }

private:
    double rate_ = 0;
    double tokens_ = 0;
    time_point at_{};
};

}  // namespace vigil::detail
