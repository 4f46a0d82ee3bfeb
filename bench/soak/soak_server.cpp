// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The soak's server: a vigil::server that records every message it receives, in order, as
// "<connection> <client> <seq>" lines written straight to a file (one write(2) each, so that
// a SIGKILL loses nothing the server had taken), broadcasts a tick every 500 ms, and pushes
// data at slow consumers (connections to /slow) until it drops them. SIGTERM stops it
// gracefully. Reports on stdout as JSON lines: "listening", "stats" every second,
// "slow_end", "stopped".

#include "soak.hpp"

#include <vigil/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <map>
#include <stdexcept>

namespace soak {

namespace {

namespace asio = boost::asio;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct server_state {
    int log_fd = -1;
    std::size_t received = 0;
    std::size_t malformed = 0;
    std::size_t slow_connections = 0;
    std::map<std::string, std::size_t> disconnects;  // by error_name of the reason
};

void write_all(int fd, const char* p, std::size_t n)
{
    while (n > 0) {
        auto w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            throw std::runtime_error(std::string("writing the receive log: ") + std::strerror(errno));
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
}

// A slow consumer: data pushed at it in bursts, without waiting for the writes, until the
// server's send-queue bound drops it.
asio::awaitable<void> push_at_slow_consumer(server_state* st, vigil::server::connection_ptr c)
{
    ++st->slow_connections;
    const std::string blob(4096, 's');
    asio::steady_timer pace(c->get_executor());
    while (c->is_open()) {
        for (int i = 0; i < 32 && c->is_open(); ++i)
            c->async_send(blob, vigil::message_type::text, [](vigil::error_code) {});
        pace.expires_after(std::chrono::milliseconds(10));
        co_await pace.async_wait(use_tuple);
    }
    vigil::received r;
    do
        r = co_await c->receive();
    while (!r.ec);
    emit("slow_end", {{"id", c->id()}, {"reason", vigil::error_name(r.ec)}});
}

asio::awaitable<void> handle(server_state* st, vigil::server::connection_ptr c)
{
    const std::string& target = c->target();
    if (target == "/slow") {
        co_await push_at_slow_consumer(st, c);
        co_return;
    }
    long client = -1;
    if (target.rfind("/c/", 0) == 0)
        std::from_chars(target.data() + 3, target.data() + target.size(), client);
    if (client < 0)
        co_return;  // not one of ours: closed by the server
    char line[64];
    for (;;) {
        auto r = co_await c->receive();
        if (r.ec)
            break;
        // "<client> <seq> <padding>"
        long who = -1;
        unsigned long long seq = 0;
        const char* p = r.data.data();
        const char* end = p + r.data.size();
        auto a = std::from_chars(p, end, who);
        auto b = (a.ec == std::errc() && a.ptr < end) ? std::from_chars(a.ptr + 1, end, seq) : a;
        if (a.ec != std::errc() || b.ec != std::errc() || who != client) {
            ++st->malformed;
            continue;
        }
        const int n = std::snprintf(line, sizeof line, "%llu %ld %llu\n", static_cast<unsigned long long>(c->id()),
                                    who, seq);
        write_all(st->log_fd, line, static_cast<std::size_t>(n));
        ++st->received;
    }
}

asio::awaitable<void> every(std::chrono::milliseconds period, std::function<void()> f, bool* stop)
{
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (!*stop) {
        t.expires_after(period);
        co_await t.async_wait(use_tuple);
        if (!*stop)
            f();
    }
}

}  // namespace

int server_main(const std::vector<std::string>& args)
{
    arg_list a(args);
    const auto log_path = a.get("--log", "");
    if (log_path.empty())
        throw std::invalid_argument("server: --log FILE is required");
    server_state st;
    st.log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (st.log_fd < 0)
        throw std::runtime_error("server: cannot open " + log_path + ": " + std::strerror(errno));

    asio::io_context ioc(1);
    asio::signal_set signals(ioc, SIGTERM, SIGINT);

    vigil::server_config cfg;
    cfg.port = static_cast<std::uint16_t>(a.get_int("--port", 0));
    cfg.max_connections = 5000;
    cfg.session.ping_interval = std::chrono::milliseconds(a.get_int("--ping-ms", 1000));
    cfg.session.pong_timeout = std::chrono::milliseconds(a.get_int("--pong-ms", 500));
    cfg.session.handshake_timeout = std::chrono::seconds(2);
    cfg.session.write_timeout = std::chrono::seconds(2);
    cfg.session.close_timeout = std::chrono::seconds(1);
    cfg.session.send_queue_limit = 64;
    vigil::server srv(ioc.get_executor(), cfg,
                      [p = &st](vigil::server::connection_ptr c) { return handle(p, std::move(c)); });
    srv.events().on_disconnected = [&st](vigil::connection& c) {
        ++st.disconnects[vigil::error_name(c.last_disconnect().reason)];
    };
    std::string detail;
    if (auto ec = srv.listen(&detail)) {
        emit("listen_failed", {{"detail", detail}});
        return 2;
    }

    bool stopping = false;
    signals.async_wait([&](const boost::system::error_code& ec, int) {
        if (ec)
            return;
        stopping = true;
        srv.stop();
    });
    auto stats = [&] {
        auto k = srv.counters();
        emit("stats", {{"open", k.open},
                       {"accepted", k.accepted},
                       {"connected", k.connected},
                       {"rejected", k.rejected},
                       {"received", st.received},
                       {"malformed", st.malformed},
                       {"slow_connections", st.slow_connections},
                       {"disconnects", st.disconnects},
                       {"rss_kb", rss_kb()},
                       {"heap_kb", heap_kb()},
                       {"fds", count_fds()}});
    };
    std::size_t tick = 0;
    asio::co_spawn(ioc, every(std::chrono::milliseconds(500), [&] { srv.broadcast("tick " + std::to_string(++tick)); }, &stopping),
                   asio::detached);
    asio::co_spawn(ioc, every(std::chrono::milliseconds(1000), stats, &stopping), asio::detached);
    asio::co_spawn(ioc, srv.run(), [&](std::exception_ptr e, vigil::error_code ec) {
        stopping = true;
        signals.cancel();
        stats();
        emit("stopped", {{"result", vigil::error_name(ec)}, {"exception", e != nullptr}});
    });
    emit("listening", {{"port", srv.port()}, {"fds", count_fds()}, {"rss_kb", rss_kb()}});
    ioc.run();
    ::close(st.log_fd);
    return 0;
}

}  // namespace soak
