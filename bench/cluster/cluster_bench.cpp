// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-bench-cluster: the client side of the cluster benchmark (bench/cluster/run.py starts
// Redis and the vigil-serve nodes). N supervised clients, spread round-robin over the nodes'
// URLs (each with the other nodes as backup endpoints), all joined to channel "bench". Client 0
// publishes M timestamped messages at R per second; every client (the publisher too) records
// each delivery's latency, and per message the time until the last client had it. With
// --recovery it then prints ready_to_kill, and measures, from the first client that lost its
// connection, the time until every client is up again and the most handshakes completed in any
// 100 ms. One JSON line per phase on stdout.

#include <vigil/supervisor.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct settings {
    std::vector<std::string> urls;
    std::size_t clients = 3000;
    std::size_t messages = 200;
    double rate = 100;  // messages per second
    bool recovery = false;
};

std::int64_t now_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count();
}

/// What every client's deliveries add up to (one thread: no locks).
struct tally {
    explicit tally(std::size_t messages) : received(messages, 0), last_ns(messages, 0) {}
    std::vector<std::int64_t> latency_ns;  // every delivery
    std::vector<std::size_t> received;     // per message id
    std::vector<std::int64_t> last_ns;     // per message id: the last client's arrival
    std::vector<std::int64_t> sent_ns;     // per message id
    std::size_t deliveries = 0;
    std::size_t up = 0;  // clients connected now
    std::vector<char> is_up;  // per client
    std::int64_t first_down_ns = 0;
    std::vector<std::int64_t> up_after_down_ns;  // handshakes after the first loss

    void deliver(std::string_view m)
    {
        // "<id> <send_ns>"
        auto space = m.find(' ');
        std::size_t id = 0;
        std::int64_t sent = 0;
        if (space == std::string_view::npos ||
            std::from_chars(m.data(), m.data() + space, id).ec != std::errc{} ||
            std::from_chars(m.data() + space + 1, m.data() + m.size(), sent).ec != std::errc{} || id >= received.size())
            return;
        const auto t = now_ns();
        latency_ns.push_back(t - sent);
        ++received[id];
        last_ns[id] = std::max(last_ns[id], t);
        ++deliveries;
    }
};

double percentile_ms(std::vector<std::int64_t> v, double p)
{
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    auto at = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
    return static_cast<double>(v[at]) / 1e6;
}

vigil::supervisor_config client_config(const settings& s, std::size_t i)
{
    vigil::supervisor_config cfg;
    cfg.session.ping_interval = 10s;
    cfg.session.pong_timeout = 5s;
    for (std::size_t k = 1; k < s.urls.size(); ++k)
        cfg.backup_urls.push_back(s.urls[(i + k) % s.urls.size()] + "?channel=bench");
    return cfg;
}

asio::awaitable<void> wait_until(asio::steady_timer& t, const std::function<bool()>& pred, std::chrono::seconds limit)
{
    const auto deadline = clock_type::now() + limit;
    while (!pred() && clock_type::now() < deadline) {
        t.expires_after(5ms);
        co_await t.async_wait(asio::use_awaitable);
    }
}

void print(const std::string& line)
{
    std::cout << line << std::endl;
}

asio::awaitable<void> broadcast_phase(std::vector<std::unique_ptr<vigil::supervisor>>& clients, tally& t,
                                      const settings& s)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    print("{\"phase\":\"broadcast_start\"}");
    const auto gap = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / s.rate));
    auto next = clock_type::now();
    for (std::size_t id = 0; id < s.messages; ++id) {
        next += gap;
        timer.expires_at(next);
        co_await timer.async_wait(asio::use_awaitable);
        const auto sent = now_ns();
        t.sent_ns.push_back(sent);
        clients[0]->async_send(std::to_string(id) + " " + std::to_string(sent), vigil::message_type::text,
                               [](vigil::error_code) {});
    }
    const auto want = s.messages * s.clients;
    co_await wait_until(timer, [&] { return t.deliveries >= want; }, 30s);
    std::vector<std::int64_t> all_ns;
    for (std::size_t id = 0; id < s.messages; ++id)
        if (t.received[id] == s.clients)
            all_ns.push_back(t.last_ns[id] - t.sent_ns[id]);
    const auto span_ns = *std::max_element(t.last_ns.begin(), t.last_ns.end()) - t.sent_ns.front();
    char line[512];
    std::snprintf(line, sizeof line,
                  "{\"phase\":\"broadcast\",\"deliveries\":%zu,\"lost\":%zu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
                  "\"all_p50_ms\":%.3f,\"all_p99_ms\":%.3f,\"deliveries_per_s\":%.0f}",
                  t.deliveries, want - std::min(want, t.deliveries), percentile_ms(t.latency_ns, 0.50),
                  percentile_ms(t.latency_ns, 0.99), percentile_ms(all_ns, 0.50), percentile_ms(all_ns, 0.99),
                  static_cast<double>(t.deliveries) / (static_cast<double>(span_ns) / 1e9));
    print(line);
}

asio::awaitable<void> recovery_phase(tally& t, const settings& s)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    print("{\"phase\":\"ready_to_kill\"}");
    co_await wait_until(timer, [&] { return t.first_down_ns != 0; }, 60s);
    co_await wait_until(timer, [&] { return t.up == s.clients; }, 60s);
    const auto lost = t.up_after_down_ns.size();
    std::size_t peak = 0;
    for (auto start : t.up_after_down_ns) {
        auto in = std::count_if(t.up_after_down_ns.begin(), t.up_after_down_ns.end(),
                                [&](auto x) { return x >= start && x < start + 100'000'000; });
        peak = std::max(peak, static_cast<std::size_t>(in));
    }
    const auto last = lost ? *std::max_element(t.up_after_down_ns.begin(), t.up_after_down_ns.end()) : t.first_down_ns;
    char line[256];
    std::snprintf(line, sizeof line,
                  "{\"phase\":\"recovery\",\"reconnected\":%zu,\"all_up\":%s,\"seconds\":%.3f,\"peak_per_100ms\":%zu}",
                  lost, t.up == s.clients ? "true" : "false", static_cast<double>(last - t.first_down_ns) / 1e9, peak);
    print(line);
}

asio::awaitable<void> run(asio::io_context& ioc, const settings& s)
{
    tally t(s.messages);
    t.is_up.assign(s.clients, 0);
    std::vector<std::unique_ptr<vigil::supervisor>> clients;
    const auto start = now_ns();
    for (std::size_t i = 0; i < s.clients; ++i) {
        auto& c = clients.emplace_back(std::make_unique<vigil::supervisor>(
            ioc.get_executor(), s.urls[i % s.urls.size()] + "?channel=bench", client_config(s, i)));
        c->session_event_handlers().on_message = [&t](std::string_view m, vigil::message_type) { t.deliver(m); };
        c->events().on_up = [&t, i] {
            if (t.is_up[i])
                return;
            t.is_up[i] = 1;
            ++t.up;
            if (t.first_down_ns != 0)
                t.up_after_down_ns.push_back(now_ns());
        };
        c->events().on_retry = [&t](const vigil::retry_info&) {
            if (t.first_down_ns == 0)
                t.first_down_ns = now_ns();
        };
        c->session_event_handlers().on_disconnected = [&t, i](const vigil::disconnect_info&) {
            if (t.is_up[i]) {
                t.is_up[i] = 0;
                --t.up;
            }
        };
        asio::co_spawn(ioc, c->run(), asio::detached);
    }
    asio::steady_timer timer(ioc);
    co_await wait_until(timer, [&] { return t.up == s.clients; }, 120s);
    print("{\"phase\":\"connected\",\"clients\":" + std::to_string(t.up) + ",\"seconds\":" +
          std::to_string(static_cast<double>(now_ns() - start) / 1e9) + "}");
    // Joining happens in the node's handler, just after the upgrade: let it settle.
    timer.expires_after(1s);
    co_await timer.async_wait(asio::use_awaitable);
    co_await broadcast_phase(clients, t, s);
    if (s.recovery)
        co_await recovery_phase(t, s);
    for (auto& c : clients)
        c->stop();
    timer.expires_after(2s);
    co_await timer.async_wait(asio::use_awaitable);
    ioc.stop();
}

settings parse(int argc, char** argv)
{
    settings s;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
                throw std::invalid_argument(std::string(a) + " needs a value");
            return argv[++i];
        };
        if (a == "--url")
            s.urls.push_back(value());
        else if (a == "--clients")
            s.clients = std::stoul(value());
        else if (a == "--messages")
            s.messages = std::stoul(value());
        else if (a == "--rate")
            s.rate = std::stod(value());
        else if (a == "--recovery")
            s.recovery = true;
        else
            throw std::invalid_argument("unknown argument " + std::string(a));
    }
    if (s.urls.empty() || s.clients == 0 || s.messages == 0 || s.rate <= 0)
        throw std::invalid_argument("needs --url (repeatable), and positive --clients, --messages, --rate");
    return s;
}

}  // namespace

int main(int argc, char** argv)
{
    try {
        const auto s = parse(argc, argv);
        rlimit r{};
        if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
            r.rlim_cur = r.rlim_max;
            ::setrlimit(RLIMIT_NOFILE, &r);
        }
        asio::io_context ioc(1);
        asio::co_spawn(ioc, run(ioc, s), [](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
        });
        ioc.run();
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "vigil-bench-cluster: " << e.what() << '\n';
        return 1;
    }
}
