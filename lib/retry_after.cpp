// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/retry_after.hpp>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <string>

namespace vigil {

namespace {

constexpr std::chrono::milliseconds longest{std::chrono::hours(24)};

std::string_view trim(std::string_view v)
{
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
    return v;
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value,
                                                           std::chrono::system_clock::time_point now)
{
    value = trim(value);
    if (value.empty() || value.size() > 64)
        return std::nullopt;
    if (std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) {
        // delay-seconds; anything longer than a day is clamped before it can overflow.
        while (value.size() > 1 && value.front() == '0')
            value.remove_prefix(1);
        if (value.size() > 6)
            return longest;
        return std::min(longest, std::chrono::milliseconds(std::stoll(std::string(value)) * 1000));
    }
    // HTTP-date (RFC 9110 5.6.7): IMF-fixdate, then the two obsolete forms recipients must accept.
    const std::string text(value);
    for (const char* format : {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y"}) {
        std::tm tm{};
        const char* end = ::strptime(text.c_str(), format, &tm);
        if (!end || *end != '\0')
            continue;
        const std::time_t when = ::timegm(&tm);
        if (when == static_cast<std::time_t>(-1))
            return std::nullopt;
        // system_clock counts nanoseconds and ends in 2262: compare in seconds first.
        const std::time_t now_t = std::chrono::system_clock::to_time_t(now);
        if (when < now_t)
            return std::chrono::milliseconds(0);
        if (when - now_t > 86400)
            return longest;
        const auto at = std::chrono::system_clock::from_time_t(when);
        if (at <= now)
            return std::chrono::milliseconds(0);
        return std::min(longest, std::chrono::duration_cast<std::chrono::milliseconds>(at - now));
    }
    return std::nullopt;
}

}  // namespace vigil
