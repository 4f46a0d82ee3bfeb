// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// Peers that break the protocol and then keep their socket open. vigil answers a violation
// with a close frame (1002, 1009 ...) and then waits for the peer to close TCP; a peer that
// never does must not hold the connection beyond close_timeout, whatever the heartbeat
// settings, and the connection must end with the violation as its reason (not pong_timeout,
// not close_timeout). Both sides: a vigil client against a rogue server, a vigil server
// against a rogue client. And a garbage answer to the upgrade is named for what it is.

#include <vigil/server.hpp>
#include <vigil/session.hpp>

#include <support/one_thread.hpp>
#include <support/peer.hpp>
#include <support/raw_client.hpp>
#include <support/server_rig.hpp>
#include <support/testing.hpp>
#include <support/wait.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/websocket/error.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <exception>
#include <string>

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
namespace beast_ws = boost::beast::websocket;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;

using vt::describe;
using vt::ms_between;
using vt::tolerance;

// A server frame (unmasked) whose 64-bit length field claims (1 << 63) | 5 bytes, with the
// 5 bytes that follow: the message is far beyond any max_message_size.
std::string absurd_length_frame()
{
    std::string f = "\x82\x7f";
    f += '\x80';
    f += std::string(6, '\0');
    f += '\x05';
    return f + "hello";
}

// A server text frame with RSV3 set and no extension negotiated.
std::string rsv3_server_frame()
{
    return "\x91\x05hello";
}

struct violation {
    const char* what;
    std::string bytes;
    error_code expected;
};

struct heartbeat_setting {
    const char* what;
    milliseconds ping_interval;
    milliseconds pong_timeout;
};

// Off (only close_timeout can end it) and on with a pong_timeout shorter than close_timeout
// (the pong verdict must not replace the violation as the reason).
const heartbeat_setting heartbeat_settings[] = {
    {"heartbeat off", 0ms, 80ms},
    {"heartbeat on, pong_timeout < close_timeout", 100ms, 80ms},
};

struct client_outcome {
    error_code connect_ec = error::not_connected;
    error_code run_ec = error::not_connected;
    bool run_done = false;
    steady::time_point connected_at{};
    steady::time_point run_ended{};
    vigil::disconnect_info last;
};

client_outcome run_client_against(const std::string& url, vigil::session_config cfg)
{
    asio::io_context ioc{vt::concurrency_hint()};
    vigil::session s(ioc.get_executor(), std::move(cfg));
    client_outcome out;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            out.connect_ec = co_await s.connect(url);
            if (out.connect_ec)
                co_return;
            out.connected_at = steady::now();
            out.run_ec = co_await s.run();
            out.run_ended = steady::now();
            out.run_done = true;
        },
        [](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
        });
    // Bounded: a connection held by the rogue peer runs into this and fails the case.
    ioc.run_for(5s);
    out.last = s.last_disconnect();
    return out;
}

}  // namespace

TEST_SUITE("protocol")
{

TEST_CASE("a server that breaks the protocol and keeps its socket open: run() ends within close_timeout with the violation")
{
    const violation violations[] = {
        {"a frame header claiming 2^63 + 5 bytes", absurd_length_frame(), beast_ws::error::message_too_big},
        {"a text frame with RSV3 set", rsv3_server_frame(), beast_ws::error::bad_reserved_bits},
    };
    for (const auto& v : violations) {
        for (const auto& hb : heartbeat_settings) {
            CAPTURE(v.what);
            CAPTURE(hb.what);
            vt::peer server({.behaviour = vt::peer_behaviour::send_raw, .raw_bytes = v.bytes});
            vigil::session_config cfg;
            cfg.ping_interval = hb.ping_interval;
            cfg.pong_timeout = hb.pong_timeout;
            cfg.close_timeout = 300ms;
            const auto out = run_client_against(server.url(), cfg);

            REQUIRE_MESSAGE(!out.connect_ec, describe(out.connect_ec));
            REQUIRE(out.run_done);
            CHECK_MESSAGE(out.run_ec == v.expected, "got " << describe(out.run_ec));
            CHECK(out.last.reason == out.run_ec);
            // The violation arrives right after the upgrade; then only our close frame's
            // unanswered teardown is left, which close_timeout cuts.
            CHECK(ms_between(out.connected_at, out.run_ended) <= cfg.close_timeout + tolerance);
            CHECK(server.upgrades() == 1);
        }
    }
}

TEST_CASE("a garbage answer to the upgrade request is named for what is wrong with it")
{
    vt::peer server({.behaviour = vt::peer_behaviour::raw_upgrade_answer, .raw_bytes = "garbage\r\n\r\n"});
    vigil::session_config cfg;
    cfg.handshake_timeout = 2s;
    const auto start = steady::now();
    const auto out = run_client_against(server.url(), cfg);
    const auto took = vt::ms_since(start);

    CHECK_MESSAGE(out.connect_ec == boost::beast::http::error::bad_version, describe(out.connect_ec));
    CHECK(vigil::error_name(out.connect_ec) == "http_bad_version");
    CHECK(out.last.reason == out.connect_ec);
    CHECK_FALSE(out.last.detail.empty());
    // Refused as soon as the bytes arrive, not at handshake_timeout.
    CHECK(took < cfg.handshake_timeout / 2);
}

TEST_CASE("a client that breaks the protocol and keeps its socket open: the server ends it within close_timeout with the violation")
{
    for (const auto& hb : heartbeat_settings) {
        CAPTURE(hb.what);
        auto cfg = vt::quick_server();
        cfg.session.ping_interval = hb.ping_interval;
        cfg.session.pong_timeout = hb.pong_timeout;
        cfg.session.close_timeout = 300ms;
        vt::server_rig rig(cfg);
        REQUIRE(!rig.start());

        vt::raw_client raw(rig.ioc.get_executor());
        error_code up_ec = error::not_connected;
        error_code close_ec = error::not_connected;
        vt::raw_frame reply;
        steady::time_point violated_at{};
        bool ended = false;
        rig.spawn([&]() -> asio::awaitable<void> {
            up_ec = co_await raw.connect(rig.srv.port());
            if (!up_ec)
                up_ec = co_await raw.upgrade("/");
            if (up_ec)
                co_return;
            violated_at = steady::now();
            co_await raw.write(vt::raw_client::frame(vt::opcode::text, "rsv", {.rsv = 0x4}));
            // Read the server's close frame (skipping its pings), then neither answer it nor
            // close: only the server's close_timeout can end the connection now.
            for (;;) {
                close_ec = co_await raw.read_frame(reply, 2s);
                if (close_ec || (reply.op != vt::opcode::ping && reply.op != vt::opcode::pong))
                    break;
            }
            ended = co_await vt::eventually([&] { return rig.ended_for(raw.local_name()) != nullptr; }, 3s);
            rig.srv.stop();
        });
        rig.ioc.run_for(6s);

        REQUIRE_MESSAGE(!up_ec, describe(up_ec));
        REQUIRE_MESSAGE(!close_ec, describe(close_ec));
        CHECK(reply.op == vt::opcode::close);
        CHECK(reply.close_code() == 1002);
        REQUIRE(ended);
        const auto* rec = rig.ended_for(raw.local_name());
        REQUIRE(rec != nullptr);
        CHECK_MESSAGE(rec->info.reason == beast_ws::error::bad_reserved_bits, "got " << describe(rec->info.reason));
        CHECK(ms_between(violated_at, rec->at) <= cfg.session.close_timeout + tolerance);
        CHECK(rig.run_done);
    }
}

}  // TEST_SUITE("protocol")
