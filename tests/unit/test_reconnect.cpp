// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The supervisor's state machine (lib/detail/reconnect), stepped with a fake clock: every
// rule about retrying, waiting and stopping, with no socket and no real time.

#include "detail/reconnect.hpp"
#include "support/recording_policy.hpp"

#include <vigil/error.hpp>
#include <vigil/session.hpp>

#include <doctest/doctest.h>

#include <boost/asio/error.hpp>

#include <chrono>
#include <vector>

namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;
using vigil::detail::attempt_result;
using vigil::detail::reconnect_action;
using vigil::detail::reconnect_fsm;
using vigil::detail::reconnect_interrupt;
using vigil::detail::reconnect_settings;
using vigil::detail::reconnect_state;
using kind = reconnect_action::kind;
using time_point = std::chrono::steady_clock::time_point;

const time_point t0 = time_point(std::chrono::hours(10));
const error_code refused = boost::asio::error::connection_refused;
const error_code aborted = boost::asio::error::operation_aborted;

using vigil::test::recording_policy;

struct rig {
    explicit rig(reconnect_settings s = {})
        : policy(recording_policy{&asked, &resets}), fsm(std::move(s), policy)
    {
    }
    // Starts and fails `n` attempts with `ec` at `now`, checking each is retried.
    void fail(int n, error_code ec = refused)
    {
        for (int i = 0; i < n; ++i) {
            auto a = fsm.state() == reconnect_state::waiting ? fsm.time_up(fsm.wait_until()) : fsm.start();
            REQUIRE(a.what == kind::connect);
            last = fsm.attempt_ended({ec}, fsm.wait_until() + 1ms);
        }
    }

    // With two endpoints or more: the primary refuses at t0, the backup is up at t0.
    void up_on_backup()
    {
        fsm.start();
        fsm.attempt_ended({refused}, t0);
        REQUIRE(fsm.time_up(t0).what == kind::connect);
        REQUIRE(fsm.connected().what == kind::run);
        fsm.hook_succeeded(t0, 0.0);
        REQUIRE(fsm.endpoint() == 1);
    }

    std::vector<vigil::retry_context> asked;
    int resets = 0;
    vigil::any_backoff policy;
    reconnect_fsm fsm;
    reconnect_action last;
};

// Brings a fresh machine to `s` and returns it there.
void bring_to(rig& r, reconnect_state s)
{
    if (s == reconnect_state::idle)
        return;
    REQUIRE(r.fsm.start().what == kind::connect);
    if (s == reconnect_state::connecting)
        return;
    if (s == reconnect_state::waiting) {
        r.fsm.attempt_ended({refused}, t0);
        return;
    }
    REQUIRE(r.fsm.connected().what == kind::run);
    if (s == reconnect_state::up)
        r.fsm.hook_succeeded(t0, 0.0);
}

}  // namespace

TEST_SUITE("reconnect")
{
    TEST_CASE("a transient failure waits the policy's delay, the floor, then connects again")
    {
        reconnect_settings s;
        s.min_delay = 1500ms;
        rig r(s);
        REQUIRE(r.fsm.start().what == kind::connect);
        auto a = r.fsm.attempt_ended({refused}, t0);
        CHECK(a.what == kind::wait);
        CHECK(a.delay == 1500ms);  // the policy said 1 s; the floor wins
        CHECK(a.attempt == 1);
        CHECK(a.reason == refused);
        CHECK(r.fsm.state() == reconnect_state::waiting);
        CHECK(r.fsm.wait_until() == t0 + 1500ms);
        // Not before the time.
        CHECK(r.fsm.time_up(t0 + 1499ms).what == kind::wait);
        CHECK(r.fsm.time_up(t0 + 1500ms).what == kind::connect);
        CHECK(r.fsm.state() == reconnect_state::connecting);
        a = r.fsm.attempt_ended({refused}, t0 + 2s);
        CHECK(a.delay == 2000ms);  // above the floor now
        CHECK(a.attempt == 2);
        REQUIRE(r.asked.size() == 2);
        CHECK(r.asked[1].attempt == 2);
        CHECK(r.asked[1].reason == refused);
    }

    TEST_CASE("the streak resets only after a connection stayed up for stable_after")
    {
        reconnect_settings s;
        s.stable_after = 5s;
        rig r(s);
        r.fail(3);
        CHECK(r.last.attempt == 3);
        REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
        REQUIRE(r.fsm.connected().what == kind::run);
        r.fsm.hook_succeeded(t0, 0.0);
        // Up 4.999 s: not stable, the streak goes on.
        auto a = r.fsm.attempt_ended({refused}, t0 + 4999ms);
        CHECK(a.attempt == 4);
        CHECK(r.resets == 0);
        REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
        REQUIRE(r.fsm.connected().what == kind::run);
        const auto up = r.fsm.wait_until() + 10ms;
        r.fsm.hook_succeeded(up, 0.0);
        a = r.fsm.attempt_ended({refused}, up + 5s);
        CHECK(a.attempt == 1);
        CHECK(r.resets == 1);
        CHECK(a.delay == 1000ms);  // the policy starts over too
    }

    TEST_CASE("connected but the hook never succeeded: not up, not stable")
    {
        reconnect_settings s;
        s.stable_after = 1s;
        rig r(s);
        REQUIRE(r.fsm.start().what == kind::connect);
        REQUIRE(r.fsm.connected().what == kind::run);
        CHECK(r.fsm.state() == reconnect_state::running_hook);
        auto a = r.fsm.attempt_ended({error::handler_exception}, t0 + 1h);
        CHECK(a.what == kind::wait);
        CHECK(a.attempt == 1);
        CHECK(r.resets == 0);
    }

    TEST_CASE("Retry-After: honoured above the policy, bounded by max_retry_after, ignored at zero")
    {
        reconnect_settings s;
        s.max_retry_after = 10s;
        {
            rig r(s);
            r.fsm.start();
            auto a = r.fsm.attempt_ended({vigil::make_http_status_error(503), 7s}, t0);
            CHECK(a.delay == 7s);
        }
        {
            rig r(s);
            r.fsm.start();
            auto a = r.fsm.attempt_ended({vigil::make_http_status_error(429), 1h}, t0);
            CHECK(a.delay == 10s);
        }
        {
            rig r(s);
            r.fsm.start();
            // Shorter than the policy's delay: the policy's stands.
            auto a = r.fsm.attempt_ended({vigil::make_http_status_error(503), 200ms}, t0);
            CHECK(a.delay == 1000ms);
        }
        s.max_retry_after = 0ms;
        {
            rig r(s);
            r.fsm.start();
            auto a = r.fsm.attempt_ended({vigil::make_http_status_error(503), 30s}, t0);
            CHECK(a.delay == 1000ms);
        }
    }

    TEST_CASE("max_attempts: gives up with retries_exhausted after that many failures in a row")
    {
        reconnect_settings s;
        s.max_attempts = 3;
        rig r(s);
        r.fail(2);
        CHECK(r.last.what == kind::wait);
        REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
        auto a = r.fsm.attempt_ended({refused}, r.fsm.wait_until() + 1ms);
        CHECK(a.what == kind::give_up);
        CHECK(a.reason == error::retries_exhausted);
        CHECK(r.fsm.state() == reconnect_state::gave_up);
    }

    TEST_CASE("a permanent failure gives up at once; an override decides instead when set")
    {
        {
            rig r;
            r.fsm.start();
            auto a = r.fsm.attempt_ended({vigil::make_http_status_error(401)}, t0);
            CHECK(a.what == kind::give_up);
            CHECK(vigil::http_status_of(a.reason) == 401);
            CHECK(r.asked.empty());
        }
        {
            reconnect_settings s;
            s.is_permanent = [](const error_code& ec) { return ec == refused; };
            rig r(s);
            r.fsm.start();
            CHECK(r.fsm.attempt_ended({refused}, t0).what == kind::give_up);
            rig r2(s);
            r2.fsm.start();
            CHECK(r2.fsm.attempt_ended({vigil::make_http_status_error(401)}, t0).what == kind::wait);
        }
    }

    TEST_CASE("a clean end or a cancellation stops; neither is retried")
    {
        {
            rig r;
            bring_to(r, reconnect_state::up);
            auto a = r.fsm.attempt_ended({error_code{}}, t0 + 1s);
            CHECK(a.what == kind::stop);
            CHECK_FALSE(a.reason);
        }
        {
            rig r;
            bring_to(r, reconnect_state::connecting);
            auto a = r.fsm.attempt_ended({aborted}, t0);
            CHECK(a.what == kind::stop);
            CHECK(a.reason == aborted);
            CHECK(r.fsm.state() == reconnect_state::stopped);
        }
    }

    TEST_CASE("stop() in every state")
    {
        SUBCASE("idle: the next run() ends at once")
        {
            rig r;
            CHECK(r.fsm.stop() == reconnect_interrupt::none);
            CHECK(r.fsm.state() == reconnect_state::stopping);
            auto a = r.fsm.start();
            CHECK(a.what == kind::stop);
            CHECK_FALSE(a.reason);
            // Consumed: the run after that connects.
            CHECK(r.fsm.start().what == kind::connect);
        }
        SUBCASE("connecting: the attempt is aborted and run() ends cleanly")
        {
            rig r;
            bring_to(r, reconnect_state::connecting);
            CHECK(r.fsm.stop() == reconnect_interrupt::abort_attempt);
            auto a = r.fsm.attempt_ended({aborted}, t0);
            CHECK(a.what == kind::stop);
            CHECK_FALSE(a.reason);
        }
        SUBCASE("connecting, and the handshake won the race: close what was opened")
        {
            rig r;
            bring_to(r, reconnect_state::connecting);
            CHECK(r.fsm.stop() == reconnect_interrupt::abort_attempt);
            CHECK(r.fsm.connected().what == kind::close_session);
            auto a = r.fsm.attempt_ended({error_code{}}, t0);
            CHECK(a.what == kind::stop);
            CHECK_FALSE(a.reason);
        }
        SUBCASE("running the hook, or up: the session is closed, and its end is not retried")
        {
            for (auto st : {reconnect_state::running_hook, reconnect_state::up}) {
                rig r;
                bring_to(r, st);
                CHECK(r.fsm.state() == st);
                CHECK(r.fsm.stop() == reconnect_interrupt::close_session);
                CHECK(r.fsm.stop() == reconnect_interrupt::none);  // once
                auto a = r.fsm.attempt_ended({vigil::error_code(error::close_timeout)}, t0 + 1s);
                CHECK(a.what == kind::stop);
                CHECK_FALSE(a.reason);
                CHECK(r.asked.empty());
            }
        }
        SUBCASE("waiting: the wait ends and so does run()")
        {
            rig r;
            bring_to(r, reconnect_state::waiting);
            CHECK(r.fsm.stop() == reconnect_interrupt::cancel_wait);
            CHECK(r.fsm.state() == reconnect_state::stopped);
            auto a = r.fsm.time_up(t0 + 1ms);
            CHECK(a.what == kind::stop);
            CHECK_FALSE(a.reason);
        }
        SUBCASE("after run() ended: the next run() ends at once")
        {
            rig r;
            r.fsm.start();
            REQUIRE(r.fsm.attempt_ended({vigil::make_http_status_error(403)}, t0).what == kind::give_up);
            CHECK(r.fsm.stop() == reconnect_interrupt::none);
            CHECK(r.fsm.start().what == kind::stop);
        }
        SUBCASE("cancelled while stopping: the stop is what counts")
        {
            rig r;
            bring_to(r, reconnect_state::up);
            r.fsm.stop();
            auto a = r.fsm.cancelled();
            CHECK(a.what == kind::stop);
            CHECK_FALSE(a.reason);
        }
    }

    TEST_CASE("retry_now() in every state: only a wait is cut short")
    {
        for (auto st : {reconnect_state::idle, reconnect_state::connecting, reconnect_state::running_hook,
                        reconnect_state::up}) {
            rig r;
            bring_to(r, st);
            CHECK(r.fsm.retry_now(t0) == reconnect_interrupt::none);
            CHECK(r.fsm.state() == st);
        }
        rig r;
        bring_to(r, reconnect_state::waiting);
        REQUIRE(r.fsm.wait_until() == t0 + 1000ms);
        CHECK(r.fsm.retry_now(t0 + 10ms) == reconnect_interrupt::cancel_wait);
        CHECK(r.fsm.wait_until() == t0 + 10ms);
        CHECK(r.fsm.time_up(t0 + 10ms).what == kind::connect);
        // The streak is not forgiven: the next failure is attempt 2.
        CHECK(r.fsm.attempt_ended({refused}, t0 + 20ms).attempt == 2);
        // Stopped or gave up: nothing to hurry.
        r.fsm.stop();
        CHECK(r.fsm.retry_now(t0 + 30ms) == reconnect_interrupt::none);
    }

    TEST_CASE("a new run() starts a fresh streak")
    {
        rig r;
        r.fail(3);
        r.fsm.stop();
        REQUIRE(r.fsm.time_up(t0).what == kind::stop);
        REQUIRE(r.fsm.start().what == kind::connect);
        CHECK(r.fsm.streak() == 0);
    }

    TEST_CASE("1008 is retried, after at least policy_violation_delay; an override can still make it final")
    {
        const auto policy_close = vigil::make_close_error(1008);
        reconnect_settings s;
        s.policy_violation_delay = 30s;
        rig r(s);
        REQUIRE(r.fsm.start().what == kind::connect);
        REQUIRE(r.fsm.connected().what == kind::run);
        r.fsm.hook_succeeded(t0, 0.0);
        auto a = r.fsm.attempt_ended({policy_close}, t0 + 1s);
        CHECK(a.what == kind::wait);
        CHECK(a.delay == 30s);  // the policy said 1 s
        CHECK(a.reason == policy_close);
        // Other close codes keep the policy's delay.
        REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
        a = r.fsm.attempt_ended({vigil::make_close_error(1013)}, r.fsm.wait_until() + 1s);
        CHECK(a.delay == 2s);
        // A longer Retry-After or policy delay wins over the floor.
        s.max_retry_after = 120s;
        rig longer(s);
        REQUIRE(longer.fsm.start().what == kind::connect);
        CHECK(longer.fsm.attempt_ended({policy_close, 90s}, t0).delay == 90s);
        // Zero: no floor.
        s.policy_violation_delay = 0ms;
        rig none(s);
        REQUIRE(none.fsm.start().what == kind::connect);
        CHECK(none.fsm.attempt_ended({policy_close}, t0).delay == 1s);
        // The application's override decides.
        s.is_permanent = [](const error_code& ec) { return vigil::close_code_of(ec) == 1008; };
        rig strict(s);
        REQUIRE(strict.fsm.start().what == kind::connect);
        a = strict.fsm.attempt_ended({policy_close}, t0);
        CHECK(a.what == kind::give_up);
        CHECK(a.reason == policy_close);
    }

    TEST_CASE("reconnect() on a live session: closed, then connected again at once, no failure counted")
    {
        for (auto st : {reconnect_state::running_hook, reconnect_state::up}) {
            CAPTURE(static_cast<int>(st));
            reconnect_settings s;
            s.stable_after = 5s;
            rig r(s);
            r.fail(2);  // a streak of 2 before this connection
            REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
            REQUIRE(r.fsm.connected().what == kind::run);
            const auto up = r.fsm.wait_until() + 5ms;
            if (st == reconnect_state::up)
                r.fsm.hook_succeeded(up, 0.0);
            CHECK(r.fsm.reconnect(up + 1s) == reconnect_interrupt::close_session);
            CHECK(r.fsm.state() == reconnect_state::replacing);
            // A second call while the close is under way changes nothing.
            CHECK(r.fsm.reconnect(up + 1s) == reconnect_interrupt::none);
            // The hook finishing meanwhile does not make it up.
            r.fsm.hook_succeeded(up + 1s, 0.0);
            CHECK(r.fsm.state() == reconnect_state::replacing);
            // However the old session ends (clean close, or a timeout on the way out).
            auto a = r.fsm.attempt_ended({error_code{}}, up + 2s);
            CHECK(a.what == kind::connect);
            CHECK(r.fsm.state() == reconnect_state::connecting);
            CHECK(r.fsm.streak() == 2);  // neither grown nor forgiven
            CHECK(r.asked.size() == 2);  // the policy was not asked
            CHECK(r.resets == 0);
            // The next failure continues the streak.
            CHECK(r.fsm.attempt_ended({refused}, up + 3s).attempt == 3);
        }
    }

    TEST_CASE("reconnect() after a stable connection resets the streak as any end would")
    {
        reconnect_settings s;
        s.stable_after = 5s;
        rig r(s);
        r.fail(2);
        REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
        REQUIRE(r.fsm.connected().what == kind::run);
        r.fsm.hook_succeeded(t0 + 1h, 0.0);
        REQUIRE(r.fsm.reconnect(t0 + 2h) == reconnect_interrupt::close_session);
        CHECK(r.fsm.attempt_ended({vigil::error::close_timeout}, t0 + 2h + 1s).what == kind::connect);
        CHECK(r.fsm.streak() == 0);
        CHECK(r.resets == 1);
    }

    TEST_CASE("reconnect() in the other states")
    {
        for (auto st : {reconnect_state::idle, reconnect_state::connecting}) {
            rig r;
            bring_to(r, st);
            CHECK(r.fsm.reconnect(t0) == reconnect_interrupt::none);
            CHECK(r.fsm.state() == st);
        }
        SUBCASE("waiting: like retry_now()")
        {
            rig r;
            bring_to(r, reconnect_state::waiting);
            CHECK(r.fsm.reconnect(t0 + 10ms) == reconnect_interrupt::cancel_wait);
            CHECK(r.fsm.time_up(t0 + 10ms).what == kind::connect);
            CHECK(r.fsm.attempt_ended({refused}, t0 + 20ms).attempt == 2);
        }
        SUBCASE("stop() while replacing: the close under way ends run()")
        {
            rig r;
            bring_to(r, reconnect_state::up);
            REQUIRE(r.fsm.reconnect(t0 + 1s) == reconnect_interrupt::close_session);
            CHECK(r.fsm.stop() == reconnect_interrupt::none);
            auto a = r.fsm.attempt_ended({error_code{}}, t0 + 2s);
            CHECK(a.what == kind::stop);
            CHECK_FALSE(a.reason);
        }
        SUBCASE("cancelled while replacing")
        {
            rig r;
            bring_to(r, reconnect_state::up);
            REQUIRE(r.fsm.reconnect(t0 + 1s) == reconnect_interrupt::close_session);
            auto a = r.fsm.attempt_ended({aborted}, t0 + 2s);
            CHECK(a.what == kind::stop);
            CHECK(a.reason == aborted);
        }
        SUBCASE("stopped: nothing")
        {
            rig r;
            r.fsm.stop();
            CHECK(r.fsm.reconnect(t0) == reconnect_interrupt::none);
            CHECK(r.fsm.state() == reconnect_state::stopping);
        }
    }

    TEST_CASE("the policy is told the streak: Retry-After, how long it has failed, the previous wait, the record")
    {
        reconnect_settings s;
        s.min_delay = 1500ms;  // above the policy's first answer: previous_delay is the wait chosen
        s.stable_after = 5s;
        rig r(s);
        vigil::disconnect_info info;
        info.http_status = 503;
        REQUIRE(r.fsm.start().what == kind::connect);
        r.fsm.attempt_ended({vigil::make_http_status_error(503), 7s, &info}, t0);
        REQUIRE(r.asked.size() == 1);
        CHECK(r.asked[0].attempt == 1);
        CHECK(r.asked[0].retry_after == 7s);
        CHECK(r.asked[0].failing_for == 0ms);
        CHECK(r.asked[0].previous_delay == 0ms);
        CHECK(r.asked[0].last == &info);
        REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
        r.fsm.attempt_ended({refused}, t0 + 8s);
        REQUIRE(r.asked.size() == 2);
        CHECK(r.asked[1].attempt == 2);
        CHECK(r.asked[1].retry_after == 0ms);
        CHECK(r.asked[1].failing_for == 8s);
        CHECK(r.asked[1].previous_delay == 7s);  // Retry-After won over the policy's 1 s
        CHECK(r.asked[1].last == nullptr);
        REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
        r.fsm.attempt_ended({refused}, t0 + 11s);
        CHECK(r.asked[2].previous_delay == 2000ms);
        CHECK(r.asked[2].failing_for == 11s);
        // A stable connection ends the streak: the next one starts from zero.
        REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
        REQUIRE(r.fsm.connected().what == kind::run);
        r.fsm.hook_succeeded(t0 + 20s, 0.0);
        r.fsm.attempt_ended({refused}, t0 + 1h);
        CHECK(r.resets == 1);
        CHECK(r.asked.back().attempt == 1);
        CHECK(r.asked.back().failing_for == 0ms);
        CHECK(r.asked.back().previous_delay == 0ms);
    }

    TEST_CASE("endpoints: a failure moves on to the next at once; the policy's delay comes once per round")
    {
        reconnect_settings s;
        s.endpoints = 3;
        s.min_delay = 100ms;
        rig r(s);
        auto a = r.fsm.start();
        CHECK(a.endpoint == 0);
        // Primary refused: the first backup at once, the policy not asked.
        a = r.fsm.attempt_ended({refused}, t0);
        CHECK(a.what == kind::wait);
        CHECK(a.delay == 0ms);
        CHECK(a.endpoint == 1);
        CHECK(a.attempt == 1);
        CHECK(r.asked.empty());
        a = r.fsm.time_up(t0);
        CHECK(a.what == kind::connect);
        CHECK(a.endpoint == 1);
        a = r.fsm.attempt_ended({refused}, t0 + 1ms);
        CHECK(a.delay == 0ms);
        CHECK(a.endpoint == 2);
        REQUIRE(r.fsm.time_up(t0 + 1ms).what == kind::connect);
        // The round is over: the policy's first delay, then the primary again.
        a = r.fsm.attempt_ended({refused}, t0 + 2ms);
        CHECK(a.delay == 1000ms);
        CHECK(a.endpoint == 0);
        CHECK(a.attempt == 3);
        REQUIRE(r.asked.size() == 1);
        CHECK(r.asked[0].attempt == 1);  // rounds, not URLs
        CHECK(r.asked[0].failing_for == 2ms);
        // The second round ends with the policy's second delay.
        for (std::size_t i = 0; i < 3; ++i) {
            a = r.fsm.time_up(r.fsm.wait_until());
            REQUIRE(a.what == kind::connect);
            CHECK(a.endpoint == i);
            a = r.fsm.attempt_ended({refused}, r.fsm.wait_until() + 1ms);
        }
        CHECK(a.delay == 2000ms);
        REQUIRE(r.asked.size() == 2);
        CHECK(r.asked[1].attempt == 2);
        CHECK(r.asked[1].previous_delay == 1000ms);
    }

    TEST_CASE("endpoints: a server's Retry-After and the 1008 floor hold within a round")
    {
        reconnect_settings s;
        s.endpoints = 2;
        rig r(s);
        r.fsm.start();
        auto a = r.fsm.attempt_ended({vigil::make_http_status_error(429), 3s}, t0);
        CHECK(a.endpoint == 1);
        CHECK(a.delay == 3s);
        CHECK(r.asked.empty());
        REQUIRE(r.fsm.time_up(t0 + 3s).what == kind::connect);
        a = r.fsm.attempt_ended({vigil::make_close_error(1008)}, t0 + 4s);
        CHECK(a.endpoint == 0);
        CHECK(a.delay == 30s);
    }

    TEST_CASE("endpoints: a connection that drops moves on; only a stable one starts a fresh round")
    {
        reconnect_settings s;
        s.endpoints = 2;
        s.stable_after = 5s;
        rig r(s);
        r.fsm.start();
        auto a = r.fsm.attempt_ended({refused}, t0);  // primary down
        REQUIRE(r.fsm.time_up(t0).what == kind::connect);
        REQUIRE(r.fsm.connected().what == kind::run);
        r.fsm.hook_succeeded(t0 + 1ms, 0.0);
        CHECK(r.fsm.endpoint() == 1);
        // Up on the backup for 1 s, then reset: the round (primary, backup) is complete.
        a = r.fsm.attempt_ended({error_code(boost::asio::error::connection_reset)}, t0 + 1s);
        CHECK(a.endpoint == 0);
        CHECK(a.delay == 1000ms);
        REQUIRE(r.fsm.time_up(r.fsm.wait_until()).what == kind::connect);
        REQUIRE(r.fsm.connected().what == kind::run);
        r.fsm.hook_succeeded(t0 + 3s, 0.0);
        // Up on the primary for an hour: the streak and the round start over, so its drop
        // goes to the backup at once.
        a = r.fsm.attempt_ended({error_code(vigil::error::pong_timeout)}, t0 + 1h);
        CHECK(a.endpoint == 1);
        CHECK(a.delay == 0ms);
        CHECK(a.attempt == 1);
        CHECK(r.resets == 1);
    }

    TEST_CASE("endpoints: failback_after replaces a stable backup connection with one to the primary")
    {
        reconnect_settings s;
        s.endpoints = 2;
        s.stable_after = 5s;
        s.failback_after = 60s;
        rig r(s);
        r.up_on_backup();
        auto plan = r.fsm.replacement();
        CHECK(plan.why == vigil::detail::replacement::failback);
        CHECK(plan.at == t0 + 60s);
        CHECK(r.fsm.replacement_due(t0 + 59s) == reconnect_interrupt::none);
        CHECK(r.fsm.state() == reconnect_state::up);
        CHECK(r.fsm.replacement_due(t0 + 60s) == reconnect_interrupt::close_session);
        CHECK(r.fsm.state() == reconnect_state::replacing);
        auto a = r.fsm.attempt_ended({error_code{}}, t0 + 60s);
        CHECK(a.what == kind::connect);
        CHECK(a.endpoint == 0);
        CHECK(r.resets == 1);  // the backup was stable
        // The primary still refuses: back to the backup at once, no policy wait.
        a = r.fsm.attempt_ended({refused}, t0 + 61s);
        CHECK(a.endpoint == 1);
        CHECK(a.delay == 0ms);
        // On the primary, nothing is planned.
        REQUIRE(r.fsm.time_up(t0 + 61s).what == kind::connect);
        REQUIRE(r.fsm.connected().what == kind::run);
        r.fsm.hook_succeeded(t0 + 62s, 0.0);
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::failback);
        r.fsm.replacement_due(t0 + 122s);
        r.fsm.attempt_ended({error_code{}}, t0 + 122s);
        REQUIRE(r.fsm.connected().what == kind::run);
        r.fsm.hook_succeeded(t0 + 123s, 0.0);
        CHECK(r.fsm.endpoint() == 0);
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::none);
        CHECK(r.fsm.replacement_due(t0 + 24h) == reconnect_interrupt::none);
    }

    TEST_CASE("endpoints: without failback_after a backup is kept; reconnect() stays on the same endpoint")
    {
        reconnect_settings s;
        s.endpoints = 2;
        rig r(s);
        r.up_on_backup();
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::none);
        REQUIRE(r.fsm.reconnect(t0 + 1h) == reconnect_interrupt::close_session);
        auto a = r.fsm.attempt_ended({error_code{}}, t0 + 1h);
        CHECK(a.what == kind::connect);
        CHECK(a.endpoint == 1);
    }

    TEST_CASE("max_connection_age: the moment is drawn from the last tenth of the age")
    {
        reconnect_settings s;
        s.max_connection_age = 1000s;
        for (double draw : {0.0, 0.5, 0.999999, 1.0, -3.0, 7.0}) {
            CAPTURE(draw);
            rig r(s);
            r.fsm.start();
            REQUIRE(r.fsm.connected().what == kind::run);
            r.fsm.hook_succeeded(t0, draw);
            const auto plan = r.fsm.replacement();
            CHECK(plan.why == vigil::detail::replacement::max_connection_age);
            CHECK(plan.at <= t0 + 1000s);
            CHECK(plan.at >= t0 + 900s);
            if (draw == 0.5)
                CHECK(plan.at == t0 + 950s);
            CHECK(r.fsm.replacement_due(plan.at - 1ms) == reconnect_interrupt::none);
            CHECK(r.fsm.replacement_due(plan.at) == reconnect_interrupt::close_session);
            // Same endpoint, at once, no failure.
            auto a = r.fsm.attempt_ended({error_code{}}, plan.at + 1s);
            CHECK(a.what == kind::connect);
            CHECK(r.fsm.streak() == 0);
            CHECK(r.asked.empty());
        }
        // Not while the hook runs, nor once a stop() or reconnect() came first.
        rig r(s);
        r.fsm.start();
        REQUIRE(r.fsm.connected().what == kind::run);
        CHECK(r.fsm.replacement_due(t0 + 2000s) == reconnect_interrupt::none);
        r.fsm.hook_succeeded(t0, 0.0);
        REQUIRE(r.fsm.stop() == reconnect_interrupt::close_session);
        CHECK(r.fsm.replacement_due(t0 + 2000s) == reconnect_interrupt::none);
        CHECK(r.fsm.state() == reconnect_state::stopping);
    }

    TEST_CASE("endpoints: the age limit on a backup comes before failback_after and goes to the primary")
    {
        reconnect_settings s;
        s.endpoints = 2;
        s.failback_after = 600s;
        s.max_connection_age = 100s;
        rig r(s);
        r.up_on_backup();
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::max_connection_age);
        REQUIRE(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::close_session);
        CHECK(r.fsm.attempt_ended({error_code{}}, t0 + 100s).endpoint == 0);
    }

    // make-before-break: the replacement is opened beside the live connection.

    TEST_CASE("make-before-break: the age limit opens the replacement beside the live connection, then hands over")
    {
        reconnect_settings s;
        s.max_connection_age = 100s;
        s.stable_after = 5s;
        s.make_before_break = true;
        rig r(s);
        bring_to(r, reconnect_state::up);  // up at t0, due at t0 + 100 s (draw 0)
        const auto due = r.fsm.replacement().at;
        CHECK(due == t0 + 100s);
        REQUIRE(r.fsm.replacement_due(due) == reconnect_interrupt::open_replacement);
        // The live connection stays up; nothing more is due while the replacement is opened.
        CHECK(r.fsm.state() == reconnect_state::up);
        CHECK(r.fsm.replacing_phase() == vigil::detail::replacement_phase::opening);
        CHECK(r.fsm.replacement().at == time_point::max());
        CHECK(r.fsm.replacement_due(due + 1h) == reconnect_interrupt::none);
        CHECK(r.fsm.reconnect(due) == reconnect_interrupt::none);
        CHECK(r.fsm.replacement_connected().what == kind::run);
        CHECK(r.fsm.replacing_phase() == vigil::detail::replacement_phase::hooking);
        // Up: handed over. The old one was stable, so the streak starts over; the new one's
        // age counts from now.
        CHECK(r.fsm.replacement_up(due + 1s, 0.5).what == kind::hand_over);
        CHECK(r.fsm.state() == reconnect_state::up);
        CHECK(r.fsm.replacing_phase() == vigil::detail::replacement_phase::none);
        CHECK(r.resets == 1);
        CHECK(r.fsm.replacement().at == due + 1s + 95s);
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::max_connection_age);
        CHECK(r.asked.empty());  // no delay asked: nothing failed
    }

    TEST_CASE("make-before-break: a failed replacement keeps the live one and is tried again before the cut")
    {
        reconnect_settings s;
        s.max_connection_age = 100s;
        s.min_delay = 100ms;
        s.make_before_break = true;
        // Drawn at the start of the last tenth: due at t0 + 90 s, the cut at t0 + 100 s.
        rig r2(s);
        bring_to(r2, reconnect_state::connecting);
        REQUIRE(r2.fsm.connected().what == kind::run);
        r2.fsm.hook_succeeded(t0, 1.0);
        auto now = r2.fsm.replacement().at;
        REQUIRE(now == t0 + 90s);
        // The policy says 1 s, 2 s, 3 s ...; halfway to the cut bounds it as the cut nears.
        const std::vector<milliseconds> expected = {1s, 2s, 3s, 2s, 1s};
        for (std::size_t i = 0; i < expected.size(); ++i) {
            CAPTURE(i);
            REQUIRE(r2.fsm.replacement_due(now) == reconnect_interrupt::open_replacement);
            auto a = r2.fsm.replacement_failed({refused}, now);
            CHECK(a.what == kind::keep);
            CHECK(a.delay == expected[i]);
            CHECK(a.attempt == i + 1);
            CHECK(r2.fsm.replacement_failures() == i + 1);
            CHECK(r2.fsm.state() == reconnect_state::up);
            CHECK(r2.fsm.replacement().at == now + expected[i]);
            CHECK(r2.fsm.replacement_due(now + expected[i] - 1ms) == reconnect_interrupt::none);
            now += expected[i];
        }
        CHECK(r2.asked.size() == expected.size());
        CHECK(r2.asked[1].attempt == 2);
        CHECK(r2.asked[1].failing_for == 1s);
        CHECK(r2.asked[1].previous_delay == 1s);
        CHECK(r2.fsm.streak() == 0);  // no failure of the supervisor's own
        // Past the cut (the server did not cut after all), the policy's delay stands.
        now = t0 + 101s;
        REQUIRE(r2.fsm.replacement_due(now) == reconnect_interrupt::open_replacement);
        CHECK(r2.fsm.replacement_failed({refused}, now).delay == 6s);
        // One that comes up resets the count.
        REQUIRE(r2.fsm.replacement_due(now + 6s) == reconnect_interrupt::open_replacement);
        REQUIRE(r2.fsm.replacement_connected().what == kind::run);
        CHECK(r2.fsm.replacement_up(now + 6s, 0.0).what == kind::hand_over);
        CHECK(r2.fsm.replacement_failures() == 0);
    }

    TEST_CASE("make-before-break: a permanent failure of the replacement keeps the live one, with no more tries")
    {
        reconnect_settings s;
        s.max_connection_age = 100s;
        s.make_before_break = true;
        rig r(s);
        bring_to(r, reconnect_state::up);
        REQUIRE(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::open_replacement);
        auto a = r.fsm.replacement_failed({vigil::make_http_status_error(401)}, t0 + 100s);
        CHECK(a.what == kind::keep);
        CHECK(r.fsm.state() == reconnect_state::up);
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::none);
        CHECK(r.fsm.replacement_due(t0 + 24h) == reconnect_interrupt::none);
        CHECK(r.asked.empty());
        // reconnect() can still ask for one.
        CHECK(r.fsm.reconnect(t0 + 24h) == reconnect_interrupt::open_replacement);
    }

    TEST_CASE("make-before-break: a failed failback is tried again after failback_after, on the primary")
    {
        reconnect_settings s;
        s.endpoints = 2;
        s.failback_after = 60s;
        s.make_before_break = true;
        rig r(s);
        r.up_on_backup();
        REQUIRE(r.fsm.replacement_due(t0 + 60s) == reconnect_interrupt::open_replacement);
        CHECK(r.fsm.replacement_endpoint() == 0);
        CHECK(r.fsm.endpoint() == 1);  // still live on the backup
        auto a = r.fsm.replacement_failed({refused}, t0 + 60s);
        CHECK(a.what == kind::keep);
        CHECK(a.delay == 60s);
        CHECK(a.endpoint == 0);
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::failback);
        REQUIRE(r.fsm.replacement_due(t0 + 120s) == reconnect_interrupt::open_replacement);
        REQUIRE(r.fsm.replacement_connected().what == kind::run);
        CHECK(r.fsm.replacement_up(t0 + 121s, 0.0).what == kind::hand_over);
        CHECK(r.fsm.endpoint() == 0);
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::none);  // on the primary: stay
    }

    TEST_CASE("make-before-break: reconnect() opens a replacement to the same endpoint, retried if it fails")
    {
        reconnect_settings s;
        s.make_before_break = true;
        rig r(s);
        bring_to(r, reconnect_state::up);
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::none);
        REQUIRE(r.fsm.reconnect(t0 + 1s) == reconnect_interrupt::open_replacement);
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::requested);
        CHECK(r.fsm.reconnect(t0 + 1s) == reconnect_interrupt::none);  // one at a time
        auto a = r.fsm.replacement_failed({refused}, t0 + 2s);
        CHECK(a.delay == 1s);  // the policy's first delay
        CHECK(r.fsm.replacement().why == vigil::detail::replacement::requested);
        CHECK(r.fsm.replacement_due(t0 + 3s) == reconnect_interrupt::open_replacement);
        // While the hook of a connection runs, there is nothing live to keep: break first.
        rig h(s);
        bring_to(h, reconnect_state::running_hook);
        CHECK(h.fsm.reconnect(t0) == reconnect_interrupt::close_session);
    }

    TEST_CASE("make-before-break: the live one ending meanwhile makes the replacement the attempt")
    {
        reconnect_settings s;
        s.max_connection_age = 100s;
        s.make_before_break = true;
        SUBCASE("it comes up: adopted, no failure counted")
        {
            rig r(s);
            bring_to(r, reconnect_state::up);
            REQUIRE(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::open_replacement);
            auto a = r.fsm.attempt_ended({error_code(1001, vigil::close_code_category())}, t0 + 100s);
            CHECK(a.what == kind::await_replacement);
            CHECK(r.fsm.state() == reconnect_state::connecting);
            CHECK(r.fsm.replacing_role() == vigil::detail::replacement_role::attempt);
            CHECK(r.fsm.replacement_connected().what == kind::run);
            CHECK(r.fsm.state() == reconnect_state::running_hook);
            CHECK(r.fsm.replacement_up(t0 + 101s, 0.0).what == kind::adopt);
            CHECK(r.fsm.state() == reconnect_state::up);
            CHECK(r.fsm.streak() == 0);
            CHECK(r.asked.empty());
            CHECK(r.fsm.replacement().at == t0 + 201s);
        }
        SUBCASE("ended during its hook")
        {
            rig r(s);
            bring_to(r, reconnect_state::up);
            REQUIRE(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::open_replacement);
            REQUIRE(r.fsm.replacement_connected().what == kind::run);
            CHECK(r.fsm.attempt_ended({refused}, t0 + 100s).what == kind::await_replacement);
            CHECK(r.fsm.state() == reconnect_state::running_hook);
            CHECK(r.fsm.replacement_up(t0 + 101s, 0.0).what == kind::adopt);
        }
        SUBCASE("it fails: a failure like any other attempt's")
        {
            rig r(s);
            bring_to(r, reconnect_state::up);
            REQUIRE(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::open_replacement);
            REQUIRE(r.fsm.attempt_ended({refused}, t0 + 100s).what == kind::await_replacement);
            auto a = r.fsm.replacement_failed({refused}, t0 + 101s);
            CHECK(a.what == kind::wait);
            CHECK(a.delay == 1s);
            CHECK(r.fsm.streak() == 1);
            CHECK(r.fsm.state() == reconnect_state::waiting);
        }
        SUBCASE("a permanent reason ends run() as always")
        {
            rig r(s);
            bring_to(r, reconnect_state::up);
            REQUIRE(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::open_replacement);
            auto a = r.fsm.attempt_ended({vigil::make_http_status_error(403)}, t0 + 100s);
            CHECK(a.what == kind::give_up);
            CHECK(r.fsm.replacement_failed({aborted}, t0 + 100s).what == kind::stop);
            CHECK(r.fsm.state() == reconnect_state::gave_up);
        }
    }

    TEST_CASE("make-before-break: stop() during the overlap, or once the replacement is the attempt")
    {
        reconnect_settings s;
        s.max_connection_age = 100s;
        s.make_before_break = true;
        SUBCASE("beside the live one: both close; the live one's end ends run()")
        {
            rig r(s);
            bring_to(r, reconnect_state::up);
            REQUIRE(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::open_replacement);
            REQUIRE(r.fsm.replacement_connected().what == kind::run);
            CHECK(r.fsm.stop() == reconnect_interrupt::close_session);
            CHECK(r.fsm.replacement_up(t0 + 100s, 0.0).what == kind::stop);  // raced: close it
            CHECK(r.fsm.state() == reconnect_state::stopping);
            auto a = r.fsm.attempt_ended({error_code{}}, t0 + 100s);
            CHECK(a.what == kind::stop);
            CHECK_FALSE(a.reason);
        }
        SUBCASE("beside the live one, still connecting")
        {
            rig r(s);
            bring_to(r, reconnect_state::up);
            REQUIRE(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::open_replacement);
            CHECK(r.fsm.stop() == reconnect_interrupt::close_session);
            CHECK(r.fsm.replacement_connected().what == kind::close_session);
            CHECK(r.fsm.replacement_failed({aborted}, t0 + 100s).what == kind::stop);
            CHECK(r.fsm.state() == reconnect_state::stopping);  // the live one's end decides
            CHECK(r.fsm.attempt_ended({error_code{}}, t0 + 100s).what == kind::stop);
            CHECK(r.fsm.state() == reconnect_state::stopped);
        }
        SUBCASE("the replacement as the attempt")
        {
            rig r(s);
            bring_to(r, reconnect_state::up);
            REQUIRE(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::open_replacement);
            REQUIRE(r.fsm.attempt_ended({refused}, t0 + 100s).what == kind::await_replacement);
            CHECK(r.fsm.stop() == reconnect_interrupt::abort_attempt);
            auto a = r.fsm.replacement_failed({aborted}, t0 + 100s);
            CHECK(a.what == kind::stop);
            CHECK_FALSE(a.reason);
            CHECK(r.fsm.state() == reconnect_state::stopped);
        }
    }

    TEST_CASE("without make-before-break, the replacement closes first, as before")
    {
        reconnect_settings s;
        s.max_connection_age = 100s;
        rig r(s);
        bring_to(r, reconnect_state::up);
        CHECK(r.fsm.replacement_due(t0 + 100s) == reconnect_interrupt::close_session);
        CHECK(r.fsm.replacing_phase() == vigil::detail::replacement_phase::none);
    }
}
