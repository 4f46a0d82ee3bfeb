// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <vigil/server.hpp>
#include <vigil/session.hpp>
#include <vigil/supervisor.hpp>

#include <support/pki.hpp>
#include <support/raw_client.hpp>
#include <support/relay.hpp>
#include <support/server_rig.hpp>
#include <support/testing.hpp>
#include <support/wait.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
using namespace std::chrono_literals;
using namespace std::string_literals;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;
using vigil::message_type;

using vt::describe;
using vt::eventually;
using vt::ms_between;
using vt::pause;
using vt::tolerance;

// Waits until `pred` holds or `bound` passes, like `eventually`, but gives up at once when the
// awaiting coroutine is cancelled: handlers use it, and the server cancels handlers that
// outlive their connection.
asio::awaitable<bool> hold_until(std::function<bool()> pred, milliseconds bound)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto deadline = steady::now() + bound;
    while (!pred()) {
        if (steady::now() >= deadline)
            co_return false;
        timer.expires_after(1ms);
        auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec)
            co_return pred();
    }
    co_return true;
}

// How a server is seen to drop a raw TCP client.
bool dropped(const error_code& ec)
{
    return ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

// A raw client's connect from `local` (any of 127/8) and its upgrade request: empty for 101,
// otherwise the HTTP status (`make_http_status_error`) or the network error.
asio::awaitable<error_code> upgrade_from(vt::raw_client& rc, std::string local, std::uint16_t port,
                                         vt::raw_http_response* res = nullptr)
{
    if (auto ec = co_await rc.connect_from(std::move(local), port))
        co_return ec;
    co_return co_await rc.upgrade("/", res);
}

std::string numbered(std::size_t i, const std::string& pad = {})
{
    std::string s = std::to_string(i);
    s += ':';
    s += pad;
    return s;
}

}  // namespace

TEST_SUITE("server")
{

TEST_CASE("echo through the server with a vigil client, ws:// and wss://")
{
    bool tls = false;
    SUBCASE("ws://")
    {
    }
    SUBCASE("wss://")
    {
        tls = true;
    }
    CAPTURE(tls);
    std::optional<vt::test_pki> pki;
    auto cfg = vt::quick_server();
    auto ccfg = vt::quick_client();
    if (tls) {
        pki.emplace();
        cfg.tls.cert_file = pki->server_cert;
        cfg.tls.key_file = pki->server_key;
        ccfg.tls.ca_file = pki->ca_cert;
    }
    vt::server_rig rig(cfg);
    std::string detail;
    const auto listen_ec = rig.start(&detail);
    REQUIRE_MESSAGE(!listen_ec, describe(listen_ec) << ": " << detail);
    REQUIRE(rig.srv.port() != 0);

    vt::rig_client c(rig.ioc, ccfg);
    const std::string binary("\0\x01\xfe\xff binary", 12);
    bool echoed = false;
    bool server_saw_end = false;
    error_code close_ec = error::not_connected;
    c.start(rig.url(tls ? "wss" : "ws", tls ? "localhost" : "127.0.0.1", "/echo?room=1"));
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
            co_return;
        c.send("hello");
        c.send(binary, message_type::binary);
        echoed = co_await eventually([&] { return c.messages.size() >= 2; }, 2s);
        close_ec = co_await c.s.close(1000, "bye");
        server_saw_end = co_await eventually([&] { return !rig.disconnected.empty() && rig.logs[1].ended; }, 2s);
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    REQUIRE(c.connect_done);
    REQUIRE_MESSAGE(!c.connect_ec, describe(c.connect_ec) << ": " << c.s.last_disconnect().detail);
    REQUIRE(echoed);
    REQUIRE(c.messages.size() == 2);
    CHECK(c.messages[0].first == "hello");
    CHECK(c.messages[0].second == message_type::text);
    CHECK(c.messages[1].first == binary);
    CHECK(c.messages[1].second == message_type::binary);
    CHECK_CODE(close_ec, error_code{});
    CHECK(c.run_done);
    CHECK_CODE(c.run_ec, error_code{});

    REQUIRE(rig.connected.size() == 1);
    CHECK(rig.connected[0].id == 1);
    CHECK(rig.connected[0].target == "/echo?room=1");
    CHECK(rig.connected[0].remote.rfind("127.0.0.1:", 0) == 0);
    REQUIRE(server_saw_end);
    const auto& log = rig.logs[1];
    REQUIRE(log.messages.size() == 2);
    CHECK(log.messages[0].data == "hello");
    CHECK(log.messages[0].type == message_type::text);
    CHECK(log.messages[1].data == binary);
    CHECK(log.messages[1].type == message_type::binary);
    // The client closed with 1000 "bye": that is why the connection ended, on every channel.
    CHECK(vigil::close_code_of(log.end) == 1000);
    REQUIRE(rig.disconnected.size() == 1);
    CHECK(rig.disconnected[0].info.reason == log.end);
    CHECK(rig.disconnected[0].info.close_code == 1000);
    CHECK(rig.disconnected[0].info.close_reason == "bye");

    REQUIRE(rig.run_done);
    CHECK_CODE(rig.run_ec, error_code{});
    const auto n = rig.srv.counters();
    CHECK(n.accepted == 1);
    CHECK(n.connected == 1);
    CHECK(n.open == 0);
    CHECK(n.rejected == 0);
    CHECK(n.disconnected == 1);
    CHECK(rig.rejected.empty());
    // The metrics say why: the client closed (1000).
    const auto m = rig.srv.metrics();
    CHECK(m.counters.disconnected == 1);
    CHECK(m.disconnects == vigil::reason_counts{{"closed_by_peer", 1}});
    CHECK(m.rejections.empty());
    // Two messages each way (5 + 12 bytes), counted by the ended connection and kept by the
    // server; the client's session counted the same; nothing waits any more.
    CHECK(m.traffic.messages_in == 2);
    CHECK(m.traffic.bytes_in == 17);
    CHECK(m.traffic.messages_out == 2);
    CHECK(m.traffic.bytes_out == 17);
    CHECK(m.queues.send_messages == 0);
    CHECK(m.queues.receive_messages == 0);
    const auto t = c.s.traffic();
    CHECK(t.messages_out == 2);
    CHECK(t.bytes_out == 17);
    CHECK(t.messages_in == 2);
    CHECK(t.bytes_in == 17);
    CHECK(c.s.queues().send_messages == 0);
}

TEST_CASE("listen() and run() report what they could not do")
{
    vt::test_pki pki;
    auto cfg = vt::quick_server();
    std::string expect_in_detail;
    error_code expected = error::invalid_config;
    asio::io_context blocker_ioc;
    asio::ip::tcp::acceptor blocker(blocker_ioc);
    SUBCASE("a certificate file that does not exist")
    {
        cfg.tls.cert_file = pki.dir + "/missing.pem";
        cfg.tls.key_file = pki.server_key;
        expect_in_detail = cfg.tls.cert_file;
    }
    SUBCASE("a key that does not belong to the certificate")
    {
        cfg.tls.cert_file = pki.server_cert;
        cfg.tls.key_file = pki.self_signed_key;
        expect_in_detail = "tls.key_file";
    }
    SUBCASE("an invalid config")
    {
        cfg.max_connections = 0;
        expect_in_detail = "max_connections";
    }
    SUBCASE("a port already in use")
    {
        const asio::ip::tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), 0);
        blocker.open(ep.protocol());
        blocker.bind(ep);
        blocker.listen();
        cfg.port = blocker.local_endpoint().port();
        expected = asio::error::address_in_use;
        expect_in_detail = std::to_string(cfg.port);
    }
    CAPTURE(expect_in_detail);
    {
        vt::server_rig rig(cfg);
        std::string detail;
        const auto ec = rig.srv.listen(&detail);
        CAPTURE(detail);
        CHECK_CODE(ec, expected);
        CHECK(detail.find(expect_in_detail) != std::string::npos);
        CHECK(rig.srv.port() == 0);
    }
    {
        // run() without listen() reports the same, at once.
        vt::server_rig rig(cfg);
        rig.spawn([&]() -> asio::awaitable<void> {
            rig.run_ec = co_await rig.srv.run();
            rig.run_done = true;
        });
        rig.ioc.run_for(2s);
        REQUIRE(rig.run_done);
        CHECK_CODE(rig.run_ec, expected);
    }
}

TEST_CASE("a client whose path went silent is evicted with pong_timeout within ping_interval + pong_timeout")
{
    auto cfg = vt::quick_server();
    cfg.session.ping_interval = 200ms;
    cfg.session.pong_timeout = 150ms;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());
    vt::relay path(rig.srv.port());
    vt::rig_client c(rig.ioc, vt::quick_client());  // no heartbeat of its own: only the server judges

    bool echoed = false;
    bool alive_while_answering = false;
    bool evicted = false;
    steady::time_point frozen_at{};
    c.start(path.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
            co_return;
        c.send("before");
        echoed = co_await eventually([&] { return c.messages.size() == 1; }, 2s);
        // Three of the server's pings go out and are answered, and nobody is evicted.
        alive_while_answering =
            co_await eventually([&] { return path.pongs_to_target() >= 3; }, 3s) && rig.disconnected.empty();
        path.freeze();
        frozen_at = steady::now();
        evicted = co_await eventually([&] { return !rig.disconnected.empty(); }, 2s);
        c.s.cancel();
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    REQUIRE(c.connect_done);
    REQUIRE(!c.connect_ec);
    CHECK(echoed);
    CHECK(alive_while_answering);
    REQUIRE(evicted);
    const auto& e = rig.disconnected[0];
    CHECK_CODE(e.info.reason, error::pong_timeout);
    const auto latency = ms_between(frozen_at, e.at);
    CAPTURE(latency.count());
    CHECK(latency <= cfg.session.ping_interval + cfg.session.pong_timeout + tolerance);
    // Not judged before a ping had its pong_timeout.
    CHECK(latency >= cfg.session.pong_timeout - 50ms);
    CHECK(e.info.silent_for <= cfg.session.ping_interval + cfg.session.pong_timeout + tolerance);
    CHECK(e.info.silent_for >= cfg.session.pong_timeout - 50ms);
    // The handler learns it from receive(), with the same code.
    const auto& log = rig.logs[e.id];
    REQUIRE(log.ended);
    CHECK_CODE(log.end, error::pong_timeout);
    CHECK(log.messages.size() == 1);
    REQUIRE(rig.run_done);
    CHECK(rig.srv.counters().disconnected == 1);
    CHECK(rig.srv.metrics().disconnects == vigil::reason_counts{{"pong_timeout", 1}});
}

TEST_CASE("a server without a handler: messages are dropped without backpressure, broadcasts arrive, a silent client is evicted")
{
    auto cfg = vt::quick_server();
    cfg.session.ping_interval = 200ms;
    cfg.session.pong_timeout = 150ms;
    // Were messages kept for a receive() that never comes, the reader would pause after two
    // and the close handshake below could not complete.
    cfg.receive_queue_limit = 2;
    vt::server_rig rig(cfg, vigil::server::handler_type{});
    REQUIRE(!rig.start());
    vt::relay path(rig.srv.port());
    vt::rig_client talker(rig.ioc, vt::quick_client());
    vt::rig_client silent(rig.ioc, vt::quick_client());

    bool both_up = false;
    std::size_t broadcast_to = 0;
    bool broadcast_arrived = false;
    vigil::received end_seen{};
    bool end_reported = false;
    error_code close_ec = error::not_connected;
    bool evicted = false;
    steady::time_point frozen_at{};
    talker.start(rig.url("ws", "127.0.0.1", "/talker"));
    silent.start(path.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        both_up = co_await eventually(
            [&] { return talker.connect_done && silent.connect_done && rig.connected.size() == 2; }, 3s);
        if (!both_up || talker.connect_ec || silent.connect_ec)
            co_return;
        for (int i = 0; i < 50; ++i)
            talker.send("dropped " + std::to_string(i));
        broadcast_to = rig.srv.broadcast("to all");
        broadcast_arrived = co_await eventually(
            [&] { return talker.messages.size() == 1 && silent.messages.size() == 1; }, 2s);
        // receive() on such a connection reports only its end.
        vigil::server::connection_ptr silent_conn;
        for (auto& c : rig.srv.connections())
            if (c->target() != "/talker")
                silent_conn = c;
        path.freeze();
        frozen_at = steady::now();
        if (silent_conn) {
            end_seen = co_await silent_conn->receive();
            end_reported = true;
        }
        evicted = co_await eventually([&] { return !rig.disconnected.empty(); }, 2s);
        close_ec = co_await talker.s.close(1000, "bye");
        silent.s.cancel();
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    REQUIRE(both_up);
    CHECK(broadcast_to == 2);
    CHECK(broadcast_arrived);
    CHECK(talker.send_results.size() == 50);
    CHECK(std::count(talker.send_results.begin(), talker.send_results.end(), error_code{}) == 50);
    // All 50 were read (and dropped) before the close frame: the handshake completed.
    CHECK_CODE(close_ec, error_code{});
    REQUIRE(end_reported);
    CHECK_CODE(end_seen.ec, error::pong_timeout);
    CHECK(end_seen.data.empty());
    REQUIRE(evicted);
    REQUIRE(!rig.disconnected.empty());
    const auto& e = rig.disconnected[0];
    CHECK_CODE(e.info.reason, error::pong_timeout);
    const auto latency = ms_between(frozen_at, e.at);
    CAPTURE(latency.count());
    CHECK(latency <= cfg.session.ping_interval + cfg.session.pong_timeout + tolerance);
    REQUIRE(rig.run_done);
}

TEST_CASE("on an io_context that one thread runs (concurrency hint 1) there is no strand, and nothing else changes")
{
    auto cfg = vt::quick_server();
    cfg.session.ping_interval = 200ms;
    cfg.session.pong_timeout = 150ms;
    vt::server_rig rig(cfg, 1);
    REQUIRE(!rig.start());
    vt::relay path(rig.srv.port());
    auto ccfg = vt::quick_client();
    ccfg.ping_interval = 200ms;
    ccfg.pong_timeout = 150ms;
    vt::rig_client direct(rig.ioc, ccfg);
    vt::rig_client frozen(rig.ioc, ccfg);
    // The executors are the io_context's own: no strand was made.
    const asio::any_io_executor io = rig.ioc.get_executor();
    CHECK(direct.s.get_executor() == io);

    bool echoed = false;
    bool both_ended = false;
    steady::time_point frozen_at{};
    direct.start(rig.url("ws", "127.0.0.1", "/direct"));
    frozen.start(path.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return direct.connect_done && frozen.connect_done; }, 3s) ||
            direct.connect_ec || frozen.connect_ec)
            co_return;
        direct.send("hello");
        frozen.send("hello");
        echoed = co_await eventually([&] { return direct.messages.size() == 1 && frozen.messages.size() == 1; }, 2s);
        for (auto& c : rig.srv.connections())
            CHECK(c->get_executor() == io);
        path.freeze();
        frozen_at = steady::now();
        // Both ends of the frozen path find out: the server evicts, the client times out.
        both_ended = co_await eventually([&] { return !rig.disconnected.empty() && frozen.run_done; }, 2s);
        direct.s.cancel();
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    REQUIRE(direct.connect_done);
    REQUIRE(!direct.connect_ec);
    CHECK(echoed);
    REQUIRE(both_ended);
    CHECK_CODE(frozen.run_ec, error::pong_timeout);
    const auto& e = rig.disconnected[0];
    CHECK_CODE(e.info.reason, error::pong_timeout);
    const auto latency = ms_between(frozen_at, e.at);
    CAPTURE(latency.count());
    CHECK(latency <= cfg.session.ping_interval + cfg.session.pong_timeout + tolerance);
    CHECK(direct.run_done);
    CHECK_CODE(direct.run_ec, asio::error::operation_aborted);
    REQUIRE(rig.run_done);
}

TEST_CASE("the server answers a client's pings whatever its handler does")
{
    // The handler holds off receive() until released; what it does then is echo.
    bool release = false;
    vt::server_rig* rigp = nullptr;
    auto lazy = [&](vigil::server::connection_ptr c) -> asio::awaitable<void> {
        co_await hold_until([&] { return release; }, 5s);
        co_await rigp->echo(std::move(c));
    };

    SUBCASE("a handler that never calls receive(): the client's protocol pings get pongs")
    {
        vt::server_rig rig(vt::quick_server(), lazy);
        rigp = &rig;
        REQUIRE(!rig.start());
        auto ccfg = vt::quick_client();
        ccfg.ping_interval = 100ms;
        ccfg.pong_timeout = 80ms;
        ccfg.ping = vigil::ping_mode::fixed;
        vt::rig_client c(rig.ioc, ccfg);
        bool alive = false;
        std::size_t pongs = 0;
        c.start(rig.url());
        rig.spawn([&]() -> asio::awaitable<void> {
            if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
                co_return;
            co_await eventually([&] { return c.rtts.size() >= 4; }, 3s);
            alive = !c.run_done && rig.disconnected.empty();
            pongs = c.rtts.size();
            release = true;
            rig.srv.stop();
            co_await eventually([&] { return c.run_done; }, 2s);
        });
        rig.ioc.run_for(6s);

        REQUIRE(c.connect_done);
        REQUIRE(!c.connect_ec);
        CHECK(alive);
        CHECK(pongs >= 4);
        for (auto rtt : c.rtts)
            CHECK(rtt < ccfg.pong_timeout);
        CHECK(c.pings >= static_cast<int>(pongs));
        CHECK(vigil::close_code_of(c.run_ec) == 1001);
    }

    SUBCASE("a slow handler with room in the receive queue: nobody is declared dead, nothing lost")
    {
        auto cfg = vt::quick_server();
        cfg.session.ping_interval = 200ms;
        cfg.session.pong_timeout = 150ms;
        cfg.receive_queue_limit = 32;
        vt::server_rig rig(cfg, lazy);
        rigp = &rig;
        REQUIRE(!rig.start());
        auto ccfg = vt::quick_client();
        ccfg.ping_interval = 100ms;
        ccfg.pong_timeout = 80ms;
        ccfg.ping = vigil::ping_mode::fixed;
        vt::rig_client c(rig.ioc, ccfg);
        bool alive = false;
        std::size_t pongs_while_held = 0;
        bool all_back = false;
        c.start(rig.url());
        rig.spawn([&]() -> asio::awaitable<void> {
            if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
                co_return;
            for (std::size_t i = 0; i < 20; ++i)
                c.send(numbered(i));
            // Five of the client's heartbeat rounds, 100 ms apart: longer than the server's
            // ping_interval + pong_timeout.
            const auto before = c.rtts.size();
            co_await eventually([&] { return c.rtts.size() - before >= 5; }, 3s);
            pongs_while_held = c.rtts.size() - before;
            alive = !c.run_done && rig.disconnected.empty();
            release = true;
            all_back = co_await eventually([&] { return c.messages.size() == 20; }, 2s);
            rig.srv.stop();
            co_await eventually([&] { return c.run_done; }, 2s);
        });
        rig.ioc.run_for(8s);

        REQUIRE(c.connect_done);
        REQUIRE(!c.connect_ec);
        CHECK(alive);
        CHECK(pongs_while_held >= 5);
        REQUIRE(all_back);
        for (std::size_t i = 0; i < c.messages.size(); ++i)
            CHECK(c.messages[i].first == numbered(i));
        CHECK(vigil::close_code_of(c.run_ec) == 1001);
    }

    SUBCASE("a full receive queue suspends the server's verdict: the client is not evicted")
    {
        auto cfg = vt::quick_server();
        cfg.session.ping_interval = 200ms;
        cfg.session.pong_timeout = 150ms;
        cfg.receive_queue_limit = 4;
        vt::server_rig rig(cfg, lazy);
        rigp = &rig;
        REQUIRE(!rig.start());
        vt::rig_client c(rig.ioc, vt::quick_client());  // no pings of its own: the server is not reading
        // An idle client beside it, behind a relay that counts the server's pings to it: a
        // clock that ticks in the server's own heartbeat rounds.
        vt::relay side(rig.srv.port());
        vt::rig_client bystander(rig.ioc, vt::quick_client());
        bool alive = false;
        bool all_back = false;
        constexpr std::size_t n = 50;
        c.start(rig.url("ws", "127.0.0.1", "/stalled"));
        bystander.start(side.url());
        rig.spawn([&]() -> asio::awaitable<void> {
            if (!co_await eventually([&] { return c.connect_done && bystander.connect_done; }, 3s) || c.connect_ec ||
                bystander.connect_ec)
                co_return;
            for (std::size_t i = 0; i < n; ++i)
                c.send(numbered(i));
            // Five of the server's heartbeat rounds: more than twice ping_interval + pong_timeout.
            co_await eventually([&] { return side.pongs_to_target() >= 5; }, 4s);
            alive = !c.run_done && rig.disconnected.empty();
            release = true;
            all_back = co_await eventually([&] { return c.messages.size() == n; }, 3s);
            rig.srv.stop();
            co_await eventually([&] { return c.run_done; }, 2s);
        });
        rig.ioc.run_for(8s);

        REQUIRE(c.connect_done);
        REQUIRE(!c.connect_ec);
        REQUIRE(!bystander.connect_ec);
        const std::string why_gone = rig.disconnected.empty() ? "-" : describe(rig.disconnected[0].info.reason);
        CAPTURE(why_gone);
        CHECK(side.pongs_to_target() >= 5);
        CHECK(alive);
        CHECK(all_back);
        CHECK(c.messages.size() == n);
        for (std::size_t i = 0; i < c.messages.size(); ++i)
            CHECK(c.messages[i].first == numbered(i));
        REQUIRE(rig.connected.size() == 2);
        const auto stalled = std::find_if(rig.connected.begin(), rig.connected.end(),
                                          [](const auto& j) { return j.target == "/stalled"; });
        REQUIRE(stalled != rig.connected.end());
        const auto& log = rig.logs[stalled->id];
        CHECK(log.messages.size() == n);
    }

    SUBCASE("a full receive queue does not pass for a stale feed either (idle_timeout)")
    {
        // The client keeps publishing; the server just is not reading it.
        auto cfg = vt::quick_server();
        cfg.session.ping_interval = 200ms;
        cfg.session.pong_timeout = 150ms;
        cfg.session.idle_timeout = 500ms;
        cfg.receive_queue_limit = 4;
        vt::server_rig rig(cfg, lazy);
        rigp = &rig;
        REQUIRE(!rig.start());
        vt::rig_client c(rig.ioc, vt::quick_client());
        bool alive = false;
        bool all_back = false;
        std::size_t n = 0;
        c.start(rig.url());
        rig.spawn([&]() -> asio::awaitable<void> {
            if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
                co_return;
            for (; n < 8; ++n)
                c.send(numbered(n));
            // The scenario: a publisher that keeps going at its own pace, one message every
            // 100 ms for well over twice idle_timeout, while the server does not read.
            for (int i = 0; i < 12; ++i, ++n) {
                co_await pause(100ms);
                c.send(numbered(n));
            }
            alive = !c.run_done && rig.disconnected.empty();
            release = true;
            all_back = co_await eventually([&] { return c.messages.size() == n; }, 3s);
            rig.srv.stop();
            co_await eventually([&] { return c.run_done; }, 2s);
        });
        rig.ioc.run_for(8s);

        REQUIRE(c.connect_done);
        REQUIRE(!c.connect_ec);
        const std::string why_gone = rig.disconnected.empty() ? "-" : describe(rig.disconnected[0].info.reason);
        CAPTURE(why_gone);
        CHECK(alive);
        CHECK(all_back);
        CHECK(c.messages.size() == n);
    }
}

TEST_CASE("the first pings of 50 connections accepted at once are spread over the jitter window")
{
    auto cfg = vt::quick_server();
    cfg.session.ping_interval = 500ms;
    cfg.session.pong_timeout = 400ms;
    cfg.session.ping_jitter = 0.2;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    struct watcher {
        std::unique_ptr<vt::raw_client> rc;
        error_code ec = error::not_connected;
        steady::time_point up{};
        steady::time_point ping{};
        bool got_ping = false;
    };
    constexpr std::size_t n = 50;
    std::vector<watcher> w(n);
    std::size_t finished = 0;
    for (auto& x : w) {
        x.rc = std::make_unique<vt::raw_client>(rig.ioc.get_executor());
        rig.spawn([&x, &rig, &finished]() -> asio::awaitable<void> {
            x.ec = co_await x.rc->connect(rig.srv.port());
            if (!x.ec)
                x.ec = co_await x.rc->upgrade("/");
            x.up = steady::now();
            while (!x.ec) {
                vt::raw_frame f;
                x.ec = co_await x.rc->read_frame(f, 2s);
                if (!x.ec && f.op == vt::opcode::ping) {
                    x.ping = steady::now();
                    x.got_ping = true;
                    break;
                }
            }
            ++finished;
        });
    }
    rig.spawn([&]() -> asio::awaitable<void> {
        co_await eventually([&] { return finished == n; }, 4s);
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    CHECK(finished == n);
    std::vector<milliseconds> offsets;
    for (const auto& x : w) {
        CHECK_MESSAGE(x.got_ping, describe(x.ec));
        if (x.got_ping)
            offsets.push_back(ms_between(x.up, x.ping));
    }
    REQUIRE(offsets.size() == n);
    std::sort(offsets.begin(), offsets.end());
    CAPTURE(offsets.front().count());
    CAPTURE(offsets.back().count());
    // Never more than the jitter fraction early (the server's clock starts a little before the
    // client reads the 101), never late beyond scheduling noise...
    CHECK(offsets.front() >= 400ms - 30ms);
    CHECK(offsets.back() <= 500ms + tolerance);
    // ...and not all in one tick: uniform over 100 ms, 50 draws span about 95 ms.
    CHECK(offsets.back() - offsets.front() >= 50ms);
}

TEST_CASE("slowloris: clients that dribble or never send their upgrade are dropped at handshake_timeout")
{
    auto cfg = vt::quick_server();
    cfg.session.handshake_timeout = 500ms;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    struct loris {
        std::unique_ptr<vt::raw_client> rc;
        bool dribble = false;
        error_code connect_ec = error::not_connected;
        error_code how = error::not_connected;
        std::string name;
        steady::time_point connected{};
        steady::time_point closed{};
        std::size_t bytes_sent = 0;
    };
    constexpr std::size_t n = 20;
    std::vector<loris> l(n);
    std::size_t holding = 0;  // connected, and a dribbler has sent its first byte
    std::size_t finished = 0;
    for (std::size_t i = 0; i < n; ++i) {
        auto& x = l[i];
        x.rc = std::make_unique<vt::raw_client>(rig.ioc.get_executor());
        x.dribble = i % 2 == 0;
        rig.spawn([&x, &rig, &holding, &finished]() -> asio::awaitable<void> {
            x.connect_ec = co_await x.rc->connect(rig.srv.port());
            x.connected = steady::now();
            x.name = x.rc->local_name();
            if (x.connect_ec) {
                ++finished;
                co_return;
            }
            if (x.dribble) {
                // One byte every 100 ms, never the whole request, for at most 3 s.
                const auto request = vt::raw_client::upgrade_request("/");
                x.how = asio::error::timed_out;
                for (std::size_t b = 0; b + 1 < request.size() && ms_between(x.connected, steady::now()) < 3s; ++b) {
                    if (auto ec = co_await x.rc->write(request.substr(b, 1), 500ms)) {
                        x.how = ec;
                        break;
                    }
                    if (++x.bytes_sent == 1)
                        ++holding;
                    auto ec = co_await x.rc->read_some(100ms);
                    if (ec == asio::error::timed_out)
                        continue;
                    // Something arrived (a 408, say) or the connection ended: see it to the end.
                    // (Not `ec ? ec : co_await ...`: g++ 12 evaluates a co_await in either arm.)
                    if (ec)
                        x.how = ec;
                    else
                        x.how = co_await x.rc->wait_closed(2s);
                    break;
                }
            } else {
                ++holding;
                x.how = co_await x.rc->wait_closed(3s);
            }
            x.closed = steady::now();
            ++finished;
        });
    }

    vt::rig_client good(rig.ioc, vt::quick_client());
    bool lorises_in = false;
    bool good_echoed = false;
    rig.spawn([&]() -> asio::awaitable<void> {
        // While the lorises hold their sockets, a real client gets through at once.
        lorises_in = co_await eventually([&] { return holding == n; }, 3s);
        good.start(rig.url());
        if (!co_await eventually([&] { return good.connect_done; }, 3s) || good.connect_ec)
            co_return;
        good.send("through");
        good_echoed = co_await eventually([&] { return good.messages.size() == 1; }, 2s);
        co_await eventually([&] { return finished == n; }, 4s);
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    CHECK(lorises_in);
    CHECK(finished == n);
    for (const auto& x : l) {
        CAPTURE(x.dribble);
        CAPTURE(x.name);
        REQUIRE(!x.connect_ec);
        CHECK_MESSAGE(dropped(x.how), "got " << describe(x.how));
        const auto held = ms_between(x.connected, x.closed);
        CAPTURE(held.count());
        CHECK(held >= cfg.session.handshake_timeout - 50ms);
        CHECK(held <= cfg.session.handshake_timeout + tolerance);
        if (x.dribble)
            CHECK(x.bytes_sent >= 3);  // it really was dribbling when it was cut off
    }
    REQUIRE(good.connect_done);
    CHECK_MESSAGE(!good.connect_ec, describe(good.connect_ec));
    CHECK(good.connect_took < tolerance);
    CHECK(good_echoed);

    // Every loris shows up in on_rejected, for handshake_timeout.
    CHECK(rig.rejected.size() == n);
    CHECK(rig.srv.metrics().rejections == vigil::reason_counts{{"handshake_timeout", n}});
    for (const auto& x : l) {
        CAPTURE(x.name);
        const auto it = std::find_if(rig.rejected.begin(), rig.rejected.end(),
                                     [&](const auto& r) { return r.remote == x.name; });
        REQUIRE(it != rig.rejected.end());
        CHECK_CODE(it->why, error::handshake_timeout);
    }
    const auto counters = rig.srv.counters();
    CHECK(counters.rejected == n);
    CHECK(counters.connected == 1);
}

TEST_CASE("beyond max_connections: 503 with Retry-After, which a supervisor treats as transient")
{
    auto cfg = vt::quick_server();
    cfg.max_connections = 2;
    cfg.retry_after = 1000ms;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    vt::rig_client a(rig.ioc, vt::quick_client());
    vt::rig_client b(rig.ioc, vt::quick_client());
    vt::rig_client third(rig.ioc, vt::quick_client());
    vt::raw_client raw(rig.ioc.get_executor());
    vt::raw_http_response raw_res;
    error_code raw_ec = error::not_connected;

    vigil::supervisor_config scfg;
    scfg.session = vt::quick_client();
    scfg.min_delay = 10ms;
    scfg.max_retry_after = 200ms;
    vigil::supervisor sup(rig.ioc.get_executor(), rig.url(), scfg, vigil::constant_backoff(50ms));
    std::vector<vigil::retry_info> retries;
    int ups = 0;
    bool gave_up = false;
    steady::time_point up_at{};
    sup.events().on_retry = [&](const vigil::retry_info& r) { retries.push_back(r); };
    sup.events().on_up = [&] {
        ++ups;
        up_at = steady::now();
    };
    sup.events().on_gave_up = [&](const error_code&, const vigil::disconnect_info&) { gave_up = true; };

    bool both_in = false;
    bool sup_done = false;
    error_code sup_ec = error::not_connected;
    bool up_after_free = false;
    steady::time_point freed_at{};
    a.start(rig.url());
    b.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        both_in = co_await eventually([&] { return a.connect_done && b.connect_done && rig.connected.size() == 2; }, 3s);
        if (!both_in)
            co_return;
        third.start(rig.url());
        co_await eventually([&] { return third.connect_done; }, 3s);
        raw_ec = co_await raw.connect(rig.srv.port());
        if (!raw_ec)
            raw_ec = co_await raw.upgrade("/", &raw_res);
        rig.spawn([&]() -> asio::awaitable<void> {
            sup_ec = co_await sup.run();
            sup_done = true;
        });
        if (co_await eventually([&] { return retries.size() >= 2; }, 3s)) {
            freed_at = steady::now();
            co_await a.s.close();
            up_after_free = co_await eventually([&] { return ups == 1; }, 2s);
        }
        sup.stop();
        co_await eventually([&] { return sup_done; }, 2s);
        rig.srv.stop();
    });
    rig.ioc.run_for(12s);

    REQUIRE(both_in);
    CHECK(!a.connect_ec);
    CHECK(!b.connect_ec);

    // The third client: refused with 503 and told when to come back.
    REQUIRE(third.connect_done);
    CHECK(vigil::http_status_of(third.connect_ec) == 503);
    CHECK_FALSE(vigil::is_permanent(third.connect_ec));
    CHECK(third.s.last_disconnect().http_status == 503);
    CHECK(third.s.last_disconnect().retry_after > 0ms);
    CHECK(third.s.last_disconnect().retry_after == 1000ms);
    // On the wire.
    CHECK(vigil::http_status_of(raw_ec) == 503);
    CHECK(raw_res.status == 503);
    CHECK(raw_res.header("Retry-After") == "1");

    // The supervisor waited as told (capped by its max_retry_after) and got in once a slot freed.
    REQUIRE(retries.size() >= 2);
    CHECK(retries[0].last.http_status == 503);
    CHECK(retries[0].last.retry_after == 1000ms);
    CHECK(retries[0].delay == 200ms);
    CHECK_FALSE(vigil::is_permanent(retries[0].last.reason));
    CHECK_FALSE(gave_up);
    CHECK(up_after_free);
    CHECK(ups == 1);
    CHECK(ms_between(freed_at, up_at) <= scfg.max_retry_after + 50ms + tolerance);
    REQUIRE(sup_done);
    CHECK_CODE(sup_ec, error_code{});

    // Each refusal was reported by the server.
    CHECK(rig.rejected.size() >= 2 + retries.size());
    for (const auto& r : rig.rejected)
        CHECK_MESSAGE(vigil::http_status_of(r.why) == 503, describe(r.why));
    CHECK(rig.srv.counters().rejected == rig.rejected.size());
    CHECK(rig.srv.counters().connected == 3);  // a, b, then the supervisor's session
}

TEST_CASE("beyond max_connections_per_address: 503 with Retry-After for that address only; a closed connection frees its slot")
{
    auto cfg = vt::quick_server();
    cfg.max_connections_per_address = 2;
    cfg.retry_after = 1000ms;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    // Two from 127.0.0.1 fill its share; a third from there is refused, on the wire and to a
    // vigil client; 127.0.0.2 still gets in; then one of the first two leaves, and 127.0.0.1
    // gets in again.
    vt::raw_client a1(rig.ioc.get_executor());
    vt::raw_client a2(rig.ioc.get_executor());
    vt::raw_client a3(rig.ioc.get_executor());
    vt::raw_client b1(rig.ioc.get_executor());
    vt::raw_client a4(rig.ioc.get_executor());
    vt::rig_client refused(rig.ioc, vt::quick_client());
    error_code a1_ec = error::not_connected, a2_ec = error::not_connected, a3_ec = error::not_connected;
    error_code b1_ec = error::not_connected, a4_ec = error::not_connected;
    vt::raw_http_response a3_res;
    bool refused_done = false;
    bool freed = false;
    bool done = false;
    rig.spawn([&]() -> asio::awaitable<void> {
        a1_ec = co_await upgrade_from(a1, "127.0.0.1", rig.srv.port());
        a2_ec = co_await upgrade_from(a2, "127.0.0.1", rig.srv.port());
        a3_ec = co_await upgrade_from(a3, "127.0.0.1", rig.srv.port(), &a3_res);
        refused.start(rig.url());
        refused_done = co_await eventually([&] { return refused.connect_done; }, 3s);
        b1_ec = co_await upgrade_from(b1, "127.0.0.2", rig.srv.port());
        // One of 127.0.0.1's connections ends: its slot is free once the server has seen it go.
        a1.abort();
        freed = co_await eventually([&] { return rig.disconnected.size() == 1; }, 3s);
        a4_ec = co_await upgrade_from(a4, "127.0.0.1", rig.srv.port());
        done = true;
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);
    REQUIRE(done);

    CHECK_MESSAGE(!a1_ec, describe(a1_ec));
    CHECK_MESSAGE(!a2_ec, describe(a2_ec));
    CHECK(vigil::http_status_of(a3_ec) == 503);
    CHECK(a3_res.status == 503);
    CHECK(a3_res.header("Retry-After") == "1");
    REQUIRE(refused_done);
    CHECK(vigil::http_status_of(refused.connect_ec) == 503);
    CHECK_FALSE(vigil::is_permanent(refused.connect_ec));
    CHECK(refused.s.last_disconnect().retry_after == 1000ms);
    CHECK_MESSAGE(!b1_ec, describe(b1_ec));
    CHECK(freed);
    CHECK_MESSAGE(!a4_ec, describe(a4_ec));

    // Both refusals reported, naming the limit and the address.
    REQUIRE(rig.rejected.size() == 2);
    for (const auto& r : rig.rejected) {
        CAPTURE(r.detail);
        CHECK(vigil::http_status_of(r.why) == 503);
        CHECK(r.remote.rfind("127.0.0.1:", 0) == 0);
        CHECK(r.detail.find("127.0.0.1 at max_connections_per_address (2 open): answered 503") == 0);
        CHECK(r.detail.find("Retry-After 1") != std::string::npos);
    }
    CHECK(rig.rejected[0].remote == a3.local_name());
    CHECK(rig.joined_for(b1.local_name()) != nullptr);
    const auto counters = rig.srv.counters();
    CHECK(counters.connected == 4);  // a1, a2, b1, a4
    CHECK(counters.rejected == 2);
    CHECK(rig.srv.metrics().rejections == vigil::reason_counts{{"http_503", 2}});
}

TEST_CASE("beyond connects_per_address: 429 with the window's Retry-After; admitted again after it, and a supervisor waits as told")
{
    auto cfg = vt::quick_server();
    cfg.connects_per_address = 2;
    cfg.connect_window = 1500ms;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    vt::raw_client r1(rig.ioc.get_executor());
    vt::raw_client r2(rig.ioc.get_executor());
    vt::raw_client r3(rig.ioc.get_executor());
    vt::raw_client other(rig.ioc.get_executor());
    vt::raw_client r4(rig.ioc.get_executor());
    vt::raw_client after(rig.ioc.get_executor());
    error_code r1_ec = error::not_connected, r2_ec = error::not_connected, r3_ec = error::not_connected;
    error_code other_ec = error::not_connected, r4_ec = error::not_connected, after_ec = error::not_connected;
    vt::raw_http_response r3_res;
    vt::raw_http_response r4_res;

    vigil::supervisor_config scfg;
    scfg.session = vt::quick_client();
    scfg.min_delay = 10ms;
    vigil::supervisor sup(rig.ioc.get_executor(), rig.url(), scfg, vigil::constant_backoff(50ms));
    std::vector<vigil::retry_info> retries;
    std::vector<steady::time_point> retried_at;
    int ups = 0;
    steady::time_point up_at{};
    sup.events().on_retry = [&](const vigil::retry_info& r) {
        retries.push_back(r);
        retried_at.push_back(steady::now());
    };
    sup.events().on_up = [&] {
        ++ups;
        up_at = steady::now();
    };
    bool sup_done = false;
    bool up = false;
    bool done = false;
    steady::time_point first_at{};
    steady::time_point r4_at{};
    rig.spawn([&]() -> asio::awaitable<void> {
        first_at = steady::now();
        r1_ec = co_await upgrade_from(r1, "127.0.0.1", rig.srv.port());
        r2_ec = co_await upgrade_from(r2, "127.0.0.1", rig.srv.port());
        // A third within the window: told to come back when the first leaves it, 1.5 s
        // after it came, so in 2 s (rounded up).
        r3_ec = co_await upgrade_from(r3, "127.0.0.1", rig.srv.port(), &r3_res);
        other_ec = co_await upgrade_from(other, "127.0.0.2", rig.srv.port());
        // Connections that end do not give back their connects: still refused, with the
        // time left. (Waiting here is the scenario: the window moves on.)
        r1.abort();
        r2.abort();
        co_await pause(milliseconds(600) - vt::ms_since(first_at));
        r4_at = steady::now();
        r4_ec = co_await upgrade_from(r4, "127.0.0.1", rig.srv.port(), &r4_res);
        // A supervisor from 127.0.0.1 meets the 429, waits the Retry-After and gets in.
        rig.spawn([&]() -> asio::awaitable<void> {
            co_await sup.run();
            sup_done = true;
        });
        up = co_await eventually([&] { return ups == 1; }, 4s);
        // Its connect is the only one in the window now: a raw client gets in too.
        after_ec = co_await upgrade_from(after, "127.0.0.1", rig.srv.port());
        sup.stop();
        co_await eventually([&] { return sup_done; }, 2s);
        done = true;
        rig.srv.stop();
    });
    rig.ioc.run_for(10s);
    REQUIRE(done);

    CHECK_MESSAGE(!r1_ec, describe(r1_ec));
    CHECK_MESSAGE(!r2_ec, describe(r2_ec));
    CHECK(vigil::http_status_of(r3_ec) == 429);
    CHECK(r3_res.status == 429);
    CHECK(r3_res.header("Retry-After") == "2");
    CHECK_MESSAGE(!other_ec, describe(other_ec));
    REQUIRE(ms_between(first_at, r4_at) < 1s);  // the case's own pace (else the next check means nothing)
    CHECK(vigil::http_status_of(r4_ec) == 429);
    CHECK(r4_res.header("Retry-After") == "1");  // about 0.9 s left

    // The supervisor: 429 is transient, the wait is the Retry-After, and it came up after it.
    REQUIRE(up);
    REQUIRE(!retries.empty());
    CHECK(retries[0].last.http_status == 429);
    CHECK_FALSE(vigil::is_permanent(retries[0].last.reason));
    CHECK(retries[0].last.retry_after >= 1000ms);
    CHECK(retries[0].delay == retries[0].last.retry_after);
    CHECK(ups == 1);
    CHECK(ms_between(first_at, up_at) >= cfg.connect_window);
    CHECK(ms_between(retried_at[0], up_at) >= retries[0].delay);
    CHECK(ms_between(retried_at[0], up_at) <= retries[0].delay + tolerance);
    CHECK_MESSAGE(!after_ec, describe(after_ec));

    // Each refusal reported as 429, naming the limit and the address.
    REQUIRE(rig.rejected.size() >= 3);
    for (const auto& r : rig.rejected) {
        CAPTURE(r.detail);
        CHECK(vigil::http_status_of(r.why) == 429);
        CHECK(r.remote.rfind("127.0.0.1:", 0) == 0);
        CHECK(r.detail.find("127.0.0.1 at connects_per_address (2 in 1500 ms): answered 429 with Retry-After") == 0);
    }
    CHECK(rig.joined_for(other.local_name()) != nullptr);
}

TEST_CASE("refusals per address share the bound on answers: a flood is closed unanswered beyond 64")
{
    auto cfg = vt::quick_server();
    cfg.max_connections_per_address = 1;
    cfg.session.handshake_timeout = 1500ms;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    // One connection holds 127.0.0.1's share; 80 more from there connect and send nothing, so
    // that each refusal being answered waits for its request (up to handshake_timeout).
    vt::raw_client holder(rig.ioc.get_executor());
    constexpr std::size_t flood = 80;
    std::vector<std::unique_ptr<vt::raw_client>> mute;
    error_code holder_ec = error::not_connected;
    bool all_seen = false;
    rig.spawn([&]() -> asio::awaitable<void> {
        holder_ec = co_await upgrade_from(holder, "127.0.0.1", rig.srv.port());
        for (std::size_t i = 0; i < flood; ++i) {
            mute.push_back(std::make_unique<vt::raw_client>(rig.ioc.get_executor()));
            co_await mute.back()->connect_from("127.0.0.1", rig.srv.port());
        }
        // The ones beyond 64 are closed at once, before any handshake_timeout.
        all_seen = co_await eventually([&] { return rig.srv.counters().accepted == flood + 1; }, 3s) &&
                   co_await eventually([&] { return rig.rejected.size() >= flood - 64; }, 1s);
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    CHECK_MESSAGE(!holder_ec, describe(holder_ec));
    REQUIRE(all_seen);
    // The 64 answered waited for requests that never came (handshake_timeout); the rest
    // were closed at once, as beyond max_connections.
    CHECK(rig.rejected.size() == flood);
    std::size_t unanswered = 0;
    for (const auto& r : rig.rejected) {
        if (r.detail.find("closed without an answer") == std::string::npos) {
            CHECK_CODE(r.why, error::handshake_timeout);
            continue;
        }
        ++unanswered;
        CHECK(vigil::http_status_of(r.why) == 503);
        CHECK(r.detail ==
              "127.0.0.1 at max_connections_per_address (1 open) and already answering 64 others: closed without an answer");
    }
    CHECK(unanswered == flood - 64);
}

TEST_CASE("a client that stops reading is disconnected as a slow consumer; the others get every broadcast")
{
    REQUIRE(vigil::server_session_defaults().send_queue_overflow == vigil::overflow_policy::disconnect);
    auto cfg = vt::quick_server();
    cfg.session.ping_interval = 0ms;  // the stalled client must not be judged dead instead
    cfg.session.send_queue_limit = 16;
    cfg.session.write_timeout = 30s;  // nor be cut off by a stalled write
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    vt::rig_client a(rig.ioc, vt::quick_client());
    vt::rig_client b(rig.ioc, vt::quick_client());
    vt::raw_client slow(rig.ioc.get_executor());
    error_code slow_ec = error::not_connected;
    std::string slow_name;
    std::size_t sent = 0;
    std::vector<std::size_t> queued_to;
    bool others_kept_up = true;
    bool slow_gone = false;
    const std::string pad(16 * 1024, 'x');
    // What the server's metrics said waits in send queues: the stalled client's backlog while
    // it lasts, and nothing once it is gone and the others have read everything.
    vigil::queue_depths most_queued, after_gone;

    a.start(rig.url());
    b.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        slow_ec = co_await slow.connect(rig.srv.port(), 4096);
        if (!slow_ec)
            slow_ec = co_await slow.upgrade("/");
        slow_name = slow.local_name();
        if (slow_ec || !co_await eventually([&] { return rig.connected.size() == 3; }, 3s))
            co_return;
        auto batch = [&] {
            for (int k = 0; k < 8; ++k) {
                queued_to.push_back(rig.srv.broadcast(numbered(sent, pad)));
                ++sent;
            }
        };
        // Batches of half the queue limit, each drained by the readers before the next, until
        // the stalled client's TCP buffers and send queue are full (64 MiB at most).
        while (!rig.ended_for(slow_name) && sent < 4096) {
            batch();
            if (!co_await eventually([&] { return a.messages.size() == sent && b.messages.size() == sent; }, 3s)) {
                others_kept_up = false;
                co_return;
            }
            const auto q = rig.srv.metrics().queues;
            if (q.send_messages > most_queued.send_messages)
                most_queued = q;
        }
        slow_gone = rig.ended_for(slow_name) != nullptr;
        // The others go on as before.
        for (int i = 0; i < 3 && others_kept_up; ++i) {
            batch();
            others_kept_up = co_await eventually([&] { return a.messages.size() == sent && b.messages.size() == sent; }, 3s);
        }
        after_gone = rig.srv.metrics().queues;
        rig.srv.stop();
    });
    rig.ioc.run_for(20s);

    REQUIRE(!slow_ec);
    REQUIRE(slow_gone);
    const auto* e = rig.ended_for(slow_name);
    REQUIRE(e != nullptr);
    CHECK_CODE(e->info.reason, error::slow_consumer);
    CHECK(others_kept_up);
    CAPTURE(sent);
    CHECK(a.messages.size() == sent);
    CHECK(b.messages.size() == sent);
    for (std::size_t i = 0; i < std::min(a.messages.size(), sent); ++i)
        if (a.messages[i].first != numbered(i, pad)) {
            FAIL_CHECK("a: message " << i << " out of order or altered");
            break;
        }
    for (std::size_t i = 0; i < std::min(b.messages.size(), sent); ++i)
        if (b.messages[i].first != numbered(i, pad)) {
            FAIL_CHECK("b: message " << i << " out of order or altered");
            break;
        }
    REQUIRE(!queued_to.empty());
    CHECK(queued_to.front() == 3);
    CHECK(queued_to.back() == 2);
    // The backlog was seen, within the queue limit (16 waiting, one being written).
    CHECK(most_queued.send_messages >= 8);
    CHECK(most_queued.send_messages <= 17);
    CHECK(most_queued.send_bytes >= most_queued.send_messages * pad.size());
    CHECK(after_gone.send_messages == 0);
    CHECK(after_gone.send_bytes == 0);
    // Ended by stop(), nothing earlier.
    CHECK(vigil::close_code_of(a.run_ec) == 1001);
    CHECK(vigil::close_code_of(b.run_ec) == 1001);
}

TEST_CASE("stop(): every client gets 1001, handlers see server_shutdown, run() completes within close_timeout")
{
    auto cfg = vt::quick_server();
    cfg.session.close_timeout = 300ms;

    SUBCASE("three clients that answer the close")
    {
        vt::server_rig rig(cfg);
        REQUIRE(!rig.start());
        std::vector<std::unique_ptr<vt::rig_client>> clients;
        for (int i = 0; i < 3; ++i) {
            clients.push_back(std::make_unique<vt::rig_client>(rig.ioc, vt::quick_client()));
            clients.back()->start(rig.url());
        }
        bool all_in = false;
        bool all_out = false;
        steady::time_point stopped_at{};
        vt::rig_client late(rig.ioc, vt::quick_client());
        const auto url = rig.url();
        rig.spawn([&]() -> asio::awaitable<void> {
            all_in = co_await eventually([&] { return rig.connected.size() == 3; }, 3s);
            stopped_at = steady::now();
            rig.srv.stop();
            rig.srv.stop();  // idempotent
            all_out = co_await eventually(
                [&] {
                    return rig.run_done && std::all_of(clients.begin(), clients.end(), [](auto& c) { return c->run_done; });
                },
                3s);
            late.start(url);
        });
        rig.ioc.run_for(8s);

        REQUIRE(all_in);
        REQUIRE(all_out);
        for (auto& c : clients) {
            CHECK_MESSAGE(vigil::close_code_of(c->run_ec) == 1001, "got " << describe(c->run_ec));
            CHECK(ms_between(stopped_at, c->run_ended) <= cfg.session.close_timeout + tolerance);
        }
        CHECK_CODE(rig.run_ec, error_code{});
        CHECK(ms_between(stopped_at, rig.run_ended) <= cfg.session.close_timeout + tolerance);
        REQUIRE(rig.disconnected.size() == 3);
        for (const auto& e : rig.disconnected) {
            CHECK_CODE(e.info.reason, error::server_shutdown);
            const auto& log = rig.logs[e.id];
            CHECK(log.ended);
            CHECK_CODE(log.end, error::server_shutdown);
        }
        const auto n = rig.srv.counters();
        CHECK(n.open == 0);
        CHECK(n.disconnected == 3);
        CHECK(rig.srv.connections().empty());
        // No longer accepting.
        REQUIRE(late.connect_done);
        CHECK(late.connect_ec);
    }

    SUBCASE("a client that never answers the close does not hold run() beyond close_timeout")
    {
        vt::server_rig rig(cfg);
        REQUIRE(!rig.start());
        vt::relay path(rig.srv.port());
        vt::rig_client direct(rig.ioc, vt::quick_client());
        vt::rig_client frozen(rig.ioc, vt::quick_client());
        direct.start(rig.url());
        frozen.start(path.url());
        bool all_in = false;
        steady::time_point stopped_at{};
        rig.spawn([&]() -> asio::awaitable<void> {
            all_in = co_await eventually([&] { return rig.connected.size() == 2; }, 3s);
            path.freeze();
            stopped_at = steady::now();
            rig.srv.stop();
            co_await eventually([&] { return rig.run_done; }, 3s);
            frozen.s.cancel();
        });
        rig.ioc.run_for(6s);

        REQUIRE(all_in);
        REQUIRE(rig.run_done);
        CHECK_CODE(rig.run_ec, error_code{});
        CHECK(ms_between(stopped_at, rig.run_ended) <= cfg.session.close_timeout + tolerance);
        CHECK(direct.run_done);
        CHECK(vigil::close_code_of(direct.run_ec) == 1001);
        REQUIRE(rig.disconnected.size() == 2);
        for (const auto& e : rig.disconnected) {
            CAPTURE(e.remote);
            CHECK_CODE(e.info.reason, error::server_shutdown);
        }
    }
}

TEST_CASE("a server on four threads: every client echoed, a broadcast and stop() from other threads")
{
    // The server runs on its own io_context and four threads; the clients on the test thread.
    asio::io_context server_ioc;
    std::atomic<int> connected{0};
    std::atomic<int> disconnected{0};
    std::atomic<int> shutdown_reasons{0};
    std::atomic<int> shutdown_receives{0};
    auto cfg = vt::quick_server();
    cfg.session.close_timeout = 2s;  // generous: sanitizer builds are slow, and the clients do answer
    vigil::server srv(server_ioc.get_executor(), cfg,
                      [&](vigil::server::connection_ptr c) -> asio::awaitable<void> {
                          for (;;) {
                              auto r = co_await c->receive();
                              if (r.ec) {
                                  if (r.ec == error::server_shutdown)
                                      ++shutdown_receives;
                                  co_return;
                              }
                              co_await c->send(std::move(r.data), r.type);
                          }
                      });
    srv.events().on_connected = [&](vigil::connection&) { ++connected; };
    srv.events().on_disconnected = [&](vigil::connection& c) {
        if (c.last_disconnect().reason == error::server_shutdown)
            ++shutdown_reasons;
        ++disconnected;
    };
    REQUIRE(!srv.listen());
    std::atomic<bool> run_done{false};
    error_code run_ec = error::not_connected;
    asio::co_spawn(server_ioc, [&]() -> asio::awaitable<void> {
        run_ec = co_await srv.run();
        run_done = true;
    }, asio::detached);
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
        threads.emplace_back([&] { server_ioc.run(); });

    asio::io_context ioc{vt::concurrency_hint()};
    constexpr std::size_t n = 20;
    constexpr std::size_t per_client = 50;
    std::vector<std::unique_ptr<vt::rig_client>> clients;
    // Built by appending: g++ 12 warns (-Wrestrict, a false positive) on `"literal" + to_string()`.
    std::string url = "ws://127.0.0.1:";
    url += std::to_string(srv.port());
    url += '/';
    for (std::size_t i = 0; i < n; ++i) {
        clients.push_back(std::make_unique<vt::rig_client>(ioc, vt::quick_client()));
        clients.back()->start(url);
    }
    bool all_in = false;
    bool all_echoed = false;
    bool all_broadcast = false;
    bool all_out = false;
    std::size_t broadcast_to = 0;
    auto each = [&](auto pred) { return std::all_of(clients.begin(), clients.end(), [&](auto& c) { return pred(*c); }); };
    vt::spawn_on(ioc, [&]() -> asio::awaitable<void> {
        all_in = co_await eventually([&] { return connected == static_cast<int>(n) && each([](auto& c) { return c.connect_done && !c.connect_ec; }); }, 5s);
        if (!all_in)
            co_return;
        for (auto& c : clients)
            for (std::size_t i = 0; i < per_client; ++i)
                c->send(numbered(i));
        all_echoed = co_await eventually([&] { return each([&](auto& c) { return c.messages.size() == per_client; }); }, 5s);
        broadcast_to = srv.broadcast("to all");
        all_broadcast = co_await eventually([&] { return each([&](auto& c) { return c.messages.size() == per_client + 1; }); }, 3s);
        std::thread stopper([&] { srv.stop(); });
        stopper.join();
        all_out = co_await eventually([&] { return each([](auto& c) { return c.run_done; }); }, 3s);
    });
    ioc.run_for(15s);
    if (!vt::wait_until([&] { return run_done.load(); }, 3s))
        server_ioc.stop();  // a failed case must not hang in join()
    for (auto& t : threads)
        t.join();

    REQUIRE(all_in);
    CHECK(all_echoed);
    CHECK(all_broadcast);
    CHECK(broadcast_to == n);
    CHECK(all_out);
    for (auto& c : clients) {
        REQUIRE(c->messages.size() == per_client + 1);
        for (std::size_t i = 0; i < per_client; ++i)
            CHECK(c->messages[i].first == numbered(i));
        CHECK(c->messages[per_client].first == "to all");
        CHECK_MESSAGE(vigil::close_code_of(c->run_ec) == 1001, "got " << describe(c->run_ec));
    }
    REQUIRE(run_done);
    CHECK_CODE(run_ec, error_code{});
    CHECK(connected == static_cast<int>(n));
    CHECK(disconnected == static_cast<int>(n));
    CHECK(shutdown_reasons == static_cast<int>(n));
    CHECK(shutdown_receives == static_cast<int>(n));
    const auto counters = srv.counters();
    CHECK(counters.connected == n);
    CHECK(counters.disconnected == n);
    CHECK(counters.open == 0);
}

TEST_CASE("hostile input is refused, and another client stays connected and served")
{
    auto cfg = vt::quick_server();
    cfg.session.max_message_size = 1024;
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());
    vt::rig_client normal(rig.ioc, vt::quick_client());
    normal.start(rig.url());

    vt::raw_client raw(rig.ioc.get_executor());
    vt::rig_client big(rig.ioc, vt::quick_client());
    // What the attack saw.
    error_code up_ec = error::not_connected;
    vt::raw_http_response res;
    error_code res_ec = error::not_connected;
    vt::raw_frame reply;
    error_code reply_ec = error::not_connected;
    error_code closed_ec = error::not_connected;
    unsigned expected_status = 0;
    std::uint16_t expected_close = 0;
    // What the refusal or the end must also say: a header of the HTTP answer, and words of
    // the detail the server reported.
    std::pair<std::string, std::string> expected_header;
    std::string expected_detail;

    std::string raw_name;
    // Reads frames until a close frame, skipping pings and pongs.
    auto read_close = [&]() -> asio::awaitable<void> {
        for (;;) {
            reply_ec = co_await raw.read_frame(reply, 2s);
            if (reply_ec || (reply.op != vt::opcode::ping && reply.op != vt::opcode::pong))
                break;
        }
        closed_ec = co_await raw.wait_closed(2s);
        // Close our side too, as a client does: until then the server's teardown waits
        // for it (at most close_timeout), and the connection has not ended yet.
        raw_name = raw.local_name();
        raw.socket().close();
        co_await eventually([&] { return rig.ended_for(raw_name) != nullptr; }, 2s);
    };
    auto upgraded = [&]() -> asio::awaitable<bool> {
        up_ec = co_await raw.connect(rig.srv.port());
        if (!up_ec)
            up_ec = co_await raw.upgrade("/");
        co_return !up_ec;
    };
    auto http_refusal = [&](std::string request) -> asio::awaitable<void> {
        up_ec = co_await raw.connect(rig.srv.port());
        if (up_ec)
            co_return;
        if (auto ec = co_await raw.write(std::move(request)); ec)
            up_ec = ec;
        res_ec = co_await raw.read_http(res, 2s);
        closed_ec = co_await raw.wait_closed(2s);
    };
    // A valid upgrade request but for one thing.
    auto altered_request = [](std::string_view from, std::string_view to) {
        auto req = vt::raw_client::upgrade_request("/");
        req.replace(req.find(from), from.size(), to);
        return req;
    };
    auto frames = [&](std::string bytes) -> asio::awaitable<void> {
        if (!co_await upgraded())
            co_return;
        co_await raw.write(std::move(bytes));
        co_await read_close();
    };

    std::function<asio::awaitable<void>()> attack;
    SUBCASE("garbage instead of an upgrade request: 400")
    {
        expected_status = 400;
        attack = [&]() -> asio::awaitable<void> {
            co_await http_refusal("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http\r\n\r\n"s);
        };
    }
    SUBCASE("an upgrade request header beyond max_request_header: 431")
    {
        expected_status = 431;
        attack = [&]() -> asio::awaitable<void> {
            co_await http_refusal(vt::raw_client::upgrade_request("/", "X-Padding: " + std::string(cfg.max_request_header + 100, 'a')));
        };
    }
    SUBCASE("a Sec-WebSocket-Key that is not the base64 of 16 bytes: 400 naming the header")
    {
        // Beast alone checks only that the key is at most 24 characters, and answers 101.
        expected_status = 400;
        expected_detail = "Sec-WebSocket-Key \"c2hvcnQ=\" is not the base64 of 16 bytes";
        attack = [&]() -> asio::awaitable<void> {
            co_await http_refusal(altered_request("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="));
        };
    }
    SUBCASE("a Sec-WebSocket-Version other than 13: 426 with Sec-WebSocket-Version: 13")
    {
        expected_status = 426;
        expected_header = {"Sec-WebSocket-Version", "13"};
        expected_detail = "Sec-WebSocket-Version \"8\"";
        attack = [&]() -> asio::awaitable<void> {
            co_await http_refusal(altered_request("Version: 13", "Version: 8"));
        };
    }
    SUBCASE("an HTTP/1.0 upgrade request: 400")
    {
        expected_status = 400;
        expected_detail = "HTTP/1.0";
        attack = [&]() -> asio::awaitable<void> { co_await http_refusal(altered_request("HTTP/1.1", "HTTP/1.0")); };
    }
    SUBCASE("an upgrade request that is not a GET: 405 with Allow: GET")
    {
        expected_status = 405;
        expected_header = {"Allow", "GET"};
        expected_detail = "method \"POST\"";
        attack = [&]() -> asio::awaitable<void> { co_await http_refusal(altered_request("GET", "POST")); };
    }
    SUBCASE("a message beyond max_message_size: close 1009")
    {
        attack = [&]() -> asio::awaitable<void> {
            big.start(rig.url());
            if (!co_await eventually([&] { return big.connect_done; }, 3s) || big.connect_ec)
                co_return;
            big.send(std::string(cfg.session.max_message_size + 1, 'b'));
            co_await eventually([&] { return big.run_done; }, 3s);
        };
    }
    SUBCASE("invalid UTF-8 in a text frame: close 1007")
    {
        expected_close = 1007;
        attack = [&]() -> asio::awaitable<void> {
            co_await frames(vt::raw_client::frame(vt::opcode::text, "caf\xc3\x28 \xff\xfe"));
        };
    }
    SUBCASE("an unmasked client frame: close 1002")
    {
        expected_close = 1002;
        attack = [&]() -> asio::awaitable<void> {
            co_await frames(vt::raw_client::frame(vt::opcode::text, "bare", {.mask = false}));
        };
    }
    SUBCASE("RSV bits without an extension: close 1002")
    {
        expected_close = 1002;
        attack = [&]() -> asio::awaitable<void> {
            co_await frames(vt::raw_client::frame(vt::opcode::text, "rsv", {.rsv = 0x4}));
        };
    }
    SUBCASE("close code 5000, which Beast would echo: answered 1002, ended as a protocol error")
    {
        expected_close = 1002;
        expected_detail = "close code 5000 is not allowed on the wire";
        attack = [&]() -> asio::awaitable<void> { co_await frames(vt::raw_client::close_frame(5000, "bye")); };
    }
    SUBCASE("close code 1005, which only stands for \"no code\" and is never sent: 1002")
    {
        expected_close = 1002;
        expected_detail = "bad_close_code";
        attack = [&]() -> asio::awaitable<void> { co_await frames(vt::raw_client::close_frame(1005)); };
    }
    SUBCASE("a close frame with a 1-byte payload: 1002")
    {
        expected_close = 1002;
        expected_detail = "bad_close_size";
        attack = [&]() -> asio::awaitable<void> { co_await frames(vt::raw_client::frame(vt::opcode::close, "\x03")); };
    }
    SUBCASE("a data frame after the close frame: the connection just closes")
    {
        expected_close = 1000;
        attack = [&]() -> asio::awaitable<void> {
            co_await frames(vt::raw_client::close_frame(1000, "done") + vt::raw_client::frame(vt::opcode::text, "after close"));
        };
    }

    bool normal_in = false;
    bool echo_before = false;
    bool echo_after = false;
    rig.spawn([&]() -> asio::awaitable<void> {
        normal_in = co_await eventually([&] { return normal.connect_done && !normal.connect_ec; }, 3s);
        if (!normal_in)
            co_return;
        normal.send("before");
        echo_before = co_await eventually([&] { return normal.messages.size() == 1; }, 2s);
        co_await attack();
        normal.send("after");
        echo_after = co_await eventually([&] { return normal.messages.size() == 2; }, 2s);
        rig.srv.stop();
    });
    rig.ioc.run_for(10s);

    REQUIRE(normal_in);
    CHECK(echo_before);
    CHECK(echo_after);
    CHECK(vigil::close_code_of(normal.run_ec) == 1001);  // ended by stop(), nothing earlier
    REQUIRE(rig.run_done);

    if (expected_status) {
        CHECK_MESSAGE(!up_ec, describe(up_ec));
        CHECK_MESSAGE(!res_ec, describe(res_ec));
        CHECK(res.status == expected_status);
        CHECK_MESSAGE(dropped(closed_ec), "got " << describe(closed_ec));
        const auto it = std::find_if(rig.rejected.begin(), rig.rejected.end(),
                                     [&](const auto& r) { return r.remote == raw.local_name(); });
        REQUIRE(it != rig.rejected.end());
        CHECK(vigil::http_status_of(it->why) == expected_status);
        CHECK_MESSAGE(it->detail.find(expected_detail) != std::string::npos, it->detail);
        if (!expected_header.first.empty())
            CHECK(res.header(expected_header.first) == expected_header.second);
        CHECK(rig.srv.counters().connected == 1);
    } else if (expected_close) {
        REQUIRE_MESSAGE(!up_ec, describe(up_ec));
        REQUIRE_MESSAGE(!reply_ec, describe(reply_ec));
        CHECK(reply.op == vt::opcode::close);
        CHECK_FALSE(reply.masked);
        CHECK(reply.close_code() == expected_close);
        CHECK_MESSAGE(dropped(closed_ec), "got " << describe(closed_ec));
        const auto* end = rig.ended_for(raw_name);
        REQUIRE(end != nullptr);
        const auto said = end->info.detail + " [" + vigil::error_name(end->info.reason) + "]";
        CHECK_MESSAGE(said.find(expected_detail) != std::string::npos, said);
    } else {
        REQUIRE(big.connect_done);
        REQUIRE(!big.connect_ec);
        REQUIRE(big.run_done);
        CHECK_MESSAGE(vigil::close_code_of(big.run_ec) == 1009, "got " << describe(big.run_ec));
        CHECK(big.last.close_code == 1009);
        REQUIRE(rig.disconnected.size() >= 1);
        CHECK(rig.disconnected[0].info.reason);
    }
}

TEST_CASE("frames a client sends in the same write as its upgrade request are read, not lost")
{
    vt::server_rig rig(vt::quick_server());
    REQUIRE(!rig.start());
    vt::raw_client raw(rig.ioc.get_executor());
    error_code up_ec = error::not_connected;
    vt::raw_http_response res;
    std::vector<vt::raw_frame> echoes;
    error_code echo_ec = error::not_connected;
    rig.spawn([&]() -> asio::awaitable<void> {
        up_ec = co_await raw.connect(rig.srv.port());
        if (up_ec)
            co_return;
        // The request and two messages, the second in two fragments, in one write: the
        // server reads them into its request buffer together.
        up_ec =
            co_await raw.write(vt::raw_client::upgrade_request("/") + vt::raw_client::frame(vt::opcode::text, "early") +
                               vt::raw_client::frame(vt::opcode::binary, "bi", {.fin = false}) +
                               vt::raw_client::frame(vt::opcode::continuation, "nary"));
        if (!up_ec)
            up_ec = co_await raw.read_http(res, 2s);
        for (int i = 0; i < 2 && !up_ec; ++i) {
            vt::raw_frame f;
            echo_ec = co_await raw.read_frame(f, 2s);
            if (echo_ec)
                break;
            echoes.push_back(f);
        }
        rig.srv.stop();
    });
    rig.ioc.run_for(5s);
    REQUIRE_MESSAGE(!up_ec, describe(up_ec));
    CHECK(res.status == 101);
    REQUIRE_MESSAGE(!echo_ec, describe(echo_ec));
    REQUIRE(echoes.size() == 2);
    CHECK(echoes[0].op == vt::opcode::text);
    CHECK(echoes[0].payload == "early");
    CHECK(echoes[1].op == vt::opcode::binary);
    CHECK(echoes[1].payload == "binary");
    REQUIRE(rig.logs.size() == 1);
    const auto& got = rig.logs.begin()->second.messages;
    REQUIRE(got.size() == 2);
    CHECK(got[0].data == "early");
    CHECK(got[1].data == "binary");
}

TEST_CASE("handler lifecycle: return closes with 1000, a throw with 1011; ended connections keep their story")
{
    struct late_result {
        bool done = false;
        error_code end;
        error_code send_ec = error::not_connected;
        bool open_after = true;
        error_code reason;
    };
    struct held_result {
        bool done = false;
        std::vector<vigil::received> got;
        error_code reason;
    };
    struct twice_result {
        bool done = false;
        std::size_t winner = 9;
        error_code second_ec;
        vigil::received next;
    };
    late_result late;
    held_result held;
    twice_result twice;
    bool held_client_closed = false;

    auto handler = [&](vigil::server::connection_ptr c) -> asio::awaitable<void> {
        using namespace asio::experimental::awaitable_operators;
        if (c->target() == "/return") {
            co_await c->send("hello");
            co_return;
        }
        if (c->target() == "/throw") {
            co_await c->send("about to fail");
            throw std::runtime_error("handler failure on purpose");
        }
        if (c->target() == "/late") {
            for (;;) {
                auto r = co_await c->receive();
                if (r.ec) {
                    late.end = r.ec;
                    break;
                }
            }
            late.send_ec = co_await c->send("too late");
            late.open_after = c->is_open();
            late.reason = c->last_disconnect().reason;
            late.done = true;
            co_return;
        }
        if (c->target() == "/held") {
            // Takes nothing until the client has sent three messages and closed.
            co_await hold_until([&] { return held_client_closed; }, 3s);
            for (int i = 0; i < 5; ++i)
                held.got.push_back(co_await c->receive());
            held.reason = c->last_disconnect().reason;
            held.done = true;
            co_return;
        }
        if (c->target() == "/twice") {
            auto r = co_await (c->receive() || c->receive());
            twice.winner = r.index();
            twice.second_ec = r.index() == 1 ? std::get<1>(r).ec : std::get<0>(r).ec;
            twice.next = co_await c->receive();
            twice.done = true;
            co_await c->send("ok");
            co_await c->receive();
            co_return;
        }
    };
    vt::server_rig rig(vt::quick_server(), handler);
    REQUIRE(!rig.start());

    vt::rig_client ret(rig.ioc, vt::quick_client());
    vt::rig_client thrower(rig.ioc, vt::quick_client());
    vt::rig_client late_client(rig.ioc, vt::quick_client());
    vt::rig_client held_client(rig.ioc, vt::quick_client());
    vt::rig_client twice_client(rig.ioc, vt::quick_client());
    error_code held_close_ec = error::not_connected;
    error_code late_close_ec = error::not_connected;

    ret.start(rig.url("ws", "127.0.0.1", "/return"));
    thrower.start(rig.url("ws", "127.0.0.1", "/throw"));
    late_client.start(rig.url("ws", "127.0.0.1", "/late"));
    held_client.start(rig.url("ws", "127.0.0.1", "/held"));
    twice_client.start(rig.url("ws", "127.0.0.1", "/twice"));
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return late_client.connect_done && held_client.connect_done && twice_client.connect_done; }, 3s))
            co_return;
        late_close_ec = co_await late_client.s.close(1000, "late");
        for (int i = 0; i < 3; ++i)
            held_client.send(numbered(i));
        held_close_ec = co_await held_client.s.close(1000, "held");
        held_client_closed = true;
        // Sent once the /twice handler's first receive() has been cancelled.
        co_await eventually([&] { return twice.winner != 9; }, 3s);
        twice_client.send("after twice");
        co_await eventually([&] { return ret.run_done && thrower.run_done && late.done && held.done && twice.done; }, 3s);
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    // Returning closes with 1000, after what the handler sent.
    REQUIRE(ret.run_done);
    REQUIRE(!ret.connect_ec);
    REQUIRE(ret.messages.size() == 1);
    CHECK(ret.messages[0].first == "hello");
    CHECK_MESSAGE(vigil::close_code_of(ret.run_ec) == 1000, "got " << describe(ret.run_ec));

    // Throwing closes with 1011, after what it sent.
    REQUIRE(thrower.run_done);
    REQUIRE(!thrower.connect_ec);
    REQUIRE(thrower.messages.size() == 1);
    CHECK(thrower.messages[0].first == "about to fail");
    CHECK_MESSAGE(vigil::close_code_of(thrower.run_ec) == 1011, "got " << describe(thrower.run_ec));

    // After the end: sending fails with not_connected; the story stays.
    CHECK_CODE(late_close_ec, error_code{});
    REQUIRE(late.done);
    CHECK(vigil::close_code_of(late.end) == 1000);
    CHECK_CODE(late.send_ec, error::not_connected);
    CHECK_FALSE(late.open_after);
    CHECK(late.reason == late.end);

    // receive() after the end: the held messages first, then the reason, then the reason again.
    CHECK_CODE(held_close_ec, error_code{});
    REQUIRE(held.done);
    REQUIRE(held.got.size() == 5);
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK_CODE(held.got[i].ec, error_code{});
        CHECK(held.got[i].data == numbered(i));
        CHECK(held.got[i].type == message_type::text);
    }
    CHECK(vigil::close_code_of(held.got[3].ec) == 1000);
    CHECK(held.got[4].ec == held.got[3].ec);
    CHECK(held.reason == held.got[3].ec);

    // A second receive() while one is pending gets already_running; cancelling the first loses
    // nothing.
    REQUIRE(twice.done);
    CHECK(twice.winner == 1);
    CHECK_CODE(twice.second_ec, error::already_running);
    CHECK_CODE(twice.next.ec, error_code{});
    CHECK(twice.next.data == "after twice");
    REQUIRE(twice_client.messages.size() == 1);
    CHECK(twice_client.messages[0].first == "ok");

    REQUIRE(rig.run_done);
    CHECK_CODE(rig.run_ec, error_code{});
}

}  // TEST_SUITE
