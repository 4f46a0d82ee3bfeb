// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <vigil/session.hpp>

#include <support/one_thread.hpp>
#include <support/peer.hpp>
#include <support/pki.hpp>
#include <support/relay.hpp>
#include <support/testing.hpp>
#include <support/wait.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;
using vigil::message_type;

using vt::describe;
using vt::eventually;
using vt::ms_since;
using vt::tolerance;

// Short enough that every case ends in well under a second; pong_timeout < ping_interval.
vigil::session_config quick_config()
{
    vigil::session_config cfg;
    cfg.ping_interval = 100ms;
    cfg.pong_timeout = 80ms;
    cfg.connect_timeout = 2s;
    cfg.tls_handshake_timeout = 2s;
    cfg.handshake_timeout = 2s;
    cfg.write_timeout = 2s;
    cfg.close_timeout = 500ms;
    return cfg;
}

// One client on the test thread: an io_context, a session on it, and what its events said.
struct client {
    explicit client(vigil::session_config cfg = quick_config()) : s(ioc.get_executor(), std::move(cfg))
    {
        auto& ev = s.events();
        ev.on_connected = [this] {
            ++connected;
            last_frame = steady::now();
        };
        ev.on_ping = [this] { ++pings; };
        ev.on_pong = [this](std::chrono::microseconds rtt) {
            rtts.push_back(rtt);
            last_frame = steady::now();
        };
        ev.on_message = [this](std::string_view data, message_type type) {
            messages.emplace_back(std::string(data), type);
            last_frame = steady::now();
        };
        ev.on_disconnected = [this](const vigil::disconnect_info&) {
            ++disconnects;
            disconnected_at = steady::now();
        };
    }

    // An exception escaping a test coroutine fails the case when run_for rethrows it.
    template <class F>
    void spawn(F f)
    {
        asio::co_spawn(ioc, std::move(f), [](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
        });
    }

    // Starts run() beside the caller; run_ec / run_done / run_ended record how it ended.
    void start_run()
    {
        spawn([this]() -> asio::awaitable<void> {
            run_ec = co_await s.run();
            run_ended = steady::now();
            run_done = true;
        });
    }

    asio::io_context ioc{vt::concurrency_hint()};
    vigil::session s;

    int connected = 0;
    int pings = 0;
    int disconnects = 0;
    std::vector<std::chrono::microseconds> rtts;
    std::vector<std::pair<std::string, message_type>> messages;
    steady::time_point last_frame{};
    steady::time_point disconnected_at{};

    error_code run_ec = error::not_connected;
    bool run_done = false;
    steady::time_point run_ended{};
};

vt::peer_options tls_peer(const vt::test_pki& pki, vt::peer_behaviour b = vt::peer_behaviour::echo)
{
    vt::peer_options o;
    o.behaviour = b;
    o.tls = true;
    o.cert_file = pki.server_cert;
    o.key_file = pki.server_key;
    return o;
}

// Connects, exchanges a text and a binary message with an echo peer, and closes cleanly.
void check_echo(client& c, const std::string& url)
{
    error_code connect_ec = error::not_connected;
    error_code text_ec = error::not_connected;
    error_code binary_ec = error::not_connected;
    error_code close_ec = error::not_connected;
    bool all_back = false;
    const std::string binary("\0\x01\xfe\xff binary", 12);

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(url);
        if (connect_ec)
            co_return;
        c.start_run();
        text_ec = co_await c.s.send("hello", message_type::text);
        binary_ec = co_await c.s.send(binary, message_type::binary);
        all_back = co_await eventually([&] { return c.messages.size() >= 2; }, 2s);
        close_ec = co_await c.s.close();
    });
    c.ioc.run_for(5s);

    INFO("url: " << url);
    REQUIRE_MESSAGE(!connect_ec, describe(connect_ec) << ": " << c.s.last_disconnect().detail);
    CHECK(c.connected == 1);
    CHECK_CODE(text_ec, error_code{});
    CHECK_CODE(binary_ec, error_code{});
    REQUIRE(all_back);
    REQUIRE(c.messages.size() == 2);
    CHECK(c.messages[0].first == "hello");
    CHECK(c.messages[0].second == message_type::text);
    CHECK(c.messages[1].first == binary);
    CHECK(c.messages[1].second == message_type::binary);
    CHECK_CODE(close_ec, error_code{});
    CHECK(c.run_done);
    CHECK_CODE(c.run_ec, error_code{});
    CHECK(c.disconnects == 1);
    CHECK_FALSE(c.s.is_open());
}

}  // namespace

TEST_SUITE("session")
{

TEST_CASE("the suite runs its sessions the way VIGIL_TEST_ONE_THREAD says")
{
    // Twice in the README's test command: once on strands, once on a single-threaded
    // io_context's own executor (and its timer wheel). This says which run this is.
    asio::io_context ioc{vt::concurrency_hint()};
    vigil::session s(ioc.get_executor());
    const asio::any_io_executor io = ioc.get_executor();
    const bool one_thread = vt::concurrency_hint() == 1;
    MESSAGE(std::string(one_thread ? "sessions on the io_context's executor (concurrency hint 1)" : "sessions on strands"));
    CHECK((s.get_executor() == io) == one_thread);
}

TEST_CASE("echo: text and binary round trip over ws://")
{
    vt::peer server;
    client c;
    check_echo(c, server.url());
    CHECK(server.messages() == 2);
}

TEST_CASE("echo: many sends arrive in order")
{
    vt::peer server;
    client c;
    constexpr int count = 300;
    error_code connect_ec = error::not_connected;
    int completed = 0;
    int failed = 0;
    bool all_back = false;

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        if (connect_ec)
            co_return;
        c.start_run();
        // Queued all at once, without waiting for each write: ordering is the writer's job.
        for (int i = 0; i < count; ++i)
            c.s.async_send(std::to_string(i), message_type::text, [&](error_code ec) {
                ++completed;
                failed += ec ? 1 : 0;
            });
        all_back = co_await eventually([&] { return c.messages.size() >= count; }, 3s);
        co_await c.s.close();
    });
    c.ioc.run_for(6s);

    REQUIRE_FALSE(connect_ec);
    CHECK(completed == count);
    CHECK(failed == 0);
    REQUIRE(all_back);
    bool in_order = true;
    for (int i = 0; i < count; ++i)
        in_order = in_order && c.messages[static_cast<std::size_t>(i)].first == std::to_string(i);
    CHECK(in_order);
}

TEST_CASE("echo over wss:// with the test CA")
{
    vt::test_pki pki;
    vt::peer server(tls_peer(pki));
    auto cfg = quick_config();
    cfg.tls.ca_file = pki.ca_cert;

    SUBCASE("host name localhost")
    {
        client c(cfg);
        check_echo(c, server.url("localhost"));
    }
    SUBCASE("IP address 127.0.0.1")
    {
        client c(cfg);
        check_echo(c, server.url("127.0.0.1"));
    }
}

TEST_CASE("a relay that goes silent is detected as pong_timeout")
{
    vt::peer server;
    vt::relay link(server.port());
    client c;  // ping_interval 100 ms, pong_timeout 80 ms
    const auto bound = c.s.config().ping_interval + c.s.config().pong_timeout + tolerance;
    error_code connect_ec = error::not_connected;
    bool got_pong = false;
    steady::time_point frozen_at{};

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(link.url());
        if (connect_ec)
            co_return;
        c.start_run();
        got_pong = co_await eventually([&] { return !c.rtts.empty(); }, 2s);
        link.freeze();
        frozen_at = steady::now();
    });
    c.ioc.run_for(5s);

    REQUIRE_FALSE(connect_ec);
    CHECK(got_pong);
    CHECK(c.pings >= 1);
    for (auto rtt : c.rtts) {
        CHECK(rtt > std::chrono::microseconds(0));
        CHECK(rtt < c.s.config().pong_timeout);
    }
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, error::pong_timeout);
    const auto& info = c.s.last_disconnect();
    CHECK_CODE(info.reason, error::pong_timeout);
    // Detection latency, by the session's clock and by ours.
    CHECK(info.silent_for >= c.s.config().pong_timeout);
    CHECK(info.silent_for <= bound);
    CHECK(c.run_ended - frozen_at <= bound);
    CHECK(c.run_ended - c.last_frame <= bound);
    CHECK(c.disconnects == 1);
}

TEST_CASE("a peer that goes silent is detected as pong_timeout")
{
    vt::peer server;
    client c;
    const auto bound = c.s.config().ping_interval + c.s.config().pong_timeout + tolerance;
    error_code connect_ec = error::not_connected;
    steady::time_point silent_at{};

    SUBCASE("after a pong")
    {
        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            c.start_run();
            co_await eventually([&] { return !c.rtts.empty(); }, 2s);
            server.set_behaviour(vt::peer_behaviour::silent);
            silent_at = steady::now();
        });
        c.ioc.run_for(5s);
        CHECK_FALSE(c.rtts.empty());
    }
    SUBCASE("from the upgrade on")
    {
        server.set_behaviour(vt::peer_behaviour::silent);
        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            silent_at = steady::now();
            if (connect_ec)
                co_return;
            c.start_run();
        });
        c.ioc.run_for(5s);
        CHECK(c.rtts.empty());
    }

    REQUIRE_FALSE(connect_ec);
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, error::pong_timeout);
    CHECK(c.s.last_disconnect().silent_for <= bound);
    CHECK(c.run_ended - silent_at <= bound);
}

TEST_CASE("a busy connection")
{
    vt::peer_options opts;
    opts.behaviour = vt::peer_behaviour::stream;
    opts.stream_period = 10ms;
    vt::peer server(opts);
    auto cfg = quick_config();
    error_code connect_ec = error::not_connected;
    error_code close_ec = error::not_connected;

    SUBCASE("sends no pings in idle mode")
    {
        client c(cfg);
        bool streamed = false;
        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            c.start_run();
            // The window: 60 messages, at least 10 ms apart, span more than five ping intervals.
            streamed = co_await eventually([&] { return c.messages.size() >= 60; }, 3s);
            close_ec = co_await c.s.close();
        });
        c.ioc.run_for(5s);
        REQUIRE_FALSE(connect_ec);
        REQUIRE(streamed);
        CHECK(c.messages.size() >= 20);
        CHECK(c.pings == 0);
        CHECK(server.pings() == 0);
        CHECK_CODE(close_ec, error_code{});
        CHECK(c.run_done);
        CHECK_CODE(c.run_ec, error_code{});
    }
    SUBCASE("sends them anyway in fixed mode")
    {
        cfg.ping = vigil::ping_mode::fixed;
        client c(cfg);
        bool counted = false;
        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            c.start_run();
            counted = co_await eventually(
                [&] { return c.messages.size() >= 20 && c.pings >= 4 && c.rtts.size() >= 3 && server.pings() >= 4; },
                3s);
            close_ec = co_await c.s.close();
        });
        c.ioc.run_for(5s);
        REQUIRE_FALSE(connect_ec);
        CHECK(counted);
        CHECK(c.messages.size() >= 20);
        CHECK(c.pings >= 4);
        CHECK(c.rtts.size() >= 3);
        CHECK(vt::wait_until([&] { return server.pings() >= 4; }, 1s));
        CHECK_CODE(close_ec, error_code{});
        CHECK(c.run_done);
    }
}

TEST_CASE("idle_timeout fires on a peer that answers pings but sends no data")
{
    vt::peer server({.behaviour = vt::peer_behaviour::pong_only});
    auto cfg = quick_config();
    cfg.idle_timeout = 400ms;
    client c(cfg);
    error_code connect_ec = error::not_connected;
    steady::time_point connected_at{};

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        connected_at = steady::now();
        if (connect_ec)
            co_return;
        c.start_run();
    });
    c.ioc.run_for(5s);

    REQUIRE_FALSE(connect_ec);
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, error::idle_timeout);
    // Pongs kept arriving, so liveness held; only the staleness deadline could end it.
    CHECK(c.rtts.size() >= 2);
    CHECK(c.messages.empty());
    CHECK(c.run_ended - connected_at >= cfg.idle_timeout - 20ms);
    CHECK(c.run_ended - connected_at <= cfg.idle_timeout + tolerance);
    // The peer is alive: it got a proper goodbye, not a dropped connection.
    CHECK(vt::wait_until([&] { return server.closes() == 1; }, 1s));
}

TEST_CASE("idle_timeout with is_fresh: messages that are not fresh do not keep a stale feed open")
{
    // The peer keeps sending (acks of our requests, say) but no update: with a rule that
    // says what fresh data is, the feed is found stale although messages keep arriving.
    vt::peer server({.behaviour = vt::peer_behaviour::stream, .stream_period = 20ms});
    auto cfg = quick_config();
    cfg.idle_timeout = 400ms;
    std::string fresh_prefix = "update";
    int judged = 0;
    cfg.is_fresh = [&](std::string_view data, message_type) {
        ++judged;
        if (data == "throw")
            throw std::runtime_error("is_fresh threw");
        return data.substr(0, fresh_prefix.size()) == fresh_prefix;
    };
    error_code connect_ec = error::not_connected;
    steady::time_point connected_at{};
    auto start = [&](client& c) {
        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            connected_at = steady::now();
            if (!connect_ec)
                c.start_run();
        });
    };

    SUBCASE("none fresh: idle_timeout although messages keep arriving")
    {
        client c(cfg);
        start(c);
        c.ioc.run_for(3s);
        REQUIRE_FALSE(connect_ec);
        REQUIRE(c.run_done);
        CHECK_CODE(c.run_ec, error::idle_timeout);
        CHECK(c.messages.size() >= 5);  // every message still delivered
        CHECK(judged >= static_cast<int>(c.messages.size()));
        CHECK(c.run_ended - connected_at >= cfg.idle_timeout - 20ms);
        CHECK(c.run_ended - connected_at <= cfg.idle_timeout + tolerance);
    }
    SUBCASE("the same messages fresh: no verdict")
    {
        fresh_prefix = "stream";
        client c(cfg);
        start(c);
        c.ioc.run_for(1200ms);
        REQUIRE_FALSE(connect_ec);
        CHECK_FALSE(c.run_done);
        CHECK(c.messages.size() >= 20);
        c.s.cancel();
        c.ioc.run_for(1s);
        CHECK_CODE(c.run_ec, asio::error::operation_aborted);
    }
    SUBCASE("a rule that throws ends the connection as any handler does")
    {
        vt::peer echo;
        client c(cfg);
        std::exception_ptr thrown;
        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(echo.url());
            if (connect_ec)
                co_return;
            asio::co_spawn(c.ioc, c.s.run(), [&](std::exception_ptr e, error_code) {
                thrown = e;
                c.run_done = true;
            });
            co_await c.s.send("throw");
        });
        c.ioc.run_for(3s);
        REQUIRE_FALSE(connect_ec);
        REQUIRE(c.run_done);
        REQUIRE(thrown);
        CHECK_THROWS_WITH_AS(std::rethrow_exception(thrown), "is_fresh threw", std::runtime_error);
        CHECK_CODE(c.s.last_disconnect().reason, error::handler_exception);
    }
}

TEST_CASE("message_meta: the connection's number and each message's place in it")
{
    vt::peer server;
    client c;
    std::vector<vigil::message_meta> metas;
    c.s.events().on_message = [&](std::string_view, message_type, const vigil::message_meta& m) {
        metas.push_back(m);
    };
    std::vector<std::uint64_t> ids;
    error_code connect_ec = error::not_connected;
    CHECK(c.s.connection_id() == 0);

    c.spawn([&]() -> asio::awaitable<void> {
        for (int round = 0; round < 2; ++round) {
            connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            ids.push_back(c.s.connection_id());
            c.start_run();
            const auto before = metas.size();
            for (int i = 0; i < 3; ++i)
                co_await c.s.send("m" + std::to_string(i));
            if (!co_await eventually([&] { return metas.size() == before + 3; }, 2s))
                co_return;
            co_await c.s.close();
            if (!co_await eventually([&] { return c.run_done; }, 2s))
                co_return;
            c.run_done = false;
        }
    });
    c.ioc.run_for(8s);

    REQUIRE_FALSE(connect_ec);
    REQUIRE(ids.size() == 2);
    REQUIRE(metas.size() == 6);
    CHECK(ids[0] > 0);
    CHECK(ids[1] > ids[0]);  // a later connection has a larger number
    for (std::size_t i = 0; i < 6; ++i) {
        CAPTURE(i);
        CHECK(metas[i].connection == ids[i / 3]);
        CHECK(metas[i].sequence == i % 3 + 1);  // starts again at 1 on the new connection
    }
    // A two-argument handler still works, and the handler can be called by hand.
    vigil::message_handler plain = [](std::string_view, message_type) {};
    CHECK(static_cast<bool>(plain));
    plain("x", message_type::text);
    vigil::message_handler none = nullptr;
    CHECK_FALSE(static_cast<bool>(none));
}

TEST_CASE("close_timeout: a close that is never answered does not hold the session")
{
    auto cfg = quick_config();
    cfg.ping_interval = 0ms;  // only the close deadline may end this
    cfg.close_timeout = 300ms;
    error_code connect_ec = error::not_connected;
    error_code close_ec;
    steady::time_point close_started{};
    milliseconds close_took{};

    auto exercise = [&](vt::peer& server, client& c, bool echo_first) {
        c.spawn([&, echo_first]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            c.start_run();
            if (echo_first) {
                co_await c.s.send("still reading");
                co_await eventually([&] { return !c.messages.empty(); }, 2s);
            }
            close_started = steady::now();
            close_ec = co_await c.s.close();
            close_took = ms_since(close_started);
        });
        c.ioc.run_for(5s);
    };

    SUBCASE("silent peer")
    {
        vt::peer server({.behaviour = vt::peer_behaviour::silent});
        client c(cfg);
        exercise(server, c, false);
        REQUIRE_FALSE(connect_ec);
        CHECK(c.run_done);
    }
    SUBCASE("peer that reads but ignores close frames")
    {
        vt::peer server({.behaviour = vt::peer_behaviour::ignore_close});
        client c(cfg);
        exercise(server, c, true);
        REQUIRE_FALSE(connect_ec);
        CHECK(c.messages.size() == 1);
        CHECK(vt::wait_until([&] { return server.closes() == 1; }, 1s));
        CHECK(c.run_done);
    }

    CHECK_CODE(close_ec, error::close_timeout);
    CHECK(close_took >= cfg.close_timeout - 20ms);
    CHECK(close_took <= cfg.close_timeout + tolerance);
}

TEST_CASE("cancel() during a close that is never answered ends run() and close() at once")
{
    auto cfg = quick_config();
    cfg.ping_interval = 0ms;
    cfg.close_timeout = 3s;  // far beyond the bound below: only cancel() may end this
    vt::peer server({.behaviour = vt::peer_behaviour::ignore_close});
    client c(cfg);
    error_code connect_ec = error::not_connected;
    error_code close_ec;
    bool close_done = false;
    steady::time_point cancelled_at{}, close_returned{};

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        if (connect_ec)
            co_return;
        c.start_run();
        c.spawn([&]() -> asio::awaitable<void> {
            close_ec = co_await c.s.close();
            close_returned = steady::now();
            close_done = true;
        });
        co_await eventually([&] { return server.closes() == 1; }, 2s);  // our close frame is out
        cancelled_at = steady::now();
        c.s.cancel();
    });
    c.ioc.run_for(2500ms);

    REQUIRE_FALSE(connect_ec);
    REQUIRE(c.run_done);
    REQUIRE(close_done);
    CHECK_CODE(c.run_ec, asio::error::operation_aborted);
    CHECK_CODE(close_ec, asio::error::operation_aborted);
    CHECK(c.run_ended - cancelled_at < tolerance);
    CHECK(close_returned - cancelled_at < tolerance);
    CHECK(c.ioc.stopped());  // nothing left pending
}

TEST_CASE("write_timeout bounds a write without progress, not a long message moving slowly")
{
    // A thin link: the peer takes 128 KiB, then pauses 20 ms (about 6 MB/s; reads of less
    // than loopback's 64 KiB MSS would leave TCP waiting for its window probes instead). A
    // 16 MiB snapshot then takes seconds beyond what the kernel buffers absorb, several times
    // write_timeout, and still moves all the time: that is not a stall. (TCP's window
    // updates come in bursts: the write progresses in steps about 250 ms apart at worst.)
    vt::peer server({.behaviour = vt::peer_behaviour::slow_reading, .stream_period = 20ms, .slow_read_bytes = 128 * 1024});
    auto cfg = quick_config();
    cfg.ping_interval = 0ms;  // pings would queue behind megabytes the peer reads slowly
    cfg.write_timeout = 600ms;
    client c(cfg);
    error_code connect_ec = error::not_connected;
    error_code send_ec = error::not_connected;
    steady::duration took{};

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        if (connect_ec)
            co_return;
        c.start_run();
        const auto started = steady::now();
        send_ec = co_await c.s.send(std::string(16 * 1024 * 1024, 's'), message_type::binary);
        took = steady::now() - started;
        c.s.cancel();
    });
    c.ioc.run_for(20s);

    REQUIRE_FALSE(connect_ec);
    CHECK_CODE(send_ec, error_code{});
    // The rig really was slow: a deadline on the whole write would have fired.
    CHECK(took > 2 * cfg.write_timeout);
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, asio::error::operation_aborted);  // our cancel, not write_timeout
}

TEST_CASE("write_timeout: a peer that stops reading while we write")
{
    vt::peer server({.behaviour = vt::peer_behaviour::stop_reading});
    auto cfg = quick_config();
    cfg.ping_interval = 0ms;  // the unanswered pings would win otherwise
    cfg.write_timeout = 300ms;
    client c(cfg);
    error_code connect_ec = error::not_connected;
    error_code last_send_ec;
    int sends = 0;
    int sent_ok = 0;

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        if (connect_ec)
            co_return;
        c.start_run();
        const std::string chunk(64 * 1024, 'x');
        // The kernel buffers take a few MiB before a write stalls; 4096 chunks is 256 MiB.
        for (; sends < 4096 && !c.run_done; ++sends) {
            last_send_ec = co_await c.s.send(chunk, message_type::binary);
            if (last_send_ec) {
                ++sends;
                break;
            }
            ++sent_ok;
        }
    });
    c.ioc.run_for(8s);

    REQUIRE_FALSE(connect_ec);
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, error::write_timeout);
    CHECK(sent_ok > 0);
    CHECK(sends < 4096);
    CHECK(last_send_ec);
}

TEST_CASE("handshake_timeout: a server that accepts and never answers the upgrade")
{
    auto cfg = quick_config();
    cfg.handshake_timeout = 300ms;
    error_code connect_ec;
    milliseconds took{};

    auto exercise = [&](client& c, const std::string& url) {
        c.spawn([&, url]() -> asio::awaitable<void> {
            auto start = steady::now();
            connect_ec = co_await c.s.connect(url);
            took = ms_since(start);
        });
        c.ioc.run_for(5s);
    };

    SUBCASE("ws://")
    {
        vt::peer server({.behaviour = vt::peer_behaviour::no_upgrade_answer});
        client c(cfg);
        exercise(c, server.url());
        CHECK(server.connections() == 1);
    }
    SUBCASE("wss://, after a good TLS handshake")
    {
        vt::test_pki pki;
        vt::peer server(tls_peer(pki, vt::peer_behaviour::no_upgrade_answer));
        cfg.tls.ca_file = pki.ca_cert;
        client c(cfg);
        exercise(c, server.url("localhost"));
    }

    CHECK_CODE(connect_ec, error::handshake_timeout);
    CHECK_FALSE(vigil::is_permanent(connect_ec));
    CHECK(took >= cfg.handshake_timeout - 20ms);
    CHECK(took <= cfg.handshake_timeout + tolerance);
}

TEST_CASE("tls_handshake_timeout: a TLS server that never speaks")
{
    // The relay accepts TCP but, frozen, forwards nothing: the ClientHello goes unanswered.
    vt::test_pki pki;
    vt::peer server(tls_peer(pki));
    vt::relay link(server.port());
    link.freeze();
    auto cfg = quick_config();
    cfg.tls.ca_file = pki.ca_cert;
    cfg.tls_handshake_timeout = 300ms;
    client c(cfg);
    error_code connect_ec;
    milliseconds took{};

    c.spawn([&]() -> asio::awaitable<void> {
        auto start = steady::now();
        connect_ec = co_await c.s.connect(link.url("wss", "localhost"));
        took = ms_since(start);
    });
    c.ioc.run_for(5s);

    CHECK_CODE(connect_ec, error::tls_handshake_timeout);
    CHECK(took >= cfg.tls_handshake_timeout - 20ms);
    CHECK(took <= cfg.tls_handshake_timeout + tolerance);
}

TEST_CASE("connect_timeout: a listener whose accept queue is full")
{
    // With a backlog of 0 Linux queues one connection; once it is queued and never
    // accepted, further SYNs are dropped and a connect hangs (the first SYN retry is 1 s).
    client c;
    asio::ip::tcp::acceptor full(c.ioc);
    asio::ip::tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), 0);
    full.open(ep.protocol());
    full.bind(ep);
    full.listen(0);
    const auto port = full.local_endpoint().port();

    asio::ip::tcp::socket filler(c.ioc);
    error_code filler_ec = error::not_connected;
    filler.async_connect(full.local_endpoint(), [&](error_code ec) { filler_ec = ec; });
    c.ioc.run_for(1s);
    c.ioc.restart();
    REQUIRE_FALSE(filler_ec);

    auto cfg = quick_config();
    cfg.connect_timeout = 300ms;
    c.s.set_config(cfg);
    error_code connect_ec;
    milliseconds took{};
    c.spawn([&]() -> asio::awaitable<void> {
        auto start = steady::now();
        connect_ec = co_await c.s.connect("ws://127.0.0.1:" + std::to_string(port) + "/");
        took = ms_since(start);
    });
    c.ioc.run_for(5s);

    CHECK_CODE(connect_ec, error::connect_timeout);
    CHECK_FALSE(vigil::is_permanent(connect_ec));
    CHECK(took >= cfg.connect_timeout - 20ms);
    CHECK(took <= cfg.connect_timeout + tolerance);
}

TEST_CASE("TLS verification")
{
    vt::test_pki pki;
    auto cfg = quick_config();
    cfg.tls.ca_file = pki.ca_cert;
    vt::peer_options opts = tls_peer(pki);

    SUBCASE("a self-signed certificate")
    {
        opts.cert_file = pki.self_signed_cert;
        opts.key_file = pki.self_signed_key;
    }
    SUBCASE("a certificate for another host name")
    {
        opts.cert_file = pki.wrong_host_cert;
        opts.key_file = pki.wrong_host_key;
    }
    vt::peer server(opts);

    error_code refused;
    error_code insecure;
    {
        client c(cfg);
        c.spawn([&]() -> asio::awaitable<void> { refused = co_await c.s.connect(server.url("localhost")); });
        c.ioc.run_for(5s);
        CHECK(c.connected == 0);
        CHECK(c.disconnects == 1);
        CHECK_FALSE(c.s.last_disconnect().detail.empty());
    }
    CHECK(refused);
    CHECK(vigil::is_permanent(refused));
    CHECK(refused == vigil::condition::permanent);
    CHECK(vigil::error_name(refused) == "tls_certificate_verify_failed");
    CHECK(server.upgrades() == 0);

    // The same server, with verification explicitly off.
    cfg.tls.insecure_skip_verify = true;
    {
        client c(cfg);
        c.spawn([&]() -> asio::awaitable<void> {
            insecure = co_await c.s.connect(server.url("localhost"));
            if (!insecure)
                co_await c.s.close();
        });
        c.ioc.run_for(5s);
    }
    CHECK_CODE(insecure, error_code{});
    CHECK(server.upgrades() == 1);
}

TEST_CASE("a rejected upgrade carries the HTTP status")
{
    unsigned status = 0;
    SUBCASE("401") { status = 401; }
    SUBCASE("403") { status = 403; }
    SUBCASE("404") { status = 404; }
    SUBCASE("503") { status = 503; }
    CAPTURE(status);

    vt::peer_options opts;
    opts.behaviour = vt::peer_behaviour::reject;
    opts.reject_status = status;
    opts.reject_headers = {{"Retry-After", "1"}};
    vt::peer server(opts);
    client c;
    error_code connect_ec;
    c.spawn([&]() -> asio::awaitable<void> { connect_ec = co_await c.s.connect(server.url()); });
    c.ioc.run_for(5s);

    CHECK(vigil::http_status_of(connect_ec) == status);
    CHECK(c.s.last_disconnect().http_status == status);
    CHECK(vigil::error_name(connect_ec) == "handshake_rejected");
    CHECK(vigil::is_permanent(connect_ec) == (status != 503));
    CHECK(c.connected == 0);
    CHECK_FALSE(c.s.is_open());
}

TEST_CASE("the peer closes with 1008 policy")
{
    vt::peer server({.behaviour = vt::peer_behaviour::close_with});
    client c;
    error_code connect_ec = error::not_connected;
    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        if (!connect_ec)
            c.start_run();
    });
    c.ioc.run_for(5s);

    REQUIRE_FALSE(connect_ec);
    REQUIRE(c.run_done);
    CHECK(vigil::close_code_of(c.run_ec) == 1008);
    CHECK(vigil::error_name(c.run_ec) == "closed_by_peer");
    CHECK_FALSE(vigil::is_permanent(c.run_ec));  // transient, with a floor in the supervisor
    const auto& info = c.s.last_disconnect();
    CHECK(info.close_code == 1008);
    CHECK(info.close_reason == "policy");
    CHECK(c.disconnects == 1);
}

TEST_CASE("a live connection the peer closes with 1001 going away")
{
    vt::peer_options opts;
    opts.close_code = 1001;
    opts.close_reason = "restarting";
    vt::peer server(opts);
    client c;
    error_code connect_ec = error::not_connected;
    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        if (connect_ec)
            co_return;
        c.start_run();
        co_await c.s.send("before");
        co_await eventually([&] { return !c.messages.empty(); }, 2s);
        server.set_behaviour(vt::peer_behaviour::close_with);
    });
    c.ioc.run_for(5s);

    REQUIRE_FALSE(connect_ec);
    REQUIRE(c.run_done);
    CHECK(vigil::close_code_of(c.run_ec) == 1001);
    CHECK_FALSE(vigil::is_permanent(c.run_ec));
    CHECK(c.s.last_disconnect().close_reason == "restarting");
}

TEST_CASE("malformed URLs are refused with the part named")
{
    struct url_case {
        std::string url;
        error expected;
        std::string named;
    };
    const std::vector<url_case> cases = {
        {"http://localhost/", error::unsupported_scheme, "http"},
        {"ftp://localhost:21/", error::unsupported_scheme, "ftp"},
        {"ws:///path", error::invalid_host, ""},
        {"ws://localhost:99999/", error::invalid_port, "99999"},
        {"ws://localhost:0/", error::invalid_port, "0"},
        {"ws://localhost:abc/", error::invalid_port, "abc"},
        {"ws://[::1/", error::invalid_host, "::1"},
        {"not a url", error::invalid_url, ""},
        {"", error::invalid_url, ""},
    };
    for (const auto& k : cases) {
        CAPTURE(k.url);
        client c;
        error_code ec;
        c.spawn([&]() -> asio::awaitable<void> { ec = co_await c.s.connect(k.url); });
        c.ioc.run_for(2s);
        CHECK_CODE(ec, k.expected);
        CHECK(vigil::is_permanent(ec));
        const auto& detail = c.s.last_disconnect().detail;
        CHECK_FALSE(detail.empty());
        if (!k.named.empty())
            CHECK_MESSAGE(detail.find(k.named) != std::string::npos, "detail: " << detail);
        CHECK(c.connected == 0);
    }
}

TEST_CASE("invalid configs are refused by connect with the field named")
{
    vt::peer server;
    struct config_case {
        std::function<void(vigil::session_config&)> spoil;
        std::string field;
    };
    const std::vector<config_case> cases = {
        {[](auto& c) { c.pong_timeout = c.ping_interval; }, "pong_timeout"},
        {[](auto& c) { c.pong_timeout = 0ms; }, "pong_timeout"},
        {[](auto& c) { c.connect_timeout = 0ms; }, "connect_timeout"},
        {[](auto& c) { c.handshake_timeout = -5ms; }, "handshake_timeout"},
        {[](auto& c) { c.close_timeout = 0ms; }, "close_timeout"},
        {[](auto& c) { c.send_queue_limit = 0; }, "send_queue_limit"},
        {[](auto& c) { c.max_message_size = 0; }, "max_message_size"},
        {[](auto& c) { c.idle_timeout = 50ms; }, "idle_timeout"},
    };
    for (const auto& k : cases) {
        CAPTURE(k.field);
        auto cfg = quick_config();
        k.spoil(cfg);
        client c(cfg);
        error_code ec;
        c.spawn([&]() -> asio::awaitable<void> { ec = co_await c.s.connect(server.url()); });
        c.ioc.run_for(2s);
        CHECK_CODE(ec, error::invalid_config);
        CHECK(vigil::is_permanent(ec));
        const auto& detail = c.s.last_disconnect().detail;
        CHECK_MESSAGE(detail.find(k.field) != std::string::npos, "detail: " << detail);
        CHECK(c.connected == 0);
    }
    // Nothing reached the network.
    CHECK(server.connections() == 0);
}

TEST_CASE("cancelling run() ends it promptly and leaves nothing pending")
{
    vt::peer server;
    asio::cancellation_signal signal;  // outlives the client and anything bound to its slot
    client c;
    error_code connect_ec = error::not_connected;
    steady::time_point cancelled_at{};
    std::optional<bool> caller_throws;
    std::optional<bool> next_wait_threw;

    auto connect_then = [&](std::function<void()> start) {
        c.spawn([&, start]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            start();
            co_await eventually([&] { return !c.rtts.empty(); }, 2s);
            cancelled_at = steady::now();
        });
    };

    SUBCASE("with session::cancel()")
    {
        connect_then([&] { c.start_run(); });
        c.spawn([&]() -> asio::awaitable<void> {
            co_await eventually([&] { return cancelled_at != steady::time_point{}; }, 3s);
            c.s.cancel();
        });
    }
    SUBCASE("by terminal cancellation of the awaiting coroutine")
    {
        auto run_it = [&]() -> asio::awaitable<void> {
            c.run_ec = co_await c.s.run();
            c.run_ended = steady::now();
            c.run_done = true;
            // The awaiting coroutine's own settings survive run() (which, on the session's
            // executor, runs inside it): cancelled, its next wait throws.
            caller_throws = co_await asio::this_coro::throw_if_cancelled();
            asio::steady_timer later(co_await asio::this_coro::executor, 10s);
            try {
                co_await later.async_wait(asio::use_awaitable);
                next_wait_threw = false;
            } catch (const boost::system::system_error& e) {
                next_wait_threw = e.code() == asio::error::operation_aborted;
            }
        };
        connect_then([&, run_it] {
            asio::co_spawn(c.ioc, run_it,
                           asio::bind_cancellation_slot(signal.slot(), [](std::exception_ptr e) {
                               if (e)
                                   std::rethrow_exception(e);
                           }));
        });
        c.spawn([&]() -> asio::awaitable<void> {
            co_await eventually([&] { return cancelled_at != steady::time_point{}; }, 3s);
            signal.emit(asio::cancellation_type::terminal);
        });
    }
    SUBCASE("by partial cancellation of the awaiting coroutine")
    {
        auto run_it = [&]() -> asio::awaitable<void> {
            co_await asio::this_coro::reset_cancellation_state(
                asio::enable_partial_cancellation());
            c.run_ec = co_await c.s.run();
            c.run_ended = steady::now();
            c.run_done = true;
        };
        connect_then([&, run_it] {
            asio::co_spawn(c.ioc, run_it,
                           asio::bind_cancellation_slot(signal.slot(), [](std::exception_ptr e) {
                               if (e)
                                   std::rethrow_exception(e);
                           }));
        });
        c.spawn([&]() -> asio::awaitable<void> {
            co_await eventually([&] { return cancelled_at != steady::time_point{}; }, 3s);
            signal.emit(asio::cancellation_type::partial);
        });
    }

    // The io_context runs out of work by itself once run() is over: no timer of the
    // session, no read and no write is left behind.
    auto start = steady::now();
    c.ioc.run_for(5s);
    auto took = ms_since(start);

    REQUIRE_FALSE(connect_ec);
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, asio::error::operation_aborted);
    CHECK(c.run_ended - cancelled_at < tolerance);
    CHECK(c.ioc.stopped());
    CHECK(took < 3s);
    CHECK_FALSE(c.s.is_open());
    CHECK(c.disconnects == 1);
    if (caller_throws) {
        CHECK(*caller_throws);
        REQUIRE(next_wait_threw.has_value());
        CHECK(*next_wait_threw);
    }
}

TEST_CASE("cancelling connect() ends it promptly")
{
    vt::peer server({.behaviour = vt::peer_behaviour::no_upgrade_answer});
    auto cfg = quick_config();
    cfg.handshake_timeout = 5s;
    client c(cfg);
    error_code connect_ec;
    bool asked = false;
    steady::time_point cancelled_at{};
    steady::time_point ended{};

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        ended = steady::now();
    });
    c.spawn([&]() -> asio::awaitable<void> {
        // The upgrade request is out and read: connect() waits for the answer.
        asked = co_await eventually([&] { return server.requests() == 1; }, 2s);
        cancelled_at = steady::now();
        c.s.cancel();
    });
    auto start = steady::now();
    c.ioc.run_for(8s);

    CHECK(asked);
    CHECK_CODE(connect_ec, asio::error::operation_aborted);
    CHECK(ended - cancelled_at < tolerance);
    CHECK(c.ioc.stopped());
    CHECK(ms_since(start) < 3s);
}

TEST_CASE("sending")
{
    SUBCASE("before connect: not_connected, nothing queued")
    {
        client c;
        error_code ec;
        c.spawn([&]() -> asio::awaitable<void> { ec = co_await c.s.send("too early"); });
        c.ioc.run_for(2s);
        CHECK_CODE(ec, error::not_connected);
    }

    SUBCASE("the queue is bounded by send_queue_limit")
    {
        vt::peer server;
        auto cfg = quick_config();
        cfg.send_queue_limit = 4;
        client c(cfg);
        constexpr int count = 50;
        error_code connect_ec = error::not_connected;
        int completed = 0;
        int full = 0;
        int ok = 0;
        bool echoed = false;

        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            c.start_run();
            // All issued from one handler: the writer gets no chance to drain in between.
            for (int i = 0; i < count; ++i)
                c.s.async_send(std::to_string(i), message_type::text, [&](error_code ec) {
                    ++completed;
                    if (ec == error::send_queue_full)
                        ++full;
                    else if (!ec)
                        ++ok;
                });
            co_await eventually([&] { return completed == count; }, 2s);
            echoed = co_await eventually([&] { return c.messages.size() >= std::size_t(ok); }, 2s);
            co_await c.s.close();
        });
        c.ioc.run_for(6s);

        REQUIRE_FALSE(connect_ec);
        CHECK(completed == count);
        CHECK(ok + full == count);
        // `limit` waiting, plus at most the one the writer already took.
        CHECK(ok >= static_cast<int>(cfg.send_queue_limit));
        CHECK(ok <= static_cast<int>(cfg.send_queue_limit) + 1);
        CHECK(echoed);
        CHECK(c.messages.size() == std::size_t(ok));
    }

    SUBCASE("messages queued when the connection dies complete with its reason")
    {
        vt::peer server({.behaviour = vt::peer_behaviour::stop_reading});
        auto cfg = quick_config();
        cfg.ping_interval = 0ms;
        cfg.write_timeout = 300ms;
        cfg.send_queue_limit = 64;
        client c(cfg);
        constexpr int count = 48;
        error_code connect_ec = error::not_connected;
        int completed = 0;
        int ok = 0;
        int with_run_code = 0;
        std::vector<error_code> codes;

        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            c.start_run();
            // 48 x 256 KiB = 12 MiB, far beyond what the socket buffers absorb.
            for (int i = 0; i < count; ++i)
                c.s.async_send(std::string(256 * 1024, 'q'), message_type::binary,
                               [&](error_code ec) {
                                   ++completed;
                                   codes.push_back(ec);
                                   if (!ec)
                                       ++ok;
                               });
        });
        c.ioc.run_for(8s);

        REQUIRE_FALSE(connect_ec);
        REQUIRE(c.run_done);
        CHECK_CODE(c.run_ec, error::write_timeout);
        CHECK(completed == count);
        for (const auto& ec : codes)
            with_run_code += ec == c.run_ec ? 1 : 0;
        CHECK(ok < count);
        CHECK(with_run_code >= 1);
        // Each either went out or failed with the reason the session ended.
        CHECK(ok + with_run_code == count);
    }

    SUBCASE("after the session ended: not_connected")
    {
        vt::peer server({.behaviour = vt::peer_behaviour::close_with});
        client c;
        error_code ec;
        c.spawn([&]() -> asio::awaitable<void> {
            auto connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            c.start_run();
            co_await eventually([&] { return c.run_done; }, 2s);
            ec = co_await c.s.send("too late");
        });
        c.ioc.run_for(5s);
        REQUIRE(c.run_done);
        CHECK_CODE(ec, error::not_connected);
    }
}

TEST_CASE("a session connects again after run() ended")
{
    vt::peer server;
    client c;
    error_code first = error::not_connected;
    error_code second = error::not_connected;
    error_code first_run = error::not_connected;
    c.spawn([&]() -> asio::awaitable<void> {
        first = co_await c.s.connect(server.url());
        if (first)
            co_return;
        c.start_run();
        co_await eventually([&] { return !c.rtts.empty(); }, 2s);
        server.reset_all();
        co_await eventually([&] { return c.run_done; }, 2s);
        first_run = c.run_ec;
        c.run_done = false;
        second = co_await c.s.connect(server.url());
        if (second)
            co_return;
        c.start_run();
        co_await c.s.send("again");
        co_await eventually([&] { return !c.messages.empty(); }, 2s);
        co_await c.s.close();
    });
    c.ioc.run_for(6s);

    REQUIRE_FALSE(first);
    CHECK(first_run);
    CHECK_FALSE(vigil::is_permanent(first_run));
    CHECK_CODE(second, error_code{});
    CHECK(c.messages.size() == 1);
    CHECK(c.connected == 2);
    CHECK(server.upgrades() == 2);
}

}  // TEST_SUITE
