// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// Application-level heartbeats between a vigil client and a vigil server: pings that are data
// messages, consumed on both sides, answered, timed, and kept apart from the data.

#include <vigil/heartbeat.hpp>
#include <vigil/server.hpp>
#include <vigil/session.hpp>

#include <support/server_rig.hpp>
#include <support/testing.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <optional>
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
using vt::ms_between;
using vt::tolerance;

const std::string json_ping = R"({"type":"ping"})";
const std::string json_pong = R"({"type":"pong"})";

// A ping carrying a sequence number, `{"ping":N}`, whose pong must carry the same N,
// `{"pong":N}`. Each session works on its own copy, so the counter needs no lock.
struct seq_heartbeat {
    std::uint64_t sent = 0;

    static std::string make(std::string_view key, std::string_view n)
    {
        std::string s = "{\"";
        s += key;
        s += "\":";
        s += n;
        s += '}';
        return s;
    }
    // `{"<key>":N}` gives N's digits, anything else nothing.
    static std::optional<std::string_view> number_of(std::string_view key, std::string_view data)
    {
        std::string prefix = make(key, "");
        prefix.pop_back();  // {"<key>":
        if (data.size() < prefix.size() + 2 || data.substr(0, prefix.size()) != prefix || data.back() != '}')
            return std::nullopt;
        auto digits = data.substr(prefix.size(), data.size() - prefix.size() - 1);
        if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return std::nullopt;
        return digits;
    }

    std::string make_ping() { return make("ping", std::to_string(++sent)); }
    bool is_pong(std::string_view data) const { return data == make("pong", std::to_string(sent)); }
    std::optional<std::string> answer(std::string_view data) const
    {
        if (auto n = number_of("ping", data))
            return make("pong", *n);
        return std::nullopt;
    }
};
static_assert(vigil::heartbeat_policy<seq_heartbeat>);

// Handlers that only take messages (never answer), recording them in the rig's logs.
struct log_only {
    vt::server_rig** rig;
    asio::awaitable<void> operator()(vigil::server::connection_ptr c) const
    {
        auto& log = (*rig)->logs[c->id()];
        for (;;) {
            auto r = co_await c->receive();
            if (r.ec) {
                log.end = r.ec;
                log.ended = true;
                log.ended_at = steady::now();
                co_return;
            }
            log.messages.push_back(std::move(r));
        }
    }
};

// Answers every `{"ping":N}` with a stale `{"pong":N-1}`, as a confused server would.
struct stale_ponger {
    vt::server_rig** rig;
    asio::awaitable<void> operator()(vigil::server::connection_ptr c) const
    {
        auto& log = (*rig)->logs[c->id()];
        for (;;) {
            auto r = co_await c->receive();
            if (r.ec) {
                log.end = r.ec;
                log.ended = true;
                co_return;
            }
            log.messages.push_back(r);
            if (auto n = seq_heartbeat::number_of("ping", r.data)) {
                std::uint64_t v = 0;
                std::from_chars(n->data(), n->data() + n->size(), v);
                co_await c->send(seq_heartbeat::make("pong", std::to_string(v - 1)));
            }
        }
    }
};

vigil::server_config json_server(milliseconds interval, milliseconds timeout)
{
    auto cfg = vt::quick_server();
    cfg.session.heartbeat = vigil::message_heartbeat::json();
    cfg.session.ping_interval = interval;
    cfg.session.pong_timeout = timeout;
    cfg.session.ping = vigil::ping_mode::fixed;
    return cfg;
}

vigil::session_config json_client(milliseconds interval, milliseconds timeout)
{
    auto cfg = vt::quick_client();
    cfg.heartbeat = vigil::message_heartbeat::json();
    cfg.ping_interval = interval;
    cfg.pong_timeout = timeout;
    cfg.ping = vigil::ping_mode::fixed;
    return cfg;
}

std::size_t count_of(const std::vector<std::pair<std::string, message_type>>& messages, const std::string& text)
{
    return static_cast<std::size_t>(std::count_if(messages.begin(), messages.end(), [&](const auto& m) {
        return m.first == text && m.second == message_type::text;
    }));
}

std::size_t count_of(const std::vector<vigil::received>& messages, const std::string& text)
{
    return static_cast<std::size_t>(std::count_if(messages.begin(), messages.end(), [&](const auto& m) {
        return m.data == text && m.type == message_type::text;
    }));
}

}  // namespace

TEST_SUITE("application heartbeat")
{

TEST_CASE("JSON pings both ways: pongs are timed, heartbeat messages never reach the application")
{
    vt::server_rig rig(json_server(150ms, 100ms));
    REQUIRE(!rig.start());
    const auto ccfg = json_client(100ms, 80ms);
    vt::rig_client c(rig.ioc, ccfg);
    bool echoed = false;
    bool alive = false;
    c.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
            co_return;
        for (const char* d : {"d1", "d2", "d3"})
            c.send(d);
        echoed = co_await eventually([&] { return c.messages.size() >= 3; }, 2s);
        // Five of the client's heartbeat rounds (100 ms) span three of the server's (150 ms).
        co_await eventually([&] { return c.rtts.size() >= 5; }, 3s);
        alive = !c.run_done && rig.disconnected.empty();
        rig.srv.stop();
        co_await eventually([&] { return c.run_done; }, 2s);
    });
    rig.ioc.run_for(6s);

    REQUIRE(c.connect_done);
    REQUIRE_MESSAGE(!c.connect_ec, describe(c.connect_ec));
    CHECK(echoed);
    CHECK(alive);
    CHECK(c.rtts.size() >= 5);
    for (auto rtt : c.rtts)
        CHECK(rtt < ccfg.pong_timeout);
    CHECK(c.pings >= static_cast<int>(c.rtts.size()));
    // Only the data, in order, on both sides: not one ping or pong.
    REQUIRE(c.messages.size() == 3);
    CHECK(c.messages[0].first == "d1");
    CHECK(c.messages[1].first == "d2");
    CHECK(c.messages[2].first == "d3");
    REQUIRE(rig.connected.size() == 1);
    const auto& log = rig.logs[rig.connected[0].id];
    REQUIRE(log.messages.size() == 3);
    CHECK(log.messages[0].data == "d1");
    CHECK(log.messages[2].data == "d3");
    CHECK(vigil::close_code_of(c.run_ec) == 1001);
}

TEST_CASE("deliver_heartbeat_messages hands the heartbeat messages to the application as well")
{
    auto scfg = json_server(150ms, 100ms);
    scfg.session.deliver_heartbeat_messages = true;
    vt::server_rig* rigp = nullptr;
    vt::server_rig rig(scfg, log_only{&rigp});
    rigp = &rig;
    REQUIRE(!rig.start());
    auto ccfg = json_client(100ms, 80ms);
    ccfg.deliver_heartbeat_messages = true;
    vt::rig_client c(rig.ioc, ccfg);
    bool alive = false;
    c.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
            co_return;
        // Both heartbeats at work for a few rounds, on both sides: the counts checked below.
        co_await eventually(
            [&] {
                if (rig.connected.size() != 1)
                    return false;
                const auto& log = rig.logs[rig.connected[0].id];
                return c.rtts.size() >= 4 && count_of(c.messages, json_pong) >= 4 && count_of(c.messages, json_ping) >= 3 &&
                       count_of(log.messages, json_ping) >= 4 && count_of(log.messages, json_pong) >= 3;
            },
            3s);
        alive = !c.run_done && rig.disconnected.empty();
        rig.srv.stop();
        co_await eventually([&] { return c.run_done; }, 2s);
    });
    rig.ioc.run_for(6s);

    REQUIRE(c.connect_done);
    REQUIRE_MESSAGE(!c.connect_ec, describe(c.connect_ec));
    CHECK(alive);
    // Still pongs to the heartbeat...
    CHECK(c.rtts.size() >= 4);
    // ...and also messages to the application: our pongs and the server's pings.
    CHECK(count_of(c.messages, json_pong) >= 4);
    CHECK(count_of(c.messages, json_ping) >= 3);
    CHECK(count_of(c.messages, json_pong) + count_of(c.messages, json_ping) == c.messages.size());
    REQUIRE(rig.connected.size() == 1);
    const auto& log = rig.logs[rig.connected[0].id];
    CHECK(count_of(log.messages, json_ping) >= 4);
    CHECK(count_of(log.messages, json_pong) >= 3);
    CHECK(count_of(log.messages, json_ping) + count_of(log.messages, json_pong) == log.messages.size());
}

TEST_CASE("a client with no pings of its own answers the server's application pings")
{
    // Idle mode on the server: with the client silent, it pings every 150 ms and evicts the
    // client 100 ms after an unanswered one.
    auto scfg = json_server(150ms, 100ms);
    scfg.session.ping = vigil::ping_mode::idle;
    vt::server_rig* rigp = nullptr;
    vt::server_rig rig(scfg, log_only{&rigp});
    rigp = &rig;
    REQUIRE(!rig.start());
    auto ccfg = vt::quick_client();  // ping_interval 0
    ccfg.heartbeat = vigil::message_heartbeat::json();
    ccfg.deliver_heartbeat_messages = true;  // to count the server's pings
    vt::rig_client c(rig.ioc, ccfg);
    bool alive = false;
    c.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
            co_return;
        // Three of the server's rounds answered in time: its fourth ping comes only then.
        co_await eventually([&] { return count_of(c.messages, json_ping) >= 4; }, 3s);
        alive = !c.run_done && rig.disconnected.empty();
        rig.srv.stop();
        co_await eventually([&] { return c.run_done; }, 2s);
    });
    rig.ioc.run_for(6s);

    REQUIRE(c.connect_done);
    REQUIRE_MESSAGE(!c.connect_ec, describe(c.connect_ec));
    const std::string why_gone = rig.disconnected.empty() ? "-" : describe(rig.disconnected[0].info.reason);
    CAPTURE(why_gone);
    CHECK(alive);
    CHECK(count_of(c.messages, json_ping) >= 4);  // the server really pinged, and was answered
    CHECK(c.pings == 0);
    // The answers were consumed as pongs by the server, not handed to its handler.
    REQUIRE(rig.connected.size() == 1);
    CHECK(rig.logs[rig.connected[0].id].messages.empty());
}

TEST_CASE("application pings that nobody answers end the session with pong_timeout")
{
    // A server without an application heartbeat takes the pings as data; its handler never
    // answers, and it sends no protocol pings either (those would count as signs of life).
    auto scfg = vt::quick_server();
    scfg.session.ping_interval = 0ms;
    vt::server_rig* rigp = nullptr;
    vt::server_rig rig(scfg, log_only{&rigp});
    rigp = &rig;
    REQUIRE(!rig.start());
    auto ccfg = json_client(100ms, 80ms);
    ccfg.ping = vigil::ping_mode::idle;
    vt::rig_client c(rig.ioc, ccfg);
    c.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        co_await eventually([&] { return c.run_done; }, 3s);
        rig.srv.stop();
    });
    rig.ioc.run_for(6s);

    REQUIRE(c.connect_done);
    REQUIRE_MESSAGE(!c.connect_ec, describe(c.connect_ec));
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, error::pong_timeout);
    const auto lasted = ms_between(c.connected_at, c.run_ended);
    CAPTURE(lasted.count());
    CHECK(lasted >= ccfg.ping_interval + ccfg.pong_timeout - 20ms);
    CHECK(lasted <= ccfg.ping_interval + ccfg.pong_timeout + tolerance);
    CHECK(c.pings >= 1);
    CHECK(c.rtts.empty());
    // The pings went out as text messages.
    REQUIRE(rig.connected.size() == 1);
    const auto& log = rig.logs[rig.connected[0].id];
    CHECK(count_of(log.messages, json_ping) >= 1);
    CHECK(count_of(log.messages, json_ping) == log.messages.size());
}

TEST_CASE("malformed JSON, look-alikes and binary messages flow as data")
{
    auto scfg = json_server(1s, 500ms);
    scfg.session.ping_interval = 0ms;  // no heartbeat traffic: every message seen is data
    vt::server_rig rig(scfg);
    REQUIRE(!rig.start());
    auto ccfg = vt::quick_client();
    ccfg.heartbeat = vigil::message_heartbeat::json();
    ccfg.deliver_heartbeat_messages = true;  // an unwanted answer from the server would show
    vt::rig_client c(rig.ioc, ccfg);
    const std::vector<std::pair<std::string, message_type>> sent = {
        {R"({"type":)", message_type::text},
        {R"({"type":"pong")", message_type::text},
        {R"({"type":"ping")", message_type::text},
        {R"([{"type":"ping"}])", message_type::text},
        {R"({"type":"pings"})", message_type::text},
        {R"({"kind":"ping"})", message_type::text},
        {R"({"type":["ping"]})", message_type::text},
        {R"("ping")", message_type::text},
        {"not json at all", message_type::text},
        {"", message_type::text},
        {json_ping, message_type::binary},
        {json_pong, message_type::binary},
        {std::string("\0\xff{\"type\":\"ping\"}", 17), message_type::binary},
    };
    // Sent once every echo is back. Whatever the messages above set off (an answer from the
    // server, an answer from us to an echo and the server's echo of that) was written before
    // it on each side, so its own echo comes last.
    const std::pair<std::string, message_type> end_marker{"end of test", message_type::text};
    auto expected = sent;
    expected.push_back(end_marker);
    bool all_back = false;
    bool marker_back = false;
    c.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
            co_return;
        for (const auto& [data, type] : sent)
            c.send(data, type);
        all_back = co_await eventually([&] { return c.messages.size() >= sent.size(); }, 2s);
        c.send(end_marker.first, end_marker.second);
        marker_back = co_await eventually([&] { return !c.messages.empty() && c.messages.back() == end_marker; }, 2s);
        rig.srv.stop();
        co_await eventually([&] { return c.run_done; }, 2s);
    });
    rig.ioc.run_for(6s);

    REQUIRE(c.connect_done);
    REQUIRE_MESSAGE(!c.connect_ec, describe(c.connect_ec));
    CHECK(all_back);
    CHECK(marker_back);
    CHECK(c.messages == expected);
    REQUIRE(rig.connected.size() == 1);
    const auto& log = rig.logs[rig.connected[0].id];
    REQUIRE(log.messages.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        CAPTURE(i);
        CHECK(log.messages[i].data == expected[i].first);
        CHECK(log.messages[i].type == expected[i].second);
    }
    // Nothing above ended either side.
    CHECK(vigil::close_code_of(c.run_ec) == 1001);
    REQUIRE(rig.disconnected.size() == 1);
    CHECK_CODE(rig.disconnected[0].info.reason, error::server_shutdown);
}

TEST_CASE("heartbeat messages do not satisfy idle_timeout")
{
    bool deliver = false;
    SUBCASE("consumed")
    {
    }
    SUBCASE("delivered")
    {
        deliver = true;
    }
    CAPTURE(deliver);
    // The server answers application pings and sends nothing else: a feed that went quiet.
    auto scfg = json_server(1s, 500ms);
    scfg.session.ping_interval = 0ms;
    vt::server_rig* rigp = nullptr;
    vt::server_rig rig(scfg, log_only{&rigp});
    rigp = &rig;
    REQUIRE(!rig.start());
    auto ccfg = json_client(100ms, 80ms);
    ccfg.idle_timeout = 400ms;
    ccfg.deliver_heartbeat_messages = deliver;
    vt::rig_client c(rig.ioc, ccfg);
    c.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        co_await eventually([&] { return c.run_done; }, 3s);
        rig.srv.stop();
    });
    rig.ioc.run_for(6s);

    REQUIRE(c.connect_done);
    REQUIRE_MESSAGE(!c.connect_ec, describe(c.connect_ec));
    REQUIRE(c.run_done);
    CHECK_CODE(c.run_ec, error::idle_timeout);
    const auto lasted = ms_between(c.connected_at, c.run_ended);
    CAPTURE(lasted.count());
    CHECK(lasted >= ccfg.idle_timeout - 20ms);
    CHECK(lasted <= ccfg.idle_timeout + tolerance);
    CHECK(c.rtts.size() >= 2);  // the pongs did arrive
    if (deliver)
        CHECK(count_of(c.messages, json_pong) >= 2);
    else
        CHECK(c.messages.empty());
}

TEST_CASE("a user-defined policy with sequence numbers: each session counts on its own copy")
{
    auto scfg = vt::quick_server();
    scfg.session.heartbeat = seq_heartbeat{};
    scfg.session.ping_interval = 0ms;  // the server only answers
    scfg.session.deliver_heartbeat_messages = true;  // to read the pings' numbers
    vt::server_rig* rigp = nullptr;
    vt::server_rig rig(scfg, log_only{&rigp});
    rigp = &rig;
    REQUIRE(!rig.start());
    auto ccfg = vt::quick_client();
    ccfg.heartbeat = seq_heartbeat{};
    ccfg.ping_interval = 100ms;
    ccfg.pong_timeout = 80ms;
    ccfg.ping = vigil::ping_mode::fixed;
    vt::rig_client c1(rig.ioc, ccfg);
    vt::rig_client c2(rig.ioc, ccfg);
    bool alive = false;
    c1.start(rig.url());
    c2.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return c1.connect_done && c2.connect_done; }, 3s))
            co_return;
        co_await eventually(
            [&] {
                return c1.rtts.size() >= 4 && c2.rtts.size() >= 4 && rig.connected.size() == 2 &&
                       std::all_of(rig.connected.begin(), rig.connected.end(),
                                   [&](const auto& j) { return rig.logs[j.id].messages.size() >= 4; });
            },
            3s);
        alive = !c1.run_done && !c2.run_done && rig.disconnected.empty();
        rig.srv.stop();
        co_await eventually([&] { return c1.run_done && c2.run_done; }, 2s);
    });
    rig.ioc.run_for(6s);

    REQUIRE(!c1.connect_ec);
    REQUIRE(!c2.connect_ec);
    CHECK(alive);
    CHECK(c1.rtts.size() >= 4);
    CHECK(c2.rtts.size() >= 4);
    CHECK(c1.messages.empty());  // the pongs were consumed
    CHECK(c2.messages.empty());
    REQUIRE(rig.connected.size() == 2);
    for (const auto& j : rig.connected) {
        CAPTURE(j.id);
        const auto& log = rig.logs[j.id];
        REQUIRE(log.messages.size() >= 4);
        // {"ping":1}, {"ping":2}, ...: numbered from 1 on every connection.
        for (std::size_t i = 0; i < log.messages.size(); ++i)
            CHECK(log.messages[i].data == seq_heartbeat::make("ping", std::to_string(i + 1)));
    }
}

TEST_CASE("a pong with the wrong sequence number is not a pong, but still a sign of life")
{
    auto scfg = vt::quick_server();
    scfg.session.ping_interval = 0ms;
    vt::server_rig* rigp = nullptr;
    vt::server_rig rig(scfg, stale_ponger{&rigp});
    rigp = &rig;
    REQUIRE(!rig.start());
    auto ccfg = vt::quick_client();
    ccfg.heartbeat = seq_heartbeat{};
    ccfg.ping_interval = 100ms;
    ccfg.pong_timeout = 80ms;
    ccfg.ping = vigil::ping_mode::fixed;
    vt::rig_client c(rig.ioc, ccfg);
    bool alive = false;
    c.start(rig.url());
    rig.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return c.connect_done; }, 3s) || c.connect_ec)
            co_return;
        // Four rounds judged: each ping after the first comes only once the one before had
        // its pong_timeout (80 ms of a 100 ms round) and the stale answer passed for life.
        co_await eventually([&] { return c.pings >= 5 && c.messages.size() >= 4; }, 3s);
        alive = !c.run_done;
        rig.srv.stop();
        co_await eventually([&] { return c.run_done; }, 2s);
    });
    rig.ioc.run_for(6s);

    REQUIRE(c.connect_done);
    REQUIRE(!c.connect_ec);
    CHECK(c.pings >= 4);
    CHECK(c.rtts.empty());  // no pong ever matched
    // The stale answers are not heartbeat messages, so they are data...
    REQUIRE(c.messages.size() >= 4);
    CHECK(c.messages[0].first == seq_heartbeat::make("pong", "0"));
    CHECK(c.messages[1].first == seq_heartbeat::make("pong", "1"));
    // ...and frames all the same: the connection is alive.
    CHECK(alive);
    CHECK(vigil::close_code_of(c.run_ec) == 1001);
}

}  // TEST_SUITE
