// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "address_limits.hpp"

#include "window_limit.hpp"

#include <algorithm>

namespace vigil::detail {

address_key address_key::of(const boost::asio::ip::address& a) noexcept
{
    address_key k;
    if (a.is_v6() && a.to_v6().is_v4_mapped()) {
        const auto b = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6()).to_bytes();
        std::copy(b.begin(), b.end(), k.bytes.begin());
    } else if (a.is_v6()) {
        k.bytes = a.to_v6().to_bytes();
        k.v6 = true;
    } else {
        const auto b = a.to_v4().to_bytes();
        std::copy(b.begin(), b.end(), k.bytes.begin());
    }
    return k;
}

std::string address_key::to_string() const
{
    if (v6)
        return boost::asio::ip::address_v6(bytes).to_string();
    return boost::asio::ip::address_v4({bytes[0], bytes[1], bytes[2], bytes[3]}).to_string();
}

address_limits::address_limits(std::size_t max_open, std::size_t connects, std::chrono::milliseconds window,
                               std::size_t max_records)
    : max_open_(max_open), connects_(connects), window_(window), max_records_(std::max<std::size_t>(max_records, 1))
{
}

void address_limits::prune(time_point now)
{
    while (!idle_.empty() && idle_.begin()->first <= now) {
        entries_.erase(idle_.begin()->second);
        idle_.erase(idle_.begin());
    }
}

// Nothing open any more: kept while its last connect is within the window (so that the
// rate still holds), at most max_records_ of them.
void address_limits::make_idle(map_type::iterator it, time_point now)
{
    auto& e = it->second;
    if (connects_ == 0 || e.recent.empty() || e.recent.back() + window_ <= now) {
        entries_.erase(it);
        return;
    }
    e.forget_at = e.recent.back() + window_;
    if (idle_.size() >= max_records_) {
        // A flood of distinct addresses: forget the record that would leave first anyway.
        entries_.erase(idle_.begin()->second);
        idle_.erase(idle_.begin());
    }
    idle_.emplace(e.forget_at, it->first);
}

address_limits::verdict address_limits::admit(const address_key& a, time_point now)
{
    verdict v;
    if (!enabled())
        return v;
    prune(now);
    auto [it, fresh] = entries_.try_emplace(a);
    auto& e = it->second;
    if (fresh && connects_ > 0)
        e.recent.set_capacity(connects_);
    if (max_open_ > 0 && e.open >= max_open_) {
        v.what = verdict::kind::too_many_open;
        v.count = e.open;
        return v;
    }
    // Counts the connect when it is let in; a refusal leaves the window as it was.
    if (const auto free_at = admit_in_window(e.recent, connects_, window_, now); free_at != now) {
        using namespace std::chrono;
        v.what = verdict::kind::too_fast;
        v.count = e.recent.size();
        v.retry_after = duration_cast<milliseconds>(std::max(ceil<seconds>(free_at - now), seconds(1)));
        return v;  // not fresh: a fresh entry has room
    }
    if (e.open++ == 0 && !fresh)
        idle_.erase({e.forget_at, a});
    return v;
}

void address_limits::released(const address_key& a, time_point now)
{
    auto it = entries_.find(a);
    if (it == entries_.end() || it->second.open == 0)
        return;
    if (--it->second.open == 0) {
        prune(now);
        make_idle(it, now);
    }
}

std::size_t address_limits::open(const address_key& a) const
{
    auto it = entries_.find(a);
    return it == entries_.end() ? 0 : it->second.open;
}

}  // namespace vigil::detail
