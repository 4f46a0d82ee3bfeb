// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// What the cluster suite's cases share: a redis-server of their own, and a bounded loop
// that runs the test's io_context until something holds.

#include "support/ports.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <doctest/doctest.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <vigil/error.hpp>
#include <vigil/redis.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace vigil::test {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// A redis-server of its own on 127.0.0.1:`port`, without persistence.
class redis_server {
public:
    explicit redis_server(std::uint16_t port, std::vector<std::string> extra = {}) : port_(port), extra_(std::move(extra))
    {
        start();
    }

    void start()
    {
        std::vector<std::string> argv = {*find_in_path("redis-server"), "--port", std::to_string(port_),
                                         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"};
        argv.insert(argv.end(), extra_.begin(), extra_.end());
        proc_ = std::make_unique<child_process>(argv);
        REQUIRE_MESSAGE(wait_until([&] { return accepts(port_); }, 5000ms),
                        "redis-server did not listen on ", port_, ": ", proc_->transcript());
    }

    void kill()
    {
        proc_->signal(SIGKILL);
        proc_->wait_exit(2000ms);
    }
    void signal(int sig) { proc_->signal(sig); }
    std::uint16_t port() const noexcept { return port_; }
    std::string url(const std::string& password = {}) const
    {
        // Appended piece by piece: g++ 12 warns falsely (-Wrestrict) on `"literal" + string`.
        std::string u = "redis://";
        if (!password.empty())
            u.append(":").append(password).append("@");
        u.append("127.0.0.1:").append(std::to_string(port_));
        return u;
    }

private:
    std::uint16_t port_;
    std::vector<std::string> extra_;
    std::unique_ptr<child_process> proc_;
};

/// Runs `ioc` until `pred()` holds or `timeout` passes; returns `pred()`.
template <class P>
bool run_until(boost::asio::io_context& ioc, P pred, std::chrono::milliseconds timeout)
{
    auto deadline = clock_type::now() + timeout;
    while (!pred() && clock_type::now() < deadline) {
        ioc.restart();
        ioc.run_for(std::chrono::milliseconds(10));
    }
    return pred();
}

/// A link config with short deadlines and heartbeat, so that the cases' faults show fast.
inline vigil::redis_config quick_redis_config(const std::string& url)
{
    vigil::redis_config cfg;
    cfg.url = url;
    cfg.connect_timeout = 2000ms;
    cfg.command_timeout = 2000ms;
    cfg.ping_interval = 500ms;
    cfg.pong_timeout = 500ms;
    return cfg;
}

/// Publishes through `publisher` (a redis_link or a server) on `ioc`; the result lands in
/// `*into`.
template <class Publisher>
void publish(boost::asio::io_context& ioc, Publisher& publisher, std::string channel, std::string data,
             std::optional<vigil::error_code>* into)
{
    boost::asio::co_spawn(
        ioc,
        [&publisher, channel = std::move(channel), data = std::move(data), into]() -> boost::asio::awaitable<void> {
            *into = co_await publisher.publish(channel, data);
        },
        boost::asio::detached);
}

}  // namespace vigil::test
