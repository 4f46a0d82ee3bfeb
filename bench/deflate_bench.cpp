// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// permessage-deflate on a JSON stream: a vigil::server sends a market and chat stream (trades,
// quotes and chat lines with the same keys over and over) to one vigil client over 127.0.0.1,
// with compression off, on without context takeover, and on with it. For each: the bytes
// on the wire per message (TCP_INFO bytes_received of the process's sockets, so every
// header and frame counts) and the CPU per message of the sending thread (compressing) and
// of the receiving thread (inflating). Prints a table and writes a CSV.
//
//   vigil-bench-deflate [--messages N] [--csv FILE]

#include <vigil/server.hpp>
#include <vigil/session.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

// In deflate_bench_tcp.cpp: the kernel's struct with tcpi_bytes_received clashes with the
// glibc one Asio includes.
unsigned long long tcp_bytes_received();

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

double thread_cpu_s()
{
    rusage ru{};
    ::getrusage(RUSAGE_THREAD, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// The stream: realistic repeated keys, changing numbers.
std::string stream_message(std::size_t i)
{
    static const char* symbols[] = {"BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD"};
    static const char* users[] = {"alice", "bob", "carol", "dave", "erin"};
    static const char* lines[] = {"anyone seen the ETH move?", "buying the dip again", "lol", "gm everyone",
                                  "that spread is wide today"};
    const auto n = static_cast<unsigned long long>(i);
    char buf[256];
    switch (i % 4) {
    case 0:
    case 1:
        std::snprintf(buf, sizeof buf,
                      R"({"type":"trade","symbol":"%s","price":%llu.%02llu,"qty":%llu.%03llu,"side":"%s","ts":%llu})",
                      symbols[n % 4], 40000 + (n * 37) % 900, n % 100, n % 7, (n * 13) % 1000,
                      n % 3 ? "buy" : "sell", 1733300000000ULL + n * 3);
        break;
    case 2:
        std::snprintf(buf, sizeof buf,
                      R"({"type":"quote","symbol":"%s","bid":%llu.%02llu,"ask":%llu.%02llu,"ts":%llu})",
                      symbols[n % 4], 40000 + (n * 37) % 900, n % 100, 40001 + (n * 37) % 900, (n + 5) % 100,
                      1733300000000ULL + n * 3);
        break;
    default:
        std::snprintf(buf, sizeof buf, R"({"type":"chat","room":"lobby","user":"%s","text":"%s","ts":%llu})",
                      users[n % 5], lines[(n / 5) % 5], 1733300000000ULL + n * 3);
    }
    return buf;
}

enum class mode { off, no_takeover, takeover };

const char* name_of(mode m)
{
    return m == mode::off ? "off" : m == mode::no_takeover ? "no-context-takeover" : "context-takeover";
}

vigil::deflate_config deflate_for(mode m)
{
    vigil::deflate_config d;
    d.enabled = m != mode::off;
    d.client_no_context_takeover = d.server_no_context_takeover = m == mode::no_takeover;
    return d;
}

struct result {
    mode m;
    std::size_t messages = 0;
    double payload_per_msg = 0;
    double wire_per_msg = 0;
    double sender_us = 0;
    double receiver_us = 0;
    bool compressed = false;
};

result run(mode m, std::size_t messages)
{
    result r{m};
    r.messages = messages;
    std::size_t payload = 0;
    for (std::size_t i = 0; i < messages; ++i)
        payload += stream_message(i).size();
    r.payload_per_msg = static_cast<double>(payload) / static_cast<double>(messages);

    asio::io_context server_io(1);
    vigil::server_config scfg;
    scfg.session.ping_interval = std::chrono::milliseconds(0);  // nothing but the stream on the wire
    scfg.session.deflate = deflate_for(m);
    double sender_cpu = 0;
    vigil::server srv(server_io.get_executor(), scfg, [&](vigil::server::connection_ptr c) -> asio::awaitable<void> {
        auto go = co_await c->receive();  // the client is ready and measuring
        if (go.ec)
            co_return;
        const double t0 = thread_cpu_s();
        for (std::size_t i = 0; i < messages; ++i)
            co_await c->send(stream_message(i));
        sender_cpu = thread_cpu_s() - t0;
        co_await c->send("end");
        co_await c->receive();  // until the client closes
    });
    std::string detail;
    if (srv.listen(&detail)) {
        std::fprintf(stderr, "listen: %s\n", detail.c_str());
        std::exit(1);
    }
    asio::co_spawn(server_io, srv.run(), asio::detached);
    std::thread server_thread([&] { server_io.run(); });

    asio::io_context client_io(1);
    vigil::session_config ccfg;
    ccfg.ping_interval = std::chrono::milliseconds(0);
    ccfg.deflate = deflate_for(m);
    vigil::session s(client_io.get_executor(), ccfg);
    std::size_t received = 0;
    bool ended = false;
    asio::steady_timer end_seen(client_io, asio::steady_timer::time_point::max());
    s.events().on_message = [&](std::string_view data, vigil::message_type) {
        if (data == "end") {
            ended = true;
            end_seen.cancel();
        } else {
            ++received;
        }
    };
    unsigned long long bytes0 = 0;
    unsigned long long bytes1 = 0;
    double receiver_cpu = 0;
    asio::co_spawn(client_io, [&]() -> asio::awaitable<void> {
        if (auto ec = co_await s.connect("ws://127.0.0.1:" + std::to_string(srv.port()) + "/")) {
            std::fprintf(stderr, "connect: %s\n", ec.message().c_str());
            co_return;
        }
        r.compressed = s.compressed();
        asio::co_spawn(client_io, s.run(), asio::detached);
        bytes0 = tcp_bytes_received();
        const double t0 = thread_cpu_s();
        co_await s.send("go");
        while (!ended)
            co_await end_seen.async_wait(asio::as_tuple(asio::use_awaitable));
        receiver_cpu = thread_cpu_s() - t0;
        bytes1 = tcp_bytes_received();
        co_await s.close();
    }, asio::detached);
    client_io.run();
    srv.stop();
    server_thread.join();

    if (received != messages) {
        std::fprintf(stderr, "%s: received %zu of %zu messages\n", name_of(m), received, messages);
        std::exit(1);
    }
    const auto n = static_cast<double>(messages);
    // bytes1 - bytes0: the stream, "end", and the 2-byte-headed "go" (both under 10 bytes).
    r.wire_per_msg = static_cast<double>(bytes1 - bytes0) / n;
    r.sender_us = sender_cpu / n * 1e6;
    r.receiver_us = receiver_cpu / n * 1e6;
    return r;
}

}  // namespace

int main(int argc, char** argv)
{
    std::size_t messages = 50000;
    std::string csv;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--messages")
            messages = std::stoul(argv[i + 1]);
        else if (a == "--csv")
            csv = argv[i + 1];
        else {
            std::fprintf(stderr, "usage: vigil-bench-deflate [--messages N] [--csv FILE]\n");
            return 64;
        }
    }
    double load[3] = {};
    ::getloadavg(load, 3);
    std::vector<result> results;
    for (auto m : {mode::off, mode::no_takeover, mode::takeover})
        results.push_back(run(m, messages));
    double load_end[3] = {};
    ::getloadavg(load_end, 3);

    std::printf("load average %.2f at start, %.2f at end; %zu messages, mean payload %.1f bytes\n\n", load[0],
                load_end[0], messages, results[0].payload_per_msg);
    std::printf("| deflate | compressed | wire bytes/msg | vs off | sender CPU us/msg | receiver CPU us/msg |\n");
    std::printf("|---|---|---|---|---|---|\n");
    for (const auto& r : results)
        std::printf("| %s | %s | %.1f | %.2f | %.2f | %.2f |\n", name_of(r.m), r.compressed ? "yes" : "no",
                    r.wire_per_msg, r.wire_per_msg / results[0].wire_per_msg, r.sender_us, r.receiver_us);
    if (!csv.empty()) {
        std::ofstream out(csv);
        out << "deflate,compressed,messages,payload_bytes_per_msg,wire_bytes_per_msg,wire_ratio_vs_off,"
               "sender_cpu_us_per_msg,receiver_cpu_us_per_msg,load_start,load_end\n";
        for (const auto& r : results)
            out << name_of(r.m) << ',' << (r.compressed ? "yes" : "no") << ',' << r.messages << ','
                << r.payload_per_msg << ',' << r.wire_per_msg << ',' << r.wire_per_msg / results[0].wire_per_msg
                << ',' << r.sender_us << ',' << r.receiver_us << ',' << load[0] << ',' << load_end[0] << '\n';
    }
    return 0;
}
