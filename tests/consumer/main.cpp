// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// Uses only vigil's public headers and what they expose, as an application would.
#include <vigil/config.hpp>
#include <vigil/error.hpp>
#include <vigil/session.hpp>
#include <vigil/url.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <iostream>
#include <optional>
#include <string>

namespace {

int fail(const std::string& what)
{
    std::cerr << "consumer: " << what << '\n';
    return 1;
}

}  // namespace

int main()
{
    vigil::endpoint ep;
    if (auto ec = vigil::parse_url("wss://example.com/feed?x=1", ep))
        return fail("parse_url: " + ec.message());
    if (!ep.tls || ep.host != "example.com" || ep.port != 443 || ep.target != "/feed?x=1")
        return fail("parse_url split the URL wrongly");

    vigil::session_config cfg;
    if (auto ec = vigil::validate(cfg))
        return fail("the default config does not validate: " + ec.message());
    cfg.pong_timeout = cfg.ping_interval;
    std::string detail;
    if (vigil::validate(cfg, &detail) != vigil::error::invalid_config || detail.empty())
        return fail("an invalid config was accepted");

    // A session's coroutine API links and runs; a bad URL fails before any network use.
    boost::asio::io_context io;
    vigil::session session(io.get_executor());
    std::optional<vigil::error_code> result;
    boost::asio::co_spawn(io, session.connect("http://example.com/"),
        [&](std::exception_ptr e, vigil::error_code ec) {
            if (!e)
                result = ec;
        });
    io.run_for(std::chrono::seconds(10));
    if (!result)
        return fail("connect() did not complete");
    if (*result != vigil::error::unsupported_scheme || vigil::error_name(*result) != "unsupported_scheme")
        return fail("connect(\"http://...\") returned " + vigil::error_name(*result));

    std::cout << "ok\n";
    return 0;
}
