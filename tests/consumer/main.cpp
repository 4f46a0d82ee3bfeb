// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// Uses only vigil's public headers and what they expose, as an application would. The same
// program is built as a Meson subproject's parent, with CMake's find_package and with
// pkg-config (run.sh): it checks a URL and a config, then serves one echo connection on
// 127.0.0.1 to a session of its own, and prints "ok".
#include <vigil/config.hpp>
#include <vigil/error.hpp>
#include <vigil/server.hpp>
#include <vigil/session.hpp>
#include <vigil/url.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>

namespace {

namespace asio = boost::asio;

int fail(const std::string& what)
{
    std::cerr << "consumer: " << what << '\n';
    return 1;
}

std::string check_url_and_config()
{
    vigil::endpoint ep;
    if (auto ec = vigil::parse_url("wss://example.com/feed?x=1", ep))
        return "parse_url: " + ec.message();
    if (!ep.tls || ep.host != "example.com" || ep.port != 443 || ep.target != "/feed?x=1")
        return "parse_url split the URL wrongly";

    vigil::session_config cfg;
    if (auto ec = vigil::validate(cfg))
        return "the default config does not validate: " + ec.message();
    cfg.pong_timeout = cfg.ping_interval;
    std::string detail;
    if (vigil::validate(cfg, &detail) != vigil::error::invalid_config || detail.empty())
        return "an invalid config was accepted";
    return {};
}

asio::awaitable<void> echo(vigil::server::connection_ptr conn)
{
    for (;;) {
        auto msg = co_await conn->receive();
        if (msg.ec)
            co_return;
        co_await conn->send(std::move(msg.data), msg.type);
    }
}

// Connects, sends one message and runs the connection until on_message closes it.
asio::awaitable<vigil::error_code> talk(vigil::session& client, std::uint16_t port)
{
    auto ec = co_await client.connect("ws://127.0.0.1:" + std::to_string(port) + "/");
    if (ec)
        co_return ec;
    asio::co_spawn(co_await asio::this_coro::executor, client.send("hello"), asio::detached);
    auto ended = co_await client.run();
    co_return ended;
}

}  // namespace

int main()
{
    if (auto what = check_url_and_config(); !what.empty())
        return fail(what);

    asio::io_context io;
    vigil::server server(io.get_executor(), vigil::server_config{}, echo);
    std::string detail;
    if (auto ec = server.listen(&detail))
        return fail("listen: " + ec.message() + " " + detail);
    std::optional<vigil::error_code> served;
    asio::co_spawn(io, server.run(), [&](std::exception_ptr e, vigil::error_code ec) {
        if (!e)
            served = ec;
    });

    vigil::session client(io.get_executor());
    std::string echoed;
    client.events().on_message = [&](std::string_view data, vigil::message_type) {
        echoed = data;
        asio::co_spawn(io, client.close(), asio::detached);
    };
    std::optional<vigil::error_code> ended;
    asio::co_spawn(io, talk(client, server.port()), [&](std::exception_ptr e, vigil::error_code ec) {
        if (!e)
            ended = ec;
        server.stop();
    });

    // Bounded: everything above completes in milliseconds unless something is broken.
    io.run_for(std::chrono::seconds(30));
    if (!ended)
        return fail("the client's session did not end");
    if (*ended)
        return fail("the client's session ended with " + vigil::error_name(*ended));
    if (echoed != "hello")
        return fail("the server echoed \"" + echoed + "\"");
    if (!served || *served)
        return fail("the server did not stop cleanly");

    std::cout << "ok\n";
    return 0;
}
