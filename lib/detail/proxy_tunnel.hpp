// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The proxy step of a client connect: on a socket connected to the proxy, the HTTP CONNECT
// exchange or the SOCKS5 negotiation that turns it into a tunnel to the server. The caller
// bounds it (connect_timeout) and aborts it by closing the socket.

#include <vigil/error.hpp>
#include <vigil/proxy.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace vigil::detail {

/// Asks the proxy `p`, connected on `s`, for a tunnel to `host:port` (`host` a name or an
/// address, sent as it is). Returns an empty code when the tunnel is open and nothing of the
/// server's has been read; otherwise the error, with `detail` naming the proxy, the target
/// and what the proxy said.
boost::asio::awaitable<error_code> open_tunnel(boost::asio::ip::tcp::socket& s, const proxy_endpoint& p,
                                               std::string_view host, std::uint16_t port,
                                               std::string_view user_agent, std::string& detail);

}  // namespace vigil::detail
