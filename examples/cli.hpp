// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Argument parsing shared by vigil-probe and vigil-serve, so that the two command-line
// faces read numbers and seconds the same way and word their usage errors alike.

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>
#include <system_error>

namespace vigil_cli {

/// Thrown for bad arguments; main() prints it and exits 64 (sysexits.h EX_USAGE).
struct usage_error {
    std::string message;
};

/// Seconds, fractions allowed ("0.5"), as milliseconds. Never negative, never absurd.
inline std::chrono::milliseconds parse_seconds(std::string_view flag, std::string_view text)
{
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value))
        throw usage_error{std::string(flag) + ": '" + std::string(text) + "' is not a number of seconds"};
    if (value < 0)
        throw usage_error{std::string(flag) + ": '" + std::string(text) + "' is negative"};
    // Past this the millisecond count would overflow; nobody means a billion seconds.
    if (value > 1e9)
        throw usage_error{std::string(flag) + ": '" + std::string(text) + "' is too large"};
    return std::chrono::milliseconds(std::llround(value * 1000.0));
}

/// A whole number, nothing else in the text.
inline std::size_t parse_count(std::string_view flag, std::string_view text)
{
    std::size_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size())
        throw usage_error{std::string(flag) + ": '" + std::string(text) + "' is not a whole number"};
    return value;
}

/// "N/S": at most N events in any S seconds (S > 0, fractions allowed), e.g. "5/1".
struct rate {
    std::size_t count = 0;
    std::chrono::milliseconds window{0};
};

inline rate parse_rate(std::string_view flag, std::string_view text)
{
    const auto slash = text.find('/');
    if (slash == std::string_view::npos)
        throw usage_error{std::string(flag) + ": '" + std::string(text) + "' is not N/S (at most N per S seconds)"};
    rate r{parse_count(flag, text.substr(0, slash)), parse_seconds(flag, text.substr(slash + 1))};
    if (r.count == 0 || r.window.count() <= 0)
        throw usage_error{std::string(flag) + ": '" + std::string(text) + "': N and S must be positive"};
    return r;
}

inline std::chrono::milliseconds positive(std::string_view flag, std::chrono::milliseconds d)
{
    if (d.count() <= 0)
        throw usage_error{std::string(flag) + " must be positive"};
    return d;
}

}  // namespace vigil_cli
