// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil against WebSocket implementations it did not write: Node's `ws` (server and client)
// and Python's `websockets` (server) and `websocket-client` (client), each run as a real
// process from tests/peers/ (found through VIGIL_PEERS_DIR) that reports what it sees as JSON
// lines. Test suite "node" needs node and tests/peers/node_modules/ws (`npm ci --prefix
// tests/peers`); suite "python" needs Debian's python3-websocket and python3-websockets under
// /usr/bin/python3. A suite whose tools are missing is skipped, loudly: "SKIPPED: ..." on
// stderr, and exit status 77 when nothing selected could run.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <vigil/server.hpp>
#include <vigil/session.hpp>
#include <vigil/supervisor.hpp>
#include <vigil/upgrade.hpp>

#include <support/process.hpp>
#include <support/testing.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <nlohmann/json.hpp>

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
using namespace std::chrono_literals;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;
using vigil::message_type;

using vt::describe;
using vt::eventually;
using vt::ms_since;
using vt::tolerance;

// How long a peer process may take to start and print its first line: node and python
// start in a tenth of a second on an idle machine, much slower on a busy one.
constexpr milliseconds startup = 15s;

// ---------------------------------------------------------------------------------------
// The peer processes

std::string peer_script(std::string_view name)
{
    auto dir = vt::peers_dir();
    REQUIRE_MESSAGE(dir.has_value(), "VIGIL_PEERS_DIR must name tests/peers");
    return *dir + "/" + std::string(name);
}

std::vector<std::string> node_command(std::string_view script, std::vector<std::string> args)
{
    auto node = vt::find_node();
    REQUIRE_MESSAGE(node.has_value(), "node not found in PATH");
    std::vector<std::string> argv = {*node, peer_script(script)};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

std::vector<std::string> python_command(std::string_view script, std::vector<std::string> args)
{
    std::vector<std::string> argv = {vt::system_python, peer_script(script)};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

// Built by appending: g++ 12 warns (-Wrestrict, a false positive) on `"literal" + to_string()`.
std::string local_url(std::uint16_t port, std::string_view path = "/")
{
    std::string url = "ws://127.0.0.1:";
    url += std::to_string(port);
    url += path;
    return url;
}

// Which third-party server a client case runs against.
enum class server_kind { node_ws, python_websockets };

std::string name_of(server_kind k)
{
    return k == server_kind::node_ws ? "node ws" : "python websockets";
}

// A third-party server process, listening once constructed.
struct server_peer {
    server_peer(server_kind k, std::vector<std::string> args)
        : proc(k == server_kind::node_ws ? node_command("ws_server.js", std::move(args))
                                         : python_command("websockets_server.py", std::move(args)))
    {
        auto listening = proc.wait_for("listening", startup);
        REQUIRE_MESSAGE(listening.has_value(), name_of(k), " server did not start\n", proc.transcript());
        port = (*listening)["port"].get<std::uint16_t>();
    }

    std::string url(std::string_view path = "/") const { return local_url(port, path); }

    vt::child_process proc;
    std::uint16_t port = 0;
};

// Every line printed by a peer is an object with a string "event" and a number "t" that
// never goes backwards.
void check_well_formed(vt::child_process& p)
{
    p.pump();
    CHECK_MESSAGE(p.bad_lines().empty(), p.transcript());
    double last_t = 0;
    for (const auto& e : p.events()) {
        REQUIRE(e.contains("event"));
        CHECK(e["event"].is_string());
        REQUIRE(e.contains("t"));
        REQUIRE(e["t"].is_number());
        CHECK(e["t"].get<double>() >= last_t);
        last_t = e["t"].get<double>();
    }
}

std::vector<json> events_named(vt::child_process& p, std::string_view name)
{
    p.pump();
    std::vector<json> found;
    for (const auto& e : p.events())
        if (e.value("event", "") == name)
            found.push_back(e);
    return found;
}

// ---------------------------------------------------------------------------------------
// vigil's side

vigil::session_config quick_session()
{
    vigil::session_config cfg;
    cfg.ping_interval = 200ms;
    cfg.pong_timeout = 150ms;
    cfg.connect_timeout = 3s;
    cfg.handshake_timeout = 3s;
    cfg.write_timeout = 2s;
    cfg.close_timeout = 1s;
    return cfg;
}

// The io_context lives in a base so that it is built before the objects that use it.
struct io_base {
    asio::io_context ioc;

    // An exception escaping a test coroutine fails the case when run_for rethrows it.
    template <class F>
    void spawn(F f)
    {
        asio::co_spawn(ioc, std::move(f), [](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
        });
    }
};

// One vigil client session and what its events said.
struct client : io_base {
    explicit client(vigil::session_config cfg = quick_session()) : io_base(), s(ioc.get_executor(), std::move(cfg))
    {
        auto& ev = s.events();
        ev.on_connected = [this] { ++connected; };
        ev.on_ping = [this] { ++pings; };
        ev.on_pong = [this](std::chrono::microseconds rtt) { rtts.push_back(rtt); };
        ev.on_message = [this](std::string_view data, message_type type) {
            messages.emplace_back(std::string(data), type);
        };
        ev.on_disconnected = [this](const vigil::disconnect_info&) { ++disconnects; };
    }

    void start_run()
    {
        spawn([this]() -> asio::awaitable<void> {
            run_ec = co_await s.run();
            run_ended = steady::now();
            run_done = true;
        });
    }

    vigil::session s;
    int connected = 0;
    int pings = 0;
    int disconnects = 0;
    std::vector<std::chrono::microseconds> rtts;
    std::vector<std::pair<std::string, message_type>> messages;
    error_code run_ec = error::not_connected;
    bool run_done = false;
    steady::time_point run_ended{};
};

vigil::supervisor_config quick_supervisor()
{
    vigil::supervisor_config cfg;
    cfg.session = quick_session();
    cfg.min_delay = 20ms;
    return cfg;
}

vigil::exponential_backoff quick_backoff()
{
    return vigil::exponential_backoff({.initial = 50ms, .multiplier = 2.0, .max = 200ms, .seed = 7});
}

// A supervisor and what its events said.
struct supervised : io_base {
    explicit supervised(std::string url, vigil::supervisor_config cfg = quick_supervisor())
        : io_base(), sup(ioc.get_executor(), std::move(url), std::move(cfg), quick_backoff())
    {
        auto& ev = sup.events();
        ev.on_up = [this] { ++ups; };
        ev.on_retry = [this](const vigil::retry_info& info) { retries.push_back(info); };
        ev.on_gave_up = [this](const error_code& reason, const vigil::disconnect_info& last) {
            gave_up.emplace_back(reason, last);
        };
    }

    ~supervised()
    {
        // A failed case must not leave coroutines pointing into a destroyed supervisor.
        if (started && !run_done) {
            sup.stop();
            ioc.restart();
            ioc.run_for(3s);
        }
    }

    void start_run()
    {
        started = true;
        spawn([this]() -> asio::awaitable<void> {
            run_ec = co_await sup.run();
            run_done = true;
        });
    }

    vigil::supervisor sup;
    int ups = 0;
    std::vector<vigil::retry_info> retries;
    std::vector<std::pair<error_code, vigil::disconnect_info>> gave_up;
    bool started = false;
    error_code run_ec = error::not_connected;
    bool run_done = false;
};

// ---------------------------------------------------------------------------------------
// The cases, shared by both third-party servers

// Text and binary messages echoed; session.close() runs the close handshake, which the
// peer sees as 1000 and run() reports as an empty code.
void echo_and_close(server_kind kind)
{
    server_peer server(kind, {});
    client c;
    error_code connect_ec = error::not_connected;
    error_code text_ec = error::not_connected;
    error_code binary_ec = error::not_connected;
    error_code close_ec = error::not_connected;
    bool echoed = false;
    const std::string binary("\x00\x01\xfe\xff", 4);

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url("/echo?x=1"));
        if (connect_ec)
            co_return;
        c.start_run();
        text_ec = co_await c.s.send("hello from vigil");
        binary_ec = co_await c.s.send(binary, message_type::binary);
        echoed = co_await eventually([&] { return c.messages.size() >= 2; }, 3s);
        close_ec = co_await c.s.close();
    });
    c.ioc.run_for(8s);

    INFO(name_of(kind), " server:\n", server.proc.transcript());
    CHECK_CODE(connect_ec, error_code{});
    CHECK_CODE(text_ec, error_code{});
    CHECK_CODE(binary_ec, error_code{});
    REQUIRE(echoed);
    REQUIRE(c.messages.size() == 2);
    CHECK(c.messages[0].first == "hello from vigil");
    CHECK(c.messages[0].second == message_type::text);
    CHECK(c.messages[1].first == binary);
    CHECK(c.messages[1].second == message_type::binary);
    CHECK_CODE(close_ec, error_code{});
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, error_code{});
    CHECK(c.disconnects == 1);

    // The peer saw the same: the request target, both messages, our close code.
    auto connection = server.proc.wait_for("connection", 2s);
    REQUIRE(connection.has_value());
    CHECK((*connection)["target"] == "/echo?x=1");
    auto text = server.proc.wait_for("message", 2s);
    REQUIRE(text.has_value());
    CHECK((*text)["text"] == "hello from vigil");
    auto bin = server.proc.wait_for("message", 2s);
    REQUIRE(bin.has_value());
    CHECK((*bin)["bytes"] == 4);
    auto closed = server.proc.wait_for("close", 2s);
    REQUIRE(closed.has_value());
    CHECK((*closed)["code"] == 1000);

    CHECK(server.proc.terminate() == 0);
    check_well_formed(server.proc);
}

// An idle connection: vigil pings every ping_interval; each ping is answered by the
// library's own ping handling, so the session stays up.
void protocol_pings_answered(server_kind kind)
{
    server_peer server(kind, {});
    client c;
    error_code connect_ec = error::not_connected;
    bool open_after = false;
    error_code close_ec = error::not_connected;

    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        if (connect_ec)
            co_return;
        c.start_run();
        // Seven rounds at a 200 ms idle interval: about 1.5 s of silence.
        co_await eventually([&] { return c.rtts.size() >= 7; }, 4s);
        open_after = c.s.is_open() && !c.run_done;
        close_ec = co_await c.s.close();
    });
    c.ioc.run_for(6s);

    INFO(name_of(kind), " server:\n", server.proc.transcript());
    CHECK_CODE(connect_ec, error_code{});
    CHECK(open_after);
    CHECK(c.rtts.size() >= 7);
    CHECK(c.pings >= static_cast<int>(c.rtts.size()));
    for (auto rtt : c.rtts)
        CHECK(rtt < std::chrono::microseconds(150ms));
    CHECK_CODE(close_ec, error_code{});
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, error_code{});
    CHECK(c.disconnects == 1);
    // The peer logged the pings it answered.
    CHECK(events_named(server.proc, "ping").size() >= c.rtts.size());
    CHECK(server.proc.terminate() == 0);
    check_well_formed(server.proc);
}

// The server dies (SIGKILL: no close frame) and a new one starts on the same port: the
// supervisor notices, retries (transient), and is up again on the new process.
void server_killed_and_restarted(server_kind kind)
{
    auto server = std::make_unique<server_peer>(kind, std::vector<std::string>{});
    const auto port = server->port;
    supervised h(server->url());
    std::vector<std::string> received;
    h.sup.session_event_handlers().on_message = [&](std::string_view data, message_type) {
        received.emplace_back(data);
    };
    h.sup.on_connected([&](vigil::session& s) -> asio::awaitable<error_code> {
        co_return co_await s.send("subscribe");
    });

    bool first_up = false;
    bool noticed = false;
    bool back_up = false;
    int killed_status = -1;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        first_up = co_await eventually([&] { return h.ups == 1 && received.size() == 1; }, 5s);
        if (!first_up)
            co_return;
        server->proc.signal(SIGKILL);
        killed_status = server->proc.wait_exit(5s).value_or(-1);
        noticed = co_await eventually([&] { return !h.retries.empty(); }, 3s);
        server = std::make_unique<server_peer>(kind, std::vector<std::string>{"--port", std::to_string(port)});
        back_up = co_await eventually([&] { return h.ups == 2 && received.size() == 2; }, 5s);
        h.sup.stop();
    });
    h.ioc.run_for(20s);

    INFO(name_of(kind), " server (the last one):\n", server->proc.transcript());
    REQUIRE(first_up);
    CHECK(killed_status == 128 + SIGKILL);
    REQUIRE(noticed);
    REQUIRE(back_up);
    CHECK(received == std::vector<std::string>{"subscribe", "subscribe"});
    for (const auto& r : h.retries) {
        INFO("retry reason: ", describe(r.last.reason));
        CHECK_FALSE(vigil::is_permanent(r.last.reason));
    }
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(h.gave_up.empty());
    // The new process saw the reconnect.
    CHECK(events_named(server->proc, "connection").size() == 1);
    CHECK(server->proc.terminate() == 0);
}

// 401 is permanent: one attempt, no retry, run() returns the status.
void rejected_401_gives_up(server_kind kind)
{
    server_peer server(kind, {"--reject", "401"});
    supervised h(server.url());
    h.start_run();
    h.ioc.run_for(5s);

    INFO(name_of(kind), " server:\n", server.proc.transcript());
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, vigil::make_http_status_error(401));
    CHECK(vigil::http_status_of(h.run_ec) == 401);
    CHECK(vigil::is_permanent(h.run_ec));
    CHECK(h.retries.empty());
    REQUIRE(h.gave_up.size() == 1);
    CHECK(h.gave_up[0].second.http_status == 401);
    CHECK(h.sup.counters().attempts == 1);
    CHECK(h.ups == 0);
    // The peer logs after it answered: wait for the line rather than race it.
    CHECK(server.proc.wait_for("rejected", 2s).has_value());
    CHECK(events_named(server.proc, "rejected").size() == 1);
    CHECK(server.proc.terminate() == 0);
}

// 503 with Retry-After is transient: the supervisor waits at least what the server asked
// and tries again.
void rejected_503_retries(server_kind kind)
{
    server_peer server(kind, {"--reject", "503", "--retry-after", "1"});
    supervised h(server.url());
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        co_await eventually([&] { return h.retries.size() >= 2; }, 5s);
        h.sup.stop();
    });
    const auto start = steady::now();
    h.ioc.run_for(8s);
    const auto elapsed = ms_since(start);

    INFO(name_of(kind), " server:\n", server.proc.transcript());
    REQUIRE(h.retries.size() >= 2);
    for (const auto& r : h.retries) {
        CHECK(r.last.http_status == 503);
        CHECK_FALSE(vigil::is_permanent(r.last.reason));
        CHECK(r.last.retry_after == 1000ms);
        CHECK(r.delay >= 1000ms);
    }
    CHECK(h.retries[0].attempt == 1);
    CHECK(h.retries[1].attempt == 2);
    // Two attempts one Retry-After apart, not a tight loop.
    CHECK(elapsed >= 1000ms);
    CHECK(server.proc.wait_for("rejected", 2s).has_value());
    CHECK(server.proc.wait_for("rejected", 2s).has_value());
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(h.gave_up.empty());
    CHECK(server.proc.terminate() == 0);
}

// ---------------------------------------------------------------------------------------
// vigil::server and third-party clients

vigil::server_config quick_server()
{
    vigil::server_config cfg;
    cfg.session.ping_interval = 200ms;
    cfg.session.pong_timeout = 150ms;
    cfg.session.handshake_timeout = 3s;
    cfg.session.write_timeout = 2s;
    cfg.session.close_timeout = 1s;
    return cfg;
}

// Echoes every message back until the connection ends.
asio::awaitable<void> echo_loop(vigil::server::connection_ptr c)
{
    for (;;) {
        auto r = co_await c->receive();
        if (r.ec)
            co_return;
        co_await c->send(std::move(r.data), r.type);
    }
}

struct echo_handler {
    asio::awaitable<void> operator()(vigil::server::connection_ptr c) const { return echo_loop(std::move(c)); }
};

// What the server saw of one connection.
struct connection_record {
    std::uint64_t id = 0;
    std::string target;
    bool ended = false;
    vigil::disconnect_info end;
    steady::time_point ended_at{};
};

// A vigil::server on the test thread's io_context, and what its events said.
struct served : io_base {
    explicit served(vigil::server_config cfg = quick_server()) : io_base(), srv(ioc.get_executor(), std::move(cfg), echo_handler{})
    {
        auto& ev = srv.events();
        ev.on_connected = [this](vigil::connection& c) {
            connections.push_back({c.id(), c.target(), false, {}, {}});
        };
        ev.on_disconnected = [this](vigil::connection& c) {
            for (auto& r : connections) {
                if (r.id == c.id()) {
                    r.ended = true;
                    r.end = c.last_disconnect();
                    r.ended_at = steady::now();
                }
            }
        };
        std::string detail;
        listen_ec = srv.listen(&detail);
        INFO("listen: ", detail);
        REQUIRE_FALSE(listen_ec);
        started = true;
        spawn([this]() -> asio::awaitable<void> {
            run_ec = co_await srv.run();
            run_done = true;
        });
    }

    ~served()
    {
        if (started && !run_done) {
            srv.stop();
            ioc.restart();
            ioc.run_for(5s);
        }
    }

    std::string url(std::string_view path = "/") const { return local_url(srv.port(), path); }

    const connection_record* find(std::uint64_t id) const
    {
        for (const auto& r : connections)
            if (r.id == id)
                return &r;
        return nullptr;
    }

    vigil::server srv;
    std::vector<connection_record> connections;
    error_code listen_ec;
    bool started = false;
    error_code run_ec = error::not_connected;
    bool run_done = false;
};

enum class client_kind { node_ws, python_websocket_client };

std::string name_of(client_kind k)
{
    return k == client_kind::node_ws ? "node ws client" : "python websocket-client";
}

// A third-party client process. Intervals in milliseconds; 0 turns the client's own pings off.
vt::child_process start_client(client_kind kind, const std::string& url, int ping_interval_ms,
                               std::optional<int> silent_after_ms, std::vector<std::string> sends = {})
{
    std::vector<std::string> args;
    if (kind == client_kind::node_ws) {
        args = {"--ping-interval", std::to_string(ping_interval_ms)};
        if (silent_after_ms)
            args.insert(args.end(), {"--silent-after", std::to_string(*silent_after_ms)});
    } else {
        args = {"--ping-interval", std::to_string(ping_interval_ms / 1000.0)};
        // websocket-client wants ping_timeout < ping_interval; keep it loose, so that a
        // loaded machine does not make the client give up on a healthy server.
        if (ping_interval_ms > 0)
            args.insert(args.end(), {"--ping-timeout", std::to_string(ping_interval_ms * 0.9 / 1000.0)});
        if (silent_after_ms)
            args.insert(args.end(), {"--silent-after", std::to_string(*silent_after_ms / 1000.0)});
    }
    for (auto& s : sends)
        args.insert(args.end(), {"--send", std::move(s)});
    args.push_back(url);
    return vt::child_process(kind == client_kind::node_ws ? node_command("ws_client.js", std::move(args))
                                                          : python_command("wsclient_peer.py", std::move(args)));
}

// A client that pings every 100 ms gets its pongs from vigil's server and its message
// echoed; when it stops reading, writing and answering without closing, the server's
// heartbeat evicts it with pong_timeout within ping_interval + pong_timeout.
void server_evicts_silent_client(client_kind kind)
{
    served s;
    auto cfg = quick_server();
    auto peer = start_client(kind, s.url("/feed"), 100, 700, {"hello server"});

    bool opened = false;
    bool echoed = false;
    bool ponged = false;
    bool went_silent = false;
    bool evicted = false;
    bool alive_when_evicted = false;
    steady::time_point silent_seen{};
    s.spawn([&]() -> asio::awaitable<void> {
        opened = co_await eventually([&] { return peer.count("open") == 1; }, startup);
        echoed = co_await eventually([&] { return peer.count("message") >= 1; }, 3s);
        ponged = co_await eventually([&] { return peer.count("pong") >= 3; }, 3s);
        went_silent = co_await eventually([&] { return peer.count("silent") == 1; }, 3s);
        silent_seen = steady::now();
        evicted = co_await eventually([&] { return s.connections.size() == 1 && s.connections[0].ended; }, 3s);
        // Still running: the server found out by its heartbeat, not from a closed socket.
        alive_when_evicted = peer.running();
        s.srv.stop();
    });
    s.ioc.run_for(startup + 10s);

    INFO(name_of(kind), ":\n", peer.transcript());
    REQUIRE(opened);
    CHECK(echoed);
    auto messages = events_named(peer, "message");
    REQUIRE_FALSE(messages.empty());
    CHECK(messages[0]["text"] == "hello server");
    CHECK(ponged);
    REQUIRE(went_silent);
    REQUIRE(evicted);
    CHECK(alive_when_evicted);
    const auto& rec = s.connections[0];
    CHECK(rec.target == "/feed");
    CHECK_CODE(rec.end.reason, error::pong_timeout);
    const auto bound = cfg.session.ping_interval + cfg.session.pong_timeout + tolerance;
    // The client's last frame came at most one of its ping periods before it went silent.
    CHECK(rec.end.silent_for <= bound);
    CHECK(rec.end.silent_for >= cfg.session.pong_timeout);
    CHECK(std::chrono::duration_cast<milliseconds>(rec.ended_at - silent_seen) <= bound);
    REQUIRE(s.run_done);
    CHECK_CODE(s.run_ec, error_code{});
    const auto counters = s.srv.counters();
    CHECK(counters.connected == 1);
    CHECK(counters.disconnected == 1);
    CHECK(counters.open == 0);
    // A silent client exits cleanly on SIGTERM.
    CHECK(peer.terminate() == 0);
    check_well_formed(peer);
}

// A client that sends no pings of its own: the server's heartbeat pings it while idle and
// it answers, so it stays connected; server.stop() then closes it with 1001.
void server_pings_idle_client_and_shuts_down(client_kind kind)
{
    served s;
    auto peer = start_client(kind, s.url(), 0, std::nullopt);

    bool opened = false;
    bool pinged = false;
    bool closed = false;
    std::optional<int> exit_status;
    s.spawn([&]() -> asio::awaitable<void> {
        opened = co_await eventually([&] { return peer.count("open") == 1; }, startup);
        // 200 ms ping interval (less up to 20% jitter): three pings well within 1.5 s.
        pinged = co_await eventually([&] { return peer.count("ping") >= 3; }, 3s);
        s.srv.stop();
        closed = co_await eventually([&] { return s.run_done && peer.count("close") == 1; }, 5s);
    });
    s.ioc.run_for(startup + 10s);
    exit_status = peer.wait_exit(5s);

    INFO(name_of(kind), ":\n", peer.transcript());
    REQUIRE(opened);
    CHECK(pinged);
    REQUIRE(s.connections.size() == 1);
    CHECK(s.connections[0].ended);
    CHECK_CODE(s.connections[0].end.reason, error::server_shutdown);
    REQUIRE(closed);
    auto closes = events_named(peer, "close");
    REQUIRE(closes.size() == 1);
    CHECK(closes[0]["code"] == 1001);
    CHECK_CODE(s.run_ec, error_code{});
    CHECK(exit_status.value_or(-1) == 0);
    check_well_formed(peer);
}

}  // namespace

// ---------------------------------------------------------------------------------------

TEST_SUITE("node")
{

TEST_CASE("node ws server: text and binary echo, then a clean close handshake")
{
    echo_and_close(server_kind::node_ws);
}

TEST_CASE("node ws server: protocol pings answered for seven rounds, no disconnect")
{
    protocol_pings_answered(server_kind::node_ws);
}

TEST_CASE("node ws server killed (SIGKILL) and restarted on the same port: the supervisor reconnects")
{
    server_killed_and_restarted(server_kind::node_ws);
}

TEST_CASE("node ws server answering 401: the supervisor gives up at once")
{
    rejected_401_gives_up(server_kind::node_ws);
}

TEST_CASE("node ws server answering 503 + Retry-After: the supervisor retries after it")
{
    rejected_503_retries(server_kind::node_ws);
}

TEST_CASE("node ws server that goes silent after the upgrade: pong_timeout within the bound")
{
    server_peer server(server_kind::node_ws, {"--silent"});
    client c;
    error_code connect_ec = error::not_connected;
    steady::time_point connected_at{};
    c.spawn([&]() -> asio::awaitable<void> {
        connect_ec = co_await c.s.connect(server.url());
        connected_at = steady::now();
        if (!connect_ec)
            c.start_run();
    });
    c.ioc.run_for(5s);

    INFO("server:\n", server.proc.transcript());
    CHECK_CODE(connect_ec, error_code{});
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, error::pong_timeout);
    const auto bound = c.s.config().ping_interval + c.s.config().pong_timeout;
    CHECK(std::chrono::duration_cast<milliseconds>(c.run_ended - connected_at) <= bound + tolerance);
    CHECK(c.s.last_disconnect().silent_for <= bound + tolerance);
    CHECK(c.rtts.empty());
    CHECK(server.proc.wait_for("silent", 2s).has_value());
    CHECK(server.proc.terminate() == 0);
}

TEST_CASE("node ws server speaking only {\"type\":\"ping\"}: message_heartbeat::json() stays up; protocol pings time out")
{
    server_peer server(server_kind::node_ws, {"--mode", "app-pong"});

    SUBCASE("application-level heartbeat")
    {
        auto cfg = quick_session();
        cfg.heartbeat = vigil::message_heartbeat::json();
        client c(cfg);
        error_code connect_ec = error::not_connected;
        bool open_after = false;
        bool echoed = false;
        error_code close_ec = error::not_connected;
        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            if (connect_ec)
                co_return;
            c.start_run();
            co_await c.s.send("data");
            echoed = co_await eventually([&] { return !c.messages.empty(); }, 2s);
            co_await eventually([&] { return c.rtts.size() >= 5; }, 4s);
            open_after = c.s.is_open() && !c.run_done;
            close_ec = co_await c.s.close();
        });
        c.ioc.run_for(8s);

        INFO("server:\n", server.proc.transcript());
        CHECK_CODE(connect_ec, error_code{});
        CHECK(open_after);
        CHECK(c.rtts.size() >= 5);
        // The pongs were consumed by the heartbeat: only the echo reached the application.
        REQUIRE(echoed);
        REQUIRE(c.messages.size() == 1);
        CHECK(c.messages[0].first == "data");
        CHECK_CODE(close_ec, error_code{});
        REQUIRE(c.run_done);
        CHECK_CODE(c.run_ec, error_code{});
        CHECK(events_named(server.proc, "app_ping").size() >= c.rtts.size());
        CHECK(events_named(server.proc, "ping").empty());
    }

    SUBCASE("protocol pings: unanswered, pong_timeout")
    {
        client c;
        error_code connect_ec = error::not_connected;
        steady::time_point connected_at{};
        c.spawn([&]() -> asio::awaitable<void> {
            connect_ec = co_await c.s.connect(server.url());
            connected_at = steady::now();
            if (!connect_ec)
                c.start_run();
        });
        c.ioc.run_for(5s);

        INFO("server:\n", server.proc.transcript());
        CHECK_CODE(connect_ec, error_code{});
        REQUIRE(c.run_done);
        CHECK_CODE(c.run_ec, error::pong_timeout);
        const auto bound = c.s.config().ping_interval + c.s.config().pong_timeout;
        CHECK(std::chrono::duration_cast<milliseconds>(c.run_ended - connected_at) <= bound + tolerance);
        CHECK(c.rtts.empty());
        // The server saw the ping and said nothing.
        CHECK(server.proc.wait_for("ping", 2s).has_value());
    }
    CHECK(server.proc.terminate() == 0);
    check_well_formed(server.proc);
}

TEST_CASE("node ws client against vigil::server: pongs, echo, eviction when it goes silent")
{
    server_evicts_silent_client(client_kind::node_ws);
}

TEST_CASE("node ws client against vigil::server: pinged while idle, closed with 1001 on stop()")
{
    server_pings_idle_client_and_shuts_down(client_kind::node_ws);
}

TEST_CASE("node ws clients against an admission check: 403 for a foreign Origin, 401 without the token, a subprotocol agreed")
{
    auto cfg = quick_server();
    cfg.check_upgrade = vigil::allow_origins({"https://chat.example"}, vigil::missing_origin::refuse,
                                             vigil::require_token("s3cret"));
    cfg.subprotocols = {"chat.v2", "chat.v1"};
    served s(cfg);
    auto client = [&](std::vector<std::string> args, std::string_view path = "/") {
        args.push_back(s.url(path));
        return vt::child_process(node_command("ws_client.js", std::move(args)));
    };
    auto foreign = client({"--origin", "https://evil.example", "--header", "Authorization: Bearer s3cret"});
    auto anonymous = client({"--origin", "https://chat.example"});
    auto member = client({"--origin", "https://chat.example", "--header", "Authorization: Bearer s3cret",
                          "--protocol", "chat.v1", "--protocol", "chat.v2"});
    auto stranger = client({"--origin", "https://chat.example", "--protocol", "mqtt"}, "/?token=s3cret");
    std::optional<int> foreign_exit, anonymous_exit, stranger_exit;
    bool member_open = false;
    s.spawn([&]() -> asio::awaitable<void> {
        member_open = co_await eventually([&] { return member.count("open") == 1; }, startup);
        co_await eventually([&] { return foreign.count("rejected") + anonymous.count("rejected") == 2 &&
                                         stranger.count("error") == 1; },
                            startup);
        s.srv.stop();
    });
    s.ioc.run_for(startup + 10s);
    foreign_exit = foreign.wait_exit(5s);
    anonymous_exit = anonymous.wait_exit(5s);
    stranger_exit = stranger.wait_exit(5s);

    INFO("foreign:\n", foreign.transcript(), "anonymous:\n", anonymous.transcript(), "member:\n",
         member.transcript(), "stranger:\n", stranger.transcript());
    // ws reports a refused upgrade as 'unexpected-response' with the status.
    auto rejected = events_named(foreign, "rejected");
    REQUIRE(rejected.size() == 1);
    CHECK(rejected[0]["status"] == 403);
    CHECK(foreign_exit.value_or(-1) == 1);
    rejected = events_named(anonymous, "rejected");
    REQUIRE(rejected.size() == 1);
    CHECK(rejected[0]["status"] == 401);
    CHECK(anonymous_exit.value_or(-1) == 1);
    // The server's preference among those offered, as ws.protocol.
    REQUIRE(member_open);
    CHECK(events_named(member, "open")[0]["protocol"] == "chat.v2");
    // ws fails a connection whose server chose none of the offered subprotocols, as vigil's
    // client does by default (session_config::subprotocol_required).
    auto errors = events_named(stranger, "error");
    REQUIRE(errors.size() == 1);
    CHECK(errors[0]["message"] == "Server sent no subprotocol");
    CHECK(stranger.count("open") == 0);
    CHECK(stranger_exit.value_or(-1) == 1);
    CHECK(member.terminate() == 0);
    REQUIRE(s.connections.size() == 2);  // the member, and the stranger (ws closes it after the 101)
}

}  // TEST_SUITE("node")

// ---------------------------------------------------------------------------------------
// Fresh credentials for every attempt (websockets_server.py --tokens)

// GET /token over plain HTTP, as a before_attempt hook would fetch a listen key: a real
// awaitable, cancelled by the supervisor at prepare_timeout.
asio::awaitable<std::string> fetch_token(std::uint16_t port)
{
    namespace http = boost::beast::http;
    boost::beast::tcp_stream stream(co_await asio::this_coro::executor);
    co_await stream.async_connect(asio::ip::tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), port),
                                  asio::use_awaitable);
    http::request<http::empty_body> req{http::verb::get, "/token", 11};
    req.set(http::field::host, "127.0.0.1");
    co_await http::async_write(stream, req, asio::use_awaitable);
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> res;
    co_await http::async_read(stream, buffer, res, asio::use_awaitable);
    if (res.result() != http::status::ok)
        throw std::runtime_error("GET /token answered " + std::to_string(res.result_int()));
    co_return res.body();
}

enum class token_place { header, url };

// The server accepts only the token issued last, once: every attempt must fetch its own.
void fresh_token_every_attempt(token_place place)
{
    server_peer server(server_kind::python_websockets, {"--tokens"});
    auto cfg = quick_supervisor();
    cfg.session.headers = {{"X-Client", "vigil-test"}};  // kept beside the hook's own
    supervised h(server.url("/feed"), cfg);
    std::vector<std::string> tokens;
    h.sup.before_attempt([&](vigil::attempt_params& p) -> asio::awaitable<error_code> {
        CHECK(p.url == server.url("/feed"));  // preset for every attempt: the hook's changes do not stick
        REQUIRE(p.headers.size() == 1);
        std::string token;
        try {
            token = co_await fetch_token(server.port);
        } catch (const boost::system::system_error& e) {
            co_return e.code();
        }
        tokens.push_back(token);
        if (place == token_place::url)
            p.url += "?token=" + token;
        else
            p.headers.emplace_back("Authorization", "Bearer " + token);
        co_return error_code{};
    });
    std::vector<std::string> connecting_urls;
    h.sup.events().on_connecting = [&](const vigil::attempt_params& p) { connecting_urls.push_back(p.url); };
    bool three = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        for (int n = 1; n <= 3; ++n) {
            if (!co_await eventually([&] { return h.ups == n; }, 5s))
                co_return;
            if (n < 3)
                h.sup.reconnect("renew");
        }
        three = true;
        h.sup.stop();
    });
    h.ioc.run_for(20s);

    INFO("python websockets server:\n", server.proc.transcript());
    REQUIRE(three);
    REQUIRE(tokens.size() == 3);
    CHECK(tokens[0] != tokens[1]);
    CHECK(tokens[1] != tokens[2]);
    REQUIRE(connecting_urls.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        if (place == token_place::url)
            CHECK(connecting_urls[i] == server.url("/feed?token=" + tokens[i]));
        else
            CHECK(connecting_urls[i] == server.url("/feed"));
    }
    CHECK(h.retries.empty());
    CHECK(h.gave_up.empty());
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(h.sup.counters().planned_reconnects == 2);
    CHECK(events_named(server.proc, "accepted").size() == 3);
    CHECK(events_named(server.proc, "rejected").empty());
    CHECK(server.proc.terminate() == 0);
}

// The control: a hook that keeps its first token is refused on the next attempt, and the
// supervisor stops on that 401 (permanent) rather than hammering the server.
void stale_token_refused()
{
    server_peer server(server_kind::python_websockets, {"--tokens"});
    supervised h(server.url("/feed"));
    std::optional<std::string> cached;
    h.sup.before_attempt([&](vigil::attempt_params& p) -> asio::awaitable<error_code> {
        if (!cached)
            cached = co_await fetch_token(server.port);
        p.headers.emplace_back("Authorization", "Bearer " + *cached);
        co_return error_code{};
    });
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (co_await eventually([&] { return h.ups == 1; }, 5s))
            h.sup.reconnect("renew");
    });
    h.ioc.run_for(10s);

    INFO("python websockets server:\n", server.proc.transcript());
    REQUIRE(h.run_done);
    CHECK(h.ups == 1);
    CHECK_CODE(h.run_ec, vigil::make_http_status_error(401));
    REQUIRE(h.gave_up.size() == 1);
    CHECK(h.gave_up[0].second.http_status == 401);
    CHECK(h.retries.empty());
    CHECK(h.sup.counters().attempts == 2);
    CHECK(server.proc.wait_for("rejected", 2s).has_value());
    CHECK(server.proc.terminate() == 0);
}

TEST_SUITE("python")
{

TEST_CASE("python websockets clients against an admission check: 403, 401, a subprotocol agreed, and none agreed accepted")
{
    auto cfg = quick_server();
    cfg.check_upgrade = vigil::allow_origins({"https://chat.example"}, vigil::missing_origin::allow,
                                             vigil::require_token("s3cret"));
    cfg.subprotocols = {"chat.v2", "chat.v1"};
    served s(cfg);
    auto client = [&](std::vector<std::string> args, std::string_view path = "/") {
        args.push_back(s.url(path));
        return vt::child_process(python_command("websockets_client.py", std::move(args)));
    };
    auto foreign = client({"--origin", "https://evil.example"}, "/?token=s3cret");
    auto anonymous = client({});
    auto member = client({"--subprotocol", "chat.v1", "--subprotocol", "chat.v2"}, "/?token=s3cret");
    auto stranger = client({"--subprotocol", "mqtt", "--header", "Authorization: Bearer s3cret"});
    std::vector<std::optional<int>> exits;
    s.spawn([&]() -> asio::awaitable<void> {
        co_await eventually([&] { return foreign.count("rejected") + anonymous.count("rejected") +
                                         member.count("open") + stranger.count("open") == 4; },
                            startup);
        s.srv.stop();
    });
    s.ioc.run_for(startup + 10s);
    for (auto* p : {&foreign, &anonymous, &member, &stranger})
        exits.push_back(p->wait_exit(5s));

    INFO("foreign:\n", foreign.transcript(), "anonymous:\n", anonymous.transcript(), "member:\n",
         member.transcript(), "stranger:\n", stranger.transcript());
    auto rejected = events_named(foreign, "rejected");
    REQUIRE(rejected.size() == 1);
    CHECK(rejected[0]["status"] == 403);
    rejected = events_named(anonymous, "rejected");
    REQUIRE(rejected.size() == 1);
    CHECK(rejected[0]["status"] == 401);
    auto opened = events_named(member, "open");
    REQUIRE(opened.size() == 1);
    CHECK(opened[0]["subprotocol"] == "chat.v2");
    // Unlike ws (and vigil's client by default), websockets accepts a server that chose none.
    opened = events_named(stranger, "open");
    REQUIRE(opened.size() == 1);
    CHECK(opened[0]["subprotocol"].is_null());
    CHECK(exits == std::vector<std::optional<int>>{1, 1, 0, 0});
}

TEST_CASE("python websockets server with single-use tokens: before_attempt puts a fresh one in a header every attempt")
{
    fresh_token_every_attempt(token_place::header);
}

TEST_CASE("python websockets server with single-use tokens: before_attempt puts a fresh one in the URL every attempt")
{
    fresh_token_every_attempt(token_place::url);
}

TEST_CASE("python websockets server with single-use tokens: a reused token gets 401 and the supervisor stops")
{
    stale_token_refused();
}

TEST_CASE("python websockets server: text and binary echo, then a clean close handshake")
{
    echo_and_close(server_kind::python_websockets);
}

TEST_CASE("python websockets server: protocol pings answered for seven rounds, no disconnect")
{
    protocol_pings_answered(server_kind::python_websockets);
}

TEST_CASE("python websockets server killed (SIGKILL) and restarted on the same port: the supervisor reconnects")
{
    server_killed_and_restarted(server_kind::python_websockets);
}

TEST_CASE("python websockets server answering 401: the supervisor gives up at once")
{
    rejected_401_gives_up(server_kind::python_websockets);
}

TEST_CASE("python websockets server answering 503 + Retry-After: the supervisor retries after it")
{
    rejected_503_retries(server_kind::python_websockets);
}

TEST_CASE("python websocket-client against vigil::server: pongs, echo, eviction when it goes silent")
{
    server_evicts_silent_client(client_kind::python_websocket_client);
}

TEST_CASE("python websocket-client against vigil::server: pinged while idle, closed with 1001 on stop()")
{
    server_pings_idle_client_and_shuts_down(client_kind::python_websocket_client);
}

}  // TEST_SUITE("python")

// ---------------------------------------------------------------------------------------
// main: skip, loudly, what cannot run here

namespace {

// True when the command line selects `suite` with doctest's test-suite filter (or selects
// no suite at all).
bool suite_selected(int argc, char** argv, std::string_view suite)
{
    bool filtered = false;
    bool hit = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        for (std::string_view prefix : {"--test-suite=", "-ts=", "--dt-test-suite=", "--dt-ts="}) {
            if (arg.substr(0, prefix.size()) != prefix)
                continue;
            filtered = true;
            std::string_view list = arg.substr(prefix.size());
            while (!list.empty()) {
                auto comma = list.find(',');
                auto item = list.substr(0, comma);
                if (item == suite || item == "*")
                    hit = true;
                list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
            }
        }
    }
    return !filtered || hit;
}

std::string node_missing()
{
    if (!vt::find_node())
        return "node not found in PATH (Debian package nodejs)";
    if (!vt::peers_dir())
        return "VIGIL_PEERS_DIR is not set (the build sets it for `meson test`)";
    if (!vt::have_node_ws())
        return "the ws package is not installed (run: npm ci --prefix tests/peers)";
    return {};
}

std::string python_missing()
{
    if (!vt::peers_dir())
        return "VIGIL_PEERS_DIR is not set (the build sets it for `meson test`)";
    if (!vt::python_has_module("websocket"))
        return std::string(vt::system_python) + " cannot import websocket (Debian package python3-websocket)";
    if (!vt::python_has_module("websockets"))
        return std::string(vt::system_python) + " cannot import websockets (Debian package python3-websockets)";
    return {};
}

}  // namespace

int main(int argc, char** argv)
{
    // A peer that dies while we write to it must fail a check, not kill the test binary.
    ::signal(SIGPIPE, SIG_IGN);

    doctest::Context context;
    context.applyCommandLine(argc, argv);

    struct requirement {
        const char* suite;
        std::function<std::string()> missing;
    };
    const requirement requirements[] = {{"node", node_missing}, {"python", python_missing}};
    int selected = 0;
    int runnable = 0;
    for (const auto& r : requirements) {
        if (!suite_selected(argc, argv, r.suite))
            continue;
        ++selected;
        auto why = r.missing();
        if (why.empty()) {
            ++runnable;
            continue;
        }
        std::fprintf(stderr, "SKIPPED: test suite \"%s\": %s\n", r.suite, why.c_str());
        context.addFilter("test-suite-exclude", r.suite);
    }
    if (selected > 0 && runnable == 0)
        return 77;  // meson: skipped

    return context.run();
}
