// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// Admission checks' parts with no I/O: the request's views, the decisions, the ready
// policies (Origin, token) and the subprotocol lists both sides use.

#include <vigil/upgrade.hpp>

#include "detail/printable.hpp"
#include "detail/subprotocols.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>

namespace vigil {

namespace detail {

bool is_http_token(std::string_view s) noexcept
{
    if (s.empty())
        return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    });
}

void split_subprotocols(std::string_view value, std::vector<std::string>& out)
{
    while (!value.empty()) {
        const auto comma = value.find(',');
        auto item = value.substr(0, comma);
        while (!item.empty() && (item.front() == ' ' || item.front() == '\t'))
            item.remove_prefix(1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t'))
            item.remove_suffix(1);
        if (!item.empty())
            out.emplace_back(item);
        if (comma == std::string_view::npos)
            break;
        value.remove_prefix(comma + 1);
    }
}

std::string join_subprotocols(const std::vector<std::string>& names)
{
    std::string out;
    for (const auto& n : names) {
        if (!out.empty())
            out += ", ";
        out += n;
    }
    return out;
}

std::string choose_subprotocol(const std::vector<std::string>& offered, const std::vector<std::string>& supported)
{
    for (const auto& s : supported) {
        if (std::find(offered.begin(), offered.end(), s) != offered.end())
            return s;
    }
    return {};
}

bool check_subprotocols(const std::vector<std::string>& names, const std::string& field, std::string& why)
{
    for (std::size_t i = 0; i < names.size(); ++i) {
        const std::string where = field + "[" + std::to_string(i) + "] \"" + printable(names[i], 64, true) + "\"";
        if (!is_http_token(names[i])) {
            why = where + " is not a token (RFC 6455 4.1: letters, digits and !#$%&'*+-.^_`|~, not empty)";
            return false;
        }
        if (std::find(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(i), names[i]) !=
            names.begin() + static_cast<std::ptrdiff_t>(i)) {
            why = where + " is listed twice";
            return false;
        }
    }
    return true;
}

}  // namespace detail

namespace {

char lower(char c) noexcept
{
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept
{
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return lower(x) == lower(y);
           });
}

std::string lowered(std::string_view s)
{
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), lower);
    return out;
}

// An origin reduced to what makes two equal (RFC 6454 4): scheme and host in lower case,
// the port as a number with the scheme's default filled in.
struct origin_parts {
    std::string scheme;
    std::string host;
    unsigned port = 0;
    bool operator==(const origin_parts&) const = default;
};

std::optional<origin_parts> parse_origin(std::string_view text)
{
    const auto sep = text.find("://");
    if (sep == std::string_view::npos || sep == 0)
        return std::nullopt;
    origin_parts o;
    o.scheme = lowered(text.substr(0, sep));
    if (!std::all_of(o.scheme.begin(), o.scheme.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'; }))
        return std::nullopt;
    auto rest = text.substr(sep + 3);
    if (rest.empty() || rest.find_first_of("/?#@ \t") != std::string_view::npos)
        return std::nullopt;
    std::string_view host = rest;
    std::string_view port;
    if (rest.front() == '[') {
        const auto close = rest.find(']');
        if (close == std::string_view::npos)
            return std::nullopt;
        host = rest.substr(0, close + 1);
        const auto after = rest.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':')
                return std::nullopt;
            port = after.substr(1);
        }
    } else if (const auto colon = rest.rfind(':'); colon != std::string_view::npos) {
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (host.find(':') != std::string_view::npos)
            return std::nullopt;
    }
    if (host.empty())
        return std::nullopt;
    o.host = lowered(host);
    if (!port.empty() || rest.back() == ':') {
        const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), o.port);
        if (port.empty() || ec != std::errc() || end != port.data() + port.size() || o.port == 0 || o.port > 65535)
            return std::nullopt;
    } else if (o.scheme == "http" || o.scheme == "ws") {
        o.port = 80;
    } else if (o.scheme == "https" || o.scheme == "wss") {
        o.port = 443;
    }
    return o;
}

int hex_value(char c) noexcept
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

std::string percent_decoded(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
            out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else {
            out += s[i] == '+' ? ' ' : s[i];
        }
    }
    return out;
}

bool same_secret(std::string_view a, std::string_view b) noexcept
{
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

boost::asio::awaitable<upgrade_decision> pass_on(const upgrade_check& next, const upgrade_request& req)
{
    if (next)
        co_return co_await next(req);
    co_return upgrade_decision::accept();
}

}  // namespace

std::optional<std::string_view> upgrade_request::header(std::string_view name) const noexcept
{
    for (const auto& [n, v] : headers) {
        if (iequals(n, name))
            return std::string_view(v);
    }
    return std::nullopt;
}

std::optional<std::string> upgrade_request::query_parameter(std::string_view name) const
{
    const auto q = target.find('?');
    if (q == std::string::npos)
        return std::nullopt;
    std::string_view query(target);
    query.remove_prefix(q + 1);
    query = query.substr(0, query.find('#'));
    while (!query.empty()) {
        const auto amp = query.find('&');
        const auto pair = query.substr(0, amp);
        const auto eq = pair.find('=');
        if (percent_decoded(pair.substr(0, eq)) == name)
            return eq == std::string_view::npos ? std::string() : percent_decoded(pair.substr(eq + 1));
        if (amp == std::string_view::npos)
            break;
        query.remove_prefix(amp + 1);
    }
    return std::nullopt;
}

upgrade_decision upgrade_decision::accept(std::string subprotocol, std::shared_ptr<void> user_data)
{
    upgrade_decision d;
    d.subprotocol = std::move(subprotocol);
    d.user_data = std::move(user_data);
    return d;
}

upgrade_decision upgrade_decision::refuse(unsigned status, std::string body, std::string reason,
                                          std::vector<std::pair<std::string, std::string>> headers)
{
    upgrade_decision d;
    d.what = verdict::refuse;
    d.status = status;
    d.reason = reason.empty() ? body : std::move(reason);
    d.body = std::move(body);
    d.headers = std::move(headers);
    return d;
}

bool origin_allowed(std::string_view origin, const std::vector<std::string>& allowed)
{
    const auto o = parse_origin(origin);
    if (!o)
        return false;
    return std::any_of(allowed.begin(), allowed.end(), [&](const std::string& a) { return parse_origin(a) == o; });
}

upgrade_check allow_origins(std::vector<std::string> allowed, missing_origin missing, upgrade_check next)
{
    for (std::size_t i = 0; i < allowed.size(); ++i) {
        if (!parse_origin(allowed[i]))
            throw std::invalid_argument("allow_origins: allowed[" + std::to_string(i) + "] \"" +
                                        detail::printable(allowed[i], 64, true) +
                                        "\" is not an origin (scheme://host[:port], no path)");
    }
    return [allowed = std::move(allowed), missing,
            next = std::move(next)](const upgrade_request& req) -> boost::asio::awaitable<upgrade_decision> {
        const auto origin = req.header("Origin");
        if (!origin) {
            if (missing == missing_origin::refuse)
                co_return upgrade_decision::refuse(403, "an Origin header is required",
                                                   "no Origin header (origin policy refuses requests without one)");
            co_return co_await pass_on(next, req);
        }
        if (!origin_allowed(*origin, allowed))
            co_return upgrade_decision::refuse(403, "origin not allowed",
                                               "Origin \"" + detail::printable(*origin, 128, true) +
                                                   "\" is not an allowed origin");
        co_return co_await pass_on(next, req);
    };
}

std::optional<std::string> presented_token(const upgrade_request& req)
{
    if (auto auth = req.header("Authorization")) {
        auto v = *auth;
        while (!v.empty() && v.front() == ' ')
            v.remove_prefix(1);
        if (v.size() > 7 && iequals(v.substr(0, 7), "bearer ")) {
            v.remove_prefix(7);
            while (!v.empty() && v.front() == ' ')
                v.remove_prefix(1);
            while (!v.empty() && v.back() == ' ')
                v.remove_suffix(1);
            if (!v.empty())
                return std::string(v);
        }
    }
    return req.query_parameter("token");
}

upgrade_check require_token(std::string secret, upgrade_check next)
{
    if (secret.empty())
        throw std::invalid_argument("require_token: the secret is empty");
    return [secret = std::move(secret),
            next = std::move(next)](const upgrade_request& req) -> boost::asio::awaitable<upgrade_decision> {
        const auto token = presented_token(req);
        if (!token || !same_secret(*token, secret))
            co_return upgrade_decision::refuse(
                401, "authentication required",
                token ? "wrong token" : "no token (Authorization: Bearer or ?token=)",
                {{"WWW-Authenticate", token ? "Bearer error=\"invalid_token\"" : "Bearer"}});
        co_return co_await pass_on(next, req);
    };
}

}  // namespace vigil
