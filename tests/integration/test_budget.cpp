// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// What strangers can make a vigil::server hold: the memory budget, the deadline of a message
// in progress, the inbound rate and the send queue in bytes, each against raw clients over
// real sockets. (tests/hostile attacks a vigil-serve process and reads its memory from /proc.)

#include <vigil/server.hpp>

#include <support/raw_client.hpp>
#include <support/server_rig.hpp>
#include <support/testing.hpp>
#include <support/wait.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;

using vt::describe;
using vt::eventually;
using vt::ms_between;

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

// The first `sent` bytes of a masked binary frame that announces `length` bytes.
std::string partial_frame(std::size_t length, std::size_t sent)
{
    return vt::raw_client::frame(vt::opcode::binary, std::string(length, 'x')).substr(0, sent);
}

// Reads frames until a close frame arrives; returns its code (0 when none came in `bound`).
asio::awaitable<std::uint16_t> close_code_of(vt::raw_client& rc, milliseconds bound)
{
    const auto until = steady::now() + bound;
    while (steady::now() < until) {
        vt::raw_frame f;
        auto ec = co_await rc.read_frame(f, std::chrono::duration_cast<milliseconds>(until - steady::now()));
        if (ec)
            co_return 0;
        if (f.op == vt::opcode::close)
            co_return f.close_code();
    }
    co_return 0;
}

vigil::server_config strangers_server()
{
    // The server defaults, with a quick close and no heartbeat in the way (the raw clients
    // answer no pings).
    auto cfg = vt::quick_server();
    cfg.session.ping_interval = 0ms;
    return cfg;
}

}  // namespace

TEST_CASE("a message started and then trickled is ended at message_timeout with 1008, its memory freed")
{
    auto cfg = strangers_server();
    cfg.session.message_timeout = 500ms;
    cfg.session.message_min_rate = 64 * KiB;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    vt::raw_client rc(rig.ioc.get_executor());
    std::uint16_t code = 0;
    steady::time_point started{}, closed{};
    rig.spawn([&]() -> asio::awaitable<void> {
        REQUIRE(!co_await rc.connect(rig.srv.port()));
        REQUIRE(!co_await rc.upgrade("/"));
        // 32 KiB of a 512 KiB message: half a second more earned, then nothing.
        started = steady::now();
        REQUIRE(!co_await rc.write(partial_frame(512 * KiB, 32 * KiB)));
        code = co_await close_code_of(rc, 3s);
        closed = steady::now();
        co_await eventually([&] { return !rig.disconnected.empty(); }, 2s);
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    CHECK(code == 1008);
    // 500 ms plus 32 KiB at 64 KiB/s = 1 s after the first bytes, within the grid and loopback.
    CHECK(ms_between(started, closed) >= 950ms);
    CHECK(ms_between(started, closed) <= 1500ms);
    REQUIRE(rig.disconnected.size() == 1);
    CHECK(rig.disconnected[0].info.reason == error::message_timeout);
    CHECK(rig.disconnected[0].info.detail.find("message_timeout") != std::string::npos);
    CHECK(rig.srv.counters().held_bytes == 0);
}

TEST_CASE("connections holding partial messages beyond the memory budget: the heaviest go with 1009, others are served")
{
    auto cfg = strangers_server();
    cfg.memory_budget = 4 * MiB;
    cfg.budget_grace = 300ms;
    cfg.session.message_timeout = 0ms;  // only the budget acts here
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    constexpr std::size_t attackers = 10;
    std::vector<std::unique_ptr<vt::raw_client>> bad;
    std::vector<std::uint16_t> codes(attackers, 0);
    std::size_t finished = 0;
    for (std::size_t i = 0; i < attackers; ++i) {
        bad.push_back(std::make_unique<vt::raw_client>(rig.ioc.get_executor()));
        rig.spawn([&, i]() -> asio::awaitable<void> {
            auto& rc = *bad[i];
            if (co_await rc.connect(rig.srv.port()) || co_await rc.upgrade("/")) {
                ++finished;
                co_return;
            }
            // All of a 1 MiB message but its last byte, then silence (with the bytes TCP
            // cannot deliver while the server holds back waiting in our socket).
            co_await rc.write(partial_frame(MiB, MiB - 1), 10s);
            codes[i] = co_await close_code_of(rc, 8s);
            ++finished;
        });
    }
    // A well-behaved client meanwhile: 1 KiB messages echoed, each round trip timed.
    vt::raw_client good(rig.ioc.get_executor());
    std::vector<milliseconds> rtts;
    bool good_failed = false;
    rig.spawn([&]() -> asio::awaitable<void> {
        REQUIRE(!co_await good.connect(rig.srv.port()));
        REQUIRE(!co_await good.upgrade("/"));
        while (finished < attackers && !good_failed) {
            const auto t = steady::now();
            if (co_await good.write(vt::raw_client::frame(vt::opcode::binary, std::string(KiB, 'g')))) {
                good_failed = true;
                break;
            }
            vt::raw_frame f;
            if (co_await good.read_frame(f, 2s) || f.payload.size() != KiB) {
                good_failed = true;
                break;
            }
            rtts.push_back(ms_between(t, steady::now()));
            asio::steady_timer gap(co_await asio::this_coro::executor, 20ms);
            co_await gap.async_wait(asio::use_awaitable);
        }
        rig.srv.stop();
    });
    rig.ioc.run_for(20s);

    const auto counters = rig.srv.counters();
    CAPTURE(counters.held_bytes_peak);
    CAPTURE(counters.budget_evictions);
    CHECK(finished == attackers);
    CHECK(counters.held_bytes_peak <= cfg.memory_budget);
    CHECK(counters.budget_evictions >= 1);
    const auto too_big = std::count(codes.begin(), codes.end(), std::uint16_t{1009});
    CHECK(static_cast<std::size_t>(too_big) == counters.budget_evictions);
    std::size_t evicted_events = 0;
    for (const auto& d : rig.disconnected)
        if (d.info.reason == error::memory_budget_exceeded) {
            ++evicted_events;
            CHECK(d.info.detail.find("an incoming message in progress") != std::string::npos);
        }
    CHECK(evicted_events == counters.budget_evictions);
    CHECK_FALSE(good_failed);
    REQUIRE(!rtts.empty());
    std::sort(rtts.begin(), rtts.end());
    CAPTURE(rtts.back().count());
    // Light connections may use the budget's last quarter: the echo never waits for room.
    CHECK(rtts[rtts.size() * 99 / 100] <= 100ms);
}

TEST_CASE("max_receive_rate slows a fast sender down without ending it, and loses nothing")
{
    auto cfg = strangers_server();
    cfg.session.max_receive_rate = 256 * KiB;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    vt::raw_client rc(rig.ioc.get_executor());
    constexpr std::size_t messages = 16;
    std::size_t echoed = 0;
    steady::time_point t0{}, t1{};
    rig.spawn([&]() -> asio::awaitable<void> {
        REQUIRE(!co_await rc.connect(rig.srv.port()));
        REQUIRE(!co_await rc.upgrade("/"));
        t0 = steady::now();
        std::string all;
        for (std::size_t i = 0; i < messages; ++i)
            all += vt::raw_client::frame(vt::opcode::binary, std::string(64 * KiB, static_cast<char>('a' + i)));
        // 1 MiB at once (the socket buffers of loopback take it all), then the echoes.
        REQUIRE(!co_await rc.write(std::move(all), 10s));
        std::string message;  // the server's frames reassembled (it fragments long messages)
        while (echoed < messages) {
            vt::raw_frame f;
            if (co_await rc.read_frame(f, 5s))
                break;
            if (f.op != vt::opcode::binary && f.op != vt::opcode::continuation)
                continue;
            message += f.payload;
            if (!f.fin)
                continue;
            if (message != std::string(64 * KiB, static_cast<char>('a' + echoed)))
                break;
            ++echoed;
            message.clear();
        }
        t1 = steady::now();
        rig.srv.stop();
    });
    rig.ioc.run_for(15s);

    CHECK(echoed == messages);
    // One second's burst (256 KiB), then 768 KiB at 256 KiB/s: about 3 s.
    CHECK(ms_between(t0, t1) >= 2500ms);
    CHECK(ms_between(t0, t1) <= 6s);
    REQUIRE(rig.disconnected.size() == 1);
    CHECK(rig.disconnected[0].info.reason == error::server_shutdown);
}

TEST_CASE("send_queue_bytes: a client that stops reading is ended as a slow consumer once that many bytes wait")
{
    auto cfg = strangers_server();
    cfg.session.send_queue_bytes = 1 * MiB;
    cfg.session.send_queue_limit = 100000;  // the bytes decide here
    cfg.session.write_timeout = 0ms;
    std::size_t queued = 0;
    vt::server_rig rig(cfg, [&](vigil::server::connection_ptr c) -> asio::awaitable<void> {
        // Sends without waiting for the writes: the queue is what grows.
        for (int i = 0; i < 1000 && c->is_open(); ++i) {
            c->async_send(std::string(64 * KiB, 'q'), vigil::message_type::binary, [](error_code) {});
            ++queued;
            asio::steady_timer gap(co_await asio::this_coro::executor, 1ms);
            co_await gap.async_wait(asio::use_awaitable);
        }
        co_await c->receive();
    });
    REQUIRE(!rig.start());

    vt::raw_client rc(rig.ioc.get_executor());
    rig.spawn([&]() -> asio::awaitable<void> {
        REQUIRE(!co_await rc.connect(rig.srv.port(), 4096));
        REQUIRE(!co_await rc.upgrade("/"));
        // Never reads again.
        co_await eventually([&] { return !rig.disconnected.empty(); }, 8s);
        rig.srv.stop();
    });
    rig.ioc.run_for(12s);

    REQUIRE(rig.disconnected.size() == 1);
    CHECK(rig.disconnected[0].info.reason == error::slow_consumer);
    CHECK(rig.disconnected[0].info.detail.find("send_queue_bytes") != std::string::npos);
    CAPTURE(queued);
    CHECK(queued < 1000);
    CHECK(rig.srv.counters().held_bytes == 0);
}
