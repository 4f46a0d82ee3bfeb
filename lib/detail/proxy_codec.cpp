// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "proxy_codec.hpp"

#include <boost/url/ipv4_address.hpp>
#include <boost/url/ipv6_address.hpp>

namespace vigil::detail {

namespace {

constexpr char socks_version = 5;
constexpr unsigned char method_none = 0x00;
constexpr unsigned char method_password = 0x02;
constexpr unsigned char method_unacceptable = 0xff;

std::string hex_byte(unsigned char b)
{
    static constexpr char hex[] = "0123456789abcdef";
    return std::string("0x") + hex[b >> 4] + hex[b & 0xf];
}

void append_port(std::string& out, std::uint16_t port)
{
    out += static_cast<char>(port >> 8);
    out += static_cast<char>(port & 0xff);
}

const char* socks5_reply_text(unsigned char rep) noexcept
{
    switch (rep) {
    case 1: return "general SOCKS server failure";
    case 2: return "connection not allowed by ruleset";
    case 3: return "network unreachable";
    case 4: return "host unreachable";
    case 5: return "connection refused";
    case 6: return "TTL expired";
    case 7: return "command not supported";
    case 8: return "address type not supported";
    default: return "unassigned reply code";
    }
}

}  // namespace

std::string authority_of(std::string_view host, std::uint16_t port)
{
    std::string out;
    if (host.find(':') != std::string_view::npos) {
        out += '[';
        out += host;
        out += ']';
    } else {
        out += host;
    }
    out += ':';
    out += std::to_string(port);
    return out;
}

std::string base64(std::string_view data)
{
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((data.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 3 <= data.size(); i += 3) {
        const unsigned v = (static_cast<unsigned char>(data[i]) << 16) | (static_cast<unsigned char>(data[i + 1]) << 8)
            | static_cast<unsigned char>(data[i + 2]);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += alphabet[v & 63];
    }
    if (const auto left = data.size() - i; left > 0) {
        unsigned v = static_cast<unsigned char>(data[i]) << 16;
        if (left == 2)
            v |= static_cast<unsigned char>(data[i + 1]) << 8;
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += left == 2 ? alphabet[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::string http_connect_request(const proxy_endpoint& p, std::string_view host, std::uint16_t port,
                                 std::string_view user_agent)
{
    const auto target = authority_of(host, port);
    std::string req = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n";
    if (!user_agent.empty()) {
        req += "User-Agent: ";
        req += user_agent;
        req += "\r\n";
    }
    if (!p.username.empty())
        req += "Proxy-Authorization: Basic " + base64(p.username + ":" + p.password) + "\r\n";
    req += "\r\n";
    return req;
}

error_code connect_status_error(unsigned status) noexcept
{
    if (status >= 200 && status <= 299)
        return {};
    // 407 is the standard answer; some proxies (tinyproxy) send 401 to wrong credentials.
    if (status == 407 || status == 401)
        return error::proxy_auth_required;
    if (status == 408 || status == 429 || (status >= 500 && status <= 599))
        return error::proxy_target_unreachable;
    return error::proxy_denied;
}

std::string socks5_greeting(const proxy_endpoint& p)
{
    std::string out;
    out += socks_version;
    if (p.username.empty()) {
        out += static_cast<char>(1);
        out += static_cast<char>(method_none);
    } else {
        out += static_cast<char>(2);
        out += static_cast<char>(method_none);
        out += static_cast<char>(method_password);
    }
    return out;
}

error_code socks5_check_method(std::string_view reply, const proxy_endpoint& p, socks5_method& chosen,
                               std::string& why)
{
    if (reply.size() != 2 || reply[0] != socks_version) {
        why = "answered the SOCKS5 greeting with version " + hex_byte(reply.empty() ? 0 : reply[0])
            + ", not 0x05 (is it a SOCKS5 proxy?)";
        return error::proxy_protocol_error;
    }
    const auto m = static_cast<unsigned char>(reply[1]);
    if (m == method_none) {
        chosen = socks5_method::none;
        return {};
    }
    if (m == method_password && !p.username.empty()) {
        chosen = socks5_method::password;
        return {};
    }
    if (m == method_unacceptable) {
        why = p.username.empty() ? "accepts none of the offered SOCKS5 methods (no authentication): it wants "
                                   "credentials (user:password@ in the proxy URL)"
                                 : "accepts none of the offered SOCKS5 methods (no authentication, "
                                   "username/password)";
        return error::proxy_auth_required;
    }
    why = "chose SOCKS5 method " + hex_byte(m) + ", which was not offered";
    return error::proxy_protocol_error;
}

std::string socks5_auth_request(const proxy_endpoint& p)
{
    std::string out;
    out += static_cast<char>(1);  // RFC 1929's own version
    out += static_cast<char>(p.username.size());
    out += p.username;
    out += static_cast<char>(p.password.size());
    out += p.password;
    return out;
}

error_code socks5_check_auth(std::string_view reply, std::string& why)
{
    if (reply.size() != 2 || reply[0] != 1) {
        why = "answered the SOCKS5 username/password request with version "
            + hex_byte(reply.empty() ? 0 : reply[0]) + ", not 0x01";
        return error::proxy_protocol_error;
    }
    if (reply[1] != 0) {
        why = "rejected the SOCKS5 user name and password (status " + hex_byte(reply[1]) + ")";
        return error::proxy_auth_required;
    }
    return {};
}

error_code socks5_connect_request(std::string_view host, std::uint16_t port, std::string& out, std::string& why)
{
    out.assign({socks_version, 1, 0});  // CONNECT, reserved
    const std::string h(host);
    if (auto v4 = boost::urls::parse_ipv4_address(h)) {
        out += static_cast<char>(1);
        for (auto b : v4->to_bytes())
            out += static_cast<char>(b);
    } else if (auto v6 = boost::urls::parse_ipv6_address(h)) {
        out += static_cast<char>(4);
        for (auto b : v6->to_bytes())
            out += static_cast<char>(b);
    } else {
        if (host.size() > 255) {
            why = "the host name is longer than SOCKS5's 255 bytes";
            return error::invalid_host;
        }
        out += static_cast<char>(3);
        out += static_cast<char>(host.size());
        out += host;
    }
    append_port(out, port);
    return {};
}

error_code socks5_check_reply_head(std::string_view head, std::size_t& rest, std::string& why)
{
    if (head.size() != socks5_reply_head || head[0] != socks_version) {
        why = "answered the SOCKS5 CONNECT with version " + hex_byte(head.empty() ? 0 : head[0]) + ", not 0x05";
        return error::proxy_protocol_error;
    }
    const auto rep = static_cast<unsigned char>(head[1]);
    if (rep != 0) {
        why = "answered the SOCKS5 CONNECT with reply " + std::to_string(rep) + " (" + socks5_reply_text(rep) + ")";
        return rep == 2 || rep == 7 || rep == 8 ? error::proxy_denied : error::proxy_target_unreachable;
    }
    // The bound address (one of its bytes is in the head) and the port.
    switch (head[3]) {
    case 1: rest = 4 - 1 + 2; return {};
    case 4: rest = 16 - 1 + 2; return {};
    case 3: rest = static_cast<unsigned char>(head[4]) + std::size_t{2}; return {};
    default:
        why = "answered the SOCKS5 CONNECT with address type " + hex_byte(head[3]) + ", which does not exist";
        return error::proxy_protocol_error;
    }
}

}  // namespace vigil::detail
