// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/config.hpp>
#include <vigil/error.hpp>
#include <vigil/fanout.hpp>
#include <vigil/metrics.hpp>
#include <vigil/session.hpp>
#include <vigil/upgrade.hpp>

#include <vigil/detail/async_send.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace vigil {

namespace detail {
template <class T>
struct connection_allocator;
}

/// The session settings a server starts from: the client defaults, with what a server open
/// to strangers needs instead:
/// - ping timers spread over 20% of the interval, and slow consumers disconnected instead of
///   refused (`send_queue_overflow`);
/// - `max_message_size` 1 MiB (clients keep 16 MiB): chat lines, orders and ticks are far
///   smaller, and every byte of a message in progress is memory a stranger makes the server
///   hold;
/// - `send_queue_bytes` 4 MiB: a client that stops reading is ended once that much waits;
/// - `message_timeout` 10 s plus one second per `message_min_rate` 64 KiB: a message
///   trickled in (or started and abandoned) ends the connection with 1008;
/// - `max_receive_rate` 4 MiB/s: a client sending faster is slowed down by TCP, not ended,
///   so that it cannot flood everyone its messages are broadcast to;
/// - `deflate` off, but with `client_no_context_takeover` and `server_no_context_takeover`
///   set, so that a server enabling it (`deflate.enabled = true`) compresses each message on
///   its own: no connection's messages depend on its earlier ones. Measured at 10,000
///   connections, this does not shrink a connection's memory with Beast 1.81 (8 KiB once
///   agreed, about 90 KiB once it has sent a compressed message, with or without context
///   takeover), and it costs ratio on small repeated messages (see README, "Compression").
session_config server_session_defaults();

/// TLS for a `wss://` server. Either a certificate chain and key in PEM files, or a context
/// the caller configured (client certificates, ciphers); neither: plain `ws://`.
struct server_tls_config {
    /// PEM certificate chain, leaf first.
    std::string cert_file;
    /// PEM private key of the leaf certificate.
    std::string key_file;
    /// The caller's own server context; when set, the two files are ignored.
    std::shared_ptr<boost::asio::ssl::context> context;
};

/// Everything a server can be told. Durations are milliseconds.
struct server_config {
    /// Address to listen on. Default 127.0.0.1 (loopback); "0.0.0.0" or "::" for all.
    std::string bind = "127.0.0.1";
    /// Port; 0 (default) lets the system pick one (`server::port()` tells which).
    std::uint16_t port = 0;

    /// The settings of every accepted connection: heartbeat (`ping_interval`,
    /// `pong_timeout`, `heartbeat` for application-level pings), `idle_timeout`,
    /// `write_timeout`, `close_timeout`, `max_message_size`, `send_queue_limit` and
    /// `send_queue_overflow`. `tls_handshake_timeout` bounds a client's TLS handshake and
    /// `handshake_timeout` its whole upgrade request (a client that sends nothing, or
    /// dribbles its request, is dropped then). Client-only fields (`connect_timeout`,
    /// `user_agent`, `headers`, `tls`, `subprotocols`, `subprotocol_required`) are ignored:
    /// the server's subprotocols are `server_config::subprotocols`. Default
    /// `server_session_defaults()`.
    session_config session = server_session_defaults();

    /// Most open connections (handshakes in progress included). Beyond it a new client's
    /// upgrade request is answered `503 Service Unavailable` with `Retry-After`, which a
    /// vigil supervisor treats as transient. Default 10,000. Must be positive.
    std::size_t max_connections = 10000;

    /// The `Retry-After` sent with that 503. Default 5 s; rounded up to whole seconds.
    std::chrono::milliseconds retry_after{5000};

    /// Per remote address, on top of `max_connections`. An address is the client's IP
    /// address as the server sees it: IPv4, or IPv6 counted per whole address (an IPv4 client
    /// of a dual-stack "::" listener counts as its IPv4 address). Limiting per IPv6 /64
    /// prefix instead, where one host may hold many addresses, is not offered yet. Both
    /// limits are off by default: behind a load balancer, a reverse proxy or a carrier-grade
    /// NAT every client arrives from the same few addresses, and a limit per address would
    /// be a limit for everyone. On a server that clients reach directly, set them.
    ///
    /// Most open connections (handshakes in progress included) from one address. Beyond it
    /// a new client's upgrade request from that address is answered `503 Service
    /// Unavailable` with `retry_after` as `Retry-After` (transient for a vigil supervisor),
    /// while other addresses are still admitted. Default 0: no limit. For a directly
    /// exposed server, a few dozen (browsers open a connection per tab; an office or a home
    /// shares one address) is a reasonable start.
    std::size_t max_connections_per_address = 0;

    /// New connections accepted from one address in any `connect_window`. Beyond it the
    /// upgrade request is answered `429 Too Many Requests` with `Retry-After` set to when
    /// the window frees a slot (rounded up to whole seconds, at least 1), which a vigil
    /// supervisor waits for. Only connections let in count; those turned away do not, so a
    /// client that keeps knocking is admitted again when told. Default 0: no limit (see
    /// above). A positive count needs a positive `connect_window`, default 10 s.
    ///
    /// Refusals on either count share the bound of those for `max_connections`: at most 64
    /// are answered at a time, beyond that a refused socket is closed unanswered. Memory:
    /// the server keeps a record per address with connections open (at most
    /// `max_connections`) and, with `connects_per_address`, per address seen within the
    /// window; the latter are at most `max_connections` (at least 1,024) too: beyond that
    /// the record closest to expiry is forgotten early, so an address among a flood of
    /// others may get in before its window is over.
    std::size_t connects_per_address = 0;
    /// The window of `connects_per_address`. Default 10 s. **Errors:** `validate()` answers
    /// `invalid_config`, its detail naming `connect_window`, for a negative window, or a
    /// zero one while `connects_per_address` is set.
    std::chrono::milliseconds connect_window{10000};

    /// Messages a connection may hold received but not yet taken by `connection::receive()`.
    /// When full, the server stops reading from that client (TCP pushes back on it) and
    /// suspends its heartbeat verdict until the application catches up, so a slow handler
    /// is never mistaken for a dead client. Default 256. Must be positive.
    std::size_t receive_queue_limit = 256;

    /// The same in bytes: reading pauses once the messages waiting for `receive()` hold this
    /// much (one message longer than it is still taken when none waits). Default 1 MiB.
    /// Zero: no limit in bytes.
    std::size_t receive_queue_bytes = 1024 * 1024;

    /// The most memory all connections together may hold for messages: incoming messages in
    /// progress, received messages waiting for `receive()`, and messages waiting to be
    /// written (a `broadcast()`'s bytes are shared by every queue and not counted: what
    /// they hold is bounded by `send_queue_bytes`). When a message would grow beyond it, the
    /// connection stops being read (TCP pushes back on its client) until there is room. The
    /// last quarter is kept for connections holding at most 64 KiB, so that ordinary
    /// messages keep flowing while a few connections hold large ones. If the budget stays
    /// short for `budget_grace`, the connections holding the most are ended, heaviest first,
    /// until the rest hold at most half of it: close code 1009 for one holding a message in
    /// progress, 1013 for one holding queued messages, reason `memory_budget_exceeded` with
    /// what it held (`server_events::on_disconnected`). Default 128 MiB, sized for a small
    /// machine: beyond it a server holds only each connection's fixed cost (about 11 KiB
    /// idle, plus TLS's buffers on `wss://`). Zero: no budget.
    std::size_t memory_budget = 128 * 1024 * 1024;

    /// How long the budget may stay short before its heaviest holders are ended. Default
    /// 2 s: long enough for a burst to drain, short enough that well-behaved clients waiting
    /// for room notice no more than a hiccup. Must be positive.
    std::chrono::milliseconds budget_grace{2000};

    /// Largest HTTP upgrade request header accepted, in bytes; a larger one is answered 431.
    /// Default 8 KiB.
    std::size_t max_request_header = 8192;

    /// `Server` header of upgrade responses. Default "vigil".
    std::string server_name = "vigil";

    /// TLS; see `server_tls_config`.
    server_tls_config tls;

    /// The application's admission check (authentication, Origin, rate limits of its own):
    /// it sees each upgrade request that vigil's own checks and limits let through, and
    /// accepts it (choosing a subprotocol, attaching user data) or refuses it with an HTTP
    /// status, body and headers. See `upgrade_check` for its bounds and failures, and
    /// `allow_origins`, `require_token` for ready ones. Default empty: every valid request
    /// is accepted.
    upgrade_check check_upgrade;

    /// The subprotocols this server speaks, in its order of preference. When the check did
    /// not choose one, the first of these that the client offered is answered; none of
    /// them offered: the connection opens without a subprotocol (the client decides
    /// whether that is acceptable; see `session_config::subprotocol_required`). Default
    /// empty. **Errors:** `validate()` answers `invalid_config` for a name that is not an
    /// HTTP token or one listed twice.
    std::vector<std::string> subprotocols;

    /// The bus to the other nodes of a cluster (`vigil::redis_fanout` over Redis, or your
    /// own `vigil::fanout`). With one, `server::broadcast(channel, ...)` and
    /// `server::publish` reach the members of the channel on every node that shares it, and
    /// the members here receive what other nodes broadcast. One fan-out serves one server.
    /// Default none: channels are this server's only.
    std::shared_ptr<vigil::fanout> fanout;
};

/// Checks `cfg` (including `cfg.session`); see `validate(const session_config&)`.
error_code validate(const server_config& cfg, std::string* detail = nullptr);

/// A message taken from a connection by `connection::receive()`, or why none will come.
struct received {
    /// Empty for a message; otherwise why the connection ended (as `last_disconnect()`).
    error_code ec;
    std::string data;
    message_type type = message_type::text;
};

/// One accepted client, run by the server as a vigil session (the same reading, heartbeat,
/// deadlines and bounded send queue as a client's) while the application's handler coroutine
/// talks to it.
///
/// **Thread safety:** `send`, `async_send`, `close` and `cancel` are safe from any thread;
/// `receive` is for one coroutine at a time. `id`, `remote`, `target`, `subprotocol`
/// and `user_data` never change.
/// `last_disconnect()` is stable once `receive()` has reported the end.
///
/// **Lifetime:** shared; the server keeps it until its handler returned and the connection
/// ended. Sending to a connection that has ended fails with `not_connected`.
class connection {
public:
    /// Numbered from 1 in accept order, unique within the server.
    std::uint64_t id() const noexcept;
    /// The client's address, "127.0.0.1:54321" (IPv6 in brackets).
    const std::string& remote() const noexcept;
    /// The request target of the upgrade ("/chat?room=1").
    const std::string& target() const noexcept;
    /// The subprotocol agreed in the upgrade; empty when none. Never changes.
    const std::string& subprotocol() const noexcept;
    /// What `server_config::check_upgrade` attached when it accepted (such as the
    /// authenticated user); null when nothing was. Cast it back with
    /// `std::static_pointer_cast` to the type the check stored. Never changes.
    const std::shared_ptr<void>& user_data() const noexcept;

    /// The executor this connection's work runs on (see `session::get_executor`); await
    /// `receive()` from it where you can.
    boost::asio::any_io_executor get_executor() const noexcept;

    /// The next data message, in order of arrival; heartbeat messages are not included
    /// (see `session_config::deliver_heartbeat_messages`). Once the connection has ended,
    /// the messages still held are returned first, then an entry whose `ec` says why it
    /// ended (`last_disconnect().reason`; `not_connected` after the application's own clean
    /// close), and the same again on every later call. A second `receive()` while one is pending gets `already_running`.
    ///
    /// **Per-operation cancellation:** terminal, partial and total: the pending receive
    /// completes with `operation_aborted` and no message is lost.
    boost::asio::awaitable<received> receive();

    /// Queues a message; completes when it was written or with why it never will be
    /// (`not_connected`, `slow_consumer`, the reason the connection ended). Under the
    /// server's default `overflow_policy::disconnect`, a full send queue disconnects the
    /// client instead of failing the send. No per-operation cancellation (see `session`).
    template <class CompletionToken>
    auto async_send(std::string data, message_type type, CompletionToken&& token)
    {
        return detail::initiate_send(
            std::forward<CompletionToken>(token),
            [this](std::string d, message_type t, detail::send_handler h) { start_send(std::move(d), t, std::move(h)); },
            std::move(data), type);
    }

    /// The same for shared bytes, copied nowhere (see `session::async_send`): for one message
    /// sent to chosen connections. A null `data` completes with `boost::asio::error::invalid_argument`.
    template <class CompletionToken>
    auto async_send(std::shared_ptr<const std::string> data, message_type type, CompletionToken&& token)
    {
        return detail::initiate_send(
            std::forward<CompletionToken>(token),
            [this](std::shared_ptr<const std::string> d, message_type t, detail::send_handler h) {
                start_send(std::move(d), t, std::move(h));
            },
            std::move(data), type);
    }

    /// `async_send` as an awaitable returning the code.
    boost::asio::awaitable<error_code> send(std::string data, message_type type = message_type::text);
    boost::asio::awaitable<error_code> send(std::shared_ptr<const std::string> data,
                                            message_type type = message_type::text);

    /// Closes with `code` and `reason` after the messages already queued, bounded by
    /// `close_timeout`. Errors as `session::close()`.
    boost::asio::awaitable<error_code> close(std::uint16_t code = 1000, std::string reason = {});

    /// Tears the connection down at once, without a close handshake. Any thread.
    void cancel();

    /// True until the connection has ended.
    bool is_open() const noexcept;

    /// Why the connection ended; see `disconnect_info`.
    const disconnect_info& last_disconnect() const noexcept;

    /// True when this connection uses permessage-deflate: the server's
    /// `session.deflate.enabled` and the client offered it. Never changes once accepted.
    bool compressed() const noexcept;

    /// This connection's data messages and payload bytes each way, and what waits in its
    /// send and receive queues now (see `traffic_counts`, `queue_depths`). Any thread.
    traffic_counts traffic() const noexcept;
    queue_depths queues() const noexcept;

    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

private:
    friend class server;
    template <class T>
    friend struct detail::connection_allocator;
    struct impl;
    explicit connection(std::shared_ptr<impl> p);
    void start_send(std::string data, message_type type, detail::send_handler handler);
    void start_send(std::shared_ptr<const std::string> data, message_type type, detail::send_handler handler);
    std::shared_ptr<impl> impl_;
};


/// Observers of a server. Handlers run on the connection's executor (connection events and
/// most `on_rejected`) or the server's (`on_accept_error`, and `on_rejected` for a client
/// closed unanswered beyond a connection limit), possibly on several threads at once when the
/// io_context runs on several; they must be quick. Set them before `run()`. A handler must not
/// throw: one that does stops the server (every connection closed with 1001), and `run()`
/// rethrows the exception once they are all closed (the policy of every vigil event,
/// described on `session_events`).
struct server_events {
    /// A client completed the upgrade; its handler starts right after.
    std::function<void(connection&)> on_connected;
    /// A connection ended; `c.last_disconnect()` says why (`pong_timeout` for a client
    /// that vanished, `slow_consumer`, a close code, `server_shutdown` ...).
    std::function<void(connection&)> on_disconnected;
    /// A client was turned away before it became a connection: `why` is
    /// `handshake_timeout`, `tls_handshake_timeout`, an HTTP status (400 for garbage or a
    /// request that is not a valid upgrade, such as a Sec-WebSocket-Key that is not the
    /// base64 of 16 bytes; 405 for a method other than GET; 426 for a Sec-WebSocket-Version
    /// other than 13; 431; 503 beyond `max_connections` or `max_connections_per_address`;
    /// 429 beyond `connects_per_address`; the status `server_config::check_upgrade`
    /// refused with, or 500 when it threw or answered what cannot be sent) or a network
    /// error; `detail` says which header or limit (for a limit, with the client's address;
    /// for the check, "check_upgrade refused with 401: " and its reason).
    std::function<void(const std::string& remote, const error_code& why, const std::string& detail)> on_rejected;
    /// accept() itself failed (out of file descriptors ...); the server pauses 100 ms and
    /// goes on accepting.
    std::function<void(const error_code&)> on_accept_error;
    /// Our own event loop was late: a connection's timer wake-up ran `lateness` after its
    /// time, more than `session.stall_threshold` (default a quarter of `pong_timeout`).
    /// Something blocked a thread that runs the server (a handler that blocks, a stopped
    /// process). Reported once per stall, however many connections it delayed. No client is
    /// evicted for that time: what clients sent meanwhile is read before any verdict.
    std::function<void(std::chrono::milliseconds lateness)> on_stall;
    /// A channel broadcast did not reach the other nodes: `why` is what the fan-out reported
    /// (for Redis: `send_queue_full`, `message_expired`, `not_connected`,
    /// `delivery_unconfirmed` when it may have, the failure that stopped it ...). Or a
    /// message from the fan-out was dropped: `why` is `fanout_message_invalid`, `channel`
    /// is empty and `detail` says what is wrong with it. Called on any thread.
    std::function<void(std::string_view channel, const error_code& why, const std::string& detail)> on_fanout_error;
    /// Broadcasts of node `origin` (its `server::node_id()`) were missed: `missed` of them
    /// came before the one just received and never arrived (the fan-out lost them, such as
    /// while this node's link to Redis was down). Called on any thread.
    std::function<void(std::string_view origin, std::uint64_t missed)> on_fanout_gap;
};

/// Counters readable at any time (a consistent snapshot).
struct server_counters {
    std::size_t accepted = 0;      ///< TCP connections accepted
    std::size_t connected = 0;     ///< upgrades completed
    std::size_t open = 0;          ///< connections open now (handshakes included)
    std::size_t rejected = 0;      ///< turned away before the upgrade completed
    std::size_t disconnected = 0;  ///< connections that ended
    std::size_t stalls = 0;        ///< stalls of our own event loop (server_events::on_stall)
    std::size_t held_bytes = 0;    ///< memory held for messages now (see `memory_budget`)
    std::size_t held_bytes_peak = 0;  ///< the most it ever held
    std::size_t budget_evictions = 0;  ///< connections ended by the memory budget
    std::size_t fanout_published = 0;  ///< channel broadcasts the fan-out accepted
    std::size_t fanout_failed = 0;     ///< channel broadcasts it did not (`on_fanout_error`)
    std::size_t fanout_received = 0;   ///< broadcasts from other nodes delivered here
    std::size_t fanout_missed = 0;     ///< broadcasts of other nodes missed (`on_fanout_gap`)
    std::size_t fanout_invalid = 0;    ///< messages from the fan-out dropped: unreadable or repeated
};

/// The counters plus why connections ended and why clients were turned away (see
/// `server::metrics()`). Every map is keyed by a bounded set of labels.
struct server_metrics {
    server_counters counters;
    /// Connections that ended after the upgrade, by `disconnect_label()` of
    /// `connection::last_disconnect().reason` (`"pong_timeout"`, `"closed_by_peer"` ...).
    /// The values sum to `counters.disconnected`.
    reason_counts disconnects;
    /// Clients turned away before the upgrade completed: `"http_STATUS"` for an HTTP answer
    /// (`"http_400"`, `"http_503"`; only the statuses listed at `server_events::on_rejected`),
    /// otherwise `disconnect_label()` of the error (`"handshake_timeout"`,
    /// `"network_error"` ...). The values sum to `counters.rejected`.
    reason_counts rejections;
    /// Data messages and payload bytes each way, over every connection since the server
    /// was made: the ended ones and the open ones so far (broadcasts count once per
    /// connection written to).
    traffic_counts traffic;
    /// What waits now in the open connections' send and receive queues, summed.
    queue_depths queues;
    /// Round trips of the server's pings (protocol or application-level) on every
    /// connection: from a ping's write to its answer.
    duration_histogram round_trips;
};

/// A WebSocket server whose every connection is a vigil session: it answers every ping,
/// pings idle clients (timers spread out) and evicts the ones that stop answering, enforces
/// handshake, write and close deadlines, bounds every queue, and shuts down gracefully.
///
/// For each client that completes the upgrade, `handler(conn)` runs as a coroutine on the
/// connection's executor. When it returns, the connection is closed (1000) if still open;
/// if it throws, the connection is closed with 1011. The connection ending (the client
/// left, was evicted, or the server stops) shows in `conn->receive()`.
///
/// An empty `handler` makes a server that only keeps its connections honest and broadcasts
/// (a feed): received messages are dropped as they arrive, `receive()` reports only the
/// end, and a connection costs less memory (no handler coroutine, no receive queue).
///
/// **Channels:** a connection joins and leaves named channels (`join`, `leave`), and
/// `broadcast(channel, ...)` reaches a channel's members. Given a fan-out
/// (`server_config::fanout`), a server is a node of a cluster: a channel broadcast on any
/// node reaches the members on every node, once each, and the broadcasts of one node arrive
/// everywhere in the order it made them. What the fan-out failed to carry is reported, never
/// silently lost: `on_fanout_error` on the publishing node, `on_fanout_gap` on a node that
/// missed broadcasts of another.
///
/// **Thread safety:** `stop`, `broadcast`, `publish`, `join`, `leave`, `counters`,
/// `connections` and `port` are safe from any thread; the io_context may run on several threads (each connection then has a
/// strand of its own). On an io_context constructed with concurrency hint 1 (Asio's promise
/// that one thread runs it) everything runs on its executor, without strands.
///
/// **Lifetime:** the server must outlive `run()`.
class server {
public:
    using connection_ptr = std::shared_ptr<connection>;
    using handler_type = std::function<boost::asio::awaitable<void>(connection_ptr)>;

    server(boost::asio::any_io_executor ex, server_config cfg, handler_type handler);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Events; see `server_events`.
    server_events& events() noexcept;

    /// Validates the config, loads the TLS certificate and binds the listening socket, so
    /// that `port()` is known before `run()`. Called by `run()` if not called before.
    /// **Errors:** `invalid_config` (the detail names the field or file), bind errors
    /// (`address_in_use` ...). `*detail` gets a message naming what failed.
    error_code listen(std::string* detail = nullptr);

    /// The port listened on (the one picked when `port` was 0); 0 before `listen()`.
    std::uint16_t port() const noexcept;

    /// Accepts until `stop()`, then completes after every connection has been closed (1001,
    /// each bounded by `close_timeout`) and every handler has returned (a handler still
    /// running `close_timeout` after its connection ended is cancelled). Returns an empty
    /// code after `stop()`, the error of `listen()`, or `operation_aborted` when the
    /// awaiting coroutine is cancelled (connections are then torn down without a close
    /// handshake).
    boost::asio::awaitable<error_code> run();

    /// Graceful shutdown: stop accepting, close every connection with 1001 "going away"
    /// (reason `server_shutdown`), bounded by `close_timeout`. Returns at once; `run()`
    /// completes when it is done. Any thread; idempotent.
    void stop();

    /// Queues `data` to every open connection, sharing one copy of the bytes, and returns
    /// the number of connections it was queued to. Never waits: a client whose send queue is
    /// full is handled by its overflow policy (disconnected by default), so one slow client
    /// cannot stall the others. Any thread.
    std::size_t broadcast(std::string data, message_type type = message_type::text);

    /// Makes `c` a member of `channel` (joining twice is joining once). A member stays until
    /// `leave` or until its connection ends. Any thread.
    /// **Errors:** `not_connected` when `c` has ended or is not this server's;
    /// `boost::asio::error::invalid_argument` for an empty channel name or one over 1,024
    /// bytes.
    error_code join(const connection_ptr& c, std::string channel);
    /// Ends `c`'s membership of `channel`; false when it was not a member (or `c` has ended
    /// or is not this server's). Any thread.
    bool leave(const connection_ptr& c, std::string_view channel);
    /// The channels `c` is a member of, sorted; empty once it has ended. Any thread.
    std::vector<std::string> channels(const connection_ptr& c) const;

    /// Queues `data` to every member of `channel` here, as `broadcast(data)` does to everyone,
    /// and returns how many that was. With a fan-out, hands it to the fan-out too, for the
    /// members on the other nodes; that part completes later, and a failure is reported by
    /// `server_events::on_fanout_error` and counted (`fanout_failed`). A channel name no
    /// connection can join (empty, over 1,024 bytes) reaches no one and is not handed on.
    /// Never waits. Any thread.
    std::size_t broadcast(std::string_view channel, std::string data, message_type type = message_type::text);

    /// The same, completing once the fan-out accepted the message for the other nodes (an
    /// empty code), or with why it did not (as `on_fanout_error`, which is called too).
    /// Without a fan-out, completes at once with an empty code. A channel name no connection
    /// can join completes with `boost::asio::error::invalid_argument`. Not cancellable: it always
    /// completes as above. Any thread.
    boost::asio::awaitable<error_code> publish(std::string channel, std::string data,
                                               message_type type = message_type::text);

    /// This server's name among the nodes of a cluster: 16 hexadecimal digits, random,
    /// fixed for the server's life (a restarted node is a new node).
    const std::string& node_id() const noexcept;

    /// A snapshot of the open connections (for the application's own fan-out or admin).
    std::vector<connection_ptr> connections() const;

    /// A snapshot of the counters.
    server_counters counters() const;

    /// A snapshot of the counters and of why connections ended or were refused, taken under
    /// one lock: the counts are consistent with each other (each map sums to its counter).
    /// Those counts are updated once per connection (accepted, upgraded, refused, ended).
    /// Traffic and queue depths are each connection's own counts, summed here: exact per
    /// connection, though a connection busy meanwhile may be a message ahead of another.
    /// Costs a walk over the open connections (about a microsecond per hundred); meant
    /// for a scrape every few seconds, not per message. Any thread.
    server_metrics metrics() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace vigil
