// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// parse_url and parse_retry_after on arbitrary bytes. Both take text straight from users
// and from servers (a URL on the command line, a Retry-After header), so neither may crash,
// throw, or hand the rest of the library something it would put on the wire unchecked.

#include "check.hpp"

#include <vigil/error.hpp>
#include <vigil/session.hpp>
#include <vigil/url.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

using vigil::fuzz::escaped;

bool iequals(std::string_view a, std::string_view b)
{
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
        if (lower(a[i]) != lower(b[i]))
            return false;
    }
    return true;
}

// Bytes that must never reach the Host header, the request line or the resolver: they
// would split or corrupt the HTTP request (header injection).
bool wire_safe(std::string_view s)
{
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f)
            return false;
    }
    return true;
}

bool dns_safe(std::string_view s)
{
    for (char c : s) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
            || c == '.' || c == '_';
        if (!ok)
            return false;
    }
    return true;
}

std::string describe(const vigil::endpoint& ep)
{
    return "tls=" + std::to_string(ep.tls) + " host=\"" + escaped(ep.host) + "\" port=" + std::to_string(ep.port)
        + " target=\"" + escaped(ep.target) + "\" host_header=\"" + escaped(ep.host_header)
        + "\" host_is_ip=" + std::to_string(ep.host_is_ip);
}

bool same(const vigil::endpoint& a, const vigil::endpoint& b)
{
    return a.tls == b.tls && a.host == b.host && a.port == b.port && a.target == b.target
        && a.host_header == b.host_header && a.host_is_ip == b.host_is_ip;
}

std::size_t occurrences(std::string_view text, std::string_view what)
{
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string_view::npos; at = text.find(what, at + 1))
        ++n;
    return n;
}

// The user info of a URL that starts with "scheme://", if any: what error details must not
// repeat (it may hold a password).
std::string_view user_info(std::string_view url)
{
    std::size_t i = 0;
    auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    while (i < url.size()
           && (alpha(url[i])
               || (i > 0 && ((url[i] >= '0' && url[i] <= '9') || url[i] == '+' || url[i] == '-' || url[i] == '.'))))
        ++i;
    if (i == 0 || url.substr(i, 3) != "://")
        return {};
    const auto after = url.substr(i + 3);
    const auto authority = after.substr(0, after.find_first_of("/?#"));
    const auto at = authority.rfind('@');
    if (at == std::string_view::npos)
        return {};
    return authority.substr(0, at);
}

void check_success(std::string_view url, const vigil::endpoint& ep)
{
    const std::string ctx = "url=\"" + escaped(url) + "\" -> " + describe(ep);
    FUZZ_CHECK(!ep.host.empty(), ctx);
    FUZZ_CHECK(ep.port >= 1, ctx);
    FUZZ_CHECK(!ep.target.empty() && ep.target.front() == '/', ctx);
    FUZZ_CHECK(ep.target.find('#') == std::string::npos, ctx);
    FUZZ_CHECK(wire_safe(ep.host) && wire_safe(ep.host_header) && wire_safe(ep.target), ctx);
    FUZZ_CHECK(ep.tls == iequals(url.substr(0, 4), "wss:"), ctx);
    FUZZ_CHECK(user_info(url).empty(), ctx);
    if (!ep.host_is_ip)
        FUZZ_CHECK(dns_safe(ep.host) && ep.host.size() <= 253, ctx);

    // The Host header is the host as written plus the port unless it is the scheme's.
    const bool v6 = ep.host.find(':') != std::string::npos;
    const std::string host_part = v6 ? "[" + ep.host + "]" : ep.host;
    const std::uint16_t default_port = ep.tls ? 443 : 80;
    const std::string expected_header
        = ep.port == default_port ? host_part : host_part + ":" + std::to_string(ep.port);
    FUZZ_CHECK(!v6 || ep.host_is_ip, ctx);
    FUZZ_CHECK(ep.host_header == expected_header, ctx + " expected host_header=\"" + escaped(expected_header) + "\"");

    // What we put on the wire describes the same endpoint: "scheme://Host-header target"
    // parses back to it.
    const std::string again = (ep.tls ? "wss://" : "ws://") + ep.host_header + ep.target;
    vigil::endpoint ep2;
    std::string detail2;
    const auto ec2 = vigil::parse_url(again, ep2, &detail2);
    FUZZ_CHECK(!ec2, ctx + " but its canonical form \"" + escaped(again) + "\" fails: " + escaped(detail2));
    FUZZ_CHECK(same(ep, ep2), ctx + " but its canonical form \"" + escaped(again) + "\" gives " + describe(ep2));
}

void check_failure(std::string_view url, const vigil::error_code& ec, const std::string& detail)
{
    const std::string ctx = "url=\"" + escaped(url) + "\" -> " + ec.to_string() + " detail=\"" + escaped(detail) + "\"";
    FUZZ_CHECK(ec.category() == vigil::error_category(), ctx);
    FUZZ_CHECK(ec == vigil::error::invalid_url || ec == vigil::error::unsupported_scheme
                   || ec == vigil::error::invalid_host || ec == vigil::error::invalid_port,
               ctx);
    FUZZ_CHECK(vigil::is_permanent(ec), ctx);
    // Details go to logs: present, one line, bounded however long the URL.
    FUZZ_CHECK(!detail.empty(), ctx);
    FUZZ_CHECK(detail.size() <= 1024, ctx);
    for (char c : detail) {
        const auto u = static_cast<unsigned char>(c);
        FUZZ_CHECK(u >= 0x20 && u != 0x7f, ctx);
    }
    // ...and never quote the user info, which may hold a password: "user:pw@" must not
    // appear. The detail escapes what it quotes, and an escape can spell the same text
    // ("\x00@" holds "00@"), so the count is compared with the detail of the same URL whose
    // user info is other letters of the same length: a redacted detail has as many.
    // Only user info of letters, digits and ':' is checked: the masked URL then fails the
    // same way.
    const auto info = user_info(url);
    bool plain = !info.empty();
    for (char c : info)
        plain = plain && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':');
    if (!plain)
        return;
    const std::string leaked = std::string(info) + "@";
    const std::string_view letters = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkjihgfedcba";
    const auto pick = letters.find_first_not_of(info);
    if (pick == std::string_view::npos)
        return;
    const char other = letters[pick];
    std::string masked(url);
    masked.replace(static_cast<std::size_t>(info.data() - url.data()), info.size(), info.size(), other);
    vigil::endpoint unused;
    std::string masked_detail;
    (void)vigil::parse_url(masked, unused, &masked_detail);
    FUZZ_CHECK(occurrences(detail, leaked) <= occurrences(masked_detail, leaked),
               ctx + " masked detail=\"" + escaped(masked_detail) + "\"");
}

// "ws[s]://name[:port][/path]" with a DNS-safe name, a port in range and a path of
// unreserved characters: plainly valid, so it must be accepted as written.
bool plainly_valid(std::string_view url, std::string_view& host)
{
    std::string_view rest;
    if (iequals(url.substr(0, 5), "ws://"))
        rest = url.substr(5);
    else if (iequals(url.substr(0, 6), "wss://"))
        rest = url.substr(6);
    else
        return false;
    host = rest.substr(0, rest.find_first_of(":/"));
    if (host.empty() || host.size() > 253 || !dns_safe(host))
        return false;
    rest.remove_prefix(host.size());
    if (!rest.empty() && rest.front() == ':') {
        const auto port = rest.substr(1, rest.find('/') == std::string_view::npos ? rest.npos : rest.find('/') - 1);
        if (port.empty() || port.size() > 5)
            return false;
        unsigned n = 0;
        for (char c : port) {
            if (c < '0' || c > '9')
                return false;
            n = n * 10 + static_cast<unsigned>(c - '0');
        }
        if (n == 0 || n > 65535)
            return false;
        rest.remove_prefix(1 + port.size());
    }
    for (char c : rest) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
            || c == '.' || c == '_' || c == '~' || c == '/';
        if (!ok)
            return false;
    }
    return rest.empty() || rest.front() == '/';
}

void fuzz_url(std::string_view url)
{
    vigil::endpoint ep;
    std::string detail;
    const auto ec = vigil::parse_url(url, ep, &detail);
    if (!ec)
        check_success(url, ep);
    else
        check_failure(url, ec, detail);
    if (std::string_view host; plainly_valid(url, host))
        FUZZ_CHECK(!ec && ep.host == host, "url=\"" + escaped(url) + "\" is valid but gives " + ec.to_string()
                       + " detail=\"" + escaped(detail) + "\" host=\"" + escaped(ep.host) + "\"");

    // Without a detail string the verdict is the same.
    vigil::endpoint ep2;
    const auto ec2 = vigil::parse_url(url, ep2);
    FUZZ_CHECK(ec2 == ec, "url=\"" + escaped(url) + "\": " + ec.to_string() + " with detail, " + ec2.to_string() + " without");
    if (!ec)
        FUZZ_CHECK(same(ep, ep2), "url=\"" + escaped(url) + "\"");
}

void fuzz_retry_after(std::string_view value)
{
    using namespace std::chrono;
    constexpr milliseconds day = hours(24);
    // Fixed clocks keep every finding reproducible: 1970 and 2024-01-01.
    const system_clock::time_point early{};
    const system_clock::time_point late = system_clock::from_time_t(1704067200);
    const auto a = vigil::parse_retry_after(value, early);
    const auto b = vigil::parse_retry_after(value, late);
    const auto str = [](const std::optional<milliseconds>& r) {
        return r ? std::to_string(r->count()) + " ms" : std::string("nullopt");
    };
    const std::string ctx = "retry-after=\"" + escaped(value) + "\" -> " + str(a) + " (now=1970), " + str(b)
        + " (now=2024)";
    FUZZ_CHECK(!a || (*a >= milliseconds(0) && *a <= day), ctx);
    FUZZ_CHECK(!b || (*b >= milliseconds(0) && *b <= day), ctx);
    // Whether the value parses does not depend on the clock; a later clock never asks us to
    // wait longer.
    FUZZ_CHECK(a.has_value() == b.has_value(), ctx);
    FUZZ_CHECK(!a || *a >= *b, ctx);

    // delay-seconds: digits only (after optional blanks) always parse.
    std::string_view v = value;
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
    bool digits = !v.empty() && v.size() <= 64;
    for (char c : v)
        digits = digits && c >= '0' && c <= '9';
    if (digits) {
        FUZZ_CHECK(a.has_value(), ctx);
        long long seconds = 0;
        bool big = false;
        for (char c : v) {
            seconds = seconds * 10 + (c - '0');
            if (seconds > 86400) {
                big = true;
                break;
            }
        }
        const milliseconds expected = big ? day : std::min<milliseconds>(day, seconds * milliseconds(1000));
        FUZZ_CHECK(*a == expected && *b == expected, ctx);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    fuzz_url(input);
    fuzz_retry_after(input);
    return 0;
}
