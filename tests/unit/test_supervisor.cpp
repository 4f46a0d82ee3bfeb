// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The parts of <vigil/supervisor.hpp> that need no socket: config validation, and a
// supervisor that must give up before it opens one.

#include <vigil/supervisor.hpp>

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <string>

namespace {

using namespace std::chrono_literals;
using vigil::error;
using vigil::error_code;

std::string invalid_field(const vigil::supervisor_config& cfg)
{
    std::string detail;
    const auto ec = vigil::validate(cfg, &detail);
    CHECK(ec == error::invalid_config);
    return detail;
}

}  // namespace

TEST_SUITE("supervisor")
{
    TEST_CASE("defaults are valid")
    {
        CHECK_FALSE(vigil::validate(vigil::supervisor_config{}));
    }

    TEST_CASE("each invalid field is named")
    {
        vigil::supervisor_config cfg;
        cfg.min_delay = 0ms;
        CHECK(invalid_field(cfg).find("min_delay") != std::string::npos);

        cfg = {};
        cfg.stable_after = -1ms;
        CHECK(invalid_field(cfg).find("stable_after") != std::string::npos);

        cfg = {};
        cfg.max_retry_after = -5ms;
        CHECK(invalid_field(cfg).find("max_retry_after") != std::string::npos);

        cfg = {};
        cfg.message_ttl = -1ms;
        CHECK(invalid_field(cfg).find("message_ttl") != std::string::npos);

        cfg = {};
        cfg.outbox_limit = 0;
        CHECK(invalid_field(cfg).find("outbox_limit") != std::string::npos);

        // The embedded session config is checked too.
        cfg = {};
        cfg.session.close_timeout = 0ms;
        CHECK(invalid_field(cfg).find("close_timeout") != std::string::npos);
    }

    TEST_CASE("a supervisor gives up at once on a permanent failure and fails its outbox")
    {
        boost::asio::io_context ioc;
        vigil::supervisor sup(ioc.get_executor(), "ftp://example.com/");
        int gave_up = 0;
        error_code gave_up_reason;
        sup.events().on_gave_up = [&](const error_code& ec, const vigil::disconnect_info&) {
            ++gave_up;
            gave_up_reason = ec;
        };
        int retries = 0;
        sup.events().on_retry = [&](const vigil::retry_info&) { ++retries; };

        error_code run_ec, queued_ec, late_ec;
        // On the supervisor's own strand, as its header recommends.
        boost::asio::co_spawn(
            sup.get_executor(),
            [&]() -> boost::asio::awaitable<void> {
                // Queued before run(): it must not vanish when the supervisor gives up.
                sup.async_send("early", vigil::message_type::text, [&](error_code ec) { queued_ec = ec; });
                run_ec = co_await sup.run();
                late_ec = co_await sup.send("late");
            },
            boost::asio::detached);
        ioc.run_for(5s);

        CHECK(run_ec == error::unsupported_scheme);
        CHECK(vigil::is_permanent(run_ec));
        CHECK(gave_up == 1);
        CHECK(gave_up_reason == error::unsupported_scheme);
        CHECK(retries == 0);
        CHECK(queued_ec == error::unsupported_scheme);
        CHECK(late_ec == error::unsupported_scheme);
        const auto c = sup.counters();
        CHECK(c.attempts == 1);
        CHECK(c.connects == 0);
        CHECK(c.messages_failed == 2);
        CHECK(c.messages_sent == 0);
        CHECK(ioc.stopped());
    }

    TEST_CASE("an invalid config ends run() before any attempt")
    {
        boost::asio::io_context ioc;
        vigil::supervisor_config cfg;
        cfg.min_delay = 0ms;
        vigil::supervisor sup(ioc.get_executor(), "ws://127.0.0.1:9/", cfg, vigil::constant_backoff(10ms));
        error_code run_ec;
        boost::asio::co_spawn(
            ioc, [&]() -> boost::asio::awaitable<void> { run_ec = co_await sup.run(); }, boost::asio::detached);
        ioc.run_for(5s);
        CHECK(run_ec == error::invalid_config);
        CHECK(sup.last_disconnect().detail.find("min_delay") != std::string::npos);
        CHECK(sup.counters().attempts == 0);
    }
}
