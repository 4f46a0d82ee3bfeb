// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The Redis link against a real redis-server, started by each case on a free port and killed
// at its end: fan-out between two links, Redis killed and restarted, Redis frozen, a wrong
// password, an unreachable port. Everything runs on the test thread's io_context, driven with
// bounded run_for loops.

#include <vigil/redis.hpp>

#include "redis_rig.hpp"

#include <doctest/doctest.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <csignal>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;
using vigil::test::clock_type;
using vigil::test::redis_server;
using vigil::test::publish;
using vigil::test::quick_redis_config;
using vigil::test::run_until;

/// A link with its events recorded, and its run() result.
struct recorded_link {
    recorded_link(asio::io_context& ioc, vigil::redis_config cfg,
                  vigil::any_backoff policy = vigil::constant_backoff(200ms))
        : link(ioc.get_executor(), std::move(cfg), std::move(policy))
    {
        link.on_up = [this] { events.push_back("up"); ++ups; };
        link.on_down = [this](error_code ec) {
            events.push_back("down");
            downs.push_back(ec);
            down_at = clock_type::now();
        };
        link.on_retry = [this](std::size_t, milliseconds delay, error_code) {
            retry_delays.push_back(delay);
            retry_at.push_back(clock_type::now());
        };
        link.on_message = [this](std::string_view ch, std::string_view data) {
            std::string m(ch);
            m.append(":").append(data);
            messages.push_back(std::move(m));
        };
        asio::co_spawn(ioc, [this]() -> asio::awaitable<void> { result = co_await link.run(); }, asio::detached);
    }

    vigil::redis_link link;
    std::vector<std::string> events;
    int ups = 0;
    std::vector<error_code> downs;
    clock_type::time_point down_at{};
    std::vector<milliseconds> retry_delays;
    std::vector<clock_type::time_point> retry_at;
    std::vector<std::string> messages;
    std::optional<error_code> result;
};

}  // namespace

TEST_CASE("redis link: a publish on one link reaches the other's subscriber")
{
    redis_server redis(vigil::test::free_port());
    asio::io_context ioc;
    recorded_link a(ioc, quick_redis_config(redis.url()));
    recorded_link b(ioc, quick_redis_config(redis.url()));
    b.link.subscribe("room");
    REQUIRE(run_until(ioc, [&] { return a.ups == 1 && b.ups == 1; }, 5000ms));

    std::optional<error_code> published;
    publish(ioc, a.link, "room", "hello", &published);
    REQUIRE(run_until(ioc, [&] { return published && !b.messages.empty(); }, 5000ms));
    CHECK_FALSE(*published);
    CHECK(b.messages == std::vector<std::string>{"room:hello"});
    CHECK(a.messages.empty());
    CHECK(a.link.counters().publishes_ok == 1);
    CHECK(b.link.counters().messages_received == 1);

    // Unsubscribed: the next message no longer arrives. Redis handles b's UNSUBSCRIBE before
    // its SUBSCRIBE to "marker", so once a probe on "marker" arrives, "room" is gone; and a's
    // publishes arrive in order, so "marker:seen" after "room:unseen" proves the latter was not
    // delivered.
    b.link.unsubscribe("room");
    b.link.subscribe("marker");
    bool probed = false;
    std::deque<std::optional<error_code>> probes;  // stable addresses for the results
    for (int i = 0; i < 50 && !probed; ++i) {
        publish(ioc, a.link, "marker", "probe", &probes.emplace_back());
        probed = run_until(ioc, [&] { return b.messages.size() > 1; }, 100ms);
    }
    REQUIRE(probed);
    b.messages.clear();
    std::optional<error_code> p2, p3;
    publish(ioc, a.link, "room", "unseen", &p2);
    publish(ioc, a.link, "marker", "seen", &p3);
    REQUIRE(run_until(ioc, [&] { return p2 && p3 && !b.messages.empty() && b.messages.back() == "marker:seen"; }, 5000ms));
    for (const auto& m : b.messages)
        CHECK(m.rfind("room:", 0) != 0);

    // stop() from another thread.
    std::thread([&] { a.link.stop(); }).join();
    b.link.stop();
    REQUIRE(run_until(ioc, [&] { return a.result && b.result; }, 5000ms));
    CHECK_FALSE(*a.result);
    CHECK_FALSE(*b.result);
    CHECK(a.downs.empty());
}

TEST_CASE("redis link: Redis killed and restarted: resubscribed before on_up, outage publishes not lost")
{
    const auto port = vigil::test::free_port();
    auto redis = std::make_unique<redis_server>(port);
    asio::io_context ioc;
    recorded_link l(ioc, quick_redis_config(redis->url()));
    l.link.subscribe("room");
    REQUIRE(run_until(ioc, [&] { return l.ups == 1; }, 5000ms));

    redis->kill();
    REQUIRE(run_until(ioc, [&] { return !l.downs.empty(); }, 3000ms));

    // Five publishes during the outage, in order.
    constexpr int n = 5;
    std::vector<std::optional<error_code>> results(n);
    for (int i = 0; i < n; ++i)
        publish(ioc, l.link, "room", std::string("m").append(std::to_string(i)), &results[i]);
    // While two more attempts fail, they wait in the outbox: not sent, not dropped.
    const auto retries = l.retry_at.size();
    REQUIRE(run_until(ioc, [&] { return l.retry_at.size() >= retries + 2; }, 3000ms));
    for (const auto& r : results)
        CHECK_FALSE(r.has_value());

    redis = std::make_unique<redis_server>(port);
    REQUIRE(run_until(ioc, [&] { return l.ups == 2; }, 5000ms));
    auto all_done = [&] {
        for (const auto& r : results)
            if (!r)
                return false;
        return true;
    };
    REQUIRE(run_until(ioc, [&] { return all_done() && l.messages.size() == n; }, 5000ms));
    // The link's own subscription was back before on_up: it received every one it sent, in
    // order.
    for (int i = 0; i < n; ++i) {
        CAPTURE(i);
        CHECK_FALSE(*results[i]);
        CHECK(l.messages[i] == std::string("room:m").append(std::to_string(i)));
    }
    CHECK(l.link.counters().connects == 2);
    CHECK(l.link.counters().retries >= 1);
    CHECK(l.events.front() == "up");
    CHECK(l.events.back() == "up");

    l.link.stop();
    REQUIRE(run_until(ioc, [&] { return l.result.has_value(); }, 5000ms));
    CHECK_FALSE(*l.result);
}

TEST_CASE("redis link: a frozen Redis (SIGSTOP) is declared dead within ping_interval + pong_timeout")
{
    redis_server redis(vigil::test::free_port());
    asio::io_context ioc;
    auto cfg = quick_redis_config(redis.url());
    recorded_link l(ioc, cfg);
    l.link.subscribe("room");
    REQUIRE(run_until(ioc, [&] { return l.ups == 1; }, 5000ms));

    // 300 ms of scheduling slack on a loaded machine.
    const auto tolerance = 300ms;
    const auto bound = cfg.ping_interval + cfg.pong_timeout + tolerance;
    redis.signal(SIGSTOP);
    const auto frozen_at = clock_type::now();
    // Sent to the frozen Redis, never answered: its fate is reported when the link dies.
    std::optional<error_code> published;
    publish(ioc, l.link, "room", "into the void", &published);
    const bool down = run_until(ioc, [&] { return !l.downs.empty(); }, bound + 2000ms);
    redis.signal(SIGCONT);
    REQUIRE(down);
    const auto took = std::chrono::duration_cast<milliseconds>(l.down_at - frozen_at);
    CAPTURE(took.count());
    CHECK(took <= bound);
    CHECK(l.downs.front() == error::pong_timeout);
    CHECK(l.link.counters().pings >= 1);
    REQUIRE(run_until(ioc, [&] { return published.has_value(); }, 1000ms));
    CHECK(*published == error::delivery_unconfirmed);

    // Thawed, it comes back.
    REQUIRE(run_until(ioc, [&] { return l.ups == 2; }, 5000ms));
    l.link.stop();
    REQUIRE(run_until(ioc, [&] { return l.result.has_value(); }, 5000ms));
}

TEST_CASE("redis link: a wrong password is permanent: one attempt, run() ends with redis_auth_failed")
{
    redis_server redis(vigil::test::free_port(), {"--requirepass", "right"});
    asio::io_context ioc;
    SUBCASE("wrong password")
    {
        recorded_link l(ioc, quick_redis_config(redis.url("wrong")));
        std::optional<error_code> published;
        publish(ioc, l.link, "room", "never", &published);
        REQUIRE(run_until(ioc, [&] { return l.result && published; }, 5000ms));
        CHECK(*l.result == error::redis_auth_failed);
        CHECK(*published == error::redis_auth_failed);
        CHECK(l.downs == std::vector<error_code>{error::redis_auth_failed});
        CHECK(l.retry_delays.empty());
        CHECK(l.ups == 0);
    }
    SUBCASE("no password where one is required (NOAUTH)")
    {
        recorded_link l(ioc, quick_redis_config(redis.url()));
        REQUIRE(run_until(ioc, [&] { return l.result.has_value(); }, 5000ms));
        CHECK(*l.result == error::redis_auth_failed);
        CHECK(l.retry_delays.empty());
    }
    SUBCASE("the right password")
    {
        recorded_link l(ioc, quick_redis_config(redis.url("right")));
        REQUIRE(run_until(ioc, [&] { return l.ups == 1; }, 5000ms));
        l.link.stop();
        REQUIRE(run_until(ioc, [&] { return l.result.has_value(); }, 5000ms));
        CHECK_FALSE(*l.result);
    }
}

TEST_CASE("redis link: an unreachable port is retried with delays; the outbox is bounded and expires")
{
    asio::io_context ioc;
    auto cfg = quick_redis_config(std::string("redis://127.0.0.1:").append(std::to_string(vigil::test::free_port())));
    cfg.outbox_limit = 1;
    cfg.message_ttl = 400ms;
    recorded_link l(ioc, cfg, vigil::constant_backoff(200ms));
    std::optional<error_code> first, second;
    publish(ioc, l.link, "room", "a", &first);
    publish(ioc, l.link, "room", "b", &second);
    REQUIRE(run_until(ioc, [&] { return l.retry_at.size() >= 3 && first; }, 5000ms));
    CHECK(*second == error::send_queue_full);
    CHECK(*first == error::message_expired);
    for (std::size_t i = 1; i < l.retry_at.size(); ++i) {
        CAPTURE(i);
        CHECK(l.retry_delays[i] == 200ms);
        CHECK(l.retry_at[i] - l.retry_at[i - 1] >= 200ms);
    }
    CHECK(l.downs.front() == boost::asio::error::connection_refused);
    CHECK(l.ups == 0);
    l.link.stop();
    REQUIRE(run_until(ioc, [&] { return l.result.has_value(); }, 5000ms));
    CHECK_FALSE(*l.result);
}

TEST_CASE("redis link: cancelling run() ends it with operation_aborted; waiting publishes fail, reported")
{
    asio::io_context ioc;
    auto cfg = quick_redis_config(std::string("redis://127.0.0.1:").append(std::to_string(vigil::test::free_port())));
    vigil::redis_link link(ioc.get_executor(), cfg, vigil::constant_backoff(200ms));
    std::size_t retries = 0;
    link.on_retry = [&](std::size_t, milliseconds, error_code) { ++retries; };
    std::optional<error_code> result, published;
    asio::cancellation_signal cancel;
    asio::co_spawn(ioc, link.run(),
                   asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr, error_code ec) { result = ec; }));
    publish(ioc, link, "room", "a", &published);
    REQUIRE(run_until(ioc, [&] { return retries >= 1; }, 3000ms));
    CHECK_FALSE(published.has_value());
    cancel.emit(asio::cancellation_type::terminal);
    REQUIRE(run_until(ioc, [&] { return result && published; }, 3000ms));
    CHECK(*result == boost::asio::error::operation_aborted);
    CHECK(*published == error::supervisor_stopped);
    CHECK(link.counters().publishes_failed == 1);
}
