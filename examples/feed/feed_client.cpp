// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// feed-client URL [--symbols A,B,...] [--json]: subscribes to a market-data feed and prints
// its ticks, readable or as JSON lines. It stays subscribed whatever happens to the
// connection: the subscription is sent in the supervisor's on_connected hook, so every
// reconnect re-subscribes (the server forgot the old subscription with the old connection),
// and idle_timeout catches a feed that is connected and answers pings but has stopped
// ticking.

#include <vigil/supervisor.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
// Ordered: "event" and "t" lead every line, as in vigil-probe's output.
using json = nlohmann::ordered_json;

// Prints what happens, for people or for scripts.
class printer {
public:
    explicit printer(bool as_json) : json_(as_json) {}

    void connected(const std::string& symbols)
    {
        if (json_) {
            line({{"event", "connected"}, {"symbols", symbols}});
        } else {
            say("connected, subscribing to " + symbols);
        }
    }

    void tick(const json& t)
    {
        if (json_) {
            line({{"event", "tick"}, {"symbol", t["symbol"]}, {"price", t["price"]}, {"seq", t["seq"]}});
        } else {
            char text[128];
            std::snprintf(text, sizeof text, "%-10s %12.2f  #%llu", t["symbol"].get<std::string>().c_str(),
                          t["price"].get<double>(), t["seq"].get<unsigned long long>());
            say(text);
        }
    }

    void retry(const vigil::retry_info& r)
    {
        if (json_) {
            line({{"event", "disconnected"},
                  {"reason", vigil::error_name(r.last.reason)},
                  {"detail", r.last.detail}});
            line({{"event", "retry"}, {"attempt", r.attempt}, {"delay_ms", r.delay.count()}});
        } else {
            // The detail names the reason too: "no data message for 2000 ms (idle_timeout)".
            say(r.last.detail + "; reconnecting in " + std::to_string(r.delay.count()) + " ms");
        }
    }

    void other(std::string_view text)
    {
        if (json_) {
            line({{"event", "message"}, {"text", text}});
        } else {
            say("server says: " + std::string(text));
        }
    }

private:
    void line(json j)
    {
        json out = {{"event", j["event"]}, {"t", seconds()}};
        out.update(j);
        std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
    }

    void say(const std::string& text)
    {
        char stamp[16];
        std::snprintf(stamp, sizeof stamp, "%8.3f", seconds());
        std::cout << stamp << "  " << text << std::endl;
    }

    double seconds() const
    {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }

    bool json_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// A feed is input like any other: check the shape before trusting it.
bool is_tick(const json& m)
{
    return m.is_object() && m.contains("type") && m["type"] == "tick" &&
           m.contains("symbol") && m["symbol"].is_string() &&
           m.contains("price") && m["price"].is_number() &&
           m.contains("seq") && m["seq"].is_number_unsigned();
}

}  // namespace

int main(int argc, char** argv)
{
    std::string url;
    std::string symbols = "BTC-USD,ETH-USD";
    bool as_json = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--json") {
            as_json = true;
        } else if (arg == "--symbols" && i + 1 < argc) {
            symbols = argv[++i];
        } else if (url.empty() && !arg.starts_with("-")) {
            url = arg;
        } else {
            url.clear();
            break;
        }
    }
    if (url.empty()) {
        std::cerr << "usage: feed-client URL [--symbols A,B,... (BTC-USD,ETH-USD)] [--json]\n";
        return 64;
    }
    json subscribe = {{"op", "subscribe"}, {"symbols", json::array()}};
    for (std::size_t start = 0; start <= symbols.size();) {
        auto comma = std::min(symbols.find(',', start), symbols.size());
        if (comma > start) {
            subscribe["symbols"].push_back(symbols.substr(start, comma - start));
        }
        start = comma + 1;
    }

    vigil::supervisor_config cfg;
    // The feed ticks several times a second: two seconds without a tick means it is stuck,
    // even while it answers pings. idle_timeout counts data messages only.
    cfg.session.idle_timeout = 2s;
    // A busy feed sends no pings at all (idle mode); these only matter when it goes quiet,
    // and find a dead connection (no answer at all) within 1 + 0.5 s.
    cfg.session.ping_interval = 1s;
    cfg.session.pong_timeout = 500ms;
    // A connection that delivered ticks for 3 s was a good one: the next failure starts a
    // fresh backoff streak instead of waiting longer and longer.
    cfg.stable_after = 3s;

    try {
        asio::io_context ioc;
        printer out(as_json);
        vigil::supervisor feed(ioc.get_executor(), url, cfg);

        // Runs after every successful handshake, before anything else is sent.
        feed.on_connected([&](vigil::session& s) -> asio::awaitable<vigil::error_code> {
            out.connected(symbols);
            co_return co_await s.send(subscribe.dump());
        });
        feed.session_event_handlers().on_message = [&out](std::string_view data, vigil::message_type) {
            auto msg = json::parse(data, nullptr, false);
            if (is_tick(msg)) {
                out.tick(msg);
            } else {
                out.other(data);
            }
        };
        feed.events().on_retry = [&out](const vigil::retry_info& r) { out.retry(r); };

        asio::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&feed](boost::system::error_code ec, int) {
            if (!ec) {
                feed.stop();
            }
        });
        int status = 0;
        // run() ends on stop() or a permanent failure (bad URL, 403 ...): those are not
        // worth retrying.
        asio::co_spawn(feed.get_executor(), feed.run(), [&](std::exception_ptr e, vigil::error_code ec) {
            signals.cancel();
            if (e) {
                std::rethrow_exception(e);
            }
            if (ec) {
                std::cerr << "feed-client: " << vigil::error_name(ec) << ": " << feed.last_disconnect().detail
                          << '\n';
                status = 1;
            }
        });
        ioc.run();
        return status;
    } catch (const std::exception& e) {
        std::cerr << "feed-client: " << e.what() << '\n';
        return 1;
    }
}
