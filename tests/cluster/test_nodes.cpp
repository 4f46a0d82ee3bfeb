// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// A real cluster: redis-server, three vigil-serve nodes (--fanout) and an nginx in front of
// them, each started by the case on free ports; the clients are vigil::supervisor on the test
// thread, connecting through nginx. A broadcast crosses nodes; a node killed with SIGKILL
// loses its clients to the survivors within their bound, and what they sent meanwhile arrives;
// vigil-serve reports Redis's death and return, and a wrong password ends it.

#include <vigil/supervisor.hpp>

#include "redis_rig.hpp"
#include "support/nginx_conf.hpp"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using vigil::error_code;
using vigil::test::child_process;
using vigil::test::clock_type;
using vigil::test::redis_server;
using vigil::test::run_until;

std::string serve_path()
{
    const char* p = std::getenv("VIGIL_SERVE");
    return p ? p : "";
}

/// Why this suite cannot run here; nullopt when it can.
std::optional<std::string> unavailable()
{
    if (serve_path().empty())
        return "VIGIL_SERVE is not set (meson test sets it to the vigil-serve it built)";
    if (!vigil::test::find_in_path("nginx"))
        return "no 'nginx' command (Debian package nginx)";
    return std::nullopt;
}

/// One vigil-serve node of the cluster.
struct serve_node {
    serve_node(const std::string& fanout, std::vector<std::string> extra = {})
    {
        std::vector<std::string> argv = {serve_path(), "--mode", "broadcast", "--fanout", fanout,
                                         "--ping-interval", "1", "--pong-timeout", "0.5"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        proc = std::make_unique<child_process>(argv);
        auto listening = proc->wait_for("listening", 5000ms);
        REQUIRE_MESSAGE(listening, "vigil-serve did not listen: ", proc->transcript());
        port = (*listening)["port"].get<std::uint16_t>();
    }
    std::size_t count(std::string_view event) { return proc->count(event); }

    std::unique_ptr<child_process> proc;
    std::uint16_t port = 0;
};

/// nginx on 127.0.0.1 in front of `upstreams`, proxying WebSocket upgrades round-robin; a
/// refused connection goes on to the next node (proxy_next_upstream). From a configuration
/// in a temporary directory of its own, in the foreground as one process.
class nginx_balancer {
public:
    explicit nginx_balancer(const std::vector<std::uint16_t>& upstreams)
    {
        auto templ = (fs::temp_directory_path() / "vigil-cluster-nginx-XXXXXX").string();
        if (::mkdtemp(templ.data()) == nullptr)
            throw std::runtime_error("mkdtemp " + templ + ": " + std::strerror(errno));
        dir_ = templ;
        ::chmod(dir_.c_str(), 0755);
        fs::create_directories(fs::path(dir_) / "tmp");
        port_ = vigil::test::free_port();
        std::ofstream(fs::path(dir_) / "nginx.conf") << config(upstreams);
        proc_ = std::make_unique<child_process>(std::vector<std::string>{
            *vigil::test::find_in_path("nginx"), "-p", dir_ + "/", "-e", dir_ + "/error.log", "-c", dir_ + "/nginx.conf"});
        if (!vigil::test::wait_until([&] { return vigil::test::accepts(port_); }, 5000ms))
            FAIL("nginx did not listen on ", port_, ": ", proc_->transcript());
    }
    ~nginx_balancer()
    {
        proc_.reset();
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    nginx_balancer(const nginx_balancer&) = delete;
    nginx_balancer& operator=(const nginx_balancer&) = delete;

    std::string url(const std::string& path) const
    {
        return std::string("ws://127.0.0.1:").append(std::to_string(port_)).append(path);
    }

private:
    std::string config(const std::vector<std::uint16_t>& upstreams) const
    {
        std::ostringstream conf;
        conf << vigil::test::nginx_conf_head(dir_, 512);
        conf << "    upstream nodes {\n";
        for (auto p : upstreams)
            conf << "        server 127.0.0.1:" << p << " max_fails=1 fail_timeout=30s;\n";
        conf << "    }\n    server {\n        listen 127.0.0.1:" << port_ << ";\n"
             << "        location / {\n"
             << "            proxy_pass http://nodes;\n"
             << "            proxy_http_version 1.1;\n"
             << "            proxy_set_header Upgrade $http_upgrade;\n"
             << "            proxy_set_header Connection $connection_upgrade;\n"
             << "            proxy_connect_timeout 2s;\n"
             << "            proxy_next_upstream error timeout;\n"
             << "            proxy_read_timeout 60s;\n"
             << "        }\n    }\n}\n";
        return conf.str();
    }

    std::string dir_;
    std::uint16_t port_ = 0;
    std::unique_ptr<child_process> proc_;
};

/// A supervised client through the balancer, recording what it receives and how it went.
struct client {
    client(asio::io_context& ioc, const std::string& url, std::vector<std::string> backups = {})
        : sup(ioc.get_executor(), url, config(std::move(backups)))
    {
        sup.session_event_handlers().on_message = [this](std::string_view data, vigil::message_type) {
            got.emplace_back(data);
        };
        sup.events().on_up = [this] {
            ++ups;
            up_at = clock_type::now();
            endpoint = sup.current_endpoint();
        };
        sup.events().on_retry = [this](const vigil::retry_info&) {
            if (down_at == clock_type::time_point{})
                down_at = clock_type::now();
        };
        asio::co_spawn(ioc, [this]() -> asio::awaitable<void> { result = co_await sup.run(); }, asio::detached);
    }
    static vigil::supervisor_config config(std::vector<std::string> backups)
    {
        vigil::supervisor_config cfg;
        cfg.backup_urls = std::move(backups);
        cfg.session.ping_interval = 1000ms;
        cfg.session.pong_timeout = 500ms;
        // What a dead node took without reading goes out again on the next connection.
        cfg.delivery = vigil::delivery_guarantee::resend_unconfirmed;
        cfg.min_delay = 100ms;
        return cfg;
    }
    std::size_t count(const std::string& m) const { return static_cast<std::size_t>(std::count(got.begin(), got.end(), m)); }
    void send(asio::io_context& ioc, std::string m)
    {
        auto& slot = sends.emplace_back();
        asio::co_spawn(
            ioc, [this, m = std::move(m), &slot]() -> asio::awaitable<void> { slot = co_await sup.send(m); }, asio::detached);
    }

    vigil::supervisor sup;
    std::vector<std::string> got;
    int ups = 0;
    std::size_t endpoint = 0;  // of the last on_up
    clock_type::time_point up_at{}, down_at{};
    std::deque<std::optional<error_code>> sends;  // stable addresses
    std::optional<error_code> result;
};

std::string fanout_url(const redis_server& redis, const std::string& password = {})
{
    return redis.url(password).append("/cluster");
}

bool all_of_clients(const std::vector<std::unique_ptr<client>>& cs, const std::function<bool(const client&)>& pred)
{
    return std::all_of(cs.begin(), cs.end(), [&](auto& c) { return pred(*c); });
}

void stop_clients(asio::io_context& ioc, std::vector<std::unique_ptr<client>>& cs)
{
    for (auto& c : cs)
        c->sup.stop();
    CHECK(run_until(ioc, [&] { return all_of_clients(cs, [](const client& c) { return c.result.has_value(); }); }, 10000ms));
}

}  // namespace

TEST_CASE("cluster: three vigil-serve nodes behind nginx; a node killed with SIGKILL loses its clients to the others, and nothing they sent is lost")
{
    if (auto why = unavailable()) {
        MESSAGE("SKIP: ", *why);
        doctest::skip();
        return;
    }
    redis_server redis(vigil::test::free_port());
    std::vector<std::unique_ptr<serve_node>> nodes;
    for (int i = 0; i < 3; ++i)
        nodes.push_back(std::make_unique<serve_node>(fanout_url(redis)));
    for (auto& n : nodes)
        REQUIRE_MESSAGE(n->proc->wait_for("fanout_up", 5000ms), n->proc->transcript());
    nginx_balancer lb({nodes[0]->port, nodes[1]->port, nodes[2]->port});

    asio::io_context ioc;
    constexpr int n_clients = 6;
    std::vector<std::unique_ptr<client>> clients;
    for (int i = 0; i < n_clients; ++i)
        clients.push_back(std::make_unique<client>(ioc, lb.url("/?channel=room")));
    auto joined = [&] { return nodes[0]->count("client_joined") + nodes[1]->count("client_joined") + nodes[2]->count("client_joined"); };
    REQUIRE(run_until(ioc, [&] { return joined() == n_clients; }, 10000ms));
    // Round-robin: every node has clients, so the broadcasts below cross nodes.
    for (auto& n : nodes)
        REQUIRE(n->count("client_joined") >= 1);

    // 1. A broadcast crosses nodes: each client's message reaches all six.
    for (int i = 0; i < n_clients; ++i)
        clients[i]->send(ioc, "r1-" + std::to_string(i));
    auto round_done = [&](const std::string& prefix, const std::vector<std::unique_ptr<client>>& receivers, int senders) {
        return all_of_clients(receivers, [&](const client& c) {
            for (int i = 0; i < senders; ++i)
                if (c.count(prefix + std::to_string(i)) == 0)
                    return false;
            return true;
        });
    };
    REQUIRE(run_until(ioc, [&] { return round_done("r1-", clients, n_clients); }, 5000ms));
    for (auto& c : clients)
        for (int i = 0; i < n_clients; ++i)
            CHECK(c->count("r1-" + std::to_string(i)) == 1);

    // 2. SIGKILL node 0. Its clients find out (nginx closes them when the node's sockets
    // close) and reconnect through nginx, which skips the dead node.
    const auto victims_count = nodes[0]->count("client_joined");
    const auto survivors_joined = nodes[1]->count("client_joined") + nodes[2]->count("client_joined");
    nodes[0]->proc->signal(SIGKILL);
    REQUIRE(nodes[0]->proc->wait_exit(2000ms));
    const auto killed_at = clock_type::now();
    // Everyone sends at once, the victims before they may even know: theirs wait or are resent.
    for (int i = 0; i < n_clients; ++i)
        clients[i]->send(ioc, "r2-" + std::to_string(i));
    REQUIRE(run_until(ioc, [&] { return nodes[1]->count("client_joined") + nodes[2]->count("client_joined") == survivors_joined + victims_count; }, 10000ms));
    std::vector<std::unique_ptr<client>> victims, survivors;
    for (auto& c : clients)
        (c->down_at != clock_type::time_point{} ? victims : survivors).push_back(std::move(c));
    REQUIRE(run_until(ioc, [&] { return all_of_clients(victims, [](const client& c) { return c.ups == 2; }); }, 5000ms));
    CHECK(victims.size() == victims_count);
    // Detected within the bound (ping_interval + pong_timeout, plus slack), and back soon after.
    const auto bound = 1500ms + 500ms;
    for (auto& v : victims) {
        CHECK(v->down_at - killed_at <= bound);
        CHECK(v->up_at - killed_at <= bound + 2000ms);
    }
    // Every send of round 2 completed without error (confirmed by the node that read it),
    // and the survivors got every one exactly once; the victims' too.
    auto all_sent = [&](auto& cs) {
        return all_of_clients(cs, [](const client& c) {
            return std::all_of(c.sends.begin(), c.sends.end(), [](auto& s) { return s.has_value(); });
        });
    };
    REQUIRE(run_until(ioc, [&] { return all_sent(victims) && all_sent(survivors) && round_done("r2-", survivors, n_clients); }, 10000ms));
    for (auto* group : {&victims, &survivors})
        for (auto& c : *group)
            for (auto& s : c->sends)
                CHECK_FALSE(*s);
    for (auto& c : survivors)
        for (int i = 0; i < n_clients; ++i)
            CHECK(c->count("r2-" + std::to_string(i)) == 1);

    // 3. The two nodes left carry everything: each client's next message reaches all six.
    clients.clear();
    for (auto* group : {&victims, &survivors})
        for (auto& c : *group)
            clients.push_back(std::move(c));
    for (int i = 0; i < n_clients; ++i)
        clients[i]->send(ioc, "r3-" + std::to_string(i));
    REQUIRE(run_until(ioc, [&] { return round_done("r3-", clients, n_clients); }, 5000ms));
    for (auto& n : {nodes[1].get(), nodes[2].get()})
        CHECK(n->count("fanout_gap") == 0);
    stop_clients(ioc, clients);
}

TEST_CASE("cluster: without a load balancer, a client whose node was killed fails over along its endpoint list")
{
    if (auto why = unavailable()) {
        MESSAGE("SKIP: ", *why);
        doctest::skip();
        return;
    }
    redis_server redis(vigil::test::free_port());
    std::vector<std::unique_ptr<serve_node>> nodes;
    std::vector<std::string> urls;
    for (int i = 0; i < 3; ++i) {
        nodes.push_back(std::make_unique<serve_node>(fanout_url(redis)));
        REQUIRE(nodes.back()->proc->wait_for("fanout_up", 5000ms));
        urls.push_back(std::string("ws://127.0.0.1:").append(std::to_string(nodes.back()->port)).append("/?channel=room"));
    }
    asio::io_context ioc;
    std::vector<std::unique_ptr<client>> clients;
    // Client i prefers node i, then the next ones.
    for (std::size_t i = 0; i < 3; ++i)
        clients.push_back(std::make_unique<client>(ioc, urls[i], std::vector<std::string>{urls[(i + 1) % 3], urls[(i + 2) % 3]}));
    REQUIRE(run_until(ioc, [&] { return nodes[0]->count("client_joined") + nodes[1]->count("client_joined") + nodes[2]->count("client_joined") == 3; }, 10000ms));
    CHECK(clients[0]->endpoint == 0);

    nodes[0]->proc->signal(SIGKILL);
    REQUIRE(nodes[0]->proc->wait_exit(2000ms));
    // The connection's end is seen at once (the kernel closes the dead node's sockets); the
    // next attempt goes to the next endpoint without a backoff wait.
    REQUIRE(run_until(ioc, [&] { return clients[0]->ups == 2; }, 5000ms));
    CHECK(clients[0]->endpoint == 1);
    CHECK(nodes[1]->count("client_joined") == 2);
    clients[0]->send(ioc, "from-the-survivor-side");
    REQUIRE(run_until(ioc, [&] { return clients[2]->count("from-the-survivor-side") == 1 && clients[1]->count("from-the-survivor-side") == 1; }, 5000ms));
    stop_clients(ioc, clients);
}

TEST_CASE("cluster: vigil-serve nodes report Redis killed and restarted, and broadcast across nodes again")
{
    if (auto why = unavailable()) {
        MESSAGE("SKIP: ", *why);
        doctest::skip();
        return;
    }
    const auto port = vigil::test::free_port();
    auto redis = std::make_unique<redis_server>(port);
    serve_node a(fanout_url(*redis)), b(fanout_url(*redis));
    REQUIRE(a.proc->wait_for("fanout_up", 5000ms));
    REQUIRE(b.proc->wait_for("fanout_up", 5000ms));
    redis->kill();
    REQUIRE_MESSAGE(a.proc->wait_for("fanout_down", 5000ms), a.proc->transcript());
    REQUIRE(b.proc->wait_for("fanout_down", 5000ms));
    redis = std::make_unique<redis_server>(port);
    REQUIRE_MESSAGE(a.proc->wait_for("fanout_up", 10000ms), a.proc->transcript());
    REQUIRE(b.proc->wait_for("fanout_up", 10000ms));

    asio::io_context ioc;
    std::vector<std::unique_ptr<client>> clients;
    clients.push_back(std::make_unique<client>(ioc, std::string("ws://127.0.0.1:").append(std::to_string(a.port)).append("/?channel=x")));
    clients.push_back(std::make_unique<client>(ioc, std::string("ws://127.0.0.1:").append(std::to_string(b.port)).append("/?channel=x")));
    REQUIRE(run_until(ioc, [&] { return a.count("client_joined") == 1 && b.count("client_joined") == 1; }, 5000ms));
    clients[0]->send(ioc, "across");
    REQUIRE(run_until(ioc, [&] { return clients[1]->count("across") == 1; }, 5000ms));
    stop_clients(ioc, clients);
}

TEST_CASE("cluster: vigil-serve with a wrong Redis password says fanout_failed and exits 1; a bad --fanout is 64")
{
    if (auto why = unavailable()) {
        MESSAGE("SKIP: ", *why);
        doctest::skip();
        return;
    }
    redis_server redis(vigil::test::free_port(), {"--requirepass", "right"});
    child_process wrong({serve_path(), "--fanout", fanout_url(redis, "wrong")});
    auto failed = wrong.wait_for("fanout_failed", 5000ms);
    REQUIRE_MESSAGE(failed, wrong.transcript());
    CHECK((*failed)["reason"] == "redis_auth_failed");
    CHECK(wrong.wait_exit(5000ms) == 1);
    CHECK(wrong.count("fanout_retry") == 0);

    for (const char* bad : {"http://127.0.0.1:1/x", "redis://127.0.0.1:1/a/b", "redis://127.0.0.1:99999", "redis://h/c?x=1"}) {
        CAPTURE(bad);
        child_process p({serve_path(), "--fanout", bad});
        CHECK(p.wait_exit(5000ms) == 64);
        CHECK(p.stderr_text().find("--fanout") != std::string::npos);
    }
}
