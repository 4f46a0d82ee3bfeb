// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The bytes of the proxy protocols, with no I/O: the HTTP CONNECT request and the verdict on
// its status, and each SOCKS5 message (RFC 1928, RFC 1929 for username/password) and the
// check of each reply. proxy_tunnel.cpp moves the bytes; the unit tests feed these directly.

#include <vigil/error.hpp>
#include <vigil/proxy.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vigil::detail {

/// `host:port`, IPv6 literals in brackets: CONNECT's request target and Host header.
std::string authority_of(std::string_view host, std::uint16_t port);

/// RFC 4648 base64, with padding.
std::string base64(std::string_view data);

/// The CONNECT request for `host:port`, with Basic credentials when `p` has a user name.
std::string http_connect_request(const proxy_endpoint& p, std::string_view host, std::uint16_t port,
                                 std::string_view user_agent);

/// The verdict on the status of a CONNECT reply: empty for 2xx, else `proxy_auth_required`
/// (407, 401), `proxy_target_unreachable` (408, 429, 5xx) or `proxy_denied` (anything else).
error_code connect_status_error(unsigned status) noexcept;

/// The greeting: version 5 and the methods offered (no authentication, and
/// username/password when `p` has a user name).
std::string socks5_greeting(const proxy_endpoint& p);

/// How the proxy chose to go on.
enum class socks5_method { none, password };

/// Checks the 2-byte method reply. Empty code and `chosen` set, or an error with `why`.
error_code socks5_check_method(std::string_view reply, const proxy_endpoint& p, socks5_method& chosen,
                               std::string& why);

/// The username/password request (RFC 1929).
std::string socks5_auth_request(const proxy_endpoint& p);

/// Checks the 2-byte username/password reply.
error_code socks5_check_auth(std::string_view reply, std::string& why);

/// The CONNECT request for `host:port`: an IPv4 or IPv6 address when `host` is one, else
/// the name for the proxy to resolve. Error when the name is longer than 255 bytes.
error_code socks5_connect_request(std::string_view host, std::uint16_t port, std::string& out, std::string& why);

/// Bytes of a reply read first: version, reply code, reserved, address type, and the
/// address's first byte (the length, for a name).
inline constexpr std::size_t socks5_reply_head = 5;

/// Checks the head of the CONNECT reply. Empty code and `rest` = how many bytes of the
/// reply are still to be read (the rest of the bound address and the port), or an error.
error_code socks5_check_reply_head(std::string_view head, std::size_t& rest, std::string& why);

}  // namespace vigil::detail
