// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "memory_budget.hpp"

#include <algorithm>

namespace vigil::detail {

budget_account::~budget_account()
{
    budget_->change(total(), 0);
}

std::size_t budget_account::total() const noexcept
{
    return held(holding_part::message) + held(holding_part::received) + held(holding_part::sending);
}

holding_part budget_account::largest() const noexcept
{
    auto best = holding_part::message;
    for (auto p : {holding_part::received, holding_part::sending})
        if (held(p) > held(best))
            best = p;
    return best;
}

bool budget_account::press(std::chrono::steady_clock::time_point now) noexcept
{
    return budget_->press(now);
}

bool budget_account::grow_message(std::size_t bytes) noexcept
{
    const auto before = held(holding_part::message);
    if (bytes <= before || budget_->limit_ == 0) {
        set(holding_part::message, bytes);
        return true;
    }
    const auto others = total() - before;
    const auto line = others + bytes <= memory_budget::light_holding ? budget_->limit_ : budget_->heavy_line();
    if (!budget_->try_grow(before + others, others + bytes, line))
        return false;
    part(holding_part::message).store(bytes, std::memory_order_relaxed);
    return true;
}

void budget_account::set(holding_part p, std::size_t bytes) noexcept
{
    const auto before = total();
    part(p).store(bytes, std::memory_order_relaxed);
    budget_->change(before, total());
}

bool budget_account::must_hold_back() const noexcept
{
    if (budget_->limit_ == 0)
        return false;
    const auto line = total() <= memory_budget::light_holding ? budget_->limit_ : budget_->heavy_line();
    return budget_->total() > line;
}

void memory_budget::change(std::size_t from, std::size_t to) noexcept
{
    if (to >= from) {
        const auto now = total_.fetch_add(to - from, std::memory_order_relaxed) + (to - from);
        auto peak = peak_.load(std::memory_order_relaxed);
        while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
        }
    } else {
        total_.fetch_sub(from - to, std::memory_order_relaxed);
    }
}

bool memory_budget::try_grow(std::size_t from, std::size_t to, std::size_t line) noexcept
{
    // Exact under concurrency: the grant and the check are one step, so connections on
    // several threads cannot together overshoot the line.
    auto total = total_.load(std::memory_order_relaxed);
    do {
        if (total - std::min(total, from) + to > line)
            return false;
    } while (!total_.compare_exchange_weak(total, total - from + to, std::memory_order_relaxed));
    const auto now = total - from + to;
    auto peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    return true;
}

bool memory_budget::press(time_point now) noexcept
{
    denied_.store(true, std::memory_order_relaxed);
    duration::rep none = 0;
    const auto at = std::max<duration::rep>(now.time_since_epoch().count(), 1);
    return since_.compare_exchange_strong(none, at, std::memory_order_relaxed);
}

memory_budget::time_point memory_budget::due() const noexcept
{
    const auto since = since_.load(std::memory_order_relaxed);
    if (since == 0)
        return time_point::max();
    return time_point(duration(since)) + grace_;
}

bool memory_budget::verdict(time_point now) noexcept
{
    if (!pressed())
        return false;
    const bool denied = denied_.exchange(false, std::memory_order_relaxed);
    if (!denied && total() <= heavy_line()) {
        // Back under the line: whoever was held back reads again, and nobody has to go.
        since_.store(0, std::memory_order_relaxed);
        return false;
    }
    if (now < due())
        return false;
    since_.store(std::max<duration::rep>(now.time_since_epoch().count(), 1), std::memory_order_relaxed);
    return true;
}

std::vector<std::uint64_t> memory_budget::choose(std::vector<holder> holders) const
{
    std::sort(holders.begin(), holders.end(), [](const holder& a, const holder& b) { return a.bytes > b.bytes; });
    std::vector<std::uint64_t> out;
    auto left = total();
    for (const auto& h : holders) {
        if (h.bytes == 0 || (!out.empty() && left <= limit_ / 2))
            break;
        out.push_back(h.id);
        left -= std::min(left, h.bytes);
    }
    return out;
}

}  // namespace vigil::detail
