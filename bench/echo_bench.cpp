// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-bench-echo: what vigil's liveness machinery costs. A plain Beast client and a
// vigil::session client (heartbeat on) talk to the same in-process echo server with the same
// messages; runs alternate between the two and the medians are compared.

#include <vigil/session.hpp>

#include <support/peer.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using clock_type = std::chrono::steady_clock;
using std::chrono::duration;
using tcp = asio::ip::tcp;

struct settings {
    int rounds = 5;
    // Length of one round-trip run.
    duration<double> seconds{1.0};
    std::size_t bulk_small_messages = 50'000;
    std::size_t bulk_large_messages = 1'000;
    std::string csv_path;
};

// One measurement kind: what it measures for one message size.
struct scenario {
    std::string mode;  // "round_trip" or "bulk"
    std::size_t size;
    std::size_t bulk_messages;
    double target;
};

std::string size_label(std::size_t size)
{
    return size >= 1024 ? std::to_string(size / 1024) + " KiB" : std::to_string(size) + " B";
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    auto n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double seconds_since(clock_type::time_point start)
{
    return duration<double>(clock_type::now() - start).count();
}

// ---- the plain Beast client: what an application without vigil would write ----

using raw_stream = websocket::stream<beast::tcp_stream>;

asio::awaitable<void> raw_open(raw_stream& ws, std::uint16_t port)
{
    co_await beast::get_lowest_layer(ws).async_connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), asio::use_awaitable);
    // Without it Nagle's algorithm and delayed ACKs stall every large echo by tens of
    // milliseconds; any latency-minded client turns it off, and vigil does.
    beast::get_lowest_layer(ws).socket().set_option(tcp::no_delay(true));
    co_await ws.async_handshake("127.0.0.1:" + std::to_string(port), "/", asio::use_awaitable);
    ws.binary(true);
}

asio::awaitable<double> raw_round_trip(std::uint16_t port, std::string payload,
                                       duration<double> length)
{
    raw_stream ws(co_await asio::this_coro::executor);
    co_await raw_open(ws, port);
    beast::flat_buffer buffer;
    std::size_t count = 0;
    auto start = clock_type::now();
    auto end = start + std::chrono::duration_cast<clock_type::duration>(length);
    while (clock_type::now() < end) {
        co_await ws.async_write(asio::buffer(payload), asio::use_awaitable);
        co_await ws.async_read(buffer, asio::use_awaitable);
        if (buffer.size() != payload.size()) {
            throw std::runtime_error("raw: echo of the wrong size");
        }
        buffer.consume(buffer.size());
        ++count;
    }
    double elapsed = seconds_since(start);
    co_await ws.async_close(websocket::close_code::normal, asio::use_awaitable);
    co_return static_cast<double>(count) / elapsed;
}

asio::awaitable<void> raw_write_all(raw_stream& ws, const std::string& payload, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) {
        co_await ws.async_write(asio::buffer(payload), asio::use_awaitable);
    }
}

asio::awaitable<void> raw_read_all(raw_stream& ws, std::size_t n, std::size_t& bytes)
{
    beast::flat_buffer buffer;
    for (std::size_t i = 0; i < n; ++i) {
        bytes += co_await ws.async_read(buffer, asio::use_awaitable);
        buffer.consume(buffer.size());
    }
}

asio::awaitable<double> raw_bulk(std::uint16_t port, std::string payload, std::size_t n)
{
    using namespace boost::asio::experimental::awaitable_operators;
    raw_stream ws(co_await asio::this_coro::executor);
    co_await raw_open(ws, port);
    std::size_t bytes = 0;
    auto start = clock_type::now();
    co_await (raw_write_all(ws, payload, n) && raw_read_all(ws, n, bytes));
    double elapsed = seconds_since(start);
    if (bytes != n * payload.size()) {
        throw std::runtime_error("raw: echoed byte count is off");
    }
    co_await ws.async_close(websocket::close_code::normal, asio::use_awaitable);
    co_return static_cast<double>(bytes) / 1e6 / elapsed;
}

// ---- the vigil client: sends with co_await send(), receives through on_message ----

// A session connected to the echo server with run() going, and a way for a coroutine to
// wait until on_message has seen enough.
class vigil_client {
public:
    explicit vigil_client(asio::any_io_executor ex) : ex_(ex), session_(ex), wake_(ex)
    {
        session_.events().on_message = [this](std::string_view data, vigil::message_type) {
            ++messages_;
            bytes_ += data.size();
            if (messages_ >= wanted_) {
                wake_.cancel();
            }
        };
    }

    asio::awaitable<void> open(std::uint16_t port)
    {
        if (auto ec = co_await session_.connect("ws://127.0.0.1:" + std::to_string(port) + "/")) {
            throw std::runtime_error("vigil: connect: " + vigil::error_name(ec));
        }
        running_ = true;
        asio::co_spawn(ex_, watch_run(), asio::detached);
    }

    asio::awaitable<void> send(std::string payload)
    {
        if (auto ec = co_await session_.send(std::move(payload), vigil::message_type::binary)) {
            throw std::runtime_error("vigil: send: " + vigil::error_name(ec));
        }
    }

    // Returns once `n` messages in all have been received.
    asio::awaitable<void> wait_for_messages(std::size_t n)
    {
        wanted_ = n;
        while (messages_ < n) {
            if (!running_) {
                throw std::runtime_error("vigil: run() ended: " + vigil::error_name(run_result_));
            }
            wake_.expires_at(clock_type::time_point::max());
            co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }

    asio::awaitable<void> shut()
    {
        co_await session_.close(1000);
        while (running_) {
            wake_.expires_at(clock_type::time_point::max());
            co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }

    std::size_t bytes() const noexcept { return bytes_; }

private:
    asio::awaitable<void> watch_run()
    {
        run_result_ = co_await session_.run();
        running_ = false;
        wake_.cancel();
    }

    asio::any_io_executor ex_;
    vigil::session session_;
    asio::steady_timer wake_;
    std::size_t messages_ = 0;
    std::size_t bytes_ = 0;
    std::size_t wanted_ = 0;
    bool running_ = false;
    vigil::error_code run_result_;
};

asio::awaitable<double> vigil_round_trip(std::uint16_t port, std::string payload,
                                         duration<double> length)
{
    vigil_client client(co_await asio::this_coro::executor);
    co_await client.open(port);
    std::size_t count = 0;
    auto start = clock_type::now();
    auto end = start + std::chrono::duration_cast<clock_type::duration>(length);
    while (clock_type::now() < end) {
        co_await client.send(payload);
        co_await client.wait_for_messages(count + 1);
        ++count;
    }
    double elapsed = seconds_since(start);
    if (client.bytes() != count * payload.size()) {
        throw std::runtime_error("vigil: echoes of the wrong size");
    }
    co_await client.shut();
    co_return static_cast<double>(count) / elapsed;
}

asio::awaitable<double> vigil_bulk(std::uint16_t port, std::string payload, std::size_t n)
{
    vigil_client client(co_await asio::this_coro::executor);
    co_await client.open(port);
    auto start = clock_type::now();
    for (std::size_t i = 0; i < n; ++i) {
        co_await client.send(payload);
    }
    co_await client.wait_for_messages(n);
    double elapsed = seconds_since(start);
    if (client.bytes() != n * payload.size()) {
        throw std::runtime_error("vigil: echoed byte count is off");
    }
    co_await client.shut();
    co_return static_cast<double>(client.bytes()) / 1e6 / elapsed;
}

// ---- driver ----

// Round trips per second, or echoed megabytes (10^6 bytes) per second.
double run_one(asio::io_context& ioc, asio::awaitable<double> work)
{
    double r = 0;
    std::exception_ptr error;
    asio::co_spawn(ioc, std::move(work), [&](std::exception_ptr e, double got) {
        error = e;
        r = got;
    });
    ioc.restart();
    ioc.run();
    if (error) {
        std::rethrow_exception(error);
    }
    return r;
}

double measure(asio::io_context& ioc, const scenario& sc, bool use_vigil, std::uint16_t port,
               duration<double> length)
{
    std::string payload(sc.size, 'x');
    if (sc.mode == "round_trip") {
        return run_one(ioc, use_vigil ? vigil_round_trip(port, payload, length)
                                      : raw_round_trip(port, payload, length));
    }
    return run_one(ioc, use_vigil ? vigil_bulk(port, payload, sc.bulk_messages)
                                  : raw_bulk(port, payload, sc.bulk_messages));
}

settings parse_args(int argc, char** argv)
{
    settings s;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        auto next = [&]() -> std::string_view {
            if (i + 1 >= argc) {
                throw std::invalid_argument(std::string(arg) + " needs a value");
            }
            return argv[++i];
        };
        auto number = [&](std::string_view text) {
            double v = 0;
            auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
            if (ec != std::errc{} || end != text.data() + text.size() || v <= 0) {
                throw std::invalid_argument(std::string(arg) + ": bad number");
            }
            return v;
        };
        if (arg == "--rounds") {
            s.rounds = static_cast<int>(number(next()));
        } else if (arg == "--seconds") {
            s.seconds = duration<double>(number(next()));
        } else if (arg == "--bulk-small") {
            s.bulk_small_messages = static_cast<std::size_t>(number(next()));
        } else if (arg == "--bulk-large") {
            s.bulk_large_messages = static_cast<std::size_t>(number(next()));
        } else if (arg == "--csv") {
            s.csv_path = std::string(next());
        } else {
            throw std::invalid_argument(
                "usage: vigil-bench-echo [--rounds N] [--seconds S] [--bulk-small N] "
                "[--bulk-large N] [--csv FILE]");
        }
    }
    return s;
}

}  // namespace

int main(int argc, char** argv)
{
    settings s;
    try {
        s = parse_args(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 64;
    }

    try {
        vigil::test::peer server;
        asio::io_context ioc(1);
        const std::vector<scenario> scenarios = {
            {"round_trip", 64, 0, 0.95},
            {"round_trip", 64 * 1024, 0, 0.98},
            {"bulk", 64, s.bulk_small_messages, 0.95},
            {"bulk", 64 * 1024, s.bulk_large_messages, 0.98},
        };

        std::ofstream csv;
        if (!s.csv_path.empty()) {
            csv.open(s.csv_path);
            if (!csv) {
                throw std::runtime_error("cannot write " + s.csv_path);
            }
            csv << "mode,size_bytes,client,round,value,unit\n";
        }

        std::printf("echo benchmark: raw Beast vs vigil::session (heartbeat on), "
                    "%d alternating rounds each, medians\n\n",
                    s.rounds);
        std::printf("%-11s %-7s %16s %16s %10s %8s\n", "mode", "size", "raw", "vigil",
                    "vigil/raw", "target");
        std::fflush(stdout);

        for (const auto& sc : scenarios) {
            const char* unit = sc.mode == "round_trip" ? "msg/s" : "MB/s";
            // One short unrecorded run of each first, so neither side pays for cold caches
            // and first-touch page faults.
            measure(ioc, sc, false, server.port(), s.seconds / 5);
            measure(ioc, sc, true, server.port(), s.seconds / 5);

            std::vector<double> raw, vig;
            for (int round = 0; round < s.rounds; ++round) {
                for (bool use_vigil : {false, true}) {
                    double v = measure(ioc, sc, use_vigil, server.port(), s.seconds);
                    (use_vigil ? vig : raw).push_back(v);
                    if (csv) {
                        csv << sc.mode << ',' << sc.size << ',' << (use_vigil ? "vigil" : "raw")
                            << ',' << round << ',' << v << ',' << unit << '\n';
                    }
                }
            }
            double r = median(raw);
            double v = median(vig);
            double ratio = v / r;
            std::printf("%-11s %-7s %10.1f %-5s %10.1f %-5s %10.3f %5s%.2f%s\n", sc.mode.c_str(),
                        size_label(sc.size).c_str(), r, unit, v, unit, ratio, ">=", sc.target,
                        ratio >= sc.target ? "" : "  (below target)");
            std::fflush(stdout);
        }
        if (csv) {
            std::printf("\nraw figures written to %s\n", s.csv_path.c_str());
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vigil-bench-echo: %s\n", e.what());
        return 1;
    }
}
