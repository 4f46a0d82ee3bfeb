// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <support/server_rig.hpp>

#include <boost/asio/use_awaitable.hpp>

namespace vigil::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

server_config quick_server()
{
    server_config cfg;
    cfg.session.ping_interval = 1s;
    cfg.session.pong_timeout = 500ms;
    cfg.session.tls_handshake_timeout = 2s;
    cfg.session.handshake_timeout = 2s;
    cfg.session.write_timeout = 2s;
    cfg.session.close_timeout = 300ms;
    return cfg;
}

session_config quick_client()
{
    session_config cfg;
    cfg.ping_interval = 0ms;
    cfg.connect_timeout = 2s;
    cfg.tls_handshake_timeout = 2s;
    cfg.handshake_timeout = 2s;
    cfg.write_timeout = 2s;
    cfg.close_timeout = 300ms;
    return cfg;
}

server_rig::server_rig(server_config cfg)
    : rig_io(), srv(ioc.get_executor(), std::move(cfg),
                    [this](server::connection_ptr c) -> asio::awaitable<void> { return echo(std::move(c)); })
{
    watch();
}

server_rig::server_rig(server_config cfg, int concurrency_hint)
    : rig_io(concurrency_hint), srv(ioc.get_executor(), std::move(cfg),
                                    [this](server::connection_ptr c) -> asio::awaitable<void> { return echo(std::move(c)); })
{
    watch();
}

server_rig::server_rig(server_config cfg, handler_type handler)
    : rig_io(), srv(ioc.get_executor(), std::move(cfg), std::move(handler))
{
    watch();
}

server_rig::~server_rig()
{
    // A failed case must not leave coroutines pointing into a destroyed server.
    if (run_started && !run_done) {
        srv.stop();
        ioc.restart();
        for (int i = 0; i < 300 && !run_done; ++i)
            ioc.run_for(10ms);
    }
}

void server_rig::watch()
{
    auto& ev = srv.events();
    ev.on_connected = [this](connection& c) {
        connected.push_back({c.id(), c.remote(), c.target(), steady::now()});
    };
    ev.on_disconnected = [this](connection& c) {
        disconnected.push_back({c.id(), c.remote(), c.last_disconnect(), steady::now()});
    };
    ev.on_rejected = [this](const std::string& remote, const error_code& why, const std::string& detail) {
        rejected.push_back({remote, why, detail, steady::now()});
    };
}

error_code server_rig::start(std::string* detail)
{
    if (auto ec = srv.listen(detail))
        return ec;
    run_started = true;
    spawn([this]() -> asio::awaitable<void> {
        run_ec = co_await srv.run();
        run_ended = steady::now();
        run_done = true;
    });
    return {};
}

std::string server_rig::url(const std::string& scheme, const std::string& host, const std::string& target) const
{
    std::string u = scheme;
    u += "://";
    u += host;
    u += ':';
    u += std::to_string(srv.port());
    u += target;
    return u;
}

asio::awaitable<void> server_rig::echo(server::connection_ptr conn)
{
    auto& log = logs[conn->id()];
    for (;;) {
        auto r = co_await conn->receive();
        if (r.ec) {
            log.end = r.ec;
            log.ended = true;
            log.ended_at = steady::now();
            co_return;
        }
        log.messages.push_back(r);
        co_await conn->send(std::move(r.data), r.type);
    }
}

const server_rig::ended* server_rig::ended_for(const std::string& remote) const
{
    for (const auto& e : disconnected)
        if (e.remote == remote)
            return &e;
    return nullptr;
}

const server_rig::joined* server_rig::joined_for(const std::string& remote) const
{
    for (const auto& j : connected)
        if (j.remote == remote)
            return &j;
    return nullptr;
}

rig_client::rig_client(asio::io_context& io, session_config cfg) : ioc(io), s(io.get_executor(), std::move(cfg))
{
    auto& ev = s.events();
    ev.on_connected = [this] { connected_at = steady::now(); };
    ev.on_ping = [this] { ++pings; };
    ev.on_pong = [this](std::chrono::microseconds rtt) { rtts.push_back(rtt); };
    ev.on_message = [this](std::string_view data, message_type type) {
        messages.emplace_back(std::string(data), type);
        message_times.push_back(steady::now());
    };
    ev.on_disconnected = [this](const disconnect_info& info) {
        ++disconnects;
        last = info;
        disconnected_at = steady::now();
    };
}

rig_client::~rig_client()
{
    if (started && !run_done) {
        s.cancel();
        ioc.restart();
        for (int i = 0; i < 100 && !run_done; ++i)
            ioc.run_for(10ms);
    }
}

void rig_client::start(std::string url)
{
    started = true;
    spawn_on(ioc, [this, url = std::move(url)]() -> asio::awaitable<void> {
        connect_started = steady::now();
        connect_ec = co_await s.connect(url);
        connect_took = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - connect_started);
        connect_done = true;
        if (connect_ec) {
            run_ec = connect_ec;
            run_ended = steady::now();
            run_done = true;
            co_return;
        }
        run_ec = co_await s.run();
        run_ended = steady::now();
        run_done = true;
    });
}

void rig_client::send(std::string data, message_type type)
{
    s.async_send(std::move(data), type, [this](error_code ec) { send_results.push_back(ec); });
}

}  // namespace vigil::test
