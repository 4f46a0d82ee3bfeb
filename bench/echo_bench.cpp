// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-bench-echo: what vigil's liveness machinery costs. A plain Beast client and a
// vigil::session client (heartbeat on) talk to the same in-process echo server with the same
// messages; runs alternate between the two and the medians are compared.

#include <vigil/session.hpp>

#include <support/peer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
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
    // For profiling one client on one scenario: "raw" or "vigil", and a mode and a size.
    std::string only;
    std::string only_mode;
    std::size_t only_size = 0;
    // The vigil client hands each send a copy of the payload (std::string by value), as an
    // application that does not keep its messages does, instead of sharing one.
    bool copy = false;
};

// Messages echoed in all (both clients, warm-up included), for per-message profiles.
std::size_t echoed_messages = 0;

// --copy: the vigil client sends a fresh copy of the payload each time.
bool copy_payload = false;

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
    echoed_messages += count;
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
    echoed_messages += n;
    co_await ws.async_close(websocket::close_code::normal, asio::use_awaitable);
    co_return static_cast<double>(bytes) / 1e6 / elapsed;
}

// ---- the vigil client, used as vigil is meant to be used ----
//
// Everything runs on the session's strand: the coroutine is spawned there, echoes arrive in
// on_message on that strand, and on_message starts the next send right away with a plain
// callback. On the strand, send() completes and wakes the writer inline: no scheduler hop
// per message on vigil's side, as on the raw client's.

class vigil_echo {
public:
    explicit vigil_echo(asio::any_io_executor ex) : session_(ex) {}

    vigil::session& session() noexcept { return session_; }

    // Send one message, wait for its echo, send the next one from on_message, until `length`
    // has passed. Round trips per second.
    asio::awaitable<double> round_trip(std::uint16_t port, std::string text, duration<double> length)
    {
        co_await open(port);
        const auto payload = std::make_shared<const std::string>(std::move(text));
        const auto end = clock_type::now() + std::chrono::duration_cast<clock_type::duration>(length);
        session_.events().on_message = [this, &payload, end](std::string_view data,
                                                             vigil::message_type) {
            ++messages_;
            bytes_ += data.size();
            last_echo_ = clock_type::now();
            if (last_echo_ < end) {
                send_one(payload);
            } else {
                finish();
            }
        };
        start_ = clock_type::now();
        send_one(payload);
        co_await drive();
        echoed_messages += messages_;
        if (bytes_ != messages_ * payload->size()) {
            throw std::runtime_error("vigil: echoes of the wrong size");
        }
        co_return static_cast<double>(messages_) / duration<double>(last_echo_ - start_).count();
    }

    // Send `n` messages back to back while on_message counts the echoes. Echoed MB/s.
    asio::awaitable<double> bulk(std::uint16_t port, std::string text, std::size_t n)
    {
        co_await open(port);
        const auto payload = std::make_shared<const std::string>(std::move(text));
        session_.events().on_message = [this, n](std::string_view data, vigil::message_type) {
            ++messages_;
            bytes_ += data.size();
            if (messages_ == n) {
                last_echo_ = clock_type::now();
                finish();
            }
        };
        start_ = clock_type::now();
        asio::co_spawn(session_.get_executor(), write_all(payload, n), asio::detached);
        co_await drive();
        echoed_messages += messages_;
        if (bytes_ != n * payload->size()) {
            throw std::runtime_error("vigil: echoed byte count is off");
        }
        co_return static_cast<double>(bytes_) / 1e6 /
            duration<double>(last_echo_ - start_).count();
    }

private:
    asio::awaitable<void> open(std::uint16_t port)
    {
        if (auto ec = co_await session_.connect("ws://127.0.0.1:" + std::to_string(port) + "/")) {
            throw std::runtime_error("vigil: connect: " + vigil::error_name(ec));
        }
    }

    // run() until finish() closes the session; a send error ends it too.
    asio::awaitable<void> drive()
    {
        auto ec = co_await session_.run();
        if (ec || send_error_) {
            throw std::runtime_error("vigil: run() ended: " +
                                     vigil::error_name(ec ? ec : send_error_));
        }
    }

    // The payload is shared, not copied per send, as the raw client writes its buffer
    // without copying it.
    void send_one(const std::shared_ptr<const std::string>& payload)
    {
        auto done = [this](vigil::error_code ec) {
            if (ec && !send_error_) {
                send_error_ = ec;
                session_.cancel();
            }
        };
        if (copy_payload)
            session_.async_send(std::string(*payload), vigil::message_type::binary, done);
        else
            session_.async_send(payload, vigil::message_type::binary, done);
    }

    asio::awaitable<void> write_all(std::shared_ptr<const std::string> payload, std::size_t n)
    {
        for (std::size_t i = 0; i < n; ++i) {
            auto ec = copy_payload ? co_await session_.send(std::string(*payload), vigil::message_type::binary)
                                   : co_await session_.send(payload, vigil::message_type::binary);
            if (ec) {
                send_error_ = ec;
                session_.cancel();
                co_return;
            }
        }
    }

    void finish()
    {
        asio::co_spawn(session_.get_executor(), session_.close(1000), asio::detached);
    }

    vigil::session session_;
    std::size_t messages_ = 0;
    std::size_t bytes_ = 0;
    clock_type::time_point start_;
    clock_type::time_point last_echo_;
    vigil::error_code send_error_;
};

// ---- driver ----

// Round trips per second, or echoed megabytes (10^6 bytes) per second.
double run_one(asio::io_context& ioc, const asio::any_io_executor& ex, asio::awaitable<double> work)
{
    double r = 0;
    std::exception_ptr error;
    asio::co_spawn(ex, std::move(work), [&](std::exception_ptr e, double got) {
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
    const bool round_trip = sc.mode == "round_trip";
    if (use_vigil) {
        vigil_echo client(ioc.get_executor());
        // The client coroutine lives on the session's strand, like the application code
        // that vigil expects.
        return run_one(ioc, client.session().get_executor(),
                       round_trip ? client.round_trip(port, payload, length)
                                  : client.bulk(port, payload, sc.bulk_messages));
    }
    return run_one(ioc, ioc.get_executor(),
                   round_trip ? raw_round_trip(port, payload, length)
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
        } else if (arg == "--only") {
            s.only = std::string(next());
            if (s.only != "raw" && s.only != "vigil") {
                throw std::invalid_argument("--only: raw or vigil");
            }
        } else if (arg == "--mode") {
            s.only_mode = std::string(next());
        } else if (arg == "--size") {
            s.only_size = static_cast<std::size_t>(number(next()));
        } else if (arg == "--copy") {
            s.copy = true;
        } else if (arg == "--csv") {
            s.csv_path = std::string(next());
        } else {
            throw std::invalid_argument(
                "usage: vigil-bench-echo [--rounds N] [--seconds S] [--bulk-small N] "
                "[--bulk-large N] [--csv FILE] [--only raw|vigil] [--mode round_trip|bulk] "
                "[--size BYTES] [--copy]");
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

    copy_payload = s.copy;
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

        if (s.only.empty()) {
            std::printf("echo benchmark: raw Beast vs vigil::session (heartbeat on), "
                        "%d alternating rounds each, medians\n\n",
                        s.rounds);
            std::printf("%-11s %-7s %16s %16s %10s %8s\n", "mode", "size", "raw", "vigil",
                        "vigil/raw", "target");
            std::fflush(stdout);
        }

        for (const auto& sc : scenarios) {
            if ((!s.only_mode.empty() && sc.mode != s.only_mode) ||
                (s.only_size != 0 && sc.size != s.only_size)) {
                continue;
            }
            if (!s.only.empty()) {
                // Profiling: one client, one run, nothing else in the process's profile.
                double v = measure(ioc, sc, s.only == "vigil", server.port(), s.seconds);
                std::printf("%s %s %s: %.1f, %zu messages echoed\n", s.only.c_str(),
                            sc.mode.c_str(), size_label(sc.size).c_str(), v, echoed_messages);
                continue;
            }
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
                    if (csv.is_open()) {
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
        if (csv.is_open()) {
            std::printf("\nraw figures written to %s\n", s.csv_path.c_str());
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vigil-bench-echo: %s\n", e.what());
        return 1;
    }
}
