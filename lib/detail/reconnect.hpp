// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The supervisor's decisions, with no socket and no clock of its own: when to connect, how
// long to wait, when to give up, and what stop() and retry_now() do in each state. The
// supervisor's coroutine carries out what this machine says (lib/supervisor.cpp); unit tests
// step it with a fake clock (tests/unit/test_reconnect.cpp). docs/design.md draws it.

#include <vigil/backoff.hpp>
#include <vigil/error.hpp>

#include <chrono>
#include <cstddef>
#include <functional>

namespace vigil::detail {

/// What the machine reads from a supervisor_config.
struct reconnect_settings {
    std::chrono::milliseconds stable_after{5000};
    std::chrono::milliseconds min_delay{100};
    std::chrono::milliseconds max_retry_after{60000};
    std::size_t max_attempts = 0;  ///< zero: never give up on transient failures
    /// Floor on the delay after a close with 1008 (zero: none).
    std::chrono::milliseconds policy_violation_delay{30000};
    /// Overrides vigil::is_permanent when set.
    std::function<bool(const error_code&)> is_permanent;
    /// How many endpoints there are (the primary is 0); at least 1.
    std::size_t endpoints = 1;
    /// Once a backup has been up this long, go back to the primary (zero: stay).
    std::chrono::milliseconds failback_after{0};
    /// Replace a connection after about this long (zero: never).
    std::chrono::milliseconds max_connection_age{0};
    /// Planned replacements open the new connection before the old one is closed.
    bool make_before_break = false;
};

/// Why a live connection is to be replaced although nobody asked.
enum class replacement {
    none,
    max_connection_age,  ///< in the last tenth of max_connection_age
    failback,  ///< up on a backup for failback_after: back to the primary
    requested,  ///< reconnect(), under make-before-break: retried if it fails
};

/// Make-before-break: how far the replacement of the live connection has come. It runs
/// beside the live connection's own state.
enum class replacement_phase {
    none,
    opening,  ///< its attempt (limiter turn, before_attempt, connect) is in progress
    hooking,  ///< connected; its on_connected hook runs
};

/// Make-before-break: what the replacement in progress stands for.
enum class replacement_role {
    beside_live,  ///< the live connection stays up while it is opened
    attempt,  ///< the live connection ended meanwhile: it is the supervisor's attempt now
};

/// When the live connection is to be replaced, and why (`at` is max() for never).
struct planned_replacement {
    std::chrono::steady_clock::time_point at = std::chrono::steady_clock::time_point::max();
    replacement why = replacement::none;
};

enum class reconnect_state {
    idle,  ///< run() is not in progress
    connecting,  ///< an attempt's connect() is in progress
    running_hook,  ///< connected; the on_connected hook runs beside the session
    up,  ///< the hook succeeded; messages flow
    replacing,  ///< reconnect(): the live session closes, and the next attempt follows at once
    waiting,  ///< between attempts, until `wait_until()`
    stopping,  ///< stop() came during an attempt (or before run()): stop at the next step
    stopped,  ///< run() ended by stop() or cancellation
    gave_up,  ///< run() ended by a permanent failure or max_attempts
};

/// What the supervisor's coroutine does next.
struct reconnect_action {
    enum class kind {
        connect,  ///< start an attempt
        run,  ///< the handshake succeeded: run the session and the hook
        close_session,  ///< stop() raced the handshake: close what was just opened
        wait,  ///< wait `delay` (or until retry_now()) before the next attempt
        stop,  ///< end run() with `reason`: empty after stop(), operation_aborted when cancelled
        give_up,  ///< end run() with `reason`: the permanent failure or retries_exhausted
        // Make-before-break, in answer to the replacement's steps:
        keep,  ///< the replacement failed; the live connection stays (see replacement())
        hand_over,  ///< the replacement is up: the outbox moves to it, the old one closes
        await_replacement,  ///< the live connection ended: the replacement's attempt is now the attempt
        adopt,  ///< the replacement's hook succeeded: run it as the live connection
    };
    kind what = kind::connect;
    std::chrono::milliseconds delay{0};  ///< for wait: policy, floor and Retry-After applied
    std::size_t endpoint = 0;  ///< for connect and wait: the endpoint of the (next) attempt
    std::size_t attempt = 0;  ///< for wait: 1 for the first retry of a failure streak
    error_code reason;  ///< for wait: the failure; for stop and give_up: the result
};

/// What stop() and retry_now() ask of the operation in progress, at once.
enum class reconnect_interrupt {
    none,
    cancel_wait,  ///< end the wait between attempts now
    abort_attempt,  ///< cancel the connect() in progress
    close_session,  ///< close the live session with a close handshake
    open_replacement,  ///< make-before-break: open the replacement beside the live session
};

/// How an attempt ended: the reason, the server's Retry-After if it sent one, and the full
/// record for the policy (null in unit tests).
struct attempt_result {
    error_code reason;
    std::chrono::milliseconds retry_after{0};
    const disconnect_info* last = nullptr;
};

class reconnect_fsm {
public:
    using time_point = std::chrono::steady_clock::time_point;

    /// `policy` must outlive the machine; it is asked for every delay and reset after a
    /// stable connection, and nothing else.
    reconnect_fsm(reconnect_settings s, any_backoff& policy) : s_(std::move(s)), policy_(&policy) {}

    reconnect_state state() const noexcept { return state_; }
    /// While waiting: when the next attempt may start (retry_now() brings it forward).
    time_point wait_until() const noexcept { return wait_until_; }
    /// Failed attempts in a row since the last stable connection (or run()).
    std::size_t streak() const noexcept { return streak_; }
    /// The endpoint of the attempt in progress or next (0: the primary).
    std::size_t endpoint() const noexcept { return endpoint_; }
    /// While up: when the connection is to be replaced unasked (see hook_succeeded()), or,
    /// under make-before-break, when a failed replacement is tried again.
    planned_replacement replacement() const noexcept { return replacement_; }
    /// Make-before-break: the replacement in progress, if any.
    replacement_phase replacing_phase() const noexcept { return replacing_; }
    /// Make-before-break: whether the replacement in progress still has a live connection
    /// beside it, or became the attempt after that connection ended (await_replacement).
    replacement_role replacing_role() const noexcept { return role_; }
    /// Make-before-break: the endpoint the replacement goes to, and its failed tries in a
    /// row (reset once one comes up).
    std::size_t replacement_endpoint() const noexcept { return replacement_endpoint_; }
    std::size_t replacement_failures() const noexcept { return replacement_failures_; }

    /// run() began.
    reconnect_action start();
    /// The attempt's handshake succeeded.
    reconnect_action connected();
    /// The on_connected hook succeeded: the connection counts as up from `now`. `draw` is a
    /// uniform random number in [0, 1): where in the last tenth of max_connection_age this
    /// connection is replaced, so that a fleet that connected together does not reconnect
    /// together.
    void hook_succeeded(time_point now, double draw) noexcept;
    /// The attempt ended: connect() failed, or the session (or its hook) ended.
    reconnect_action attempt_ended(const attempt_result& r, time_point now);
    /// The wait may be over (its timer fired or was cut short).
    reconnect_action time_up(time_point now);
    /// The awaiting coroutine was cancelled.
    reconnect_action cancelled();

    reconnect_interrupt stop();
    reconnect_interrupt retry_now(time_point now);
    /// A planned reconnect: close a live session and connect again at once, neither
    /// counting a failure nor asking the policy. While waiting, it ends the wait (as
    /// retry_now()); while connecting or stopping, there is nothing to replace.
    reconnect_interrupt reconnect(time_point now);
    /// The planned replacement's moment came (see replacement()): close the live session and
    /// connect again at once (to the primary on failback). `none` when it is not yet due or
    /// the connection is no longer up.
    reconnect_interrupt replacement_due(time_point now);

    // Make-before-break: the replacement's steps (after open_replacement).
    /// Its handshake succeeded: `run` (run its hook), or `close_session` (stop() came).
    reconnect_action replacement_connected();
    /// Its hook succeeded at `now`: `hand_over` while the old connection lives, `adopt` once
    /// it has ended, `stop` after stop().
    reconnect_action replacement_up(time_point now, double draw);
    /// Its attempt or its hook failed: `keep` while the old connection lives (replacement()
    /// says when the next try comes; `at` is max() after a permanent failure: no more tries
    /// for this connection; `delay` is the wait), else what a regular attempt's failure leads to.
    reconnect_action replacement_failed(const attempt_result& r, time_point now);

private:
    reconnect_action finish(reconnect_state how, error_code reason);
    reconnect_action connect_next() const;
    reconnect_action retry_after_failure(const attempt_result& r, time_point now);
    reconnect_action classify_failure(const attempt_result& r, time_point now);
    void plan_replacement(time_point now, double draw);
    void reset_if_stable(time_point now);
    reconnect_action live_ended_while_replacing(const attempt_result& r);
    reconnect_interrupt begin_replacement(vigil::detail::replacement why);
    std::size_t endpoint_for(vigil::detail::replacement why) const noexcept;
    std::chrono::milliseconds replacement_retry_delay(const attempt_result& r, time_point now);
    bool permanent(const error_code& ec) const;

    reconnect_settings s_;
    any_backoff* policy_;
    reconnect_state state_ = reconnect_state::idle;
    std::size_t streak_ = 0;
    std::size_t endpoint_ = 0;
    planned_replacement replacement_;
    replacement_phase replacing_ = replacement_phase::none;
    replacement_role role_ = replacement_role::beside_live;
    std::chrono::milliseconds replacement_last_delay_{0};
    std::size_t replacement_endpoint_ = 0;
    std::size_t replacement_failures_ = 0;
    time_point replacement_failing_since_{};
    time_point streak_began_{};  // when the streak's first failed attempt ended
    std::chrono::milliseconds last_delay_{0};  // the wait chosen at the end of the streak's latest round
    time_point up_since_{};  // since when the current session is up; zero if it never was
    time_point wait_until_{};
};

}  // namespace vigil::detail
