// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The timer wheel that sessions on a single-threaded io_context share (lib/detail). No
// sockets; a real io_context and real time, every wait bounded.

#include "detail/timer_wheel.hpp"

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <chrono>
#include <functional>
#include <vector>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using vigil::detail::timer_wheel;
using vigil::detail::wheel_entry;

// An entry that records when it fired and runs an optional action from inside.
struct probe {
    explicit probe(int id, std::vector<int>* order = nullptr) : id(id), order(order)
    {
        e.fire = [](void* p) {
            auto& self = *static_cast<probe*>(p);
            self.fired.push_back(steady::now());
            if (self.order)
                self.order->push_back(self.id);
            if (self.then)
                self.then();
        };
        e.arg = this;
    }
    int id;
    std::vector<int>* order;
    wheel_entry e;
    std::vector<steady::time_point> fired;
    std::function<void()> then;
};

// A slot on the timekeeper's grid is any time point; these tests use round 10 ms marks.
steady::time_point grid(steady::time_point t)
{
    const auto g = std::chrono::duration_cast<steady::duration>(10ms);
    return steady::time_point(((t.time_since_epoch() + g - steady::duration(1)) / g) * g);
}

}  // namespace

TEST_CASE("timer_wheel fires entries once each, in deadline order, never early")
{
    boost::asio::io_context ioc(1);
    auto& wheel = boost::asio::use_service<timer_wheel>(ioc);
    std::vector<int> order;
    probe a(1, &order), b(2, &order), c(3, &order), d(4, &order);
    const auto t0 = grid(steady::now() + 20ms);
    wheel.schedule(c.e, t0 + 60ms);
    wheel.schedule(a.e, t0);
    wheel.schedule(b.e, t0);  // same slot as a
    wheel.schedule(d.e, t0 + 30ms);
    CHECK(a.e.linked);
    ioc.run_for(2s);
    REQUIRE(order.size() == 4);
    // a and b share a slot (either order within it), then d, then c.
    CHECK(((order[0] == 1 && order[1] == 2) || (order[0] == 2 && order[1] == 1)));
    CHECK(order[2] == 4);
    CHECK(order[3] == 3);
    for (auto* p : {&a, &b, &c, &d}) {
        REQUIRE(p->fired.size() == 1);
        CHECK_FALSE(p->e.linked);
    }
    CHECK(a.fired[0] >= t0);
    CHECK(d.fired[0] >= t0 + 30ms);
    CHECK(c.fired[0] >= t0 + 60ms);
    CHECK(c.fired[0] < t0 + 60ms + 500ms);
}

TEST_CASE("timer_wheel: a cancelled entry never fires, and cancelling the last one lets run() return")
{
    boost::asio::io_context ioc(1);
    auto& wheel = boost::asio::use_service<timer_wheel>(ioc);
    probe far(1), near(2);
    wheel.schedule(far.e, grid(steady::now() + 10s));
    wheel.schedule(near.e, grid(steady::now() + 20ms));
    near.then = [&] { wheel.cancel(far.e); };
    wheel.cancel(far.e);  // cancelling twice is harmless
    wheel.schedule(far.e, grid(steady::now() + 10s));
    const auto t0 = steady::now();
    // Nothing else keeps the context busy: run() returns once the wheel is empty, long
    // before the far entry's 10 s (were the wheel's wait left pending, it would not).
    ioc.run_for(5s);
    const auto took = steady::now() - t0;
    CHECK(near.fired.size() == 1);
    CHECK(far.fired.empty());
    CHECK_FALSE(far.e.linked);
    CHECK(took < 2s);
    CHECK(ioc.stopped());
}

TEST_CASE("timer_wheel: a sooner entry re-arms the timer, and a past deadline fires at once")
{
    boost::asio::io_context ioc(1);
    auto& wheel = boost::asio::use_service<timer_wheel>(ioc);
    probe later(1), sooner(2), past(3);
    const auto t0 = steady::now();
    wheel.schedule(later.e, grid(t0 + 3s));
    wheel.schedule(sooner.e, grid(t0 + 50ms));
    wheel.schedule(past.e, grid(t0 - 1s));
    sooner.then = [&] { wheel.cancel(later.e); };
    ioc.run_for(5s);
    REQUIRE(sooner.fired.size() == 1);
    REQUIRE(past.fired.size() == 1);
    CHECK(later.fired.empty());
    CHECK(past.fired[0] - t0 < 500ms);
    CHECK(sooner.fired[0] >= t0 + 50ms);
    CHECK(sooner.fired[0] - t0 < 1s);  // not held until the 3 s slot armed first
}

TEST_CASE("timer_wheel: a handler may reschedule itself and cancel an entry of its own slot")
{
    boost::asio::io_context ioc(1);
    auto& wheel = boost::asio::use_service<timer_wheel>(ioc);
    std::vector<int> order;
    probe ticker(1, &order), victim(2, &order), other(3, &order);
    const auto t0 = grid(steady::now() + 20ms);
    int ticks = 0;
    ticker.then = [&] {
        // Whichever of the shared slot fires first takes the victim out if it has not run.
        wheel.cancel(victim.e);
        if (++ticks < 3)
            wheel.schedule(ticker.e, t0 + ticks * 20ms);
    };
    wheel.schedule(victim.e, t0);
    wheel.schedule(ticker.e, t0);  // linked at the head: fires before the victim
    wheel.schedule(other.e, t0 + 10ms);
    ioc.run_for(2s);
    CHECK(ticks == 3);
    CHECK(ticker.fired.size() == 3);
    CHECK(victim.fired.empty());
    CHECK(other.fired.size() == 1);
    CHECK(ioc.stopped());
    for (std::size_t i = 1; i < ticker.fired.size(); ++i)
        CHECK(ticker.fired[i] >= ticker.fired[i - 1]);
}

TEST_CASE("timer_wheel: cancelling the only entry drops the pending wait at once")
{
    boost::asio::io_context ioc(1);
    auto& wheel = boost::asio::use_service<timer_wheel>(ioc);
    probe far(1);
    wheel.schedule(far.e, grid(steady::now() + 10s));
    boost::asio::post(ioc, [&] { wheel.cancel(far.e); });
    const auto t0 = steady::now();
    ioc.run_for(5s);
    CHECK(far.fired.empty());
    CHECK(steady::now() - t0 < 1s);
    CHECK(ioc.stopped());
}

TEST_CASE("timer_wheel: an entry scheduled after the last one was cancelled still fires")
{
    // The cancel drops the wait; its cancelled completion is still queued when the next
    // entry arrives, which must get a wait of its own (a server's connections come and go
    // like this, and an entry left without one never fires: its session hangs).
    boost::asio::io_context ioc(1);
    auto& wheel = boost::asio::use_service<timer_wheel>(ioc);
    probe first(1), second(2), third(3);
    const auto t0 = grid(steady::now() + 20ms);
    wheel.schedule(first.e, t0);
    wheel.cancel(first.e);
    wheel.schedule(second.e, t0 + 30ms);  // later than the dead wait's deadline
    second.then = [&] {
        wheel.schedule(third.e, grid(steady::now() + 40ms));
        wheel.cancel(third.e);
        wheel.schedule(third.e, grid(steady::now() + 60ms));
    };
    ioc.run_for(3s);
    CHECK(first.fired.empty());
    REQUIRE(second.fired.size() == 1);
    CHECK(second.fired[0] >= t0 + 30ms);
    CHECK(third.fired.size() == 1);
    CHECK(ioc.stopped());
}
