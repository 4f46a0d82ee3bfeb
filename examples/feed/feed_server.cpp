// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// feed-server [--port P] [--period-ms N] [--stall-after S]: a local market-data feed. A
// client sends {"op":"subscribe","symbols":["BTC-USD",...]} and receives a JSON tick per
// symbol every N ms (default 250):
//
//     {"type":"tick","symbol":"BTC-USD","price":64012.5,"seq":17}
//
// --stall-after S makes each connection stop ticking S seconds after its subscription while
// still answering pings: the failure a heartbeat cannot see (a stuck matching engine, a
// dead upstream behind a live gateway), which is what the client's idle_timeout is for.

#include <vigil/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>

#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <exception>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;
using json = nlohmann::ordered_json;  // keys in the order written: {"type":"tick",...}
using std::chrono::milliseconds;

struct feed_options {
    std::uint16_t port = 9001;
    milliseconds period{250};
    milliseconds stall_after{0};  // 0: never
};

// What one client asked for; shared by its two coroutines (same strand: no locking).
struct subscription {
    std::map<std::string, double> prices;  // symbol -> last price
    std::optional<std::chrono::steady_clock::time_point> since;
};

// Clients are input like any other: check the shape before trusting it.
bool is_subscribe(const json& r)
{
    return r.is_object() && r.contains("op") && r["op"] == "subscribe" && r.contains("symbols") &&
           r["symbols"].is_array();
}

class feed {
public:
    feed(asio::any_io_executor ex, vigil::server_config cfg, feed_options opts)
        : opts_(opts),
          server_(std::move(ex), std::move(cfg),
                  [this](vigil::server::connection_ptr c) { return client(std::move(c)); })
    {
    }

    vigil::server& server() { return server_; }

private:
    asio::awaitable<void> client(vigil::server::connection_ptr c)
    {
        subscription sub;
        // Reading and ticking run side by side; when the connection ends, read_requests()
        // returns and `||` cancels the ticker.
        co_await (read_requests(c, sub) || tick(c, sub));
        std::cerr << "feed-server: client " << c->id() << " gone: "
                  << vigil::error_name(c->last_disconnect().reason) << '\n';
    }

    asio::awaitable<void> read_requests(vigil::server::connection_ptr c, subscription& sub)
    {
        for (;;) {
            vigil::received msg = co_await c->receive();
            if (msg.ec) {
                co_return;
            }
            auto request = json::parse(msg.data, nullptr, false);
            if (!is_subscribe(request)) {
                json error = {{"type", "error"},
                              {"message", R"(expected {"op":"subscribe","symbols":[...]})"}};
                c->async_send(error.dump(), vigil::message_type::text, asio::detached);
                continue;
            }
            std::string list;
            for (const auto& symbol : request["symbols"]) {
                if (symbol.is_string()) {
                    sub.prices.try_emplace(symbol.get<std::string>(), 100.0);
                    list += (list.empty() ? "" : ", ") + symbol.get<std::string>();
                }
            }
            sub.since = std::chrono::steady_clock::now();
            std::cerr << "feed-server: client " << c->id() << " subscribed to " << list << '\n';
        }
    }

    asio::awaitable<void> tick(vigil::server::connection_ptr c, subscription& sub)
    {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        std::mt19937_64 rng(c->id());
        std::normal_distribution<double> move(0.0, 0.001);
        std::uint64_t seq = 0;
        bool stalled = false;
        for (;;) {
            timer.expires_after(opts_.period);
            auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
            if (ec) {
                co_return;  // cancelled: the connection ended
            }
            if (!sub.since) {
                continue;
            }
            if (opts_.stall_after.count() > 0 &&
                std::chrono::steady_clock::now() - *sub.since >= opts_.stall_after) {
                if (!stalled) {
                    stalled = true;
                    std::cerr << "feed-server: client " << c->id()
                              << ": stalling (no more ticks, pings still answered)\n";
                }
                continue;
            }
            for (auto& [symbol, price] : sub.prices) {
                price *= std::exp(move(rng));
                json t = {{"type", "tick"},
                          {"symbol", symbol},
                          {"price", std::round(price * 100) / 100},
                          {"seq", ++seq}};
                // Not awaited: a feed never waits for one client. One that cannot keep up
                // fills its send queue and is disconnected (slow_consumer), as the server
                // default says.
                c->async_send(t.dump(), vigil::message_type::text, asio::detached);
            }
        }
    }

    feed_options opts_;
    vigil::server server_;
};

std::optional<feed_options> parse_args(int argc, char** argv)
{
    feed_options opts;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view flag = argv[i];
        std::string_view text = argv[i + 1];
        double value = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc{} || end != text.data() + text.size() || value < 0) {
            return std::nullopt;
        }
        if (flag == "--port" && value <= 65535 && value == std::floor(value)) {
            opts.port = static_cast<std::uint16_t>(value);
        } else if (flag == "--period-ms" && value >= 1) {
            opts.period = milliseconds(std::llround(value));
        } else if (flag == "--stall-after") {
            opts.stall_after = milliseconds(std::llround(value * 1000));
        } else {
            return std::nullopt;
        }
    }
    if (argc % 2 == 0) {
        return std::nullopt;  // a flag without its value
    }
    return opts;
}

}  // namespace

int main(int argc, char** argv)
{
    auto opts = parse_args(argc, argv);
    if (!opts) {
        std::cerr << "usage: feed-server [--port P (9001)] [--period-ms N (250)] [--stall-after S]\n";
        return 64;
    }

    vigil::server_config cfg;  // starts from vigil::server_session_defaults()
    cfg.port = opts->port;
    // Subscriptions are tiny; anything big is a confused or hostile client.
    cfg.session.max_message_size = 4096;

    try {
        asio::io_context ioc;
        feed f(ioc.get_executor(), cfg, *opts);
        std::string detail;
        if (auto ec = f.server().listen(&detail)) {
            std::cerr << "feed-server: " << vigil::error_name(ec) << ": " << detail << '\n';
            return 1;
        }
        std::cerr << "feed-server: listening on ws://127.0.0.1:" << f.server().port() << "/\n";

        asio::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&f](boost::system::error_code ec, int) {
            if (!ec) {
                f.server().stop();  // every client gets 1001 "going away" and reconnects
            }
        });
        asio::co_spawn(ioc, f.server().run(), [&signals](std::exception_ptr e, vigil::error_code) {
            signals.cancel();
            if (e) {
                std::rethrow_exception(e);
            }
        });
        ioc.run();
    } catch (const std::exception& e) {
        std::cerr << "feed-server: " << e.what() << '\n';
        return 1;
    }
}
