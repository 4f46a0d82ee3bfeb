// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The Redis link: publish and subscribe through a Redis server, held to the same standards as
// a vigil session (deadlines, heartbeat, supervised reconnect). Part of the optional library
// vigil_redis, built where hiredis is found (`meson setup` prints whether it was).

#include <vigil/backoff.hpp>
#include <vigil/error.hpp>
#include <vigil/fanout.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace vigil {

namespace detail {
class redis_link_impl;
}

/// How a `redis_link` reaches Redis and how long it waits for it.
struct redis_config {
    /// `redis://[:password@]host[:port]`; port 6379 when absent. A host name is resolved
    /// before each attempt. A password, when given, is sent with AUTH on both connections
    /// before anything else. No default: `validate()` refuses an empty URL.
    std::string url;
    /// Bound on opening both connections, AUTH and the first SUBSCRIBE replies. Default 5 s.
    std::chrono::milliseconds connect_timeout{5000};
    /// Bound on the reply to any command (PUBLISH, SUBSCRIBE, UNSUBSCRIBE) once up: a reply
    /// later than this declares the link dead (`error::redis_command_timeout`). Default 5 s.
    std::chrono::milliseconds command_timeout{5000};
    /// A connection that received nothing for this long is sent a heartbeat. Default 10 s.
    std::chrono::milliseconds ping_interval{10000};
    /// A heartbeat unanswered for this long declares the link dead (`error::pong_timeout`).
    /// So a silent Redis is found within `ping_interval + pong_timeout`. Default 5 s.
    std::chrono::milliseconds pong_timeout{5000};
    /// Floor on the delay between attempts, whatever the backoff policy says. Default 100 ms.
    std::chrono::milliseconds min_delay{100};
    /// Publishes waiting while Redis is unreachable; one more fails at once with
    /// `error::send_queue_full`. Zero: no waiting, a publish while down fails at once with
    /// `error::not_connected`. Default 1000.
    std::size_t outbox_limit = 1000;
    /// A publish that waited this long unsent fails with `error::message_expired`. Zero: no
    /// limit. Default 10 s.
    std::chrono::milliseconds message_ttl{10000};
};

/// Checks `cfg`. Returns an empty code when it can be used; otherwise `error::invalid_url`
/// (the URL, with what is wrong with it) or `error::invalid_config` (a duration, naming the
/// field), with the message written to `*detail` if given.
error_code validate(const redis_config& cfg, std::string* detail = nullptr);

/// What a `redis_link` did so far. Monotonic counts.
struct redis_counters {
    std::uint64_t connects = 0;  ///< attempts that reached `on_up`
    std::uint64_t retries = 0;  ///< waits between attempts (`on_retry` calls)
    std::uint64_t publishes_ok = 0;  ///< publishes Redis answered
    std::uint64_t publishes_failed = 0;  ///< publishes completed with an error
    std::uint64_t messages_received = 0;  ///< `on_message` calls
    std::uint64_t pings = 0;  ///< heartbeats sent
};

/// A link to one Redis server: subscribes to channels and publishes to them, and keeps
/// itself up.
///
/// It holds two connections, one subscribed and one for commands (Redis accepts nothing but
/// subscription commands on a subscribed connection). `run()` opens them, sends AUTH when
/// the URL has a password, subscribes to every channel asked for, and then reports `on_up`.
/// Each connection is sent a heartbeat when idle for `ping_interval`; no answer within
/// `pong_timeout`, no reply to a command within `command_timeout`, or a closed connection
/// ends both (`on_down`), and after a delay from the backoff policy (at least `min_delay`,
/// `on_retry`) the link opens them again and resubscribes before `on_up`. Permanent failures
/// (`vigil::is_permanent`: a wrong or missing password is `error::redis_auth_failed`) end
/// `run()`.
///
/// **Threads:** the link's state lives on its executor; `run()` must be awaited by a
/// coroutine running on that executor. `subscribe`, `unsubscribe`, `publish`, `stop` and
/// `counters` may be called from any thread. Events are called on the executor; set them
/// before `run()`.
class redis_link {
public:
    /// @throws std::invalid_argument with `validate()`'s message when `cfg` is invalid.
    /// `policy` defaults to `exponential_backoff`.
    redis_link(boost::asio::any_io_executor ex, redis_config cfg, any_backoff policy = exponential_backoff{});
    /// Stops the link (as `stop()`); must not be destroyed while `run()` is in progress.
    ~redis_link();
    redis_link(const redis_link&) = delete;
    redis_link& operator=(const redis_link&) = delete;

    /// Connects and keeps the link up until `stop()` (returns an empty code), a permanent
    /// failure (returns it), or cancellation of the awaiting coroutine (returns
    /// `operation_aborted`). A second concurrent call returns `error::already_running`. The
    /// link cannot be run again: once it ended (or was stopped before it ran), run() returns
    /// at once with how it ended.
    boost::asio::awaitable<error_code> run();

    /// Ends `run()`: both connections are closed; waiting and unanswered publishes fail with
    /// `error::supervisor_stopped`. Any thread; idempotent.
    void stop();

    /// Receive messages published to `channel` (kept across reconnects; subscribed at once
    /// when up). Any thread. Subscribing twice is the same as once.
    void subscribe(std::string channel);
    /// Stop receiving `channel`. Any thread.
    void unsubscribe(std::string channel);

    /// Publishes `data` to `channel`. Completes with an empty code once Redis answered the
    /// PUBLISH, or with an error: `error::send_queue_full` (outbox full), `error::not_connected`
    /// (down and `outbox_limit` is 0), `error::message_expired` (waited `message_ttl`),
    /// `error::supervisor_stopped` (stopped before it was sent), `error::delivery_unconfirmed`
    /// (sent, but the connection died before Redis answered: it may or may not have been
    /// published), `error::redis_error` (Redis answered with an error), or the permanent
    /// failure that ended `run()`. Never dropped silently. Publishes from one coroutine
    /// reach Redis in the order made. Made before `run()`, it waits in the outbox. Not
    /// cancellable: it always completes as above. Any thread; completes on the caller's
    /// executor.
    boost::asio::awaitable<error_code> publish(std::string channel, std::string data);

    /// The same, calling `done` (on the link's executor) instead of resuming a coroutine;
    /// `done` may be empty. Publishes made by one thread reach Redis in the order made.
    void publish(std::string channel, std::string data, std::function<void(error_code)> done);

    /// A snapshot of the counters. Any thread.
    redis_counters counters() const;

    /// A message arrived on a subscribed channel.
    std::function<void(std::string_view channel, std::string_view data)> on_message;
    /// Both connections are open, authenticated and subscribed to every channel.
    std::function<void()> on_up;
    /// The link went down (after `on_up`) or an attempt failed, with why.
    std::function<void(error_code reason)> on_down;
    /// The link waits `delay` before attempt `attempt` (1 for the first retry of a streak).
    std::function<void(std::size_t attempt, std::chrono::milliseconds delay, error_code reason)> on_retry;

private:
    std::shared_ptr<detail::redis_link_impl> impl_;
};

/// The fan-out of a cluster of `vigil::server` nodes over Redis pub/sub: give each node a
/// `redis_fanout` to the same Redis and channel (`server_config::fanout`) and run it beside
/// the server. Every node publishes its channel broadcasts to the one Redis channel and
/// receives every other node's.
///
/// Everything `redis_link` promises holds: deadlines, heartbeat, reconnect with the backoff
/// policy, resubscription before `on_up`, and a broadcast made while Redis is unreachable
/// waits in the bounded, TTL-limited outbox (`redis_config::outbox_limit`, `message_ttl`)
/// or fails, reported to the server (`server_events::on_fanout_error`). Redis pub/sub
/// delivers at most once: what a node misses while its link is down is reported by that
/// node (`server_events::on_fanout_gap`) at the next broadcast of the publishing node.
///
/// **Threads:** as `redis_link`: `run()` is awaited on the executor given here; `publish`,
/// `set_receiver`, `stop` and `link().counters()` from any thread.
class redis_fanout final : public fanout {
public:
    /// `channel` is the Redis channel every node of the cluster uses (default "vigil").
    /// @throws std::invalid_argument with `validate()`'s message when `cfg` is invalid, or
    /// when `channel` is empty.
    redis_fanout(boost::asio::any_io_executor ex, redis_config cfg, std::string channel = "vigil",
                 any_backoff policy = exponential_backoff{});
    ~redis_fanout() override;

    /// The link to Redis, for its events (`on_up`, `on_down`, `on_retry`; set them before
    /// `run()`) and `counters()`. Its `on_message` belongs to the fan-out: do not replace it.
    redis_link& link() noexcept { return link_; }
    /// The Redis channel.
    const std::string& channel() const noexcept { return channel_; }

    /// Runs the link: see `redis_link::run()` (the same results, the same cancellation).
    boost::asio::awaitable<error_code> run();
    /// Ends `run()`; see `redis_link::stop()`.
    void stop();

    /// Publishes `message` to the channel (see `redis_link::publish`; `done` runs on the
    /// link's executor).
    void publish(std::string message, completion done) override;
    /// See `fanout::set_receiver`.
    void set_receiver(receiver r) override;

private:
    struct receiver_slot;
    std::shared_ptr<receiver_slot> slot_;
    redis_link link_;
    std::string channel_;
};

}  // namespace vigil
