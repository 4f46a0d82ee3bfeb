// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include "fault_relay.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <future>
#include <list>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace soak {

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

void abort_socket(tcp::socket& s)
{
    boost::system::error_code ec;
    if (!s.is_open())
        return;
    s.set_option(asio::socket_base::linger(true, 0), ec);
    s.close(ec);
}

struct link {
    explicit link(tcp::socket c)
        : client(std::move(c)), server(client.get_executor()), gate(client.get_executor(), steady::time_point::max())
    {
    }

    void kill()
    {
        dead = true;
        abort_socket(client);
        abort_socket(server);
        gate.cancel();
    }

    tcp::socket client;
    tcp::socket server;
    // Pumps wait on it while the link is silenced; cancelled to let them go on.
    asio::steady_timer gate;
    // How a silenced link's silence ends: bytes held are delivered, or the link is reset (a
    // NAT entry that is gone). restore() honours it too: resuming a link meant to die would
    // deliver, late, bytes its client already gave up on, after what it sent on a new one.
    enum class silence { none, until_resumed, until_reset } silenced = silence::none;
    bool dead = false;
    int directions = 2;
    std::list<std::shared_ptr<link>>::iterator where;
};

}  // namespace

struct fault_relay::impl {
    explicit impl(std::uint16_t target)
        : target(asio::ip::make_address("127.0.0.1"), target),
          acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
          pause_timer(ioc), work(ioc.get_executor())
    {
        port = acceptor.local_endpoint().port();
    }

    asio::awaitable<void> accept_loop()
    {
        for (;;) {
            while (steady::now() < paused_until) {
                pause_timer.expires_at(paused_until);
                co_await pause_timer.async_wait(use_tuple);
            }
            auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
            if (stopping)
                co_return;
            if (ec)
                continue;  // cancelled by pause_accept(), or a transient failure
            ++c.accepted;
            auto l = std::make_shared<link>(std::move(sock));
            l->where = links.insert(links.end(), l);
            asio::co_spawn(ioc, connect_and_pump(l), asio::detached);
        }
    }

    asio::awaitable<void> connect_and_pump(std::shared_ptr<link> l)
    {
        auto [ec] = co_await l->server.async_connect(target, use_tuple);
        if (ec || l->dead) {
            // The server is down: the client sees its connection reset, as a real client of a
            // dead server behind a load balancer does.
            if (ec)
                ++c.upstream_refused;
            l->kill();
            links.erase(l->where);
            co_return;
        }
        boost::system::error_code ignored;
        l->client.set_option(tcp::no_delay(true), ignored);
        l->server.set_option(tcp::no_delay(true), ignored);
        asio::co_spawn(ioc, pump(l, l->client, l->server), asio::detached);
        asio::co_spawn(ioc, pump(l, l->server, l->client), asio::detached);
    }

    asio::awaitable<void> pump(std::shared_ptr<link> l, tcp::socket& from, tcp::socket& to)
    {
        std::array<char, 8192> buf;
        for (;;) {
            auto [ec, n] = co_await from.async_read_some(asio::buffer(buf), use_tuple);
            // What was read while silenced, including an end of stream, is held until the
            // silence ends.
            while (l->silenced != link::silence::none && !l->dead)
                co_await l->gate.async_wait(use_tuple);
            if (l->dead)
                break;
            if (ec == asio::error::eof) {
                boost::system::error_code ignored;
                to.shutdown(tcp::socket::shutdown_send, ignored);
                break;
            }
            if (ec) {
                l->kill();
                break;
            }
            auto [wec, wn] = co_await asio::async_write(to, asio::buffer(buf.data(), n), use_tuple);
            if (wec) {
                l->kill();
                break;
            }
        }
        if (--l->directions == 0) {
            boost::system::error_code ignored;
            l->client.close(ignored);
            l->server.close(ignored);
            links.erase(l->where);
        }
    }

    std::vector<std::shared_ptr<link>> pick(double fraction)
    {
        std::vector<std::shared_ptr<link>> live;
        for (auto& l : links)
            if (!l->dead && l->silenced == link::silence::none && l->server.is_open())
                live.push_back(l);
        std::shuffle(live.begin(), live.end(), rng);
        std::size_t n = live.empty() ? 0 : std::max<std::size_t>(1, static_cast<std::size_t>(fraction * live.size()));
        live.resize(std::min(n, live.size()));
        return live;
    }

    asio::awaitable<void> silence_for(std::vector<std::shared_ptr<link>> chosen, std::chrono::milliseconds d,
                                      bool reset_after, std::uint64_t generation)
    {
        asio::steady_timer t(ioc, d);
        co_await t.async_wait(use_tuple);
        if (generation != restore_generation)
            co_return;  // restore() already resumed them
        for (auto& l : chosen) {
            if (reset_after) {
                if (!l->dead)
                    l->kill();
            } else {
                l->silenced = link::silence::none;
                l->gate.cancel();
            }
        }
    }

    asio::awaitable<void> slow_consumer(std::uint16_t server_port, std::chrono::milliseconds hold)
    {
        tcp::socket s(ioc);
        boost::system::error_code ec;
        s.open(tcp::v4(), ec);
        // A small receive buffer: the server's writes stall sooner.
        s.set_option(asio::socket_base::receive_buffer_size(4096), ec);
        auto [cec] = co_await s.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_port), use_tuple);
        std::string request =
            "GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        std::string response;
        bool upgraded = false;
        if (!cec) {
            auto [wec, wn] = co_await asio::async_write(s, asio::buffer(request), use_tuple);
            if (!wec) {
                auto [rec, rn] = co_await asio::async_read_until(s, asio::dynamic_buffer(response), "\r\n\r\n", use_tuple);
                upgraded = !rec && response.rfind("HTTP/1.1 101", 0) == 0;
            }
        }
        ++(upgraded ? c.slow_opened : c.slow_failed);
        // From here on, never read.
        asio::steady_timer t(ioc, hold);
        co_await t.async_wait(use_tuple);
        abort_socket(s);
    }

    template <class F>
    auto on_thread(F f) -> decltype(f())
    {
        std::packaged_task<decltype(f())()> task(std::move(f));
        auto result = task.get_future();
        asio::post(ioc, [&task] { task(); });
        return result.get();
    }

    asio::io_context ioc{1};
    tcp::endpoint target;
    tcp::acceptor acceptor;
    std::uint16_t port = 0;
    asio::steady_timer pause_timer;
    steady::time_point paused_until{};
    std::list<std::shared_ptr<link>> links;
    std::mt19937_64 rng{12345};
    std::uint64_t restore_generation = 0;
    bool stopping = false;
    counters c;
    asio::executor_work_guard<asio::io_context::executor_type> work;
    std::thread thread;
};

fault_relay::fault_relay(std::uint16_t target_port) : impl_(std::make_shared<impl>(target_port))
{
    asio::co_spawn(impl_->ioc, impl_->accept_loop(), asio::detached);
    impl_->thread = std::thread([p = impl_.get()] { p->ioc.run(); });
}

fault_relay::~fault_relay()
{
    impl_->on_thread([p = impl_.get()] {
        p->stopping = true;
        boost::system::error_code ignored;
        p->acceptor.close(ignored);
        p->paused_until = steady::time_point{};
        p->pause_timer.cancel();
        for (auto& l : std::list<std::shared_ptr<link>>(p->links))
            l->kill();
        return 0;
    });
    // Silences and slow consumers may still be waiting on their timers: their coroutine
    // frames are destroyed with the io_context.
    impl_->ioc.stop();
    impl_->thread.join();
}

std::uint16_t fault_relay::port() const noexcept
{
    return impl_->port;
}

std::size_t fault_relay::silence(double fraction, std::chrono::milliseconds duration, bool reset_after)
{
    return impl_->on_thread([p = impl_.get(), fraction, duration, reset_after] {
        auto chosen = p->pick(fraction);
        for (auto& l : chosen)
            l->silenced = reset_after ? link::silence::until_reset : link::silence::until_resumed;
        (reset_after ? p->c.silenced_dead : p->c.silenced_brief) += chosen.size();
        const auto n = chosen.size();
        asio::co_spawn(p->ioc, p->silence_for(std::move(chosen), duration, reset_after, p->restore_generation),
                       asio::detached);
        return n;
    });
}

std::size_t fault_relay::reset_some(double fraction)
{
    return impl_->on_thread([p = impl_.get(), fraction] {
        auto chosen = p->pick(fraction);
        for (auto& l : chosen)
            l->kill();
        p->c.reset += chosen.size();
        return chosen.size();
    });
}

void fault_relay::pause_accept(std::chrono::milliseconds duration)
{
    impl_->on_thread([p = impl_.get(), duration] {
        p->paused_until = steady::now() + duration;
        ++p->c.accept_pauses;
        boost::system::error_code ignored;
        p->acceptor.cancel(ignored);  // the pending accept would take the next client
        return 0;
    });
}

void fault_relay::open_slow_consumers(std::uint16_t server_port, int n, std::chrono::milliseconds hold)
{
    impl_->on_thread([p = impl_.get(), server_port, n, hold] {
        for (int i = 0; i < n; ++i)
            asio::co_spawn(p->ioc, p->slow_consumer(server_port, hold), asio::detached);
        return 0;
    });
}

void fault_relay::restore()
{
    impl_->on_thread([p = impl_.get()] {
        ++p->restore_generation;
        for (auto& l : std::list<std::shared_ptr<link>>(p->links)) {
            if (l->silenced == link::silence::until_reset && !l->dead) {
                l->kill();
            } else if (l->silenced == link::silence::until_resumed) {
                l->silenced = link::silence::none;
                l->gate.cancel();
            }
        }
        p->paused_until = steady::time_point{};
        p->pause_timer.cancel();
        return 0;
    });
}

fault_relay::counters fault_relay::stats() const
{
    return impl_->on_thread([p = impl_.get()] {
        auto c = p->c;
        c.active = p->links.size();
        return c;
    });
}

}  // namespace soak
