// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The Redis link's state machine (lib/redis/link_fsm), stepped with a fake clock: set-up,
// heartbeats, deadlines, backoff and stop, with no socket and no real time.

#include "redis/link_fsm.hpp"
#include "support/recording_policy.hpp"

#include <vigil/error.hpp>

#include <doctest/doctest.h>

#include <boost/asio/error.hpp>

#include <chrono>
#include <vector>

namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;
using vigil::detail::redis_action;
using vigil::detail::redis_conn;
using vigil::detail::redis_fsm_settings;
using vigil::detail::redis_link_fsm;
using vigil::detail::redis_phase;
using vigil::detail::redis_wait;
using kind = redis_action::kind;
using time_point = std::chrono::steady_clock::time_point;

const time_point t0 = time_point(std::chrono::hours(10));
const error_code refused = boost::asio::error::connection_refused;

using vigil::test::recording_policy;

redis_fsm_settings settings()
{
    redis_fsm_settings s;
    s.connect_timeout = 2s;
    s.command_timeout = 3s;
    s.ping_interval = 10s;
    s.pong_timeout = 4s;
    s.min_delay = 100ms;
    return s;
}

struct rig {
    rig() : policy(recording_policy{&asked, &resets}), fsm(settings(), policy) {}

    // Start, open both, handshake on both, subscribe `channels` (plus the heartbeat's): up.
    void bring_up(time_point now, int channels = 1)
    {
        CHECK(fsm.start(now).what == kind::connect);
        CHECK(fsm.opened(redis_conn::subscriber, now).what == kind::none);
        REQUIRE(fsm.opened(redis_conn::commands, now).what == kind::authenticate);
        fsm.sent(redis_conn::subscriber, redis_wait::command, now);
        fsm.sent(redis_conn::commands, redis_wait::command, now);
        CHECK(fsm.replied(redis_conn::commands, now).what == kind::none);
        REQUIRE(fsm.replied(redis_conn::subscriber, now).what == kind::subscribe);
        for (int i = 0; i <= channels; ++i)
            fsm.sent(redis_conn::subscriber, redis_wait::command, now);
        for (int i = 0; i < channels; ++i)
            CHECK(fsm.replied(redis_conn::subscriber, now).what == kind::none);
        REQUIRE(fsm.replied(redis_conn::subscriber, now).what == kind::up);
        CHECK(fsm.phase() == redis_phase::ready);
    }

    std::vector<vigil::retry_context> asked;
    int resets = 0;
    vigil::any_backoff policy;
    redis_link_fsm fsm;
};

}  // namespace

TEST_CASE("redis link fsm: up only after the handshake on both and every SUBSCRIBE confirmed")
{
    rig r;
    r.bring_up(t0, 3);
    CHECK(r.fsm.streak() == 0);
    CHECK(r.resets == 1);
}

TEST_CASE("redis link fsm: the set-up is bounded by connect_timeout")
{
    rig r;
    CHECK(r.fsm.start(t0).what == kind::connect);
    CHECK(r.fsm.next_deadline() == t0 + 2s);
    CHECK(r.fsm.tick(t0 + 1999ms).what == kind::none);
    auto a = r.fsm.tick(t0 + 2s);
    CHECK(a.what == kind::back_off);
    CHECK(a.reason == error::connect_timeout);
    CHECK(a.attempt == 1);
    CHECK(a.delay == 1s);
    CHECK(r.fsm.phase() == redis_phase::backing_off);
}

TEST_CASE("redis link fsm: a handshake still unanswered at connect_timeout fails the attempt")
{
    rig r;
    r.fsm.start(t0);
    r.fsm.opened(redis_conn::subscriber, t0);
    r.fsm.opened(redis_conn::commands, t0 + 500ms);
    r.fsm.sent(redis_conn::subscriber, redis_wait::command, t0 + 500ms);
    r.fsm.sent(redis_conn::commands, redis_wait::command, t0 + 500ms);
    CHECK(r.fsm.phase() == redis_phase::authenticating);
    CHECK(r.fsm.tick(t0 + 2s).reason == error::connect_timeout);
}

TEST_CASE("redis link fsm: retries wait the policy's delay, with min_delay as a floor, and count a streak")
{
    rig r;
    r.fsm.start(t0);
    auto a = r.fsm.failed(refused, t0);
    CHECK(a.what == kind::back_off);
    CHECK(a.delay == 1s);
    CHECK(r.fsm.tick(t0 + 999ms).what == kind::none);
    CHECK(r.fsm.next_deadline() == t0 + 1s);
    CHECK(r.fsm.tick(t0 + 1s).what == kind::connect);
    a = r.fsm.failed(refused, t0 + 1500ms);
    CHECK(a.attempt == 2);
    CHECK(a.delay == 2s);
    REQUIRE(r.asked.size() == 2);
    CHECK(r.asked[1].failing_for == 1500ms);
    CHECK(r.asked[1].previous_delay == 1s);
    CHECK(r.asked[1].reason == refused);

    struct zero_policy {
        milliseconds next_delay(const vigil::retry_context&) { return 0ms; }
        void reset() {}
    };
    vigil::any_backoff zero = zero_policy{};
    redis_link_fsm f(settings(), zero);
    f.start(t0);
    CHECK(f.failed(refused, t0).delay == 100ms);
}

TEST_CASE("redis link fsm: a permanent failure gives up at once, without a retry")
{
    rig r;
    r.fsm.start(t0);
    r.fsm.opened(redis_conn::subscriber, t0);
    r.fsm.opened(redis_conn::commands, t0);
    auto a = r.fsm.failed(error::redis_auth_failed, t0);
    CHECK(a.what == kind::give_up);
    CHECK(a.reason == error::redis_auth_failed);
    CHECK(r.fsm.phase() == redis_phase::stopped);
    CHECK(r.asked.empty());
    CHECK(r.fsm.tick(t0 + 1h).what == kind::none);
}

TEST_CASE("redis link fsm: an idle connection is pinged after ping_interval, and declared dead after pong_timeout")
{
    rig r;
    r.bring_up(t0);
    r.fsm.received(redis_conn::subscriber, t0 + 5s);  // a message keeps the subscriber alive
    CHECK(r.fsm.next_deadline() == t0 + 10s);
    auto a = r.fsm.tick(t0 + 10s);
    CHECK(a.what == kind::ping);
    CHECK(a.conn == redis_conn::commands);
    r.fsm.sent(redis_conn::commands, redis_wait::ping, t0 + 10s);
    CHECK(r.fsm.tick(t0 + 10s).what == kind::none);
    CHECK(r.fsm.next_deadline() == t0 + 14s);
    CHECK(r.fsm.replied(redis_conn::commands, t0 + 10100ms).what == kind::none);

    a = r.fsm.tick(t0 + 15s);
    CHECK(a.what == kind::ping);
    CHECK(a.conn == redis_conn::subscriber);
    r.fsm.sent(redis_conn::subscriber, redis_wait::ping, t0 + 15s);
    CHECK(r.fsm.tick(t0 + 18999ms).what == kind::none);
    a = r.fsm.tick(t0 + 19s);
    CHECK(a.what == kind::back_off);
    CHECK(a.reason == error::pong_timeout);
    CHECK(a.attempt == 1);
}

TEST_CASE("redis link fsm: a command unanswered for command_timeout declares the link dead")
{
    rig r;
    r.bring_up(t0);
    r.fsm.sent(redis_conn::commands, redis_wait::command, t0 + 1s);
    r.fsm.sent(redis_conn::commands, redis_wait::command, t0 + 2s);
    CHECK(r.fsm.replied(redis_conn::commands, t0 + 3s).what == kind::none);
    CHECK(r.fsm.next_deadline() == t0 + 5s);  // the second one's bound
    CHECK(r.fsm.tick(t0 + 4999ms).what == kind::none);
    CHECK(r.fsm.tick(t0 + 5s).reason == error::redis_command_timeout);
}

TEST_CASE("redis link fsm: reports from a connection already closed are ignored")
{
    rig r;
    r.bring_up(t0);
    CHECK(r.fsm.failed(boost::asio::error::eof, t0 + 1s).what == kind::back_off);
    CHECK(r.fsm.failed(boost::asio::error::eof, t0 + 1s).what == kind::none);
    CHECK(r.fsm.opened(redis_conn::commands, t0 + 1s).what == kind::none);
    CHECK(r.fsm.streak() == 1);
}

TEST_CASE("redis link fsm: after a reconnect the streak and the policy start again")
{
    rig r;
    r.bring_up(t0);
    r.fsm.failed(boost::asio::error::eof, t0 + 1s);
    CHECK(r.fsm.tick(t0 + 2s).what == kind::connect);
    r.fsm.failed(refused, t0 + 2s);
    CHECK(r.fsm.streak() == 2);
    CHECK(r.fsm.tick(t0 + 4s).what == kind::connect);
    r.fsm.opened(redis_conn::subscriber, t0 + 4s);
    CHECK(r.fsm.opened(redis_conn::commands, t0 + 4s).what == kind::authenticate);
    r.fsm.sent(redis_conn::subscriber, redis_wait::command, t0 + 4s);
    r.fsm.sent(redis_conn::commands, redis_wait::command, t0 + 4s);
    r.fsm.replied(redis_conn::subscriber, t0 + 4s);
    CHECK(r.fsm.replied(redis_conn::commands, t0 + 4s).what == kind::subscribe);
    r.fsm.sent(redis_conn::subscriber, redis_wait::command, t0 + 4s);
    CHECK(r.fsm.replied(redis_conn::subscriber, t0 + 4s).what == kind::up);
    CHECK(r.fsm.streak() == 0);
    CHECK(r.resets == 2);
    CHECK(r.fsm.failed(refused, t0 + 5s).delay == 1s);
}

TEST_CASE("redis link fsm: stop ends every phase once")
{
    for (int phase = 0; phase < 3; ++phase) {
        CAPTURE(phase);
        rig r;
        if (phase >= 1)
            r.fsm.start(t0);
        if (phase == 2)
            r.fsm.failed(refused, t0);
        CHECK(r.fsm.stop().what == kind::stop);
        CHECK(r.fsm.phase() == redis_phase::stopped);
        CHECK(r.fsm.stop().what == kind::none);
        CHECK(r.fsm.start(t0).what == kind::none);
        CHECK(r.fsm.next_deadline() == time_point::max());
    }
}

#include <vigil/redis.hpp>

#include <string>

TEST_CASE("redis_config: validate names what is wrong with the URL or a duration")
{
    vigil::redis_config cfg;
    std::string why;
    CHECK(vigil::validate(cfg, &why) == error::invalid_url);
    CHECK(why.find("empty") != std::string::npos);
    const std::pair<const char*, const char*> bad[] = {
        {"http://127.0.0.1:6379", "scheme"},
        {"redis://", "no host"},
        {"redis://127.0.0.1:0", "port"},
        {"redis://127.0.0.1:99999", "port"},
        {"redis://127.0.0.1:x", "port"},
        {"redis://a b", "not a URL"},
        {"redis://127.0.0.1/0", "path"},
        {"redis://user@127.0.0.1", "no password"},
        {"redis://127.0.0.1?db=1", "query"},
        {"redis://:secret@127.0.0.1:99999", "port"},
    };
    for (const auto& entry : bad) {
        const std::string url = entry.first;
        CAPTURE(url);
        cfg.url = url;
        why.clear();
        CHECK(vigil::validate(cfg, &why) == error::invalid_url);
        CHECK(why.find(entry.second) != std::string::npos);
        // The URL is named, its user info (a password) masked.
        const auto at = url.find('@');
        if (at == std::string::npos) {
            CHECK(why.find(url) != std::string::npos);
        } else {
            CHECK(why.find("redis://***" + url.substr(at)) != std::string::npos);
            CHECK(why.find("secret") == std::string::npos);
            CHECK(why.find("user@") == std::string::npos);
        }
    }
    cfg.url = "redis://:secret@localhost:7000";
    CHECK_FALSE(vigil::validate(cfg));
    cfg.url = "redis://[::1]";
    CHECK_FALSE(vigil::validate(cfg));
    cfg.pong_timeout = 0ms;
    CHECK(vigil::validate(cfg, &why) == error::invalid_config);
    CHECK(why.find("pong_timeout") != std::string::npos);
    cfg.pong_timeout = 1s;
    cfg.message_ttl = -1ms;
    CHECK(vigil::validate(cfg, &why) == error::invalid_config);
    CHECK(why.find("message_ttl") != std::string::npos);
}
