// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Argument parsing shared by vigil-probe and vigil-serve, so that the two command-line
// faces read numbers and seconds the same way and word their usage errors alike.

#include <vigil/config.hpp>

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
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

/// The permessage-deflate flags both tools share; false when `flag` is none of them.
/// `value` returns the flag's value, `no_value` refuses one.
template <class Value, class NoValue>
bool parse_deflate_flag(std::string_view flag, Value&& value, NoValue&& no_value, vigil::deflate_config& d)
{
    auto in_range = [&](std::size_t lo, std::size_t hi) {
        const auto n = parse_count(flag, value());
        if (n < lo || n > hi)
            throw usage_error{std::string(flag) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]"};
        return static_cast<int>(n);
    };
    if (flag == "--deflate") {
        no_value();
        d.enabled = true;
    } else if (flag == "--deflate-context-takeover") {
        no_value();
        d.client_no_context_takeover = false;
        d.server_no_context_takeover = false;
    } else if (flag == "--deflate-no-context-takeover") {
        no_value();
        d.client_no_context_takeover = true;
        d.server_no_context_takeover = true;
    } else if (flag == "--deflate-window-bits") {
        d.client_max_window_bits = d.server_max_window_bits = in_range(9, 15);
    } else if (flag == "--deflate-level") {
        d.level = in_range(0, 9);
    } else if (flag == "--deflate-threshold") {
        d.threshold = parse_count(flag, value());
    } else {
        return false;
    }
    return true;
}

/// The lines of --help for the flags above; `context_default` says what the tool does
/// without --deflate-context-takeover / --deflate-no-context-takeover.
inline std::string deflate_usage(std::string_view what, std::string_view context_default)
{
    return "  --deflate              " + std::string(what) + " permessage-deflate (RFC 7692)\n"
           "  --deflate-context-takeover / --deflate-no-context-takeover\n"
           "                         keep the compression history between messages (better\n"
           "                         ratio on repeated keys) or start each message afresh\n"
           "                         (default: " + std::string(context_default) + ")\n"
           "  --deflate-window-bits N  largest window, 2^N bytes, both directions (9..15,\n"
           "                         default 15)\n"
           "  --deflate-level N      zlib level 0..9 for what this side sends (default 6)\n"
           "  --deflate-threshold BYTES  send shorter messages uncompressed (default 64)\n";
}

/// --metrics-port and --metrics-bind: where to serve Prometheus metrics. The tools are built
/// with VIGIL_CLI_PROMETHEUS where prometheus-cpp was found; without it, both flags say so.
struct metrics_listener {
    std::optional<std::uint16_t> port;  // no listener without --metrics-port
    std::string bind = "127.0.0.1";
};

template <class Value>
bool parse_metrics_flag(std::string_view tool, std::string_view flag, Value&& value, metrics_listener& m)
{
    if (flag != "--metrics-port" && flag != "--metrics-bind")
        return false;
    const std::string_view text = value();
#ifndef VIGIL_CLI_PROMETHEUS
    (void)m;
    (void)text;
    throw usage_error{std::string(flag) + ": this " + std::string(tool) +
                      " was built without prometheus-cpp (no metrics listener)"};
#else
    (void)tool;
    if (flag == "--metrics-bind") {
        if (text.empty())
            throw usage_error{"--metrics-bind needs an address"};
        m.bind = std::string(text);
        return true;
    }
    const auto port = parse_count(flag, text);
    if (port > 65535)
        throw usage_error{"--metrics-port: '" + std::string(text) + "' is not a port (0-65535)"};
    m.port = static_cast<std::uint16_t>(port);
    return true;
#endif
}

/// The lines of --help for the flags above; `which` says whose metrics and where the port
/// picked is reported.
inline std::string metrics_usage(std::string_view which)
{
    return "  --metrics-port P       serve Prometheus metrics (GET /metrics) on port P (0: the system\n"
           "                         picks one): " + std::string(which) + ";\n"
           "                         needs a build with prometheus-cpp, else exit 64\n"
           "  --metrics-bind ADDR    address for --metrics-port (default 127.0.0.1)\n";
}

}  // namespace vigil_cli
