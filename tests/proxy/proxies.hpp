// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Real proxies for the proxy suite, started by the tests on 127.0.0.1 with generated
// configuration in a temporary directory: tinyproxy (HTTP CONNECT, optionally with Basic
// authentication) and microsocks (SOCKS5, optionally with username/password). The
// destructor stops the proxy and removes its files. No Asio here.

#include <support/ports.hpp>
#include <support/process.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace vigil::proxy_test {

using vigil::test::free_port;  // a port on 127.0.0.1 nobody listens on now

/// An executable found in PATH or in the sbin directories (which a non-login PATH may lack).
std::optional<std::string> find_tool(std::string_view name);

/// Why tinyproxy (package tinyproxy) or microsocks (package microsocks) cannot be used
/// here, or nullopt when it can.
std::optional<std::string> tinyproxy_unavailable();
std::optional<std::string> microsocks_unavailable();

/// Credentials a proxy demands; none when empty.
struct credentials {
    std::string user;
    std::string password;
};

/// A proxy process listening on 127.0.0.1:port().
class proxy_process {
public:
    enum class kind { tinyproxy, microsocks };

    /// Starts it and waits (at most 5 s) until it accepts connections. Throws
    /// std::runtime_error with its output when it does not.
    proxy_process(kind k, credentials auth = {});
    ~proxy_process();
    proxy_process(const proxy_process&) = delete;
    proxy_process& operator=(const proxy_process&) = delete;

    std::uint16_t port() const noexcept { return port_; }
    /// `scheme://[user:password@]127.0.0.1:port`, with the given credentials (not
    /// necessarily the ones the proxy wants).
    std::string url(std::string_view scheme, const credentials& as = {}) const;
    /// What the proxy printed so far (tinyproxy logs every connection).
    std::string log();

private:
    std::optional<vigil::test::child_process> process_;
    std::string dir_;
    std::uint16_t port_ = 0;
};

}  // namespace vigil::proxy_test
