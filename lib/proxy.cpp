// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/proxy.hpp>

#include "detail/printable.hpp"

#include <boost/url/ipv4_address.hpp>
#include <boost/url/ipv6_address.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include <array>
#include <cstdlib>
#include <exception>
#include <string>

namespace vigil {

namespace {

char to_lower(char c) noexcept
{
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lower(std::string_view s)
{
    std::string out(s);
    for (char& c : out)
        c = to_lower(c);
    return out;
}

bool is_name_char(char c) noexcept
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'
        || c == '_';
}

class proxy_url_parser {
public:
    proxy_url_parser(std::string_view url, std::string* detail) : url_(url), detail_(detail) {}

    error_code parse(proxy_endpoint& out);

private:
    error_code fail(std::string why)
    {
        if (detail_)
            *detail_ = "proxy URL " + detail::quoted_url(url_) + " " + why;
        return error::invalid_config;
    }
    error_code take_scheme(std::string_view scheme, proxy_endpoint& ep);
    error_code take_host(const boost::urls::url_view& u, proxy_endpoint& ep);
    error_code take_port(const boost::urls::url_view& u, proxy_endpoint& ep);
    error_code take_credentials(const boost::urls::url_view& u, proxy_endpoint& ep);

    std::string_view url_;
    std::string* detail_;
};

error_code proxy_url_parser::parse(proxy_endpoint& out)
{
    if (url_.empty())
        return fail("is empty");
    for (char c : url_) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f)
            return fail("contains a space, control or non-ASCII character (percent-encode it)");
    }
    // curl reads "host:3128" as an HTTP proxy; so do we.
    std::string full(url_);
    if (full.find("://") == std::string::npos)
        full = "http://" + full;
    auto parsed = boost::urls::parse_uri(full);
    if (!parsed)
        return fail("is not a valid URL (" + parsed.error().message() + ")");
    const auto& u = *parsed;
    proxy_endpoint ep;
    if (auto ec = take_scheme(u.scheme(), ep))
        return ec;
    if (auto ec = take_host(u, ep))
        return ec;
    if (auto ec = take_port(u, ep))
        return ec;
    if (!(u.encoded_path().empty() || u.encoded_path() == "/") || u.has_query() || u.has_fragment())
        return fail("has a path, query or fragment (expected scheme://host:port)");
    if (auto ec = take_credentials(u, ep))
        return ec;
    out = std::move(ep);
    return {};
}

error_code proxy_url_parser::take_scheme(std::string_view scheme, proxy_endpoint& ep)
{
    const auto s = lower(scheme);
    if (s == "http")
        ep.scheme = proxy_scheme::http;
    else if (s == "socks5")
        ep.scheme = proxy_scheme::socks5;
    else if (s == "socks5h")
        ep.scheme = proxy_scheme::socks5h;
    else if (s == "https")
        return fail("uses https://, a TLS connection to the proxy itself, which is not supported (use http://; "
                    "wss:// stays encrypted end to end through the tunnel)");
    else if (s == "socks4" || s == "socks4a")
        return fail("uses SOCKS4, which is not supported (use socks5:// or socks5h://)");
    else
        return fail("has the unsupported scheme \"" + detail::printable(s, 20, true)
                    + "\" (use http://, socks5:// or socks5h://)");
    return {};
}

error_code proxy_url_parser::take_host(const boost::urls::url_view& u, proxy_endpoint& ep)
{
    switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
    case boost::urls::host_type::ipv6:
        ep.host = u.host_address();
        return {};
    case boost::urls::host_type::name:
        ep.host = u.host();
        if (ep.host.empty())
            return fail("has an empty host");
        for (char c : ep.host) {
            if (!is_name_char(c))
                return fail("has a host that is not a valid host name");
        }
        if (ep.host.size() > 253)
            return fail("has a host longer than 253 characters");
        return {};
    default:
        return fail("has no usable host");
    }
}

error_code proxy_url_parser::take_port(const boost::urls::url_view& u, proxy_endpoint& ep)
{
    if (!u.has_port())
        return {};
    const auto port = u.port();
    unsigned long n = 0;
    for (char c : port) {
        if (c < '0' || c > '9')
            return fail("has a port that is not a number");
        n = n * 10 + static_cast<unsigned long>(c - '0');
        if (n > 65535)
            break;
    }
    if (port.empty() || n == 0 || n > 65535)
        return fail("has a port that is not in 1..65535");
    ep.port = static_cast<std::uint16_t>(n);
    return {};
}

error_code proxy_url_parser::take_credentials(const boost::urls::url_view& u, proxy_endpoint& ep)
{
    if (!u.has_userinfo())
        return {};
    ep.username = u.user();
    ep.password = u.password();
    if (ep.username.empty())
        return fail("has user info without a user name");
    // Basic authentication joins the two with ':' (RFC 7617), so the name cannot hold one.
    if (ep.username.find(':') != std::string::npos)
        return fail("has a user name with ':' in it");
    if (ep.scheme != proxy_scheme::http && (ep.username.size() > 255 || ep.password.size() > 255))
        return fail("has a SOCKS5 user name or password longer than 255 bytes (RFC 1929)");
    return {};
}

// A no-proxy entry as it is compared: no port, no brackets, no leading or trailing dot,
// lower case.
std::string normalize_entry(std::string_view e)
{
    while (!e.empty() && (e.front() == ' ' || e.front() == '\t'))
        e.remove_prefix(1);
    while (!e.empty() && (e.back() == ' ' || e.back() == '\t'))
        e.remove_suffix(1);
    if (!e.empty() && e.front() == '[') {
        e = e.substr(1, e.find(']') == std::string_view::npos ? std::string_view::npos : e.find(']') - 1);
    } else if (const auto colon = e.find(':'); colon != std::string_view::npos && e.rfind(':') == colon) {
        e = e.substr(0, colon);  // one colon: a port, not an IPv6 address
    }
    while (!e.empty() && e.front() == '.')
        e.remove_prefix(1);
    while (!e.empty() && e.back() == '.')
        e.remove_suffix(1);
    return lower(e);
}

bool is_ip_literal(const std::string& host)
{
    return static_cast<bool>(boost::urls::parse_ipv4_address(host))
        || static_cast<bool>(boost::urls::parse_ipv6_address(host));
}

}  // namespace

std::string proxy_endpoint::where() const
{
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

error_code parse_proxy_url(std::string_view url, proxy_endpoint& out, std::string* detail)
{
    try {
        return proxy_url_parser(url, detail).parse(out);
    } catch (const std::exception& e) {
        // Only allocation can throw here; report it rather than break the no-throw promise.
        if (detail) {
            try {
                *detail = std::string("proxy URL could not be parsed: ") + e.what();
            } catch (...) {
            }
        }
        return error::invalid_config;
    }
}

env_lookup process_environment()
{
    return [](std::string_view name) -> std::optional<std::string> {
        const char* v = std::getenv(std::string(name).c_str());
        if (!v)
            return std::nullopt;
        return std::string(v);
    };
}

bool no_proxy_matches(std::string_view list, std::string_view host_in)
{
    std::string host = normalize_entry(host_in);
    if (host.empty())
        return false;
    const bool ip = is_ip_literal(host);
    while (!list.empty()) {
        const auto comma = list.find(',');
        const auto raw = list.substr(0, comma);
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
        const auto entry = normalize_entry(raw);
        if (entry == "*")
            return true;
        if (entry.empty())
            continue;
        if (host == entry)
            return true;
        // A name matches its subdomains; an address only itself.
        if (!ip && host.size() > entry.size() && host.compare(host.size() - entry.size(), entry.size(), entry) == 0
            && host[host.size() - entry.size() - 1] == '.')
            return true;
    }
    return false;
}

proxy_choice choose_proxy(const proxy_config& cfg, bool tls, std::string_view host, const env_lookup& env)
{
    auto read = [&](std::string_view name) -> std::string {
        if (!env)
            return {};
        auto v = env(name);
        return v ? *v : std::string();
    };
    proxy_choice choice;
    if (!cfg.url.empty()) {
        choice = {cfg.url, "proxy.url"};
    } else if (cfg.from_environment) {
        static constexpr std::array<const char*, 3> plain = {"http_proxy", "all_proxy", "ALL_PROXY"};
        static constexpr std::array<const char*, 4> secure = {"https_proxy", "HTTPS_PROXY", "all_proxy",
                                                              "ALL_PROXY"};
        auto first_set = [&](const auto& names) {
            for (const char* name : names) {
                if (auto v = read(name); !v.empty())
                    return proxy_choice{std::move(v), name};
            }
            return proxy_choice{};
        };
        choice = tls ? first_set(secure) : first_set(plain);
    }
    if (choice.url.empty())
        return {};
    std::string list = cfg.no_proxy;
    std::string list_name = "proxy.no_proxy";
    if (list.empty() && cfg.from_environment) {
        for (const char* name : {"no_proxy", "NO_PROXY"}) {
            if (list = read(name); !list.empty()) {
                list_name = name;
                break;
            }
        }
    }
    if (!list.empty() && no_proxy_matches(list, host))
        return {std::string(), list_name};
    return choice;
}

}  // namespace vigil
