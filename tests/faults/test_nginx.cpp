// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// A real reverse proxy between vigil client and vigil server: nginx, started by the test on
// 127.0.0.1 with a generated configuration (WebSocket upgrade headers, proxy_read_timeout).
// nginx cuts a connection on which nothing came from upstream for proxy_read_timeout, and it
// relays ping and pong frames as data without answering them itself: so a heartbeat both
// keeps a connection through it alive and still finds an upstream that froze behind it.

#include "faults.hpp"

#include <support/relay.hpp>

#include <doctest/doctest.h>

#include <signal.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace vf = vigil::faults;
using json = nlohmann::json;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

constexpr double tolerance_ms = 500;

double at(const json& e)
{
    return e.at("mono_ms").get<double>();
}

std::vector<std::string> upstream_argv(const char* ping_interval)
{
    return {vf::fault_peer_path(), "server", "--bind", "127.0.0.1", "--port", "0", "--ping-interval",
            ping_interval, "--pong-timeout", "500"};
}

std::vector<std::string> client_argv(const std::string& url, const char* ping_interval, const char* pong_timeout)
{
    return {vf::fault_peer_path(), "client",          "--url",         url,    "--ping-interval",
            ping_interval,          "--pong-timeout",  pong_timeout,  "--connect-timeout", "1000",
            "--handshake-timeout",  "1000",            "--max-delay", "500"};
}

}  // namespace

TEST_SUITE("nginx")
{
    TEST_CASE("nginx cuts an idle connection at proxy_read_timeout; a heartbeat keeps another one open")
    {
        // The upstream never pings, so that only the clients decide whether anything flows.
        vf::peer_process upstream(upstream_argv("0"), "upstream");
        auto listening = upstream.await("listening", 5s);
        REQUIRE_MESSAGE(listening, upstream.transcript());
        vf::nginx_proxy nginx({{"/short/", listening->at("port").get<std::uint16_t>(), 2s}});

        vf::peer_process idle(client_argv(nginx.url("/short/idle"), "0", "500"), "client without heartbeat");
        vf::peer_process pinging(client_argv(nginx.url("/short/pinging"), "500", "250"),
                                 "client pinging every 0.5 s");
        auto all = [&] {
            return upstream.transcript() + idle.transcript() + pinging.transcript() + "---- nginx error.log ----\n" +
                   nginx.error_log();
        };
        auto pinging_up = pinging.await("up", 5s);
        REQUIRE_MESSAGE(pinging_up, all());
        REQUIRE_MESSAGE(idle.await("up", 5s), all());

        vf::pass_time(milliseconds(static_cast<long>(at(*pinging_up) + 10000 - vf::mono_ms())),
                      {&upstream, &idle, &pinging});

        // The pinging client: one connection, ten seconds, not one disconnect.
        CHECK_MESSAGE(pinging.all("disconnected").empty(), all());
        CHECK(pinging.all("up").size() == 1);
        const auto pongs = pinging.all("pong").size();
        MESSAGE("pinging client: " << pongs << " pongs in 10 s, " << pinging.all("disconnected").size()
                                   << " disconnects");
        CHECK(pongs >= 15);

        // The idle client: cut about 2 s after each connect, reported as transient, back up.
        std::optional<json> up;
        std::vector<double> lifetimes;
        std::string reasons;
        for (const auto& e : idle.proc().events()) {
            const auto name = e.value("event", "");
            if (name == "up") {
                up = e;
            } else if (name == "disconnected" && up) {
                lifetimes.push_back(at(e) - at(*up));
                reasons += e.at("reason").get<std::string>() + " ";
                CHECK_MESSAGE(e.at("transient") == true, e.dump());
                CHECK(e.at("reason") != "operation_aborted");
                up.reset();
            }
        }
        std::string shown;
        for (double l : lifetimes)
            shown += std::to_string(static_cast<long>(l)) + " ";
        MESSAGE("idle client: " << lifetimes.size() << " connections cut by nginx after (ms) " << shown
                                << "with reasons " << reasons);
        CHECK_MESSAGE(lifetimes.size() >= 3, all());
        for (double l : lifetimes) {
            // nginx re-arms timers lazily (by up to 300 ms), so the cut may come a little early.
            CHECK(l >= 2000 - 300);
            CHECK(l <= 2000 + tolerance_ms);
        }
        // Each cut was followed by a retry and a new connection.
        CHECK(idle.all("retry").size() >= lifetimes.size());
        CHECK(idle.all("up").size() >= lifetimes.size());
        CHECK(idle.all("gave_up").empty());
    }

    TEST_CASE("an upstream frozen behind nginx: the client reports pong_timeout and reconnects when it thaws")
    {
        bool use_relay = false;
        SUBCASE("upstream process stopped (SIGSTOP)") { use_relay = false; }
        SUBCASE("relay between nginx and upstream frozen") { use_relay = true; }

        vf::peer_process upstream(upstream_argv("1000"), "upstream");
        auto listening = upstream.await("listening", 5s);
        REQUIRE_MESSAGE(listening, upstream.transcript());
        const auto upstream_port = listening->at("port").get<std::uint16_t>();
        std::optional<vigil::test::relay> relay;
        if (use_relay)
            relay.emplace(upstream_port);
        // nginx's own timeout is far away: only the heartbeat can find the frozen upstream.
        vf::nginx_proxy nginx({{"/long/", relay ? relay->port() : upstream_port, 60s}});

        vf::peer_process client(client_argv(nginx.url("/long/"), "1000", "500"), "client");
        auto all = [&] {
            return upstream.transcript() + client.transcript() + "---- nginx error.log ----\n" + nginx.error_log();
        };
        REQUIRE_MESSAGE(client.await("up", 5s), all());
        // Heartbeats (the upstream's pings, whichever side is idle first) pass through nginx
        // while everything is healthy.
        vf::pass_time(1500ms, {&upstream, &client});
        REQUIRE_MESSAGE(client.all("disconnected").empty(), all());

        const double t_freeze = vf::mono_ms();
        if (relay)
            relay->freeze();
        else
            upstream.signal(SIGSTOP);

        auto lost = client.await("disconnected", 5s);
        REQUIRE_MESSAGE(lost, all());
        const double latency = at(*lost) - t_freeze;
        MESSAGE("client behind nginx, " << std::string(relay ? "relay frozen" : "upstream stopped") << ": "
                                        << lost->at("reason") << " " << latency << " ms after the freeze (silent_ms "
                                        << lost->at("silent_ms") << ")");
        CHECK_MESSAGE(lost->at("reason") == "pong_timeout", all());
        CHECK(latency <= 1000 + 500 + tolerance_ms);

        if (relay) {
            // The upstream pings nginx's side of the connection, which went silent too.
            auto evicted = upstream.await("disconnected", 5s, "id", 1);
            REQUIRE_MESSAGE(evicted, all());
            CHECK(evicted->at("reason") == "pong_timeout");
            CHECK(at(*evicted) - t_freeze <= 1000 + 500 + tolerance_ms);
        }

        // Attempts while frozen reach nginx but get no upgrade answer: each must end at its
        // handshake deadline, as a transient failure.
        REQUIRE_MESSAGE(client.await("retry", 4s, "attempt", 2), all());
        auto retries = client.all("retry");
        std::string reasons;
        for (std::size_t i = 0; i < retries.size(); ++i) {
            reasons += retries[i].at("reason").get<std::string>() + " ";
            CHECK_MESSAGE(retries[i].at("reason") == (i == 0 ? "pong_timeout" : "handshake_timeout"), all());
        }
        CHECK(client.all("gave_up").empty());

        const double t_thaw = vf::mono_ms();
        if (relay)
            relay->thaw();
        else
            upstream.signal(SIGCONT);
        auto up = client.await("up", 6s, "epoch", 2);
        REQUIRE_MESSAGE(up, all());
        MESSAGE("reconnected " << at(*up) - t_thaw << " ms after the thaw; retries while frozen: " << reasons);
    }
}
