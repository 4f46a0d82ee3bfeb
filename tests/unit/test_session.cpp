// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The parts of <vigil/session.hpp> that need no socket: the errors connect(), run(), send()
// and close() give before any I/O happens.

#include <vigil/session.hpp>

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace {

using namespace std::chrono_literals;
using vigil::error;
using vigil::error_code;

}  // namespace

TEST_SUITE("session")
{
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
