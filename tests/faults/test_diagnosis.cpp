// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// Whose fault it was (vigil::diagnosis), with real faults on both sides of a connection
// between two network namespaces: the path goes dark (iptables drops everything), the peer's
// process is stopped while its kernel still answers TCP (SIGSTOP), or our own event loop is
// blocked (a handler that sleeps, or our process stopped) while the peer answers normally.
// The first two must be told apart; the third must never end a healthy connection.

#include "faults.hpp"

#include <doctest/doctest.h>

#include <signal.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace vf = vigil::faults;
using side = vf::net_pair::side;
using json = nlohmann::json;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

// Timer and scheduling latency on a loaded two-core machine.
constexpr double tolerance_ms = 500;

struct heartbeat {
    int ping_ms;
    int pong_ms;
};

// The side under test pings every second and waits half a second for the pong; the other
// side's heartbeat is slower when it must outlast a stall of ours.
constexpr heartbeat quick{1000, 500};
constexpr heartbeat slow{4000, 1000};

std::vector<std::string> server_argv(const vf::net_pair& net, heartbeat hb, std::vector<std::string> extra = {})
{
    std::vector<std::string> argv = {vf::fault_peer_path(),     "server", "--bind", vf::net_pair::server_addr,
                                     "--port",                  "0",      "--ping-interval",
                                     std::to_string(hb.ping_ms), "--pong-timeout", std::to_string(hb.pong_ms)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return net.exec_in(side::server, argv);
}

std::vector<std::string> client_argv(const vf::net_pair& net, int port, heartbeat hb,
                                     std::vector<std::string> extra = {})
{
    std::vector<std::string> argv = {vf::fault_peer_path(),
                                     "client",
                                     "--url",
                                     "ws://" + std::string(vf::net_pair::server_addr) + ":" + std::to_string(port) + "/",
                                     "--ping-interval",
                                     std::to_string(hb.ping_ms),
                                     "--pong-timeout",
                                     std::to_string(hb.pong_ms),
                                     "--connect-timeout",
                                     "1000",
                                     "--handshake-timeout",
                                     "1000",
                                     "--max-delay",
                                     "500"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return net.exec_in(side::client, argv);
}

double at(const json& e)
{
    return e.at("mono_ms").get<double>();
}

// A server and a client, connected: the server's id 1 is the client.
struct rig {
    rig(heartbeat server_hb, heartbeat client_hb, std::vector<std::string> server_extra = {},
        std::vector<std::string> client_extra = {})
        : server(server_argv(net, server_hb, std::move(server_extra)), "server (in " + net.ns(side::server) + ")")
    {
        auto listening = server.await("listening", 5s);
        REQUIRE_MESSAGE(listening, server.transcript());
        client.emplace(client_argv(net, listening->at("port").get<int>(), client_hb, std::move(client_extra)),
                       "client (in " + net.ns(side::client) + ")");
        REQUIRE_MESSAGE(client->await("up", 5s), both());
        REQUIRE_MESSAGE(server.await("connected", 5s, "id", 1), both());
    }
    std::string both() { return server.transcript() + client->transcript(); }

    vf::net_pair net;
    vf::peer_process server;
    std::optional<vf::peer_process> client;
};

}  // namespace

TEST_SUITE("diagnosis")
{
    TEST_CASE("a path that goes dark is the network's fault, on both sides, and the client is warned first")
    {
        rig r(quick, quick);
        auto& client = *r.client;
        vf::pass_time(300ms, {&r.server, &client});
        const double t_drop = vf::mono_ms();
        r.net.drop_all(side::server);

        auto lost = client.await("disconnected", 5s);
        REQUIRE_MESSAGE(lost, r.both());
        CHECK_MESSAGE(lost->at("reason") == "pong_timeout", r.both());
        CHECK_MESSAGE(lost->value("diagnosis", "") == "network", r.both());
        // TCP retransmitted the ping (one RTO, 200 ms at least) before pong_timeout ran out.
        auto suspect = client.await("suspect", 0ms);
        REQUIRE_MESSAGE(suspect, r.both());
        CHECK(suspect->at("diagnosis") == "network");
        CHECK(at(*suspect) < at(*lost));
        MESSAGE("client: suspect " << at(*suspect) - t_drop << " ms after the drop, verdict " << at(*lost) - t_drop
                                   << " ms (" << lost->at("detail") << ")");

        auto evicted = r.server.await("disconnected", 5s, "id", 1);
        REQUIRE_MESSAGE(evicted, r.both());
        CHECK(evicted->at("reason") == "pong_timeout");
        CHECK_MESSAGE(evicted->value("diagnosis", "") == "network", r.both());
    }

    TEST_CASE("end_on_suspect: the first unacknowledged retransmission ends the connection, before pong_timeout")
    {
        // A longer pong_timeout than elsewhere, so that "sooner" is plain: TCP's first
        // retransmission timeout on a fresh connection is 200 ms plus the RTT's variance.
        constexpr heartbeat patient{2000, 1500};
        rig r(quick, patient, {}, {"--end-on-suspect", "1"});
        auto& client = *r.client;
        vf::pass_time(300ms, {&r.server, &client});
        r.net.drop_all(side::server);

        auto lost = client.await("disconnected", 5s);
        REQUIRE_MESSAGE(lost, r.both());
        CHECK(lost->at("reason") == "pong_timeout");
        CHECK(lost->value("diagnosis", "") == "network");
        const double silent = lost->at("silent_ms").get<double>();
        MESSAGE("silent for " << silent << " ms when the path was declared dead (without end_on_suspect: "
                              << patient.ping_ms + patient.pong_ms << " ms)");
        // interval + one RTO (at least 200 ms) + one look (150 ms) + the grid: well before the
        // pong deadline.
        CHECK(silent >= patient.ping_ms + 200 - 10);
        CHECK(silent <= patient.ping_ms + patient.pong_ms - 500);
    }

    TEST_CASE("a peer process stopped while its kernel answers TCP is peer_unresponsive")
    {
        bool stop_server = true;
        SUBCASE("the server stopped: the client's verdict") { stop_server = true; }
        SUBCASE("the client stopped: the server's verdict") { stop_server = false; }

        // The side that judges pings quickly; the stopped one would not judge anyway.
        rig r(stop_server ? slow : quick, stop_server ? quick : slow);
        auto& client = *r.client;
        vf::pass_time(300ms, {&r.server, &client});
        auto& stopped = stop_server ? r.server : client;
        auto& judge = stop_server ? client : r.server;
        stopped.signal(SIGSTOP);

        auto verdict = stop_server ? judge.await("disconnected", 5s) : judge.await("disconnected", 5s, "id", 1);
        REQUIRE_MESSAGE(verdict, r.both());
        CHECK(verdict->at("reason") == "pong_timeout");
        CHECK_MESSAGE(verdict->value("diagnosis", "") == "peer_unresponsive", r.both());
        CHECK(judge.all("suspect").empty());
        MESSAGE((stop_server ? "client" : "server") << ": " << verdict->at("detail"));
        stopped.signal(SIGCONT);
    }

    TEST_CASE("our own loop blocked while the peer answers: no verdict, a stall with its lateness")
    {
        bool on_server = false;
        bool by_signal = false;
        SUBCASE("the client's handler blocks") { on_server = false; by_signal = false; }
        SUBCASE("the client process is stopped") { on_server = false; by_signal = true; }
        SUBCASE("the server's handler blocks") { on_server = true; by_signal = false; }
        SUBCASE("the server process is stopped") { on_server = true; by_signal = true; }

        // Blocked for 2 s: longer than ping_interval + pong_timeout of the blocked side
        // (1.5 s), shorter than the other side's heartbeat (4 s + 1 s), which keeps answering.
        constexpr int block_ms = 2000;
        std::vector<std::string> block = {"--block-at", "1500", "--block-for", std::to_string(block_ms)};
        rig r(on_server ? quick : slow, on_server ? slow : quick, on_server && !by_signal ? block : std::vector<std::string>{},
              !on_server && !by_signal ? block : std::vector<std::string>{});
        auto& client = *r.client;
        auto& blocked = on_server ? r.server : client;
        double t_end = 0;
        if (by_signal) {
            vf::pass_time(500ms, {&r.server, &client});
            blocked.signal(SIGSTOP);
            vf::pass_time(milliseconds(block_ms), {&r.server, &client});
            blocked.signal(SIGCONT);
            t_end = vf::mono_ms();
        } else {
            auto unblocked = blocked.await("unblocked", 6s);
            REQUIRE_MESSAGE(unblocked, r.both());
            t_end = at(*unblocked);
        }

        auto stall = blocked.await("stall", 3s);
        REQUIRE_MESSAGE(stall, r.both());
        const auto late = stall->at("late_ms").get<double>();
        MESSAGE((on_server ? "server" : "client") << (by_signal ? " stopped" : " blocked") << " for " << block_ms
                                                  << " ms: stall reported, " << late << " ms late");
        // The first wake-up due in the block comes at most ping_interval into it.
        CHECK(late >= block_ms - quick.ping_ms - tolerance_ms);
        CHECK(late <= block_ms + tolerance_ms);

        // Another heartbeat round of the blocked side after it resumed: still nothing ends.
        vf::pass_time(milliseconds(quick.ping_ms + quick.pong_ms + 500), {&r.server, &client});
        CHECK_MESSAGE(client.all("disconnected").empty(), r.both());
        CHECK_MESSAGE(r.server.all("disconnected").empty(), r.both());
        CHECK(vf::mono_ms() - t_end >= quick.ping_ms + quick.pong_ms);
    }
}
