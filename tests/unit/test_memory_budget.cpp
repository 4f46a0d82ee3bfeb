// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// A server's memory budget (lib/detail/memory_budget), the inbound rate limit
// (receive_throttle) and the deadline of a message in progress (liveness), stepped with a
// fake clock: no socket, no real time.

#include "detail/liveness.hpp"
#include "detail/memory_budget.hpp"
#include "detail/receive_throttle.hpp"

#include <vigil/server.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <memory>

namespace {

using namespace std::chrono_literals;
using vigil::detail::budget_account;
using vigil::detail::holding_part;
using vigil::detail::memory_budget;
using time_point = std::chrono::steady_clock::time_point;

const time_point t0 = time_point(std::chrono::hours(1000));
constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

}  // namespace

TEST_CASE("memory budget: growth within the budget is granted and counted; giving back frees it")
{
    auto budget = std::make_shared<memory_budget>(1 * MiB, 2s);
    {
        budget_account a(budget);
        CHECK(a.grow_message(300 * KiB));
        CHECK(budget->total() == 300 * KiB);
        a.add(holding_part::received, 100 * KiB);
        a.add(holding_part::sending, 50 * KiB);
        CHECK(a.total() == 450 * KiB);
        CHECK(a.largest() == holding_part::message);
        a.set(holding_part::message, 0);
        CHECK(a.largest() == holding_part::received);
        CHECK(budget->total() == 150 * KiB);
        CHECK(budget->peak() == 450 * KiB);
    }
    // An account that goes away gives everything back.
    CHECK(budget->total() == 0);
}

TEST_CASE("memory budget: heavy connections stop at three quarters, light ones may use the rest")
{
    auto budget = std::make_shared<memory_budget>(1 * MiB, 2s);
    budget_account heavy(budget);
    budget_account light(budget);
    CHECK(budget->heavy_line() == 768 * KiB);
    CHECK(heavy.grow_message(700 * KiB));
    // Beyond the heavy line: denied, and nothing changes.
    CHECK_FALSE(heavy.grow_message(800 * KiB));
    CHECK(heavy.held(holding_part::message) == 700 * KiB);
    CHECK(budget->total() == 700 * KiB);
    CHECK(heavy.must_hold_back() == false);
    // A connection holding at most 64 KiB still gets room above the heavy line.
    CHECK(light.grow_message(64 * KiB));
    CHECK(budget->total() == 764 * KiB);
    budget_account light2(budget);
    CHECK(light2.grow_message(64 * KiB));
    CHECK(budget->total() == 828 * KiB);
    CHECK(heavy.must_hold_back());  // over its line now
    CHECK_FALSE(light.must_hold_back());
    // Never beyond the limit itself, light or not.
    budget_account light3(budget);
    CHECK(light3.grow_message(64 * KiB));
    budget_account light4(budget);
    CHECK(light4.grow_message(64 * KiB));
    budget_account light5(budget);
    CHECK(light5.grow_message(64 * KiB));  // 1020 KiB
    budget_account light6(budget);
    CHECK_FALSE(light6.grow_message(64 * KiB));
    CHECK(budget->total() <= budget->limit());
}

TEST_CASE("memory budget: no limit grants everything and never presses")
{
    auto budget = std::make_shared<memory_budget>(0, 2s);
    budget_account a(budget);
    CHECK(a.grow_message(100 * MiB));
    CHECK_FALSE(a.must_hold_back());
    CHECK(budget->total() == 100 * MiB);
}

TEST_CASE("memory budget: the heaviest go after the pressure lasted the grace, until half the limit is left")
{
    auto budget = std::make_shared<memory_budget>(1 * MiB, 2s);
    budget_account a(budget), b(budget), c(budget);
    a.set(holding_part::message, 400 * KiB);
    b.set(holding_part::sending, 300 * KiB);
    c.set(holding_part::received, 200 * KiB);
    CHECK_FALSE(budget->pressed());
    CHECK(budget->due() == time_point::max());
    CHECK(budget->press(t0));
    CHECK_FALSE(budget->press(t0 + 1s));  // already pressed: the first moment counts
    CHECK(budget->due() == t0 + 2s);
    CHECK_FALSE(budget->verdict(t0 + 1999ms));
    REQUIRE(budget->verdict(t0 + 2s));
    // 900 KiB held: ending a (400 KiB) leaves 500 KiB, within half the limit (512 KiB).
    auto chosen = budget->choose({{1, a.total()}, {2, b.total()}, {3, c.total()}});
    REQUIRE(chosen.size() == 1);
    CHECK(chosen[0] == 1);
    // The next round counts from this verdict.
    CHECK(budget->due() == t0 + 4s);
    // Under the heavy line but someone was denied since the last look: still short.
    a.set(holding_part::message, 0);
    budget->press(t0 + 2500ms);
    CHECK_FALSE(budget->verdict(t0 + 2600ms));
    CHECK(budget->pressed());
    // Back under the heavy line and nobody denied: the pressure ends, nobody else goes.
    CHECK_FALSE(budget->verdict(t0 + 5s));
    CHECK_FALSE(budget->pressed());
}

TEST_CASE("memory budget: several heavy holders are chosen heaviest first, idle ones never")
{
    auto budget = std::make_shared<memory_budget>(1 * MiB, 1s);
    budget_account a(budget), b(budget), c(budget), d(budget);
    a.set(holding_part::message, 300 * KiB);
    b.set(holding_part::message, 350 * KiB);
    c.set(holding_part::message, 250 * KiB);
    auto chosen = budget->choose({{1, a.total()}, {2, b.total()}, {3, c.total()}, {4, d.total()}});
    // 900 KiB: b (350) leaves 550 > 512, then a (300) leaves 250.
    REQUIRE(chosen.size() == 2);
    CHECK(chosen[0] == 2);
    CHECK(chosen[1] == 1);
}

TEST_CASE("receive throttle: a burst of one second's worth, then the rate")
{
    vigil::detail::receive_throttle t;
    t.start(100 * KiB, t0);
    CHECK(t.charge(100 * KiB, t0) == std::chrono::steady_clock::duration::zero());
    // 50 KiB more at once: half a second ahead of the rate.
    CHECK(t.charge(50 * KiB, t0) == std::chrono::duration_cast<std::chrono::steady_clock::duration>(500ms));
    // Half a second later it is even again.
    CHECK(t.charge(0, t0 + 500ms) == std::chrono::steady_clock::duration::zero());
    // Idle time refills no more than the burst.
    CHECK(t.charge(100 * KiB, t0 + 60s) == std::chrono::steady_clock::duration::zero());
    CHECK(t.charge(10 * KiB, t0 + 60s) > std::chrono::steady_clock::duration::zero());

    vigil::detail::receive_throttle off;
    off.start(0, t0);
    CHECK(off.charge(1000 * MiB, t0) == std::chrono::steady_clock::duration::zero());
}

TEST_CASE("liveness: a message in progress must keep up message_timeout and message_min_rate")
{
    vigil::session_config cfg;
    cfg.ping_interval = 0ms;
    cfg.message_timeout = 10s;
    cfg.message_min_rate = 64 * KiB;
    vigil::detail::liveness l;
    l.start(cfg, vigil::detail::write_confirmation::off, vigil::detail::path_watch::off, t0, 1);
    CHECK(l.message_deadline() == time_point::max());
    l.message_begun(t0);
    CHECK(l.message_deadline() == t0 + 10s);
    CHECK(l.next_deadline() == t0 + 10s);
    // 640 KiB arrived: ten more seconds earned.
    l.message_grew(640 * KiB);
    CHECK(l.message_deadline() == t0 + 20s);
    CHECK(l.expired(t0 + 19s) == vigil::detail::expiry::none);
    CHECK(l.expired(t0 + 20s) == vigil::detail::expiry::message);
    // Paused by us: no deadline; resumed: the allowance starts afresh.
    l.reading_paused();
    CHECK(l.message_deadline() == time_point::max());
    l.reading_resumed(t0 + 30s);
    CHECK(l.message_deadline() == t0 + 50s);
    // Finished: no deadline. Saying goodbye: none either.
    l.message_finished();
    CHECK(l.message_deadline() == time_point::max());
    l.message_begun(t0 + 60s);
    l.close_started(t0 + 61s);
    CHECK(l.message_deadline() == time_point::max());
}

TEST_CASE("liveness: message_timeout zero means no deadline for messages in progress")
{
    vigil::session_config cfg;
    vigil::detail::liveness l;
    l.start(cfg, vigil::detail::write_confirmation::off, vigil::detail::path_watch::off, t0, 1);
    l.message_begun(t0);
    l.message_grew(1);
    CHECK(l.message_deadline() == time_point::max());
}

TEST_CASE("server defaults: what a server open to strangers starts with")
{
    const auto s = vigil::server_session_defaults();
    CHECK(s.max_message_size == 1 * MiB);
    CHECK(s.send_queue_bytes == 4 * MiB);
    CHECK(s.message_timeout == 10s);
    CHECK(s.message_min_rate == 64 * KiB);
    CHECK(s.max_receive_rate == 4 * MiB);
    const vigil::server_config cfg;
    CHECK(cfg.memory_budget == 128 * MiB);
    CHECK(cfg.receive_queue_bytes == 1 * MiB);
    CHECK(cfg.budget_grace == 2s);
    // Clients keep theirs.
    const vigil::session_config client;
    CHECK(client.max_message_size == 16 * MiB);
    CHECK(client.send_queue_bytes == 0);
    CHECK(client.message_timeout == 0ms);
    CHECK(client.max_receive_rate == 0);
    std::string why;
    vigil::session_config slow = client;
    slow.max_receive_rate = 10;
    CHECK(vigil::validate(slow, &why) == vigil::error::invalid_config);
    CHECK(why.find("max_receive_rate") != std::string::npos);
    vigil::server_config bad;
    bad.budget_grace = 0ms;
    CHECK(vigil::validate(bad, &why) == vigil::error::invalid_config);
    CHECK(why.find("budget_grace") != std::string::npos);
}
