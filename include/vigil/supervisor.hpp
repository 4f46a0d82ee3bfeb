// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/backoff.hpp>
#include <vigil/config.hpp>
#include <vigil/error.hpp>
#include <vigil/rate_limit.hpp>
#include <vigil/session.hpp>

#include <vigil/detail/async_send.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace vigil {

/// What it means for a supervisor's `send()` to complete without error.
enum class delivery_guarantee {
    /// Written to the socket, handed to TCP. A connection that dies unnoticed (the very
    /// fault vigil exists for) swallows what was written in the last `ping_interval +
    /// pong_timeout` before the verdict, and those sends have already succeeded. The default:
    /// no extra traffic, no extra latency.
    written,
    /// Read by the peer: the send completes once a heartbeat pong answers a ping written
    /// after the message (TCP delivers in order, and a peer answers a ping only when it reads
    /// it, so everything before it was read too). The heartbeat then also pings within a few
    /// milliseconds of writes, one ping in flight at a time, so a confirmation costs about a
    /// round trip. When the connection dies first, the send completes with
    /// `error::delivery_unconfirmed`: at most once, and never silently lost. Needs the
    /// heartbeat (`session.ping_interval > 0`).
    confirmed,
    /// As `confirmed`, but a message the dead connection left unconfirmed goes out again, first
    /// thing on the next connection, in order: at least once (the peer may see it twice, so
    /// make messages idempotent or carry an id). `message_ttl` still applies.
    resend_unconfirmed,
};

/// How the supervisor retries. Durations are milliseconds; seconds convert implicitly.
struct supervisor_config {
    /// The settings of every session the supervisor opens.
    session_config session;

    /// Backup endpoints, tried in this order after the supervisor's URL (the primary). On a
    /// transient failure the next attempt goes to the next endpoint in the list at once,
    /// wrapping around to the primary; the policy's delay (and `min_delay`) comes after each
    /// full round through the list that failed, not after each URL, so a dead primary costs
    /// one failed connect, not a backoff wait. A server's `Retry-After` and the 1008 floor
    /// still apply to the next attempt, whichever endpoint it goes to. Each URL is checked
    /// by `validate()`. Default: none.
    std::vector<std::string> backup_urls;

    /// What happens once a backup endpoint holds a connection. Zero (default): stay on it
    /// until it fails (then the rotation goes on to the next endpoint). Positive: once the
    /// backup connection has been up this long (at least `stable_after`), the supervisor
    /// makes a planned reconnect to the primary (event `on_reconnect` with "failback"); if
    /// the primary still fails, the rotation goes on to the backups at once. While the
    /// primary stays down, that costs one failed connect and one reconnect per period.
    std::chrono::milliseconds failback_after{0};

    /// Bound on the `before_attempt` hook; beyond it the attempt fails with
    /// `error::prepare_timeout` (transient). Default 10 s. Must be positive.
    std::chrono::milliseconds prepare_timeout{10000};

    /// The backoff streak resets only after a connection stayed up this long, so a server
    /// that accepts and then drops every connection meets growing delays, not a reconnect
    /// loop. Default 5 s. Zero resets on every successful connect (not recommended).
    std::chrono::milliseconds stable_after{5000};

    /// Floor on every delay, whatever the policy returns: never a tight loop. Default
    /// 100 ms. Must be positive.
    std::chrono::milliseconds min_delay{100};

    /// Upper bound on a server's `Retry-After` (seconds or HTTP date on a 429 or 503
    /// upgrade response), so a misconfigured server cannot park clients for hours. Default
    /// 60 s. Zero ignores `Retry-After`.
    std::chrono::milliseconds max_retry_after{60000};

    /// Floor on the delay after the server closed the connection with 1008 (policy
    /// violation), which exchanges send for "too many requests": retrying sooner would only
    /// prolong the ban. Default 30 s. Zero: no floor beyond `min_delay`. 1008 is transient
    /// (see `is_permanent`); `is_permanent` below can make it final.
    std::chrono::milliseconds policy_violation_delay{30000};

    /// Replace a connection before the server cuts it (exchanges cut at 24 h): once a
    /// connection has been up for a moment drawn uniformly from the last tenth of this age
    /// (so that a fleet connected together does not reconnect together), the supervisor
    /// makes a planned reconnect, as `reconnect("max_connection_age")` does. Default 0: no
    /// limit. The old connection is closed before the new one is opened (messages sent
    /// meanwhile wait in the outbox, as during any reconnect), unless `make_before_break`.
    std::chrono::milliseconds max_connection_age{0};

    /// Planned replacements (`max_connection_age`, `failback_after`, `reconnect()`) open the
    /// new connection first, while the old one stays up and keeps delivering messages:
    /// - the new one goes through a whole attempt (the limiter's turn, `before_attempt`,
    ///   `on_connecting`, connect, the `on_connected` hook) beside the old one;
    /// - once its hook succeeded (`on_up`), the outbox moves to it and the old one is closed
    ///   with 1000 and the reason (`on_disconnected` reports it); a message being written on
    ///   the old one completes there, and the next goes to the new one;
    /// - meanwhile both deliver to `on_message`, in the order each receives: a message the
    ///   server sends to both arrives twice. No message is missed across the replacement; drop
    ///   the duplicates by the feed's own sequence numbers.
    ///
    /// If the new connection fails, the old one stays and nothing is lost
    /// (`supervisor_events::on_replacement_failed`, `supervisor_counters::failed_replacements`).
    /// A transient failure is tried again: for a failback after `failback_after`; otherwise
    /// after the policy's delay (asked as for a streak of the replacement's failures, at least
    /// `min_delay`, the server's `Retry-After` and the 1008 floor applied), but no later than
    /// halfway to `max_connection_age` of the old connection while that is still ahead, so
    /// that several tries fit before the server's cut. A permanent failure (see
    /// `is_permanent`) is not tried again for this connection: it stays until it ends, and
    /// the regular attempt that follows then meets the failure as usual. Failed replacements
    /// are not charged to `max_attempts` and do not grow the backoff streak.
    ///
    /// If the old connection ends while the new one is being opened, the new attempt goes on
    /// as the regular reconnect (no delay, no failure counted for the old one's end; a
    /// permanent reason still ends `run()`). `stop()` during the overlap closes both.
    ///
    /// Needs `delivery == delivery_guarantee::written` (confirmations are counted on one
    /// connection at a time); `validate()` refuses other combinations. Default false: the old
    /// connection is closed first, then the new one opened (messages sent meanwhile wait).
    bool make_before_break = false;

    /// Consecutive failed attempts after which the supervisor gives up with
    /// `error::retries_exhausted`. A connection that became stable resets the count.
    /// Default 0: retry transient failures forever.
    std::size_t max_attempts = 0;

    /// Most messages waiting in the outbox (while disconnected, or behind earlier messages).
    /// `send()` beyond it fails at once with `error::send_queue_full`. Default 1024.
    std::size_t outbox_limit = 1024;

    /// Longest a message may wait in the outbox; older ones complete with
    /// `error::message_expired` instead of going out late (a stale order is worse than none).
    /// Default 0: no limit (the outbox bound still applies). `send()` can set a message's own.
    std::chrono::milliseconds message_ttl{0};

    /// What a successful send means; see `delivery_guarantee`. Default `written`.
    delivery_guarantee delivery = delivery_guarantee::written;

    /// Limits shared with other supervisors (connects per window) and applied to each of
    /// this supervisor's connections (messages per window; the outbox waits for its turn,
    /// never drops, and `message_ttl` still applies while it waits). With confirmed delivery
    /// every message counts twice (its confirming ping). Messages the `on_connected` hook
    /// sends itself are not paced. Default: none.
    std::shared_ptr<rate_limiter> limiter;

    /// Overrides `is_permanent()` for deciding whether to stop: return true to give up on
    /// `ec`. Called on the supervisor's executor. Empty (default): `vigil::is_permanent`.
    std::function<bool(const error_code& ec)> is_permanent;
};

/// Checks `cfg` (including `cfg.session`); see `validate(const session_config&)`.
error_code validate(const supervisor_config& cfg, std::string* detail = nullptr);

/// Reported before each wait between attempts.
struct retry_info {
    /// 1 for the first retry in a failure streak.
    std::size_t attempt = 0;
    /// How long the supervisor will wait (policy, floor and Retry-After applied). Zero
    /// between two endpoints of one round (see `supervisor_config::backup_urls`).
    std::chrono::milliseconds delay{0};
    /// Why the last attempt ended, with its detail, HTTP status and close code.
    disconnect_info last;
    /// The endpoint that failed and the one the next attempt goes to: 0 is the primary (the
    /// supervisor's URL), 1 the first of `backup_urls` ...; `supervisor::endpoints()` names them.
    std::size_t endpoint = 0;
    std::size_t next_endpoint = 0;
};

/// A make-before-break replacement that failed while the live connection stayed up.
struct replacement_failure {
    /// Why the new connection failed (its attempt, its hook, or its end during the hook).
    disconnect_info last;
    /// The endpoint it went to (an index into `supervisor::endpoints()`).
    std::size_t endpoint = 0;
    /// Failed tries in a row for this live connection: 1, 2 ...
    std::size_t failures = 0;
    /// When the next try comes, from now; empty after a permanent failure: no more tries
    /// while this connection lives.
    std::optional<std::chrono::milliseconds> retry_in;
};

/// One attempt's connection parameters, which the `before_attempt` hook may change.
struct attempt_params {
    /// The URL to connect to. Preset to the endpoint's URL (`supervisor::endpoints()`).
    std::string url;
    /// The upgrade request's extra headers. Preset to `session_config::headers`; checked as
    /// `validate()` checks those.
    std::vector<std::pair<std::string, std::string>> headers;
    /// Which endpoint this attempt goes to (0: the primary).
    std::size_t endpoint = 0;
    /// 1 for the first attempt after a healthy period (or of `run()`), then 2, 3 ... as
    /// attempts fail in a row.
    std::size_t attempt = 1;
};

/// Observers for what the supervisor does, next to the events of its sessions. Handlers
/// run on the supervisor's executor and must not throw: one that does stops the supervisor
/// (its session closed), and `run()` rethrows the exception (the policy of every vigil
/// event, described on `session_events`; the sessions' own events follow it too).
/// Set them before `run()`.
struct supervisor_events {
    /// An attempt starts: the `before_attempt` hook (if any) succeeded and the connection is
    /// being opened to `p.url` (which may carry a credential: log it with care).
    std::function<void(const attempt_params& p)> on_connecting;
    /// A session is up: connected, and the `on_connected` hook succeeded.
    /// `supervisor::current_endpoint()` says which endpoint.
    std::function<void()> on_up;
    /// An attempt failed or a connection ended, and another attempt follows after a delay.
    std::function<void(const retry_info&)> on_retry;
    /// A planned reconnect began (`reconnect()`, `max_connection_age` or failback): the live
    /// connection is being closed, and the next attempt follows as soon as it is closed, with
    /// no delay and no failure counted. `reason` is the one given (the close frame carries
    /// it). Under `make_before_break` the new connection is being opened beside the live one
    /// instead (each try of it, the first and the retries after `on_replacement_failed`); its
    /// `on_up` comes when the outbox moves to it.
    std::function<void(const std::string& reason)> on_reconnect;
    /// Under `make_before_break`: the new connection failed, and the live one stays.
    std::function<void(const replacement_failure&)> on_replacement_failed;
    /// The supervisor stopped retrying: a permanent failure or `max_attempts`.
    /// `reason` is what `run()` returns; `last` is the failure that caused it.
    std::function<void(const error_code& reason, const disconnect_info& last)> on_gave_up;
};

/// Counters the application can read at any time (a consistent snapshot).
struct supervisor_counters {
    std::size_t attempts = 0;      ///< connection attempts started (the `before_attempt` hook included)
    std::size_t connects = 0;      ///< sessions that came up (hook included)
    std::size_t retries = 0;       ///< waits between attempts
    std::size_t planned_reconnects = 0;  ///< `reconnect()` calls, `max_connection_age` and failback replacements carried out (under `make_before_break`: handed over)
    std::size_t failed_replacements = 0;  ///< `make_before_break` replacements that failed, the live connection kept
    std::size_t throttled_connects = 0;  ///< attempts that waited for the limiter's connect window
    std::size_t paced_messages = 0;      ///< messages that waited for the limiter's message window
    std::map<std::string, std::size_t> disconnects;  ///< by error_name() of the reason
    /// Liveness verdicts (pong, idle, write and close timeouts) by diagnosis_name() of
    /// whose fault they were: "network", "peer_unresponsive", "local_stall", "unknown".
    std::map<std::string, std::size_t> diagnoses;
    std::chrono::milliseconds time_connected{0};     ///< time sessions were up, the live one included
    std::size_t messages_sent = 0;    ///< sends completed without error (written, or confirmed)
    std::size_t messages_failed = 0;  ///< sends completed with an error
};

/// The counters plus traffic, what waits, and how round trips and backoff waits were
/// distributed (see `supervisor::metrics()`).
struct supervisor_metrics {
    supervisor_counters counters;
    /// A connection is up now (from `on_up` until it ends).
    bool connected = false;
    /// Messages given to `send()` whose send has not completed yet (in the outbox, being
    /// written, or waiting for a confirming pong), and their bytes: the queue depth an
    /// application feels.
    std::uint64_t pending_messages = 0;
    std::uint64_t pending_bytes = 0;
    /// Data messages and payload bytes each way over every connection the supervisor made
    /// (see `traffic_counts`).
    traffic_counts traffic;
    /// Round trips of the heartbeat's pings (protocol or application-level).
    duration_histogram round_trips;
    /// How long each wait between attempts lasted (counted as `counters.retries`): the
    /// policy's delay, or less when `retry_now()` or `stop()` cut it short.
    duration_histogram backoff_waits;
};

/// Keeps a WebSocket client connected: runs sessions one after another, retries transient
/// failures after delays from a backoff policy, stops at once on permanent ones, and keeps
/// every message the application sends accounted for.
///
/// Each attempt: its turn under the shared `limiter` (if any), the `before_attempt` hook
/// (fresh URL and headers), `connect()` to the endpoint's URL; then, concurrently with
/// `session::run()`, the `on_connected` hook (re-authenticate, re-subscribe) and, once it
/// succeeded, the outbox drains into the session in order. When the session ends, the reason
/// is classified: `operation_aborted` (cancelled) and `stop()` end the supervisor; after
/// `reconnect()` the next attempt starts at once; permanent failures end it with that reason;
/// transient ones lead to the next endpoint (see `backup_urls`) and, after a full round, a
/// wait (the policy's delay, at least `min_delay`, at least the server's `Retry-After`, at
/// least `policy_violation_delay` after a close with 1008) and the next attempt.
///
/// **Message fate:** `send()` works while disconnected: the message waits in the bounded
/// outbox and goes out after the next `on_connected`, in order. It completes exactly once:
/// without error when written to a socket (handed to TCP: if the connection then dies the
/// peer may or may not have read it; vigil never claims delivery it cannot know), or with
/// `send_queue_full`, `message_expired`, `supervisor_stopped`, or what else ended the
/// supervisor (the permanent failure, `retries_exhausted`, `invalid_config`). A message
/// whose write was cut off by a dying connection was not written whole, so the peer never
/// saw it: it stays at the head of the outbox for the next connection.
///
/// **Thread safety:** `send`, `retry_now`, `reconnect`, `stop` and `counters` are safe from
/// any thread.
/// The supervisor and its session share one executor, chosen as `session` chooses its own
/// (see `session`'s Thread safety): the supervisor's events, the hook and the sessions'
/// events never run concurrently with each other. Await `run()` and `send()` from coroutines
/// on that executor (`get_executor()`) where you can, as for `session`.
///
/// **Object lifetimes:** the supervisor must outlive `run()` and every send.
class supervisor {
public:
    /// The hook run after each successful handshake, before the session counts as up and
    /// before queued messages flow. Messages it sends through the session go first. Return a
    /// non-empty code to fail the attempt (it is classified like any other failure).
    using connected_hook = std::function<boost::asio::awaitable<error_code>(session&)>;

    /// The hook run before every attempt, to give it fresh parameters: renew an exchange's
    /// listen key, fetch a token that expires in minutes, sign a timestamp. It may change
    /// the URL and the headers in `p`. Return a non-empty code to fail the attempt without
    /// connecting; it is classified like any other failure (`is_permanent`: a 401 made with
    /// `make_http_status_error(401)` stops, a refused token server is retried after the
    /// policy's delay). Bounded by `prepare_timeout` (then `error::prepare_timeout`); it is
    /// cancelled (per-operation cancellation, terminal) at that deadline and by `stop()`, so
    /// await cancellable operations in it. An exception counts as `handler_exception`.
    using prepare_hook = std::function<boost::asio::awaitable<error_code>(attempt_params& p)>;

    /// A supervisor for `url` whose retry delays come from `policy` (default: exponential
    /// backoff with full jitter). Nothing happens until `run()`.
    template <backoff_policy Policy = exponential_backoff>
    supervisor(boost::asio::any_io_executor ex, std::string url, supervisor_config cfg = {}, Policy policy = {})
        : supervisor(std::move(ex), std::move(url), std::move(cfg), any_backoff(std::move(policy)), 0)
    {
    }
    ~supervisor();
    supervisor(const supervisor&) = delete;
    supervisor& operator=(const supervisor&) = delete;

    using executor_type = boost::asio::any_io_executor;
    /// The executor the supervisor and its sessions run on.
    executor_type get_executor() const noexcept;

    /// Set before `run()`.
    void on_connected(connected_hook hook);
    /// Set before `run()`. Default: none (every attempt uses the endpoint's URL and
    /// `session_config::headers`).
    void before_attempt(prepare_hook hook);
    /// Events of every session the supervisor opens. Set before `run()`. Under
    /// `supervisor_config::make_before_break` two sessions may run at once during a
    /// replacement, and both report here (each connection's own `on_disconnected` included,
    /// and a failed replacement's).
    vigil::session_events& session_event_handlers() noexcept;
    /// The supervisor's own events. Set before `run()`.
    supervisor_events& events() noexcept;

    /// Runs sessions until the supervisor ends, and returns why:
    /// - empty after `stop()` (the current session was closed with a close handshake
    ///   bounded by `close_timeout`);
    /// - the permanent failure (an HTTP status, `invalid_url`, a TLS verification error ...);
    /// - `retries_exhausted` after `max_attempts`;
    /// - `invalid_config` if the config is invalid;
    /// - `operation_aborted` when the awaiting coroutine is cancelled.
    /// Messages still in the outbox complete with `supervisor_stopped` (or with the code
    /// `run()` returns when it gave up). `last_disconnect()` has the last session's
    /// disconnect info.
    ///
    /// Between two `run()`s, `send()` fails at once with the code the last one ended with;
    /// `run()` may be called again (a `stop()` made while no `run()` was in progress ends the
    /// next one at once). A second concurrent `run()` returns `already_running`.
    ///
    /// **Per-operation cancellation:** terminal, partial and total: the current attempt or
    /// wait is abandoned, the socket closed (both, during a make-before-break overlap), and
    /// `run()` returns `operation_aborted`.
    boost::asio::awaitable<error_code> run();

    /// Cancels a pending backoff wait so the next attempt starts now (the network came
    /// back, the app returned to the foreground). A no-op while connected or connecting
    /// (`reconnect()` replaces a live connection). Also honoured when called from
    /// `on_retry`, before the wait begins.
    void retry_now();

    /// A planned reconnect (a failed order-book checksum needs a fresh snapshot; a token is
    /// about to expire): closes the live connection with close code 1000 and `reason`
    /// (truncated to the 123 bytes a close frame holds; default "reconnect"), bounded by
    /// `close_timeout`, and starts the next attempt as soon as it is closed, with no delay.
    /// It is not a failure: the backoff streak neither grows nor resets (unless the
    /// connection was up for `stable_after`, as always), `max_attempts` is not charged, and
    /// the `on_connected` hook runs again on the new connection. Messages sent meanwhile wait
    /// in the outbox; one whose write was cut off goes out first on the new connection. While
    /// waiting between attempts it acts as `retry_now()`; while connecting, stopping or
    /// stopped it does nothing. Emits `supervisor_events::on_reconnect`. Returns at once.
    ///
    /// Under `supervisor_config::make_before_break` (once the live connection is up): the new
    /// connection is opened first and the live one closed with `reason` once the new one is
    /// up; if it fails, the live one stays and the replacement is tried again as that field
    /// says. While a replacement is being opened, `reconnect()` does nothing.
    void reconnect(std::string reason = {});

    /// Ends `run()`: closes the current session with a close handshake (bounded by
    /// `close_timeout`; during a make-before-break overlap both sessions, or the live one while
    /// the replacement's attempt is abandoned), or abandons the wait or attempt in progress.
    /// Returns at once; `run()` completes afterwards. May be called from the supervisor's own
    /// event handlers.
    void stop();

    /// Queues a message (see "Message fate" above). Completion signature `void(error_code)`;
    /// any Asio completion token works. No per-operation cancellation: once queued, a message
    /// completes exactly once, as "Message fate" says.
    template <class CompletionToken>
    auto async_send(std::string data, message_type type, CompletionToken&& token)
    {
        return detail::initiate_send(
            std::forward<CompletionToken>(token),
            [this](std::string d, message_type t, detail::send_handler h) {
                start_send(std::move(d), t, std::nullopt, std::move(h));
            },
            std::move(data), type);
    }

    /// As above, with this message's own time to live in the outbox instead of
    /// `supervisor_config::message_ttl` (orders differ: a cancel may wait longer than a new
    /// order). Zero: no limit for this message. A negative `ttl` completes at once with
    /// `error::invalid_config`.
    template <class CompletionToken>
    auto async_send(std::string data, message_type type, std::chrono::milliseconds ttl, CompletionToken&& token)
    {
        return detail::initiate_send(
            std::forward<CompletionToken>(token),
            [this, ttl](std::string d, message_type t, detail::send_handler h) {
                start_send(std::move(d), t, ttl, std::move(h));
            },
            std::move(data), type);
    }

    /// `async_send` as an awaitable that returns the error code instead of throwing.
    boost::asio::awaitable<error_code> send(std::string data, message_type type = message_type::text);
    /// The same, with this message's own time to live (see `async_send`).
    boost::asio::awaitable<error_code> send(std::string data, message_type type, std::chrono::milliseconds ttl);

    /// A snapshot of the counters.
    supervisor_counters counters() const;

    /// A snapshot of the counters, traffic, pending sends and distributions, consistent
    /// with each other except traffic (each connection's own counts, summed: read while
    /// messages flow, it may be a message ahead of `counters`). Any thread; meant for a
    /// scrape every few seconds.
    supervisor_metrics metrics() const;

    /// The backoff policy passed in, to read its own state back (for metrics):
    /// `sup.policy().target<my_policy>()`. Read it on the supervisor's executor (from its
    /// handlers, or while `run()` is not running): the supervisor uses it there.
    const any_backoff& policy() const noexcept;

    /// The endpoints: the primary (the URL the supervisor was made with), then
    /// `supervisor_config::backup_urls`. Safe from any thread.
    const std::vector<std::string>& endpoints() const noexcept;

    /// The endpoint of the attempt in progress, of the live connection, or of the next
    /// attempt while waiting (an index into `endpoints()`). Read it from the supervisor's
    /// handlers or while `run()` is not running.
    std::size_t current_endpoint() const noexcept;

    /// The last session's end (or failed attempt). Read it only while `run()` is not running
    /// or from the supervisor's handlers.
    const disconnect_info& last_disconnect() const noexcept;

    /// Whether the live connection uses permessage-deflate (see `session::compressed()`).
    /// During a make-before-break replacement, the old connection's until the new one takes
    /// over. Read it from the supervisor's handlers or while `run()` is not running.
    bool compressed() const noexcept;

private:
    struct impl;
    supervisor(boost::asio::any_io_executor ex, std::string url, supervisor_config cfg, any_backoff policy, int);
    void start_send(std::string data, message_type type, std::optional<std::chrono::milliseconds> ttl,
                    detail::send_handler handler);

    std::unique_ptr<impl> impl_;
};

}  // namespace vigil
