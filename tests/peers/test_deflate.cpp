// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// permessage-deflate (RFC 7692) against Node's `ws` and Python's `websockets`, run as
// processes (deflate_peer.js, deflate_peer.py): that compression is really agreed on both
// sides, that messages of every size, type and fragmentation round-trip exactly, that one
// side without it falls back to none, and that a compression bomb ends the connection with
// 1009 while memory stays bounded. Suites "node" and "python"; main() is in test_peers.cpp.

#include <doctest/doctest.h>

#include <vigil/server.hpp>
#include <vigil/session.hpp>

#include <support/process.hpp>
#include <support/server_rig.hpp>
#include <support/testing.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/websocket/error.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
using namespace std::chrono_literals;
using json = nlohmann::json;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;
using vigil::message_type;
using vt::eventually;

constexpr milliseconds startup = 15s;

enum class peer_kind { node, python };

std::vector<std::string> peer_command(peer_kind k, std::vector<std::string> args)
{
    auto dir = vt::peers_dir();
    REQUIRE_MESSAGE(dir.has_value(), "VIGIL_PEERS_DIR must name tests/peers");
    std::vector<std::string> argv;
    if (k == peer_kind::node) {
        auto node = vt::find_node();
        REQUIRE_MESSAGE(node.has_value(), "node not found in PATH");
        argv = {*node, *dir + "/deflate_peer.js"};
    } else {
        argv = {vt::system_python, *dir + "/deflate_peer.py"};
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

std::string url_of(std::uint16_t port)
{
    std::string url = "ws://127.0.0.1:";
    url += std::to_string(port);
    url += "/";
    return url;
}

// The resident set of this process, from /proc: what the server really holds.
std::size_t rss_bytes()
{
    std::ifstream in("/proc/self/status");
    std::string key;
    while (in >> key) {
        if (key == "VmRSS:") {
            std::size_t kib = 0;
            in >> kib;
            return kib * 1024;
        }
        in.ignore(4096, '\n');
    }
    return 0;
}

vigil::session_config quick_client(bool deflate)
{
    vigil::session_config cfg;
    cfg.ping_interval = 1s;
    cfg.pong_timeout = 800ms;
    cfg.connect_timeout = 3s;
    cfg.handshake_timeout = 3s;
    cfg.close_timeout = 1s;
    cfg.deflate.enabled = deflate;
    return cfg;
}

// The same kind of payload the peers send: JSON-like, so that it compresses.
std::string payload(std::size_t size, char salt)
{
    std::string s;
    for (int i = 0; s.size() < size; ++i)
        s += R"({"type":"trade","symbol":"BTC-USD","price":)" + std::to_string(40000 + i % 977) + R"(,"salt":")" +
             salt + "\"}";
    s.resize(size);
    return s;
}

// The support's io_context holder and spawn, under the name this file's rigs use.
struct io_base : vt::rig_io {
    template <class F>
    void spawn(F f)
    {
        vt::spawn_on(ioc, std::move(f));
    }
};

// vigil's client against a third-party server: every size as text and binary, echoed.
void client_round_trips(peer_kind kind, bool peer_deflate, bool our_deflate)
{
    std::vector<std::string> args = {"server"};
    if (!peer_deflate)
        args.push_back("--no-deflate");
    vt::child_process server(peer_command(kind, args));
    auto listening = server.wait_for("listening", startup);
    REQUIRE_MESSAGE(listening.has_value(), server.transcript());
    const auto port = (*listening)["port"].get<std::uint16_t>();

    io_base io;
    vigil::session s(io.ioc.get_executor(), quick_client(our_deflate));
    std::vector<std::pair<std::string, message_type>> got;
    s.events().on_message = [&](std::string_view data, message_type type) { got.emplace_back(std::string(data), type); };
    // Below the threshold (64), above it, several frames (a write piece is 64 KiB).
    const std::vector<std::size_t> sizes = {10, 100, 5000, 200000};
    std::vector<std::pair<std::string, message_type>> sent;
    for (auto n : sizes) {
        sent.emplace_back(payload(n, 't'), message_type::text);
        sent.emplace_back(payload(n, 'b'), message_type::binary);
    }
    error_code connect_ec = error::not_connected;
    error_code run_ec = error::not_connected;
    error_code close_ec = error::not_connected;
    bool compressed = false;
    bool all_back = false;
    io.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await s.connect(url_of(port));
        if (connect_ec)
            co_return;
        compressed = s.compressed();
        io.spawn([&]() -> asio::awaitable<void> { run_ec = co_await s.run(); });
        for (const auto& [data, type] : sent)
            co_await s.send(data, type);
        all_back = co_await eventually([&] { return got.size() >= sent.size(); }, 10s);
        close_ec = co_await s.close();
    });
    io.ioc.run_for(20s);

    INFO("server:\n", server.transcript());
    CHECK_CODE(connect_ec, error_code{});
    CHECK(compressed == (peer_deflate && our_deflate));
    CHECK(s.compressed() == compressed);
    REQUIRE(all_back);
    REQUIRE(got.size() == sent.size());
    for (std::size_t i = 0; i < sent.size(); ++i) {
        INFO("message ", i, " of ", sent[i].first.size(), " bytes");
        CHECK(got[i].second == sent[i].second);
        CHECK(got[i].first == sent[i].first);
    }
    CHECK_CODE(close_ec, error_code{});
    CHECK_CODE(run_ec, error_code{});
    // The server's own view of the handshake: what we offered and what it answered.
    auto conn = server.wait_for("connection", 2s);
    REQUIRE(conn.has_value());
    const auto offered = (*conn)["offered"].get<std::string>();
    const auto agreed = (*conn)["extensions"].get<std::string>();
    CHECK((offered.find("permessage-deflate") != std::string::npos) == our_deflate);
    CHECK((agreed.find("permessage-deflate") != std::string::npos) == compressed);
    CHECK(server.terminate() == 0);
}

vigil::server_config deflate_server(bool deflate)
{
    vigil::server_config cfg;
    cfg.session.ping_interval = 1s;
    cfg.session.pong_timeout = 800ms;
    cfg.session.close_timeout = 1s;
    cfg.session.deflate.enabled = deflate;
    return cfg;
}

asio::awaitable<void> echo(vigil::server::connection_ptr c)
{
    for (;;) {
        auto r = co_await c->receive();
        if (r.ec)
            co_return;
        co_await c->send(std::move(r.data), r.type);
    }
}

// A vigil::server echoing, and whether each connection was compressed.
struct served : io_base {
    explicit served(vigil::server_config cfg)
        : srv(ioc.get_executor(), std::move(cfg), [](vigil::server::connection_ptr c) { return echo(std::move(c)); })
    {
        srv.events().on_connected = [this](vigil::connection& c) { compressed.push_back(c.compressed()); };
        srv.events().on_disconnected = [this](vigil::connection& c) { ends.push_back(c.last_disconnect()); };
        std::string detail;
        auto ec = srv.listen(&detail);
        INFO("listen: ", detail);
        REQUIRE_FALSE(ec);
        spawn([this]() -> asio::awaitable<void> {
            co_await srv.run();
            run_done = true;
        });
    }
    ~served()
    {
        if (!run_done) {
            srv.stop();
            ioc.restart();
            ioc.run_for(5s);
        }
    }
    vigil::server srv;
    std::vector<bool> compressed;
    std::vector<vigil::disconnect_info> ends;
    bool run_done = false;
};

// A third-party client against vigil::server: every size as text and binary (the largest in
// three fragments), compared by the client itself.
void server_round_trips(peer_kind kind, bool server_deflate)
{
    served s(deflate_server(server_deflate));
    vt::child_process peer(peer_command(kind, {"client", url_of(s.srv.port())}));
    bool done = false;
    s.spawn([&]() -> asio::awaitable<void> {
        done = co_await eventually([&] { return peer.count("close") == 1 || !peer.running(); }, 20s);
    });
    s.ioc.run_for(25s);

    INFO("client:\n", peer.transcript());
    REQUIRE(done);
    auto open = peer.wait_for("open", 1s);
    REQUIRE(open.has_value());
    const bool agreed = (*open)["extensions"].get<std::string>().find("permessage-deflate") != std::string::npos;
    CHECK(agreed == server_deflate);
    REQUIRE(s.compressed.size() == 1);
    CHECK(s.compressed[0] == server_deflate);
    std::size_t echoed = 0;
    for (const auto& e : peer.events()) {
        if (e.value("event", "") != "echoed")
            continue;
        ++echoed;
        CHECK_MESSAGE(e["same"].get<bool>(), e.dump());
    }
    CHECK(echoed == 8);
    CHECK(peer.count("done") == 1);
}

// A small compressed message that inflates to 100 MiB, against max_message_size 1 MiB.
void server_survives_bomb()
{
    auto cfg = deflate_server(true);
    cfg.session.max_message_size = 1024 * 1024;
    served s(cfg);
    const auto rss_before = rss_bytes();
    vt::child_process bomber(peer_command(peer_kind::node, {"client", "--bomb", "100", url_of(s.srv.port())}));

    // Another client, compressed too, keeps being served meanwhile.
    vigil::session other(s.ioc.get_executor(), quick_client(true));
    std::vector<std::string> got;
    other.events().on_message = [&](std::string_view data, message_type) { got.emplace_back(data); };
    bool bomb_closed = false;
    bool other_echoed = false;
    std::size_t rss_peak = 0;
    s.spawn([&]() -> asio::awaitable<void> {
        if (co_await other.connect(url_of(s.srv.port())))
            co_return;
        s.spawn([&]() -> asio::awaitable<void> { co_await other.run(); });
        bomb_closed = co_await eventually(
            [&] {
                rss_peak = std::max(rss_peak, rss_bytes());
                return bomber.count("close") == 1;
            },
            20s);
        co_await other.send(payload(1000, 'o'));
        other_echoed = co_await eventually([&] { return got.size() == 1; }, 3s);
        co_await other.close();
    });
    s.ioc.run_for(30s);

    INFO("bomber:\n", bomber.transcript());
    REQUIRE(bomb_closed);
    auto closed = bomber.wait_for("close", 1s);
    REQUIRE(closed.has_value());
    CHECK((*closed)["code"] == 1009);
    REQUIRE(!s.ends.empty());
    CHECK_CODE(s.ends[0].reason, boost::beast::websocket::error::message_too_big);
    // Bounded by max_message_size and zlib's state, not by what the bomb would inflate to.
    INFO("RSS before ", rss_before, ", peak ", rss_peak);
    CHECK(rss_peak < rss_before + 32 * 1024 * 1024);
    CHECK(other_echoed);
    CHECK(other.compressed());
    CHECK(got == std::vector<std::string>{payload(1000, 'o')});
}

// The client's side: a server sends a bomb to a vigil client with max_message_size 1 MiB.
void client_survives_bomb()
{
    vt::child_process server(peer_command(peer_kind::node, {"server", "--bomb", "100"}));
    auto listening = server.wait_for("listening", startup);
    REQUIRE_MESSAGE(listening.has_value(), server.transcript());
    io_base io;
    auto cfg = quick_client(true);
    cfg.max_message_size = 1024 * 1024;
    vigil::session s(io.ioc.get_executor(), cfg);
    int messages = 0;
    s.events().on_message = [&](std::string_view, message_type) { ++messages; };
    error_code connect_ec = error::not_connected;
    error_code run_ec = error::not_connected;
    bool done = false;
    io.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await s.connect(url_of((*listening)["port"].get<std::uint16_t>()));
        if (connect_ec)
            co_return;
        run_ec = co_await s.run();
        done = true;
    });
    io.ioc.run_for(20s);

    INFO("server:\n", server.transcript());
    CHECK_CODE(connect_ec, error_code{});
    REQUIRE(done);
    CHECK(s.compressed());
    CHECK_CODE(run_ec, boost::beast::websocket::error::message_too_big);
    CHECK(messages == 0);
    auto closed = server.wait_for("close", 5s);
    REQUIRE(closed.has_value());
    CHECK((*closed)["code"] == 1009);
    CHECK(server.terminate() == 0);
}

}  // namespace

TEST_SUITE("node")
{
TEST_CASE("deflate: vigil client with compression against node ws server: agreed, every size round-trips")
{
    client_round_trips(peer_kind::node, true, true);
}

TEST_CASE("deflate: vigil client with compression against node ws server without it: none, still works")
{
    client_round_trips(peer_kind::node, false, true);
}

TEST_CASE("deflate: vigil client without compression against node ws server with it: none, still works")
{
    client_round_trips(peer_kind::node, true, false);
}

TEST_CASE("deflate: node ws client against vigil::server with compression: agreed, every size round-trips")
{
    server_round_trips(peer_kind::node, true);
}

TEST_CASE("deflate: node ws client against vigil::server without compression: none, still works")
{
    server_round_trips(peer_kind::node, false);
}

TEST_CASE("deflate: a 100 MiB bomb to vigil::server (max_message_size 1 MiB): 1009, RSS bounded, others served")
{
    server_survives_bomb();
}

TEST_CASE("deflate: a 100 MiB bomb from node ws server to a vigil client: message_too_big, 1009")
{
    client_survives_bomb();
}
}

TEST_SUITE("python")
{
TEST_CASE("deflate: vigil client with compression against python websockets server: agreed, every size round-trips")
{
    client_round_trips(peer_kind::python, true, true);
}

TEST_CASE("deflate: python websockets client against vigil::server with compression: agreed, every size round-trips")
{
    server_round_trips(peer_kind::python, true);
}
}
