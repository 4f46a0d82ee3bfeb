// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The Redis link's decisions, with no socket and no clock of its own: when to open the two
// connections, when to AUTH and SUBSCRIBE, when a heartbeat is due, when a deadline declares
// the link dead, and how long to wait before the next attempt. lib/redis/link.cpp carries out
// what it says; tests/cluster/test_link_fsm.cpp steps it with a fake clock.

#include <vigil/backoff.hpp>
#include <vigil/error.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <deque>

namespace vigil::detail {

enum class redis_phase {
    idle,  ///< run() has not started
    connecting,  ///< both connections are being opened
    authenticating,  ///< AUTH (or PING without a password) sent on both; waiting for both replies
    subscribing,  ///< SUBSCRIBE sent for every channel; waiting for every confirmation
    ready,  ///< up: publishes go out, messages come in, heartbeats when idle
    backing_off,  ///< both closed; the next attempt starts at wait_until()
    stopped,  ///< run() ended (stop(), or a permanent failure: see result())
};

/// The two connections: Redis accepts only subscription commands on a subscribed one.
enum class redis_conn : std::size_t { subscriber = 0, commands = 1 };

/// What an outstanding reply is bounded by.
enum class redis_wait { command, ping };

struct redis_fsm_settings {
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds command_timeout{5000};
    std::chrono::milliseconds ping_interval{10000};
    std::chrono::milliseconds pong_timeout{5000};
    std::chrono::milliseconds min_delay{100};
};

struct redis_action {
    enum class kind {
        none,
        connect,  ///< resolve, open both connections; report opened() for each
        authenticate,  ///< send AUTH on both, or PING without a password (sent() for each)
        subscribe,  ///< send SUBSCRIBE for every channel on the subscriber (sent() for each)
        up,  ///< report on_up; send what waits in the outbox
        ping,  ///< send a heartbeat on `conn` (sent() with redis_wait::ping)
        back_off,  ///< close both; report on_down(reason) and on_retry(attempt, delay, reason)
        give_up,  ///< close both; end run() with `reason` (permanent)
        stop,  ///< close both; end run() with an empty code
    };
    kind what = kind::none;
    error_code reason;
    std::chrono::milliseconds delay{0};
    std::size_t attempt = 0;
    redis_conn conn = redis_conn::subscriber;
};

class redis_link_fsm {
public:
    using clock = std::chrono::steady_clock;
    using time_point = clock::time_point;

    /// `policy` must outlive the machine.
    redis_link_fsm(redis_fsm_settings s, any_backoff& policy) : s_(s), policy_(&policy) {}

    redis_phase phase() const noexcept { return phase_; }
    time_point wait_until() const noexcept { return wait_until_; }
    /// Failed attempts since the last time the link was up.
    std::size_t streak() const noexcept { return streak_; }
    /// The earliest moment tick() may have something to do (max() for never).
    time_point next_deadline() const noexcept;

    redis_action start(time_point now);
    /// A connection of the current attempt is open.
    redis_action opened(redis_conn c, time_point now);
    /// A command that expects one reply was sent on `c`.
    void sent(redis_conn c, redis_wait w, time_point now);
    /// The reply to the oldest outstanding command on `c` arrived (an error reply is reported
    /// with failed() instead, or as well).
    redis_action replied(redis_conn c, time_point now);
    /// Something arrived on `c` that answers no command (a published message).
    void received(redis_conn c, time_point now);
    /// The current attempt or connection failed with `reason`.
    redis_action failed(error_code reason, time_point now);
    /// Deadlines, heartbeats and the end of a wait: call until it returns kind::none.
    redis_action tick(time_point now);
    redis_action stop();

private:
    struct pending {
        time_point deadline;
        redis_wait why;
    };
    struct conn_state {
        bool open = false;
        time_point last_activity{};
        std::deque<pending> outstanding;
    };
    conn_state& at(redis_conn c) { return conns_[static_cast<std::size_t>(c)]; }
    bool setting_up() const noexcept;
    void reset_connections();

    redis_fsm_settings s_;
    any_backoff* policy_;
    redis_phase phase_ = redis_phase::idle;
    std::array<conn_state, 2> conns_{};
    time_point setup_deadline_ = time_point::max();
    time_point wait_until_ = time_point::max();
    time_point first_failure_{};
    std::chrono::milliseconds previous_delay_{0};
    std::size_t streak_ = 0;
};

}  // namespace vigil::detail
