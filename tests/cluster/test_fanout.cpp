// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// vigil::server nodes fanned out through a real redis-server (vigil::redis_fanout), with
// vigil::supervisor clients over real sockets, all on the test thread's io_context: a channel
// broadcast reaches every node's members once each and in order, and no other connection;
// Redis killed and restarted loses nothing silently (every broadcast is delivered or
// reported); a foreign message and a wrong password are reported.

#include <vigil/redis.hpp>
#include <vigil/server.hpp>
#include <vigil/supervisor.hpp>

#include "redis_rig.hpp"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;
using vigil::test::redis_server;
using vigil::test::publish;
using vigil::test::quick_redis_config;
using vigil::test::run_until;

constexpr const char* bus = "cluster-test";

/// A server node with its Redis fan-out, both running. Each client joins the channel its URL
/// path names ("/room" joins "room").
struct node {
    node(asio::io_context& ioc, const std::string& redis_url)
        : fanout(std::make_shared<vigil::redis_fanout>(ioc.get_executor(), quick_redis_config(redis_url), bus,
                                                       vigil::constant_backoff(200ms))),
          srv(ioc.get_executor(), config(fanout), [this](vigil::server::connection_ptr c) { return handle(std::move(c)); })
    {
        auto& ev = srv.events();
        ev.on_fanout_error = [this](std::string_view, const error_code& ec, const std::string& detail) {
            errors.push_back(ec);
            error_details.push_back(detail);
        };
        ev.on_fanout_gap = [this](std::string_view, std::uint64_t n) { gap_events += n; };
        fanout->link().on_up = [this] { ++ups; };
        fanout->link().on_down = [this](error_code) { ++downs; };
        std::string detail;
        REQUIRE_MESSAGE(!srv.listen(&detail), detail);
        asio::co_spawn(ioc, [this]() -> asio::awaitable<void> { server_result = co_await srv.run(); }, asio::detached);
        asio::co_spawn(ioc, [this]() -> asio::awaitable<void> { link_result = co_await fanout->run(); },
                       asio::detached);
    }

    static vigil::server_config config(std::shared_ptr<vigil::redis_fanout> f)
    {
        vigil::server_config cfg;
        cfg.fanout = std::move(f);
        return cfg;
    }

    asio::awaitable<void> handle(vigil::server::connection_ptr c)
    {
        REQUIRE_FALSE(srv.join(c, c->target().substr(1)));
        ++joined;
        for (;;)
            if ((co_await c->receive()).ec)
                co_return;
    }

    std::string url(const std::string& channel) const
    {
        return std::string("ws://127.0.0.1:").append(std::to_string(srv.port())).append("/").append(channel);
    }

    /// The connection of this node that is a member of `channel` (the first one).
    vigil::server::connection_ptr member_of(const std::string& channel) const
    {
        for (auto& c : srv.connections()) {
            auto names = srv.channels(c);
            if (std::find(names.begin(), names.end(), channel) != names.end())
                return c;
        }
        return nullptr;
    }

    void stop()
    {
        srv.stop();
        fanout->stop();
    }
    bool stopped() const { return server_result && link_result; }

    std::shared_ptr<vigil::redis_fanout> fanout;
    vigil::server srv;
    int joined = 0;
    int ups = 0;
    int downs = 0;
    std::vector<error_code> errors;
    std::vector<std::string> error_details;
    std::uint64_t gap_events = 0;
    std::optional<error_code> server_result;
    std::optional<error_code> link_result;
};

/// A supervised client that records every message it receives.
struct client {
    client(asio::io_context& ioc, const std::string& url) : sup(ioc.get_executor(), url, config())
    {
        sup.session_event_handlers().on_message = [this](std::string_view data, vigil::message_type) {
            got.emplace_back(data);
        };
        asio::co_spawn(ioc, [this]() -> asio::awaitable<void> { result = co_await sup.run(); }, asio::detached);
    }
    static vigil::supervisor_config config()
    {
        vigil::supervisor_config cfg;
        cfg.session.ping_interval = 1000ms;
        cfg.session.pong_timeout = 500ms;
        return cfg;
    }
    bool has(const std::string& m) const { return std::find(got.begin(), got.end(), m) != got.end(); }
    /// The messages that start with `prefix`, in the order received.
    std::vector<std::string> with_prefix(const std::string& prefix) const
    {
        std::vector<std::string> out;
        for (const auto& m : got)
            if (m.rfind(prefix, 0) == 0)
                out.push_back(m);
        return out;
    }

    vigil::supervisor sup;
    std::vector<std::string> got;
    std::optional<error_code> result;
};

std::vector<std::string> numbered(const std::string& prefix, int n)
{
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i)
        out.push_back(std::string(prefix).append(std::to_string(i)));
    return out;
}

/// Stops everything and runs the io_context until it has all ended (each server must outlive
/// its run()).
template <class Nodes, class Clients>
void shut_down(asio::io_context& ioc, Nodes& nodes, Clients& clients)
{
    for (auto& c : clients)
        c->sup.stop();
    for (auto& n : nodes)
        n->stop();
    CHECK(run_until(
        ioc,
        [&] {
            return std::all_of(nodes.begin(), nodes.end(), [](auto& n) { return n->stopped(); }) &&
                   std::all_of(clients.begin(), clients.end(), [](auto& c) { return c->result.has_value(); });
        },
        10000ms));
}

}  // namespace

TEST_CASE("fan-out: a channel broadcast reaches the members on every node once each, in order, and no one else")
{
    redis_server redis(vigil::test::free_port());
    asio::io_context ioc;
    std::vector<std::unique_ptr<node>> nodes;
    for (int i = 0; i < 3; ++i)
        nodes.push_back(std::make_unique<node>(ioc, redis.url()));
    std::vector<std::unique_ptr<client>> room, other;
    for (auto& n : nodes) {
        room.push_back(std::make_unique<client>(ioc, n->url("room")));
        other.push_back(std::make_unique<client>(ioc, n->url("other")));
    }
    REQUIRE(run_until(ioc, [&] { return std::all_of(nodes.begin(), nodes.end(), [](auto& n) { return n->joined == 2 && n->ups == 1; }); }, 5000ms));

    // Two publishing nodes, interleaved; each one's order must hold everywhere.
    const auto ms = numbered("m", 30), ns = numbered("n", 30);
    for (int i = 0; i < 30; ++i) {
        CHECK(nodes[0]->srv.broadcast("room", ms[i]) == 1);
        CHECK(nodes[1]->srv.broadcast("room", ns[i]) == 1);
    }
    std::optional<error_code> published;
    publish(ioc, nodes[0]->srv, "other", "o0", &published);
    nodes[1]->srv.broadcast("other", "o1");
    REQUIRE(run_until(ioc, [&] {
        return published && std::all_of(room.begin(), room.end(), [](auto& c) { return c->got.size() >= 60; }) &&
               std::all_of(other.begin(), other.end(), [](auto& c) { return c->got.size() >= 2; });
    }, 5000ms));
    CHECK_FALSE(*published);
    for (std::size_t i = 0; i < room.size(); ++i) {
        CAPTURE(i);
        CHECK(room[i]->got.size() == 60);
        CHECK(room[i]->with_prefix("m") == ms);
        CHECK(room[i]->with_prefix("n") == ns);
        auto o = other[i]->got;
        std::sort(o.begin(), o.end());
        CHECK(o == std::vector<std::string>{"o0", "o1"});
    }
    // Each node counts what came from the others: node 2 everything, node 0 node 1's 31.
    CHECK(nodes[2]->srv.counters().fanout_received == 62);
    CHECK(nodes[0]->srv.counters().fanout_received == 31);
    REQUIRE(run_until(ioc, [&] { return nodes[0]->srv.counters().fanout_published == 31; }, 2000ms));
    for (auto& n : nodes) {
        CHECK(n->srv.counters().fanout_missed == 0);
        CHECK(n->srv.counters().fanout_invalid == 0);
        CHECK(n->errors.empty());
    }

    // Leaving: node 2's room member leaves, then joins "probe". Node 0's broadcasts to room and
    // then probe reach it in that order, so once it has the probe, the room message would
    // have come before it.
    auto leaver = nodes[2]->member_of("room");
    REQUIRE(leaver);
    CHECK(nodes[2]->srv.leave(leaver, "room"));
    CHECK_FALSE(nodes[2]->srv.leave(leaver, "room"));
    CHECK_FALSE(nodes[2]->srv.join(leaver, "probe"));
    CHECK(nodes[2]->srv.channels(leaver) == std::vector<std::string>{"probe"});
    nodes[0]->srv.broadcast("room", "after-leave");
    nodes[0]->srv.broadcast("probe", "probe-1");
    REQUIRE(run_until(ioc, [&] { return room[2]->has("probe-1") && room[0]->has("after-leave") && room[1]->has("after-leave"); }, 5000ms));
    CHECK_FALSE(room[2]->has("after-leave"));

    // Bad names, and a connection of another server.
    CHECK(nodes[2]->srv.join(leaver, "") == asio::error::invalid_argument);
    CHECK(nodes[2]->srv.join(leaver, std::string(1025, 'x')) == asio::error::invalid_argument);
    CHECK(nodes[0]->srv.join(leaver, "room") == error::not_connected);
    CHECK(nodes[2]->srv.join(nullptr, "room") == error::not_connected);
    CHECK_FALSE(nodes[0]->srv.leave(leaver, "probe"));
    const auto published_before = nodes[0]->srv.counters().fanout_published;
    CHECK(nodes[0]->srv.broadcast(std::string(2000, 'x'), "nowhere") == 0);
    CHECK(nodes[0]->srv.broadcast("", "nowhere") == 0);
    std::optional<error_code> refused;
    publish(ioc, nodes[0]->srv, "", "nowhere", &refused);
    REQUIRE(run_until(ioc, [&] { return refused.has_value(); }, 2000ms));
    CHECK(*refused == asio::error::invalid_argument);
    CHECK(nodes[0]->srv.counters().fanout_published == published_before);
    CHECK(nodes[0]->srv.counters().fanout_failed == 0);
    CHECK(nodes[0]->srv.channels(leaver).empty());
    CHECK(nodes[2]->srv.channels(leaver) == std::vector<std::string>{"probe"});

    std::vector<std::unique_ptr<client>> all;
    for (auto& c : room)
        all.push_back(std::move(c));
    for (auto& c : other)
        all.push_back(std::move(c));
    shut_down(ioc, nodes, all);
}

TEST_CASE("fan-out: Redis killed and restarted: every broadcast of the outage is delivered or reported")
{
    const auto port = vigil::test::free_port();
    auto redis = std::make_unique<redis_server>(port);
    asio::io_context ioc;
    std::vector<std::unique_ptr<node>> nodes;
    nodes.push_back(std::make_unique<node>(ioc, redis->url()));
    nodes.push_back(std::make_unique<node>(ioc, redis->url()));
    std::vector<std::unique_ptr<client>> clients;
    clients.push_back(std::make_unique<client>(ioc, nodes[1]->url("room")));
    auto& receiver = *clients[0];
    REQUIRE(run_until(ioc, [&] { return nodes[1]->joined == 1 && nodes[0]->ups == 1 && nodes[1]->ups == 1; }, 5000ms));
    nodes[0]->srv.broadcast("room", "before");
    REQUIRE(run_until(ioc, [&] { return receiver.has("before"); }, 5000ms));

    redis->kill();
    REQUIRE(run_until(ioc, [&] { return nodes[0]->downs >= 1 && nodes[1]->downs >= 1; }, 3000ms));
    constexpr int n = 10;
    std::vector<std::optional<error_code>> results(n);
    const auto outage = numbered("outage-", n);
    for (int i = 0; i < n; ++i)
        publish(ioc, nodes[0]->srv, "room", outage[i], &results[i]);
    redis = std::make_unique<redis_server>(port);
    auto all_done = [&] { return std::all_of(results.begin(), results.end(), [](auto& r) { return r.has_value(); }); };
    REQUIRE(run_until(ioc, [&] { return all_done() && nodes[0]->ups == 2 && nodes[1]->ups == 2; }, 10000ms));

    // A broadcast after both are back: it arrives, and it closes any gap in node 0's numbers.
    std::optional<error_code> sync;
    publish(ioc, nodes[0]->srv, "room", "sync", &sync);
    REQUIRE(run_until(ioc, [&] { return sync && receiver.has("sync"); }, 5000ms));
    CHECK_FALSE(*sync);

    std::size_t failed = 0;
    for (auto& r : results)
        failed += *r ? 1 : 0;
    const auto delivered = receiver.with_prefix("outage-");
    const auto c1 = nodes[1]->srv.counters();
    const auto c0 = nodes[0]->srv.counters();
    INFO("failed at node 0: ", failed, ", delivered at node 1: ", delivered.size(), ", missed at node 1: ",
         c1.fanout_missed);
    // Nothing lost silently: each outage broadcast reached node 1, or node 1 reported it missed.
    CHECK(delivered.size() + c1.fanout_missed == n);
    CHECK(nodes[1]->gap_events == c1.fanout_missed);
    // And the publisher reported every one it could not hand over.
    CHECK(c0.fanout_failed == failed);
    CHECK(nodes[0]->errors.size() == failed);
    // Those delivered came in order.
    auto expected = outage;
    expected.erase(std::remove_if(expected.begin(), expected.end(),
                                  [&](auto& m) { return std::find(delivered.begin(), delivered.end(), m) == delivered.end(); }),
                   expected.end());
    CHECK(delivered == expected);
    shut_down(ioc, nodes, clients);
}

TEST_CASE("fan-out: a message on the bus that no vigil server wrote is reported, not delivered")
{
    redis_server redis(vigil::test::free_port());
    asio::io_context ioc;
    std::vector<std::unique_ptr<node>> nodes;
    nodes.push_back(std::make_unique<node>(ioc, redis.url()));
    std::vector<std::unique_ptr<client>> clients;
    clients.push_back(std::make_unique<client>(ioc, nodes[0]->url("room")));
    REQUIRE(run_until(ioc, [&] { return nodes[0]->joined == 1 && nodes[0]->ups == 1; }, 5000ms));

    vigil::redis_link intruder(ioc.get_executor(), quick_redis_config(redis.url()));
    std::optional<error_code> intruder_done;
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> { intruder_done = co_await intruder.run(); }, asio::detached);
    std::optional<error_code> sent;
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> { sent = co_await intruder.publish(bus, "{\"hello\":1}"); },
                   asio::detached);
    REQUIRE(run_until(ioc, [&] { return sent && !nodes[0]->errors.empty(); }, 5000ms));
    CHECK_FALSE(*sent);
    CHECK(nodes[0]->errors.front() == error::fanout_message_invalid);
    CHECK(nodes[0]->error_details.front().find("does not start with") != std::string::npos);
    CHECK(nodes[0]->srv.counters().fanout_invalid == 1);
    CHECK(nodes[0]->srv.counters().fanout_received == 0);
    CHECK(clients[0]->got.empty());

    intruder.stop();
    CHECK(run_until(ioc, [&] { return intruder_done.has_value(); }, 5000ms));
    shut_down(ioc, nodes, clients);
}

TEST_CASE("fan-out: a wrong Redis password stops the fan-out for good; broadcasts still reach local members and report the failure")
{
    redis_server redis(vigil::test::free_port(), {"--requirepass", "right"});
    asio::io_context ioc;
    std::vector<std::unique_ptr<node>> nodes;
    nodes.push_back(std::make_unique<node>(ioc, redis.url("wrong")));
    std::vector<std::unique_ptr<client>> clients;
    clients.push_back(std::make_unique<client>(ioc, nodes[0]->url("room")));
    REQUIRE(run_until(ioc, [&] { return nodes[0]->link_result.has_value() && nodes[0]->joined == 1; }, 5000ms));
    CHECK(*nodes[0]->link_result == error::redis_auth_failed);
    CHECK(nodes[0]->fanout->link().counters().retries == 0);

    CHECK(nodes[0]->srv.broadcast("room", "local") == 1);
    REQUIRE(run_until(ioc, [&] { return clients[0]->has("local") && !nodes[0]->errors.empty(); }, 5000ms));
    CHECK(nodes[0]->errors.front() == error::redis_auth_failed);
    CHECK(nodes[0]->error_details.front().find("channel \"room\"") != std::string::npos);
    CHECK(nodes[0]->srv.counters().fanout_failed == 1);
    shut_down(ioc, nodes, clients);
}
