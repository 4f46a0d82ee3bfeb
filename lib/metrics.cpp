// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <vigil/metrics.hpp>

#include <boost/asio/error.hpp>

#include <algorithm>

namespace vigil {

void duration_histogram::observe(std::chrono::microseconds d) noexcept
{
    const auto us = std::max<std::int64_t>(d.count(), 0);
    const auto at = std::lower_bound(bounds_us.begin(), bounds_us.end(), us);
    ++counts[static_cast<std::size_t>(at - bounds_us.begin())];
    sum += std::chrono::microseconds{us};
    ++count;
}

void duration_histogram::merge(const duration_histogram& other) noexcept
{
    for (std::size_t i = 0; i < counts.size(); ++i)
        counts[i] += other.counts[i];
    sum += other.sum;
    count += other.count;
}

std::string disconnect_label(const error_code& reason)
{
    if (!reason)
        return "clean";
    if (reason.category() == error_category())
        return error_name(reason);  // one of the enumerators' names
    if (reason.category() == close_code_category())
        return "closed_by_peer";
    if (reason.category() == http_status_category())
        return "handshake_rejected";
    if (reason == boost::asio::error::operation_aborted)
        return "cancelled";
    return "network_error";
}

}  // namespace vigil
