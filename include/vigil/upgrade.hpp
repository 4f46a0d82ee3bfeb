// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vigil {

/// A client's upgrade request as a server's admission check sees it (see
/// `server_config::check_upgrade`). It has passed vigil's own checks (a GET over HTTP/1.1
/// with the WebSocket headers, within `max_request_header` and the connection limits).
/// Valid only while the check runs: copy what you keep.
struct upgrade_request {
    /// The request target, "/chat?room=1&token=..." (as sent, not decoded).
    std::string target;
    /// The client's address, "127.0.0.1:54321" (IPv6 in brackets), as `connection::remote()`.
    std::string remote;
    /// Every header as received, in order (names as the client spelled them).
    std::vector<std::pair<std::string, std::string>> headers;
    /// The subprotocols the client offered (`Sec-WebSocket-Protocol`, every such header,
    /// comma-separated lists split and trimmed), in the client's order. Empty: none offered.
    std::vector<std::string> subprotocols;
    /// On `wss://`, the client's certificate in PEM when it presented one (the server's TLS
    /// context must ask for it: `server_tls_config::context` with `verify_peer`); empty
    /// otherwise.
    std::string peer_certificate;

    /// The value of the first header named `name`, compared case-insensitively; nullopt
    /// when there is none. The view is into `headers`.
    std::optional<std::string_view> header(std::string_view name) const noexcept;
    /// The value of the query parameter `name` in `target` ("token" in "/?token=abc" gives
    /// "abc"), percent-decoded; nullopt when absent.
    std::optional<std::string> query_parameter(std::string_view name) const;
};

/// What a server's admission check decides about one upgrade request.
struct upgrade_decision {
    enum class verdict { accept, refuse };

    /// Accept, answering `subprotocol` (empty: the server's own choice among
    /// `server_config::subprotocols`; it must be one the client offered) and attaching
    /// `user_data` to the connection (`connection::user_data()`).
    static upgrade_decision accept(std::string subprotocol = {}, std::shared_ptr<void> user_data = {});
    /// Refuse with HTTP `status` (4xx or 5xx), `body` (text/plain, sent to the client) and
    /// `headers` (such as `{"Retry-After", "30"}` with a 429 or 503, or `WWW-Authenticate`
    /// with a 401). `reason` is for the server's log only (`server_events::on_rejected`'s
    /// detail); it defaults to the body.
    static upgrade_decision refuse(unsigned status, std::string body, std::string reason = {},
                                   std::vector<std::pair<std::string, std::string>> headers = {});

    verdict what = verdict::accept;
    std::string subprotocol;
    std::shared_ptr<void> user_data;
    unsigned status = 0;
    std::string body;
    std::string reason;
    std::vector<std::pair<std::string, std::string>> headers;
};

/// A server's admission check: runs for each upgrade request on that connection's
/// executor, after vigil's own checks and before the 101 answer, within the connection's
/// `handshake_timeout` (one deadline over reading the request and the check, from the accept,
/// or from the end of the TLS handshake on `wss://`). It must honour Asio's cancellation (any Asio wait does): at `handshake_timeout`
/// it is cancelled and the client's socket is closed unanswered. A check that throws: the
/// client gets 500 and `server_events::on_rejected` the exception's text. A refusal whose
/// status is not 4xx/5xx, a header with CR, LF or NUL, or a subprotocol the client did not
/// offer: the client gets 500 and `on_rejected` says what the check did wrong.
using upgrade_check = std::function<boost::asio::awaitable<upgrade_decision>(const upgrade_request&)>;

/// Whether a request without an `Origin` header passes an origin policy. Browsers always
/// send one on a WebSocket upgrade; other clients (vigil, Node `ws`, curl) usually send none.
enum class missing_origin { allow, refuse };

/// True when `origin` (an `Origin` header's value) is one of `allowed`: same scheme,
/// host (compared case-insensitively) and port, a port the scheme's default (80 for http,
/// 443 for https) being the same as no port. "null" and malformed origins match nothing.
bool origin_allowed(std::string_view origin, const std::vector<std::string>& allowed);

/// A ready check against cross-site WebSocket hijacking: a request whose `Origin` is not
/// in `allowed` (exact `scheme://host[:port]`, as `origin_allowed`) is refused 403, and one
/// without `Origin` as `missing` says. Requests it lets through go to `next` when given
/// (your own check, such as authentication), otherwise they are accepted. Compose several
/// by nesting: `allow_origins(list, missing_origin::refuse, require_token(secret))`.
/// **Throws** `std::invalid_argument` naming the entry when an entry of `allowed` is not an
/// origin.
upgrade_check allow_origins(std::vector<std::string> allowed, missing_origin missing, upgrade_check next = {});

/// The token a request presents: the `Authorization: Bearer TOKEN` header's (scheme
/// compared case-insensitively), or else the `token` query parameter's (browsers cannot set
/// headers on a WebSocket); nullopt when it presents none.
std::optional<std::string> presented_token(const upgrade_request& req);

/// A ready check: requests whose `presented_token` is not `secret` (compared in constant
/// time) are refused 401 with `WWW-Authenticate: Bearer`; the others go to `next` when
/// given, otherwise are accepted. **Throws** `std::invalid_argument` for an empty secret.
upgrade_check require_token(std::string secret, upgrade_check next = {});

}  // namespace vigil
