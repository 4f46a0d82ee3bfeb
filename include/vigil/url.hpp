// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/error.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace vigil {

/// Where a `ws://` or `wss://` URL points, split into what each connection step needs.
struct endpoint {
    /// True for `wss://`.
    bool tls = false;
    /// Name or address to resolve and to verify the certificate against; IPv6 literals
    /// without brackets (`::1`).
    std::string host;
    /// Explicit port, or 80 / 443 from the scheme.
    std::uint16_t port = 0;
    /// Request target: path (at least `/`) plus `?query`. Fragments are dropped.
    std::string target;
    /// Value of the `Host` header: the host as written (IPv6 in brackets), with `:port`
    /// when the port is not the scheme's default.
    std::string host_header;
    /// True when `host` is an IP literal: then no SNI is sent (RFC 6066 forbids it) and the
    /// certificate is checked against the address.
    bool host_is_ip = false;
};

/// Parses a WebSocket URL (Boost.URL does the RFC 3986 work). Returns an empty code and
/// fills `out` on success. Errors: `error::invalid_url` (not a URL, or user info present),
/// `error::unsupported_scheme` (not ws/wss), `error::invalid_host` (missing or empty host),
/// `error::invalid_port` (not 1..65535). `*detail`, if given, gets a message that quotes
/// the offending part. Never throws for bad input.
error_code parse_url(std::string_view url, endpoint& out, std::string* detail = nullptr);

}  // namespace vigil
