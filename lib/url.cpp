// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/url.hpp>

#include "detail/printable.hpp"

#include <boost/url/authority_view.hpp>
#include <boost/url/ipv4_address.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include <exception>
#include <string>

namespace vigil {

namespace {

constexpr std::size_t max_quoted = 120;

bool is_alpha(char c) noexcept
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool is_digit(char c) noexcept
{
    return c >= '0' && c <= '9';
}

char to_lower(char c) noexcept
{
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept
{
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (to_lower(a[i]) != to_lower(b[i]))
            return false;
    }
    return true;
}

// The part between "//" and the path, query or fragment.
std::string_view authority_of(std::string_view after_slashes) noexcept
{
    return after_slashes.substr(0, after_slashes.find_first_of("/?#"));
}

// Details end up in logs: one line, bounded, and never the password of a URL with user info.
std::string quote(std::string_view s)
{
    std::string masked;
    if (const auto slashes = s.find("://"); slashes != std::string_view::npos) {
        const auto authority = authority_of(s.substr(slashes + 3));
        if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
            masked.append(s.substr(0, slashes + 3));
            masked.append("***");
            masked.append(s.substr(slashes + 3 + at));
            s = masked;
        }
    }
    return '"' + detail::printable(s, max_quoted, true) + '"';
}

class parser {
public:
    parser(std::string_view url, std::string* detail) : url_(url), detail_(detail) {}

    error_code parse(endpoint& out);

private:
    error_code fail(error e, std::string message)
    {
        if (detail_)
            *detail_ = std::move(message);
        return e;
    }

    error_code check_characters();
    error_code read_scheme(bool& tls, std::string_view& after_slashes);
    error_code parse_uri(std::string_view after_slashes, boost::urls::url_view& out);
    error_code take_host(const boost::urls::url_view& u, endpoint& ep);
    error_code take_name(const boost::urls::url_view& u, endpoint& ep);
    error_code take_port_and_target(const boost::urls::url_view& u, endpoint& ep);
    error_code diagnose(std::string_view after_slashes, const std::string& why);
    error_code check_port(std::string_view port, std::uint16_t& value);

    std::string_view url_;
    std::string* detail_;
    std::string respelled_;  // the URL re-spelled around a Boost.URL 1.81 bug (parse_uri)
};

error_code parser::parse(endpoint& out)
{
    if (url_.empty())
        return fail(error::invalid_url, "empty URL (expected ws://host[:port][/path])");
    if (auto ec = check_characters())
        return ec;
    endpoint ep;
    std::string_view after_slashes;
    if (auto ec = read_scheme(ep.tls, after_slashes))
        return ec;
    boost::urls::url_view u;
    if (auto ec = parse_uri(after_slashes, u))
        return ec;
    if (u.has_userinfo())
        return fail(error::invalid_url, "URL " + quote(url_)
                + " contains user info; credentials are never sent in URLs (pass them in a header)");
    if (auto ec = take_host(u, ep))
        return ec;
    if (auto ec = take_port_and_target(u, ep))
        return ec;
    out = std::move(ep);
    return {};
}

error_code parser::check_characters()
{
    // Boost.URL rejects these too, but "contains a control character" helps more than
    // "syntax error", and they are what header injection attempts look like.
    for (std::size_t i = 0; i < url_.size(); ++i) {
        const auto u = static_cast<unsigned char>(url_[i]);
        if (u <= 0x20 || u >= 0x7f)
            return fail(error::invalid_url,
                "URL " + quote(url_) + " contains a space, control or non-ASCII character at offset "
                    + std::to_string(i) + " (percent-encode it)");
    }
    return {};
}

error_code parser::read_scheme(bool& tls, std::string_view& after_slashes)
{
    // Read the scheme before Boost.URL so that "http://x" is named a wrong scheme, not a
    // generic parse failure.
    std::size_t colon = 0;
    while (colon < url_.size() && (is_alpha(url_[colon]) || (colon > 0 && (is_digit(url_[colon])
               || url_[colon] == '+' || url_[colon] == '-' || url_[colon] == '.'))))
        ++colon;
    if (colon == 0 || colon == url_.size() || url_[colon] != ':')
        return fail(error::invalid_url, "URL " + quote(url_) + " has no scheme (expected ws:// or wss://)");
    const auto scheme = url_.substr(0, colon);
    const auto rest = url_.substr(colon + 1);
    const bool has_slashes = rest.substr(0, 2) == "//";
    tls = iequals(scheme, "wss");
    if (!tls && !iequals(scheme, "ws")) {
        // "localhost:8080" parses as scheme "localhost": without "//" it is more likely a
        // missing scheme than a real one.
        if (!has_slashes)
            return fail(error::invalid_url, "URL " + quote(url_) + " is not a ws:// or wss:// URL");
        return fail(error::unsupported_scheme, "unsupported scheme " + quote(scheme) + " in " + quote(url_)
                + " (use ws:// or wss://)");
    }
    if (!has_slashes)
        return fail(error::invalid_host, "URL " + quote(url_) + " has no host (expected "
                + std::string(scheme) + "://host)");
    after_slashes = rest.substr(2);
    return {};
}

error_code parser::parse_uri(std::string_view after_slashes, boost::urls::url_view& out)
{
    // RFC 3986 requires the path after an authority to be empty or start with '/'. Boost.URL
    // 1.81 accepts "ws://[::1]x/" and "ws://[::1]:80x" with a rootless path; the text after
    // the host or port is then garbage, not a path.
    auto rootless = [](const boost::urls::url_view& v) {
        const auto path = v.encoded_path();
        return !path.empty() && path.front() != '/';
    };
    auto parsed = boost::urls::parse_uri(boost::urls::string_view(url_.data(), url_.size()));
    // Boost.URL 1.81 also takes the dotted quad at the start of "127.0.0.1.nip.io" for the
    // host and the rest for a path (fixed in 1.83). With its first digit percent-encoded the
    // host is the same reg-name to RFC 3986, and parses as one.
    if ((!parsed || rootless(*parsed)) && !after_slashes.empty() && is_digit(after_slashes.front())
        && authority_of(after_slashes).find('@') == std::string_view::npos) {
        respelled_.append(url_.substr(0, url_.size() - after_slashes.size()));
        respelled_ += "%3";
        respelled_.append(after_slashes);
        if (auto again = boost::urls::parse_uri(respelled_); again && !rootless(*again))
            parsed = again;
    }
    if (!parsed)
        return diagnose(after_slashes, parsed.error().message());
    if (rootless(*parsed))
        return diagnose(after_slashes, "the path must start with '/'");
    out = *parsed;
    return {};
}

error_code parser::take_host(const boost::urls::url_view& u, endpoint& ep)
{
    switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
        ep.host = u.host_address();
        ep.host_header = ep.host;
        ep.host_is_ip = true;
        return {};
    case boost::urls::host_type::ipv6:
        ep.host = u.host_address();
        ep.host_header = "[" + ep.host + "]";
        ep.host_is_ip = true;
        return {};
    case boost::urls::host_type::name:
        return take_name(u, ep);
    case boost::urls::host_type::ipvfuture:
        return fail(error::invalid_host, "host " + quote(std::string_view(u.encoded_host())) + " in "
                + quote(url_) + " is an IPvFuture literal, which cannot be connected to");
    case boost::urls::host_type::none:
    default:
        return fail(error::invalid_host, "URL " + quote(url_) + " has no host");
    }
}

error_code parser::take_name(const boost::urls::url_view& u, endpoint& ep)
{
    ep.host = u.host();
    if (ep.host.empty())
        return fail(error::invalid_host, "URL " + quote(url_) + " has an empty host");
    // Percent-decoding may produce anything; only DNS-safe characters go to the resolver,
    // the certificate check and the Host header.
    for (char c : ep.host) {
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '.' && c != '_')
            return fail(error::invalid_host, "host " + quote(ep.host) + " in " + quote(url_)
                    + " is not a valid host name");
    }
    // RFC 1035 limit; a longer name can only fail in the resolver, less clearly.
    if (ep.host.size() > 253)
        return fail(error::invalid_host, "host " + quote(ep.host) + " is longer than 253 characters");
    // A percent-encoded address ("1.%32.3.4") is a name to Boost.URL but an address to the
    // resolver and the certificate check.
    ep.host_is_ip = static_cast<bool>(boost::urls::parse_ipv4_address(ep.host));
    ep.host_header = ep.host;
    return {};
}

error_code parser::take_port_and_target(const boost::urls::url_view& u, endpoint& ep)
{
    const std::uint16_t default_port = ep.tls ? 443 : 80;
    ep.port = default_port;
    if (u.has_port()) {
        const auto port = u.port();
        if (auto ec = check_port(std::string_view(port.data(), port.size()), ep.port))
            return ec;
    }
    if (ep.port != default_port) {
        // Appended in two steps: g++ 12 at -O3 misreads `":" + std::string` as an overlapping
        // copy (-Wrestrict).
        ep.host_header += ':';
        ep.host_header += std::to_string(ep.port);
    }
    const auto path = u.encoded_path();
    ep.target.assign(path.data(), path.size());
    if (ep.target.empty())
        ep.target = "/";
    if (u.has_query()) {
        const auto query = u.encoded_query();
        ep.target += '?';
        ep.target.append(query.data(), query.size());
    }
    return {};
}

error_code parser::check_port(std::string_view port, std::uint16_t& value)
{
    if (port.empty())
        return fail(error::invalid_port, "URL " + quote(url_) + " has an empty port (use 1..65535 or omit the colon)");
    unsigned long n = 0;
    for (char c : port) {
        if (!is_digit(c))
            return fail(error::invalid_port, "port " + quote(port) + " in " + quote(url_) + " is not a number");
        n = n * 10 + static_cast<unsigned long>(c - '0');
        if (n > 65535)
            break;
    }
    if (n == 0 || n > 65535)
        return fail(error::invalid_port, "port " + quote(port) + " in " + quote(url_) + " is not in 1..65535");
    value = static_cast<std::uint16_t>(n);
    return {};
}

// Boost.URL says only that the syntax is wrong; find the part to blame so that the error
// names host or port where it can.
error_code parser::diagnose(std::string_view after_slashes, const std::string& why)
{
    const auto authority = authority_of(after_slashes);
    if (authority.find('@') != std::string_view::npos)
        return fail(error::invalid_url, "URL " + quote(url_)
                + " contains user info; credentials are never sent in URLs (pass them in a header)");

    std::string_view host = authority;
    std::string_view port;
    bool has_port = false;
    if (!authority.empty() && authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string_view::npos)
            return fail(error::invalid_host, "IPv6 literal " + quote(authority) + " in " + quote(url_)
                    + " has no closing ']'");
        host = authority.substr(0, close + 1);
        const auto after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':')
                return fail(error::invalid_host, "unexpected " + quote(after) + " after IPv6 literal "
                        + quote(host) + " in " + quote(url_));
            has_port = true;
            port = after.substr(1);
        }
    } else if (const auto c = authority.rfind(':'); c != std::string_view::npos) {
        host = authority.substr(0, c);
        port = authority.substr(c + 1);
        has_port = true;
    }

    if (host.empty())
        return fail(error::invalid_host, "URL " + quote(url_) + " has an empty host");
    if (has_port) {
        std::uint16_t ignored = 0;
        if (auto ec = check_port(port, ignored))
            return ec;
    }
    if (host.front() == '[')
        return fail(error::invalid_host, "IPv6 literal " + quote(host) + " in " + quote(url_) + " is not valid");
    if (host.find(':') != std::string_view::npos)
        return fail(error::invalid_host, "host " + quote(host) + " in " + quote(url_)
                + " has more than one ':' (IPv6 addresses go in brackets: [::1])");
    if (!boost::urls::parse_authority(boost::urls::string_view(authority.data(), authority.size())))
        return fail(error::invalid_host, "host " + quote(host) + " in " + quote(url_) + " is not valid");
    return fail(error::invalid_url, "URL " + quote(url_) + " is not valid (" + why + ")");
}

}  // namespace

error_code parse_url(std::string_view url, endpoint& out, std::string* detail)
{
    try {
        return parser(url, detail).parse(out);
    } catch (const std::exception& e) {
        // Only allocation can throw here; report it rather than break the no-throw promise.
        if (detail) {
            try {
                *detail = std::string("URL could not be parsed: ") + e.what();
            } catch (...) {
            }
        }
        return error::invalid_url;
    }
}

}  // namespace vigil
