// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The parts of <vigil/session.hpp> that need no socket: Retry-After parsing, and the
// errors connect(), run(), send() and close() give before any I/O happens.

#include <vigil/session.hpp>

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <ctime>
#include <memory>
#include <string>

namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;

std::chrono::system_clock::time_point at(int year, int mon, int day, int h, int m, int s)
{
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

}  // namespace

TEST_SUITE("session")
{
    TEST_CASE("Retry-After: delay-seconds")
    {
        CHECK(vigil::parse_retry_after("1") == milliseconds(1000));
        CHECK(vigil::parse_retry_after("0") == milliseconds(0));
        CHECK(vigil::parse_retry_after(" 120 ") == milliseconds(120000));
        // Absurd values are clamped to a day, never overflowed.
        CHECK(vigil::parse_retry_after("99999999999999999999") == milliseconds(std::chrono::hours(24)));
        CHECK(vigil::parse_retry_after("172800") == milliseconds(std::chrono::hours(24)));
    }

    TEST_CASE("Retry-After: HTTP dates in all three forms")
    {
        const auto now = at(2015, 10, 21, 7, 27, 0);
        CHECK(vigil::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == milliseconds(60000));
        CHECK(vigil::parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now) == milliseconds(60000));
        CHECK(vigil::parse_retry_after("Wed Oct 21 07:28:00 2015", now) == milliseconds(60000));
        // A date in the past means "now".
        CHECK(vigil::parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now) == milliseconds(0));
    }

    TEST_CASE("Retry-After: garbage is rejected, not guessed")
    {
        for (const char* bad : {"", " ", "-1", "1.5", "soon", "1s", "Wed, 21 Oct 2015 07:28:00 PST",
                                "Wed, 21 Oct 2015 07:28:00 GMT trailing", "0x10"}) {
            CAPTURE(bad);
            CHECK_FALSE(vigil::parse_retry_after(bad).has_value());
        }
        CHECK_FALSE(vigil::parse_retry_after(std::string(1000, '9') + "x").has_value());
        CHECK_FALSE(vigil::parse_retry_after(std::string("1\0" "0", 3)).has_value());
    }

    TEST_CASE("errors that need no socket: bad URL, bad config, not connected")
    {
        boost::asio::io_context ioc;
        vigil::session_config cfg;
        cfg.pong_timeout = cfg.ping_interval;  // invalid: must be shorter
        vigil::session s(ioc.get_executor(), cfg);
        int disconnects = 0;
        s.events().on_disconnected = [&](const vigil::disconnect_info&) { ++disconnects; };

        error_code url_ec, cfg_ec, run_ec, send_ec, close_ec;
        std::string url_detail, cfg_detail;
        boost::asio::co_spawn(
            ioc,
            [&]() -> boost::asio::awaitable<void> {
                url_ec = co_await s.connect("http://example.com/");
                url_detail = s.last_disconnect().detail;
                cfg_ec = co_await s.connect("ws://127.0.0.1:9/");
                cfg_detail = s.last_disconnect().detail;
                run_ec = co_await s.run();
                send_ec = co_await s.send("x");
                close_ec = co_await s.close();
            },
            boost::asio::detached);
        ioc.run_for(5s);

        CHECK(url_ec == error::unsupported_scheme);
        CHECK(url_detail.find("http") != std::string::npos);
        // The URL is checked first; the config error shows once the URL is good.
        CHECK(cfg_ec == error::invalid_config);
        CHECK(cfg_detail.find("pong_timeout") != std::string::npos);
        CHECK(run_ec == error::not_connected);
        CHECK(send_ec == error::not_connected);
        CHECK(close_ec == error::not_connected);
        CHECK(disconnects == 2);
        CHECK_FALSE(s.is_open());
        CHECK(ioc.stopped());  // nothing left pending
    }

    TEST_CASE("sessions sharing one config read it through the pointer; set_config() gives one its own")
    {
        boost::asio::io_context ioc;
        auto cfg = std::make_shared<vigil::session_config>();
        cfg->ping_interval = 3s;
        cfg->pong_timeout = 1s;
        cfg->user_agent = "fleet";
        const std::shared_ptr<const vigil::session_config> shared = cfg;
        vigil::session a(ioc.get_executor(), shared);
        vigil::session b(ioc.get_executor(), shared);
        CHECK(&a.config() == shared.get());  // no copy of its own
        CHECK(&b.config() == shared.get());
        CHECK(a.config().user_agent == "fleet");

        vigil::session_config own = *shared;
        own.ping_interval = 5s;
        a.set_config(own);
        CHECK(a.config().ping_interval == 5s);
        CHECK(&a.config() != shared.get());
        CHECK(b.config().ping_interval == 3s);  // the others keep the shared one
        CHECK(shared->ping_interval == 3s);

        // Null means the defaults.
        vigil::session c(ioc.get_executor(), std::shared_ptr<const vigil::session_config>{});
        CHECK(c.config().ping_interval == vigil::session_config{}.ping_interval);
        CHECK(c.config().user_agent == "vigil");
    }
}
