// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/error.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace vigil {

/// How a client session reaches its server through a proxy (`session_config::proxy`).
///
/// The proxy steps (the TCP connection to the proxy, then the HTTP CONNECT exchange or the
/// SOCKS5 negotiation) count against `session_config::connect_timeout`. TLS for `wss://`
/// runs end to end through the tunnel: SNI and the certificate check name the server of the
/// WebSocket URL, never the proxy. Failures are classified like any other (`is_permanent`):
/// a proxy that wants credentials (`error::proxy_auth_required`), refuses the target
/// (`error::proxy_denied`) or does not speak the protocol (`error::proxy_protocol_error`) is
/// permanent; one that cannot reach the target now (`error::proxy_target_unreachable`),
/// refuses the connection or does not answer in time is transient. Every detail names the
/// proxy by host and port; a password is never part of any message. Cancelling `connect()`
/// during the proxy steps ends it with `operation_aborted`, as in any other step.
struct proxy_config {
    /// The proxy to use for every URL, overriding the environment:
    /// - `http://[user[:password]@]host[:port]`: HTTP CONNECT, with Basic authentication when
    ///   the URL has user info (percent-encoded in the URL, decoded before use);
    /// - `socks5h://[user[:password]@]host[:port]`: SOCKS5 (RFC 1928), the proxy resolves
    ///   the server's name (remote DNS), with username/password authentication (RFC 1929)
    ///   when given;
    /// - `socks5://...`: SOCKS5 with the server's name resolved here, as curl does;
    /// - without a scheme (`host:3128`): `http://`.
    ///
    /// The port defaults to 1080, as in curl. `https://` proxies (TLS to the proxy) and SOCKS4
    /// are not supported. Default empty: no proxy (unless `from_environment`). A URL that
    /// cannot be used makes `validate()` fail with `error::invalid_config` naming
    /// `proxy.url`.
    std::string url;

    /// Hosts reached directly, never through the proxy, in curl's `NO_PROXY` syntax: a comma
    /// separated list of host names (each also matching its subdomains; a leading dot is
    /// allowed and changes nothing), IP literals (matched exactly; IPv6 with or without
    /// brackets) or `*` for every host. A port after an entry is ignored, and so is case.
    /// Default empty. When empty and `from_environment` is set, the `no_proxy` (then
    /// `NO_PROXY`) environment variable is used.
    std::string no_proxy;

    /// Takes the proxy from the environment as curl reads it, when `url` is empty:
    /// `ws://` URLs use `http_proxy` (lower case only: CGI programs get a client-supplied
    /// `HTTP_PROXY`), `wss://` URLs `https_proxy`, then `HTTPS_PROXY`; both then fall back to
    /// `all_proxy`, then `ALL_PROXY`. Empty variables count as unset. The environment is
    /// read at every connect. A variable's URL that cannot be used fails that connect with
    /// `error::invalid_config` naming the variable. Default false: vigil never picks up a
    /// proxy the application did not ask for.
    bool from_environment = false;
};

/// Which protocol speaks to a proxy.
enum class proxy_scheme {
    /// HTTP CONNECT (`http://`).
    http,
    /// SOCKS5, the server's name resolved by the client (`socks5://`).
    socks5,
    /// SOCKS5, the server's name resolved by the proxy (`socks5h://`).
    socks5h,
};

/// A proxy URL taken apart (`parse_proxy_url`).
struct proxy_endpoint {
    proxy_scheme scheme = proxy_scheme::http;
    /// Name or address of the proxy; IPv6 literals without brackets.
    std::string host;
    /// The URL's port, or 1080.
    std::uint16_t port = 1080;
    /// Decoded user name and password; both empty when the URL has no user info.
    std::string username;
    std::string password;

    /// `host:port` (IPv6 in brackets), for messages: never the credentials.
    std::string where() const;
};

/// Parses a proxy URL (see `proxy_config::url`). Returns an empty code and fills `out`, or
/// `error::invalid_config` with a message saying what is wrong in `*detail` (if given): an
/// unsupported scheme (naming the ones supported), a missing or bad host, a bad port, a
/// path, query or fragment, a user name with ':' in it, or SOCKS5 credentials longer than
/// 255 bytes. The message shows the URL with its user info masked. Never throws for bad
/// input. Pure: thread safe.
error_code parse_proxy_url(std::string_view url, proxy_endpoint& out, std::string* detail = nullptr);

/// Reads one environment variable: its value, or nullopt when it is not set.
using env_lookup = std::function<std::optional<std::string>(std::string_view name)>;

/// The process environment, for `choose_proxy`: each call of the returned function reads
/// `getenv` then, so it is as thread safe as `getenv` (not against a concurrent `setenv`).
env_lookup process_environment();

/// Which proxy, if any, a connection to `host` uses (see `proxy_config`).
struct proxy_choice {
    /// The proxy URL; empty: connect directly.
    std::string url;
    /// Where the URL came from (`"proxy.url"`, `"https_proxy"`, `"ALL_PROXY"` ...), or, for
    /// a host that matched a no-proxy list, that list (`"proxy.no_proxy"`, `"no_proxy"`,
    /// `"NO_PROXY"`); empty when there is no proxy at all.
    std::string source;
};

/// Chooses the proxy for a connection to `host` (`tls`: a `wss://` URL) from `cfg` and,
/// when `cfg.from_environment` is set, from `env`. Pure: reads nothing but its arguments,
/// and does not check the URL it returns (`parse_proxy_url` does). Thread safe when `env` is.
proxy_choice choose_proxy(const proxy_config& cfg, bool tls, std::string_view host, const env_lookup& env);

/// True when `host` (a name, or an IP literal, IPv6 with or without brackets) matches an
/// entry of the no-proxy `list` (syntax in `proxy_config::no_proxy`). Pure: thread safe.
bool no_proxy_matches(std::string_view list, std::string_view host);

}  // namespace vigil
