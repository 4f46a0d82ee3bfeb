// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace vigil::detail {

/// User input quoted in an error detail ends up in logs: keep it on one line and short.
/// Control characters become \xNN; with `escape_quotes`, `"` and `\` are backslashed so the
/// text can sit between double quotes. Longer input is cut at about `max_shown` characters
/// and marked with "...".
inline std::string printable(std::string_view s, std::size_t max_shown, bool escape_quotes)
{
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    std::size_t shown = 0;
    for (; shown < s.size() && out.size() < max_shown; ++shown) {
        const char c = s[shown];
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            out += "\\x";
            out += hex[u >> 4];
            out += hex[u & 0xf];
        } else {
            if (escape_quotes && (c == '"' || c == '\\'))
                out += '\\';
            out += c;
        }
    }
    if (shown < s.size())
        out += "...";
    return out;
}

/// A URL as shown in messages, between double quotes: its user info (which may hold a
/// password) masked as ***, the rest printable().
inline std::string quoted_url(std::string_view url)
{
    std::string shown(url);
    const auto slashes = shown.find("://");
    const auto start = slashes == std::string::npos ? 0 : slashes + 3;
    const auto end = shown.find_first_of("/?#", start);
    const auto at = shown.rfind('@', end == std::string::npos ? std::string::npos : end);
    if (at != std::string::npos && at >= start)
        shown.replace(start, at - start, "***");
    return '"' + printable(shown, 120, true) + '"';
}

}  // namespace vigil::detail
