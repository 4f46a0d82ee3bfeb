// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <boost/system/error_code.hpp>

#include <string>
#include <type_traits>

namespace vigil {

using boost::system::error_code;

/// Why a vigil operation failed or a session ended.
///
/// Each value's `message()` is its snake_case name (`"pong_timeout"`), stable across
/// releases: `vigil-probe` prints it as `reason` and scripts match on it. vigil's own
/// timers always report one of these codes, never a bare `operation_aborted`, so
/// `operation_aborted` from vigil means exactly one thing: the caller cancelled.
enum class error {
    /// The URL could not be parsed at all.
    invalid_url = 1,
    /// The URL's scheme is neither `ws` nor `wss`.
    unsupported_scheme,
    /// The URL has no host, or a host that cannot be used (empty, bad IPv6 literal).
    invalid_host,
    /// The URL's port is not a number in 1..65535.
    invalid_port,
    /// A `session_config` field is out of range; the detail names the field.
    invalid_config,
    /// DNS resolution plus TCP connect did not finish within `connect_timeout`.
    connect_timeout,
    /// The TLS handshake did not finish within `tls_handshake_timeout`.
    tls_handshake_timeout,
    /// The WebSocket upgrade (HTTP request and response) did not finish within
    /// `handshake_timeout`.
    handshake_timeout,
    /// A ping went unanswered: nothing at all arrived within `pong_timeout` of it.
    pong_timeout,
    /// No data message arrived for `idle_timeout` although the peer may still answer pings.
    idle_timeout,
    /// One message write made no progress for `write_timeout` (the peer stopped reading).
    write_timeout,
    /// Our close frame got no answer within `close_timeout`; the socket was torn down.
    close_timeout,
    /// `send()` found the bounded send queue full; the message was not queued.
    send_queue_full,
    /// The operation needs an open connection and there is none.
    not_connected,
    /// `connect()` or `run()` was called while another one is in progress.
    already_running,
    /// An event handler threw; `run()` rethrows the exception after teardown.
    handler_exception,
    /// The supervisor gave up after `max_attempts` consecutive failed attempts; the last
    /// failure is in `supervisor::last_disconnect()`.
    retries_exhausted,
    /// A message waited in the supervisor's outbox longer than `message_ttl` and was
    /// dropped unsent, and its sender told so.
    message_expired,
    /// The supervisor (or a `redis_link`) was stopped, or gave up, before the message could be
    /// written.
    supervisor_stopped,
    /// The peer did not keep up: the send queue overflowed under `overflow_policy::disconnect`
    /// and the connection was ended (close code 1013 sent where possible).
    slow_consumer,
    /// The message was written, but the connection died before a heartbeat pong proved the
    /// peer had read it (`delivery_guarantee::confirmed`), or before Redis answered a
    /// `redis_link` publish: it may or may not have arrived.
    delivery_unconfirmed,
    /// The server is shutting down (`server::stop()`); the connection was closed with 1001.
    server_shutdown,
    /// A supervisor's `before_attempt` hook did not finish within `prepare_timeout`.
    prepare_timeout,
    /// The proxy wants credentials, or rejected the ones given: HTTP 407 (or 401, which some
    /// proxies send for wrong credentials) to CONNECT, a SOCKS5 proxy that accepts none of
    /// the offered methods or fails the username/password check. Permanent.
    proxy_auth_required,
    /// The proxy refused to open the tunnel by its policy: an HTTP status to CONNECT other
    /// than 2xx, 401, 407, 408, 429 and 5xx (403 typically), or SOCKS5 replies 2 (not allowed by
    /// ruleset), 7 (command not supported) and 8 (address type not supported). Permanent.
    proxy_denied,
    /// The proxy could not reach (or serve) the server right now: HTTP 408, 429 or 5xx to
    /// CONNECT (502, 503, 504 typically), SOCKS5 replies 1 (general failure), 3, 4, 5 and 6
    /// (network or host unreachable, refused, TTL expired), and unknown SOCKS5 replies.
    /// Transient.
    proxy_target_unreachable,
    /// What answered at the proxy's address does not speak the configured protocol: not
    /// HTTP, not SOCKS version 5, a reply with bytes after it that the tunnel would take for
    /// the server's. Usually the wrong scheme or port in the proxy URL. Permanent.
    proxy_protocol_error,
    /// `session_config::local_address` cannot be used: it is not an address of this host,
    /// or the server (or proxy) has no address of its family. Permanent.
    local_address_unusable,
    /// A server's connections held more than `server_config::memory_budget` for longer than
    /// `budget_grace`, and this connection held the most: it was ended (close code 1009 when
    /// it held a message in progress, 1013 when it held queued messages).
    memory_budget_exceeded,
    /// An incoming message took longer than `session_config::message_timeout` allows (close
    /// code 1008 sent).
    message_timeout,
    /// The server answered a subprotocol the client did not offer (or one when none was
    /// offered), or none while `session_config::subprotocol_required` was set: the two do
    /// not speak a common protocol. Permanent.
    subprotocol_mismatch,
    /// Redis refused the password of a `redis_config::url`, or asked for one when none was
    /// given (WRONGPASS, NOAUTH, invalid password). Permanent.
    redis_auth_failed,
    /// Redis answered a command with an error reply.
    redis_error,
    /// Redis did not answer a command within `redis_config::command_timeout`; the link was
    /// declared dead.
    redis_command_timeout,
    /// A message arrived from a server's fan-out that is not a vigil broadcast this version
    /// reads (another program on the bus, or a newer format); it was dropped and reported
    /// (`server_events::on_fanout_error`).
    fanout_message_invalid,
};

/// The two answers to "should we try again?" (see `is_permanent`).
enum class condition {
    /// A passing network fault: reconnecting later may work.
    transient = 1,
    /// Retrying the same thing will fail the same way (bad URL, 401, untrusted certificate).
    permanent,
};

/// The category of `vigil::error`; its name is `"vigil"`.
const boost::system::error_category& error_category() noexcept;

/// The category of codes that carry the HTTP status of a rejected upgrade (value = status,
/// e.g. 401). `error_name()` of any of them is `"handshake_rejected"`.
const boost::system::error_category& http_status_category() noexcept;

/// The category of codes that carry the close code a peer sent (value = code, e.g. 1001).
/// `error_name()` of any of them is `"closed_by_peer"`; the peer's reason text is in
/// `disconnect_info::close_reason`.
const boost::system::error_category& close_code_category() noexcept;

/// An upgrade rejected with HTTP `status`.
error_code make_http_status_error(unsigned status) noexcept;
/// A connection the peer closed with close code `code`.
error_code make_close_error(unsigned code) noexcept;
/// The HTTP status carried by `ec`, or 0 if `ec` is not a rejected upgrade.
unsigned http_status_of(const error_code& ec) noexcept;
/// The close code carried by `ec`, or 0 if `ec` is not a close by the peer.
unsigned close_code_of(const error_code& ec) noexcept;

/// The category of `vigil::condition`; compares equal to vigil, Asio, Beast and SSL codes
/// as `is_permanent` classifies them.
const boost::system::error_category& condition_category() noexcept;

error_code make_error_code(error e) noexcept;
boost::system::error_condition make_error_condition(condition c) noexcept;

/// True when retrying cannot help. This is the classification, and the one place it is
/// written down (the README and vigil-probe refer here):
///
/// | permanent: stop | transient: retry later |
/// |---|---|
/// | `invalid_url`, `unsupported_scheme`, `invalid_host`, `invalid_port`, `invalid_config`, `local_address_unusable`, `subprotocol_mismatch` | every other vigil code that is a failure: every timeout (`pong_timeout`, `idle_timeout`, `connect_timeout` ...), `slow_consumer`, `server_shutdown`, `handler_exception` ... |
/// | proxy: `proxy_auth_required` (407, SOCKS5 credentials), `proxy_denied` (403, SOCKS5 not allowed), `proxy_protocol_error` (not the configured protocol) | proxy: `proxy_target_unreachable` (502/503/504, SOCKS5 host unreachable ...); a proxy that refuses the connection or does not answer within `connect_timeout` (`connection_refused`, `connect_timeout`) |
/// | upgrade rejected with 3xx or 4xx, except 408 and 429 | upgrade rejected with 408, 429 or 5xx |
/// | close code 1002 (protocol error), 1003 (unsupported data), 1007 (invalid payload), 1010 (extension required) | every other close code: 1000, 1001, 1005, 1006, 1008 (policy violation: a supervisor waits at least `policy_violation_delay`), 1009, 1011-1014, 3000-4999 |
/// | TLS certificate verification failure | every other network or TLS failure: refused, reset, eof, unreachable, DNS ... |
/// | Redis (`redis_link`): `redis_auth_failed` (wrong password, NOAUTH) | Redis: `redis_error` (an error reply), `redis_command_timeout`; fan-out: `fanout_message_invalid` |
///
/// Why: a permanent failure judged what we send (the request, the frames, our credentials,
/// the server's certificate), so another attempt would send the same and fail the same way;
/// a transient one is about the path or the server's state. 1008 (policy violation) is the
/// exception that proves it: servers send it for a bad token and for "too many requests"
/// alike (exchanges do), and only the second one passes; retrying a bad token every
/// `policy_violation_delay` (30 s) costs little, giving up for good on a rate limit costs the
/// feed, so it is transient with a long floor. An application that knows its server means
/// "banned" by it passes `supervisor_config::is_permanent`. HTTP statuses and close codes
/// travel inside the code (`http_status_category`, `close_code_category`), so this one
/// function sees them. `operation_aborted` is neither transient nor permanent: it means the
/// caller cancelled, and a supervisor stops without retrying. `ec == condition::transient` /
/// `condition::permanent` compare the same way; an empty code is neither.
bool is_permanent(const error_code& ec) noexcept;

/// A stable name for any error code, for logs and JSON output. An empty code gives `"ok"`.
///
/// Every value of these enums has a snake_case name (`[a-z0-9_]`) of its own within its
/// category:
/// - vigil's `error`: the enumerator (`pong_timeout`);
/// - Asio's `basic_errors`, system category: the enumerator (`connection_refused`; on POSIX
///   `try_again` and `would_block` are one value, named `try_again`). A generic-category
///   errno (from std or hand-made codes) is named like its system twin;
/// - Asio's `netdb_errors`, `addrinfo_errors`, `misc_errors`: the enumerator
///   (`host_not_found`, `service_not_found`, `eof`);
/// - `boost::beast::error`: `timeout`;
/// - `boost::beast::http::error`: `end_of_stream`, `partial_message`, `header_limit`,
///   `body_limit`, and every other value `http_` + enumerator (`http_bad_version`,
///   `http_buffer_overflow`);
/// - `boost::beast::websocket::error`: the enumerator (`closed`, `bad_reserved_bits`);
///   the retired `unused1` and `unused2` give `websocket_unused1` and `websocket_unused2`;
/// - `boost::beast::zlib::error`: `deflate_` + enumerator (`deflate_invalid_distance`).
///
/// These categories are mapped in full too, to fewer names: `http_status_category` gives
/// `handshake_rejected` (the status is in `http_status_of`), `close_code_category` gives
/// `closed_by_peer`, and Asio's two SSL categories give `tls_certificate_verify_failed`,
/// `tls_stream_truncated`, or `tls_error` for every other code.
///
/// Anything else (an errno that is not one of `basic_errors`, a vigil value outside the
/// enum, another library's category) gives `<category>_<value>`: the category's name with
/// each character other than an ASCII letter or digit replaced by `_`, then `_` and the
/// value in decimal (`system_2`, `vigil_999`, `acme_io_stack_-3`). That fallback keeps the
/// category name's case and a negative value's `-`.
std::string error_name(const error_code& ec);

}  // namespace vigil

template <>
struct boost::system::is_error_code_enum<vigil::error> : std::true_type {};

template <>
struct boost::system::is_error_condition_enum<vigil::condition> : std::true_type {};
