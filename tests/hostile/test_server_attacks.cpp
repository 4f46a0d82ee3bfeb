// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// Strangers against the real vigil-serve with its default settings: every case starts it as
// a child process, connects a well-behaved client that measures echo latency, attacks from
// raw sockets on the test's thread, and then checks that the server is alive, that its
// descriptors came back to what they were before the attack, that its memory stayed within a
// stated bound, that the well-behaved client was served with normal latency throughout, and
// that the offender got a clear close code or HTTP status, with vigil-serve's JSON line
// saying why.

#include "hostile.hpp"

#include <support/raw_client.hpp>
#include <support/testing.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>

#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace vh = vigil::hostile;
namespace vt = vigil::test;
using namespace std::chrono_literals;
using namespace std::string_literals;
using json = nlohmann::json;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;
using vigil::error_code;
using vt::describe;

// The bounds every case holds the server to. Generous on purpose: they separate "bounded"
// from "grows with the attack" and "served" from "stalled", not fast from slow. (Measured on
// a 2-core machine, three runs in a row, each line "figures: ..." of the output.)
//
// Memory: vigil-serve is at about 10 MiB resident once a client echoes through it. The
// heaviest case, endless continuation frames, legitimately holds a message of
// max_message_size (16 MiB by default) in a buffer that grows by doubling, the old copy
// beside the new one: its peak is 57 MiB, 47 MiB over the start. 1,000 reset connections
// leave 13 MiB with the allocator. Every other case stays within 1 MiB. 64 MiB over the
// resident size before the attack allows for all that, and is still well below what an
// unbounded queue of pongs, frames or messages reaches in the seconds an attack runs.
constexpr std::size_t rss_bound_kib = 64 * 1024;
// Latency of the well-behaved client's echoes while the attack runs: an idle loopback round
// trip takes under a millisecond (p50 1 ms in every case). The worst p99 measured is
// 108 ms, while the server copies the 16 MiB message of the continuation flood; the others
// stay under 40 ms. A server that stalls for an attack shows seconds.
constexpr milliseconds p99_bound = 250ms;
// How long the server may take to give back the descriptors of connections that ended
// (it took well under a second in every case).
constexpr milliseconds fd_bound = 5s;

void print_figures(const std::string& name, const vh::memory& before, const vh::memory& after, std::size_t fds_before,
                   std::size_t fds_after, const vh::latency_report& lat)
{
    std::printf("figures: %s: RSS %.1f MiB before, %.1f MiB after, peak %.1f MiB (bound +%.0f MiB); fds %zu before, "
                "%zu after; well-behaved client: %s\n",
                name.c_str(), vh::mib(before.rss_kib), vh::mib(after.rss_kib), vh::mib(after.hwm_kib),
                vh::mib(rss_bound_kib), fds_before, fds_after, lat.describe().c_str());
    std::fflush(stdout);
}

// vigil-serve, a well-behaved client echoing through it, and what both looked like before
// the attack.
struct under_attack {
    explicit under_attack(std::vector<std::string> args = {"--mode", "echo"})
        : serve(std::move(args)), prober(serve.port())
    {
        REQUIRE_MESSAGE(prober.wait_echoes(20, 5s), prober.report().describe());
        fds_before = vh::count_fds(serve.pid());
        auto m = vh::proc_status(serve.pid());
        REQUIRE(m.has_value());
        before = *m;
        prober.reset();
    }

    // Runs `attack` on the test's io_context, at most `bound`.
    void run(std::function<asio::awaitable<void>()> attack, milliseconds bound)
    {
        bool done = false;
        asio::co_spawn(
            ioc,
            [&]() -> asio::awaitable<void> {
                co_await attack();
                done = true;
            },
            [](std::exception_ptr e) {
                if (e)
                    std::rethrow_exception(e);
            });
        ioc.run_for(bound);
        ioc.restart();
        REQUIRE_MESSAGE(done, "the attack did not end within its bound");
    }

    // The checks of every case, after the attack: alive, descriptors back, memory bounded,
    // the well-behaved client served.
    void check_server(const std::string& name) { check_server_within(name, rss_bound_kib); }

    // The same, for an attack that may make the server hold up to `bound_kib` more.
    void check_server_within(const std::string& name, std::size_t bound_kib)
    {
        CHECK_MESSAGE(serve.running(), serve.transcript());
        const auto fds_after = vh::wait_fds_at_most(serve.pid(), fds_before, fd_bound);
        CHECK_MESSAGE(fds_after <= fds_before, "descriptors leaked: " << fds_before << " before, " << fds_after
                                                                      << " after\n"
                                                                      << serve.transcript());
        const auto after = vh::proc_status(serve.pid()).value_or(vh::memory{});
        CHECK_MESSAGE(after.hwm_kib <= before.rss_kib + bound_kib,
                      "peak RSS " << vh::mib(after.hwm_kib) << " MiB, " << vh::mib(before.rss_kib) << " MiB before");
        // Echoes still come once the attack is over.
        const auto echoed = prober.echoed();
        CHECK_MESSAGE(prober.wait_echoes(echoed + 5, 5s), prober.report().describe());
        const auto lat = prober.report();
        CHECK_MESSAGE(lat.error.empty(), lat.describe());
        CHECK_MESSAGE(lat.p99 < p99_bound, lat.describe());
        print_figures(name, before, after, fds_before, fds_after, lat);
    }

    vh::serve_process serve;
    vh::echo_prober prober;
    std::size_t fds_before = 0;
    vh::memory before;
    asio::io_context ioc{1};
};

std::string reason_of(const std::optional<json>& line)
{
    return line ? line->value("reason", "") : "(no line)";
}

// One protocol violation on an upgraded connection: what is sent, the close code the
// server must answer, and the reason its client_disconnected line must give.
struct violation {
    const char* name;
    std::string bytes;
    std::uint16_t close_code;
    const char* reason;
};

std::string close_payload(std::uint16_t code)
{
    return {static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
}

}  // namespace

TEST_SUITE("hostile-server")
{
    TEST_CASE("protocol violations get their close code, and the JSON line says why")
    {
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        using vt::raw_client;
        namespace op = vt::opcode;
        const std::vector<violation> violations = {
            {"a fragmented ping", raw_client::frame(op::ping, "frag", {.fin = false}), 1002, "bad_control_fragment"},
            {"a ping of 126 bytes", raw_client::frame(op::ping, std::string(126, 'x')), 1002, "bad_control_size"},
            {"an unmasked frame", raw_client::frame(op::text, "bare", {.mask = false}), 1002, "bad_unmasked_frame"},
            {"RSV1 without an extension", raw_client::frame(op::text, "rsv", {.rsv = 0x4}), 1002, "bad_reserved_bits"},
            {"RSV3 without an extension", raw_client::frame(op::binary, "rsv", {.rsv = 0x1}), 1002,
             "bad_reserved_bits"},
            {"invalid UTF-8 in a text message", raw_client::frame(op::text, "caf\xc3\x28"), 1007, "bad_frame_payload"},
            {"a reserved opcode", raw_client::frame(0x3, "what"), 1002, "bad_opcode"},
            {"a continuation without a message", raw_client::frame(op::continuation, "cont"), 1002, "bad_continuation"},
            {"close code 999", raw_client::close_frame(999), 1002, "bad_close_code"},
            {"close code 1004", raw_client::close_frame(1004), 1002, "bad_close_code"},
            {"close code 1005", raw_client::close_frame(1005), 1002, "bad_close_code"},
            {"close code 1006", raw_client::close_frame(1006), 1002, "bad_close_code"},
            {"close code 1015", raw_client::close_frame(1015), 1002, "bad_close_code"},
            // Beast 1.81 takes 5000 and above as valid and would echo them; vigil answers 1002.
            {"close code 5000", raw_client::close_frame(5000, "bye"), 1002, "bad_close_code"},
            {"close code 65535", raw_client::close_frame(65535), 1002, "bad_close_code"},
            {"a close payload of 1 byte", raw_client::frame(op::close, "\x03"), 1002, "bad_close_size"},
            {"invalid UTF-8 in a close reason", raw_client::frame(op::close, close_payload(1000) + "\xff"), 1002,
             "bad_close_payload"},
        };
        under_attack t;
        struct outcome {
            error_code up;
            vh::close_seen seen;
            std::string remote;
        };
        std::vector<outcome> outcomes(violations.size());
        t.run(
            [&]() -> asio::awaitable<void> {
                for (std::size_t i = 0; i < violations.size(); ++i) {
                    vt::raw_client raw(co_await asio::this_coro::executor);
                    outcomes[i].up = co_await vh::open_upgraded(raw, t.serve.port());
                    if (outcomes[i].up)
                        continue;
                    outcomes[i].remote = raw.local_name();
                    co_await raw.write(violations[i].bytes);
                    outcomes[i].seen = co_await vh::read_until_close(raw, 3s);
                }
            },
            60s);
        for (std::size_t i = 0; i < violations.size(); ++i) {
            const auto& v = violations[i];
            const auto& o = outcomes[i];
            CAPTURE(v.name);
            REQUIRE_MESSAGE(!o.up, describe(o.up));
            CHECK_MESSAGE(!o.seen.ec, describe(o.seen.ec));
            CHECK(o.seen.code == v.close_code);
            auto line = t.serve.disconnected(o.remote, 5s);
            REQUIRE_MESSAGE(line.has_value(), t.serve.transcript());
            CHECK_MESSAGE(reason_of(line) == v.reason, line->dump());
            std::printf("figures: %s: answered close %u, vigil-serve: %s\n", v.name, o.seen.code, line->dump().c_str());
        }
        t.check_server("protocol violations");
    }

    TEST_CASE("upgrade requests that cannot be accepted get their HTTP status, and the JSON line says why")
    {
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        struct bad_request {
            const char* name;
            std::string bytes;
            unsigned status;
            const char* detail;  // words of the rejected line's detail
            std::pair<std::string, std::string> header{};
        };
        std::string many_headers;
        // 1,300 short header lines, 6.5 KB, under the 8 KiB limit: accepted (the limit is on
        // bytes, not on lines). Checked below as the one request here that succeeds.
        for (int i = 0; i < 1300; ++i)
            many_headers += "a:b\r\n";
        many_headers.resize(many_headers.size() - 2);
        const std::vector<bad_request> requests = {
            {"a header beyond 8 KiB", vh::altered_request("", "", "X-Big: " + std::string(9000, 'a')), 431,
             "larger than 8192 bytes"},
            {"10,000 header lines (40 KB)",
             vh::altered_request("Host", "X-0: 1\r\nHost",
                                 [] {
                                     std::string h;
                                     for (int i = 0; i < 10000; ++i)
                                         h += "b:c\r\n";
                                     h.resize(h.size() - 2);
                                     return h;
                                 }()),
             431, "larger than 8192 bytes"},
            {"garbage before the request line",
             "\x16\x03\x01\x00\xa5garbage\r\n"s + vt::raw_client::upgrade_request("/"), 400,
             "malformed upgrade request"},
            {"HTTP/1.0", vh::altered_request("HTTP/1.1", "HTTP/1.0"), 400, "HTTP/1.0"},
            {"no Sec-WebSocket-Key", vh::altered_request("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400,
             "no Sec-WebSocket-Key"},
            {"a Sec-WebSocket-Key of 8 bytes", vh::altered_request("dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAA="), 400,
             "Sec-WebSocket-Key \"AAAAAAAAAAA=\" is not the base64 of 16 bytes"},
            {"a Sec-WebSocket-Key that is not base64",
             vh::altered_request("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!=="), 400,
             "is not the base64 of 16 bytes"},
            {"two Sec-WebSocket-Keys", vh::altered_request("", "", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="), 400,
             "more than one Sec-WebSocket-Key"},
            {"Sec-WebSocket-Version 8",
             vh::altered_request("Version: 13", "Version: 8"),
             426,
             "Sec-WebSocket-Version \"8\"",
             {"Sec-WebSocket-Version", "13"}},
            {"no Sec-WebSocket-Version",
             vh::altered_request("Sec-WebSocket-Version: 13\r\n", ""),
             426,
             "no Sec-WebSocket-Version",
             {"Sec-WebSocket-Version", "13"}},
            {"POST", vh::altered_request("GET", "POST"), 405, "method \"POST\"", {"Allow", "GET"}},
            {"PUT with a body",
             vh::altered_request("GET", "PUT", "Content-Length: 5") + "hello",
             405,
             "method \"PUT\"",
             {"Allow", "GET"}},
            {"DELETE", vh::altered_request("GET", "DELETE"), 405, "method \"DELETE\"", {"Allow", "GET"}},
            {"a plain GET", "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "not a WebSocket upgrade request"},
            {"no Host", vh::altered_request("Host: 127.0.0.1\r\n", ""), 400, "no Host"},
        };
        under_attack t;
        struct outcome {
            error_code ec;
            vt::raw_http_response res;
            error_code end;
            std::string remote;
        };
        std::vector<outcome> outcomes(requests.size());
        error_code many_ec;
        std::string many_echo;
        t.run(
            [&]() -> asio::awaitable<void> {
                for (std::size_t i = 0; i < requests.size(); ++i) {
                    vt::raw_client raw(co_await asio::this_coro::executor);
                    auto& o = outcomes[i];
                    o.ec = co_await raw.connect(t.serve.port());
                    if (o.ec)
                        continue;
                    o.remote = raw.local_name();
                    o.ec = co_await raw.write(requests[i].bytes);
                    if (!o.ec)
                        o.ec = co_await raw.read_http(o.res, 3s);
                    o.end = co_await raw.wait_closed(3s);
                }
                // Many short headers within the byte limit: a normal connection.
                vt::raw_client raw(co_await asio::this_coro::executor);
                many_ec = co_await raw.connect(t.serve.port());
                if (!many_ec)
                    many_ec = co_await raw.write(vh::altered_request("", "", many_headers));
                vt::raw_http_response res;
                if (!many_ec)
                    many_ec = co_await raw.read_http(res, 3s);
                if (!many_ec && res.status != 101)
                    many_ec = vigil::make_http_status_error(res.status);
                if (!many_ec)
                    many_ec = co_await raw.write(vt::raw_client::frame(vt::opcode::text, "many"));
                vt::raw_frame f;
                if (!many_ec)
                    many_ec = co_await raw.read_frame(f, 3s);
                many_echo = f.payload;
                co_await raw.write(vt::raw_client::close_frame(1000));
                co_await vh::read_until_close(raw, 3s);
            },
            90s);
        for (std::size_t i = 0; i < requests.size(); ++i) {
            const auto& r = requests[i];
            const auto& o = outcomes[i];
            CAPTURE(r.name);
            REQUIRE_MESSAGE(!o.ec, describe(o.ec));
            CHECK(o.res.status == r.status);
            if (!r.header.first.empty())
                CHECK(o.res.header(r.header.first) == r.header.second);
            CHECK_MESSAGE((o.end == asio::error::eof || o.end == asio::error::connection_reset), describe(o.end));
            auto line = t.serve.rejected(o.remote, 5s);
            REQUIRE_MESSAGE(line.has_value(), t.serve.transcript());
            CHECK(line->value("status", 0u) == r.status);
            CHECK_MESSAGE(line->value("detail", "").find(r.detail) != std::string::npos, line->dump());
            std::printf("figures: %s: HTTP %u, vigil-serve: %s\n", r.name, o.res.status, line->dump().c_str());
        }
        CHECK_MESSAGE(!many_ec, describe(many_ec));
        CHECK(many_echo == "many");
        t.check_server("bad upgrade requests");
    }

    TEST_CASE("frames sent in the same write as the upgrade request are processed")
    {
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        under_attack t;
        vt::raw_http_response res;
        std::vector<std::string> echoes;
        vh::close_seen seen;
        error_code ec;
        t.run(
            [&]() -> asio::awaitable<void> {
                vt::raw_client raw(co_await asio::this_coro::executor);
                ec = co_await raw.connect(t.serve.port());
                if (!ec)
                    ec = co_await raw.write(
                        vt::raw_client::upgrade_request("/") + vt::raw_client::frame(vt::opcode::text, "first") +
                        vt::raw_client::frame(vt::opcode::text, "second") + vt::raw_client::close_frame(1000, "done"));
                if (!ec)
                    ec = co_await raw.read_http(res, 3s);
                for (int i = 0; i < 2 && !ec; ++i) {
                    vt::raw_frame f;
                    ec = co_await raw.read_frame(f, 3s);
                    echoes.push_back(f.payload);
                }
                seen = co_await vh::read_until_close(raw, 3s);
            },
            15s);
        REQUIRE_MESSAGE(!ec, describe(ec));
        CHECK(res.status == 101);
        CHECK(echoes == std::vector<std::string>{"first", "second"});
        CHECK(seen.code == 1000);
        t.check_server("pipelined frames");
    }

    TEST_CASE("endless continuation frames: the message is ended with 1009 at max_message_size")
    {
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        under_attack t;
        vh::close_seen seen;
        std::string remote;
        std::size_t fragments = 0;
        error_code write_ec;
        t.run(
            [&]() -> asio::awaitable<void> {
                vt::raw_client raw(co_await asio::this_coro::executor);
                if (auto ec = co_await vh::open_upgraded(raw, t.serve.port()); ec) {
                    write_ec = ec;
                    co_return;
                }
                remote = raw.local_name();
                // A text message that never ends: 125-byte fragments, 500 to a write, until the
                // server answers (16 MiB by default: 134,218 fragments).
                co_await raw.write(vt::raw_client::frame(vt::opcode::text, "start", {.fin = false}));
                std::string batch;
                for (int i = 0; i < 500; ++i)
                    batch += vt::raw_client::frame(vt::opcode::continuation, std::string(125, 'c'), {.fin = false});
                while (fragments < 200'000) {
                    write_ec = co_await raw.write(batch, 3s);
                    if (write_ec)
                        break;
                    fragments += 500;
                    if (!raw.pending().empty() || co_await raw.read_some(0ms) != asio::error::timed_out)
                        break;  // the server answered
                }
                seen = co_await vh::read_until_close(raw, 5s);
            },
            60s);
        CHECK(seen.code == 1009);
        auto line = t.serve.disconnected(remote, 5s);
        REQUIRE_MESSAGE(line.has_value(), t.serve.transcript());
        CHECK_MESSAGE(reason_of(line) == "message_too_big", line->dump());
        std::printf("figures: endless continuation: %zu fragments of 125 bytes sent, close %u, vigil-serve: %s\n",
                    fragments, seen.code, line->dump().c_str());
        t.check_server("endless continuation");
    }

    TEST_CASE("a ping flood that reads its pongs: every ping answered, nobody else slowed down")
    {
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        under_attack t;
        std::size_t pings = 0;
        std::size_t pongs = 0;
        vh::close_seen seen;
        std::string remote;
        error_code ec;
        t.run(
            [&]() -> asio::awaitable<void> {
                auto ex = co_await asio::this_coro::executor;
                vt::raw_client raw(ex);
                ec = co_await vh::open_upgraded(raw, t.serve.port());
                if (ec)
                    co_return;
                remote = raw.local_name();
                // 50 pings of 125 bytes every 10 ms (5,000 a second) for 3 s, reading pongs meanwhile.
                bool writing = true;
                asio::co_spawn(
                    ex,
                    [&]() -> asio::awaitable<void> {
                        std::string batch;
                        for (int i = 0; i < 50; ++i)
                            batch += vh::ping_frame();
                        asio::steady_timer pace(co_await asio::this_coro::executor);
                        const auto end = steady::now() + 3s;
                        while (steady::now() < end && !ec) {
                            pace.expires_after(10ms);
                            ec = co_await raw.write(batch);
                            pings += 50;
                            co_await pace.async_wait(asio::as_tuple(asio::use_awaitable));
                        }
                        writing = false;
                    },
                    asio::detached);
                // Until the flood is over and every pong came, at most 5 s after the flood.
                const auto give_up = steady::now() + 8s;
                while (writing || pongs < pings) {
                    vt::raw_frame f;
                    auto rec = co_await raw.read_frame(f, 100ms);
                    if (rec == asio::error::timed_out && steady::now() < give_up)
                        continue;
                    if (rec) {
                        ec = rec;
                        break;
                    }
                    if (f.op == vt::opcode::pong)
                        ++pongs;
                }
                co_await vt::eventually([&] { return !writing; }, 5s);
                co_await raw.write(vt::raw_client::close_frame(1000, "done"));
                seen = co_await vh::read_until_close(raw, 3s);
            },
            20s);
        CHECK_MESSAGE(!ec, describe(ec));
        CHECK(pings >= 10'000);
        CHECK(pongs == pings);
        CHECK(seen.code == 1000);
        auto line = t.serve.disconnected(remote, 5s);
        REQUIRE(line.has_value());
        CHECK(line->value("close_code", 0u) == 1000u);
        std::printf("figures: ping flood, pongs read: %zu pings, %zu pongs\n", pings, pongs);
        t.check_server("ping flood, pongs read");
    }

    TEST_CASE("a ping flood that never reads its pongs: TCP pushes back, memory stays flat, the flooder is ended")
    {
        // What happens: Beast answers each ping from inside the read, so once our receive
        // buffer and the server's send buffer are full of pongs, its read waits for that write
        // and it reads nothing more; TCP then pushes back on the flood. Nothing queues in the
        // server's memory. The heartbeat verdict that then falls due is held back while the
        // peer's bytes sit unread in the socket (a late loop must never blame the peer), and
        // they always do here: once that has lasted write_timeout (10 s) with no frame read,
        // the server ends the connection with write_timeout. A quick heartbeat (2 s + 1 s)
        // makes the verdict fall due sooner; the bound is stall + 3 s + 10 s.
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        under_attack t({"--mode", "echo", "--ping-interval", "2", "--pong-timeout", "1"});
        std::size_t pings = 0;
        milliseconds stalled_after{0};
        std::string remote;
        error_code ec;
        std::optional<json> line;
        vh::memory at_stall;
        t.run(
            [&]() -> asio::awaitable<void> {
                vt::raw_client raw(co_await asio::this_coro::executor);
                // A small receive buffer: the server's pongs fill it soon.
                ec = co_await vh::open_upgraded(raw, t.serve.port(), 4096);
                if (ec)
                    co_return;
                remote = raw.local_name();
                std::string batch;
                for (int i = 0; i < 100; ++i)
                    batch += vh::ping_frame();
                const auto start = steady::now();
                // As fast as the socket takes them, until a write has not completed for 1 s:
                // the server stopped reading (it cannot write its pongs) and TCP pushes back.
                for (;;) {
                    auto wec = co_await raw.write(batch, 1s);
                    if (wec == asio::error::timed_out)
                        break;
                    if (wec) {
                        ec = wec;
                        co_return;
                    }
                    pings += 100;
                    if (steady::now() - start > 20s)
                        co_return;  // never pushed back: fails below
                }
                stalled_after = vt::ms_since(start);
                at_stall = vh::proc_status(t.serve.pid()).value_or(vh::memory{});
                line = t.serve.disconnected(remote, 25s);
                raw.abort();
            },
            120s);
        CHECK_MESSAGE(!ec, describe(ec));
        CHECK(stalled_after > 0ms);
        CHECK(stalled_after < 20s);
        CHECK(at_stall.hwm_kib <= t.before.rss_kib + rss_bound_kib);
        const auto after = vh::proc_status(t.serve.pid()).value_or(vh::memory{});
        // Flat: not a byte per ping once TCP pushed back (4 MiB of slack for the allocator).
        CHECK(after.hwm_kib <= at_stall.hwm_kib + 4 * 1024);
        REQUIRE_MESSAGE(line.has_value(), "the flooder was still connected 25 s after the stall");
        CHECK_MESSAGE(reason_of(line) == "write_timeout", line->dump());
        std::printf("figures: ping flood, pongs never read: %zu pings written before TCP pushed back (after %lld ms), "
                    "RSS %.1f MiB at the stall, peak %.1f MiB at the end; the connection %s\n",
                    pings, static_cast<long long>(stalled_after.count()), vh::mib(at_stall.rss_kib),
                    vh::mib(after.hwm_kib),
                    line ? ("ended: " + line->dump()).c_str() : "was still open 25 s after the stall");
        t.check_server("ping flood, pongs never read");
    }

    TEST_CASE(
        "1,000 connections reset, and 1,000 half-closed, in the middle of their upgrade request: no descriptor leaks")
    {
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        constexpr std::size_t n = 1000;
        // Each side holds them all at once: the test, and vigil-serve (which inherits the limit).
        if (vh::raise_fd_limit() < n + 200) {
            vh::skip_case("RLIMIT_NOFILE below " + std::to_string(n + 200) + ", too low for 1,000 connections at once");
            return;
        }
        under_attack t;
        const std::string half = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n";
        std::size_t opened = 0;
        std::size_t peak_fds = 0;
        for (const bool reset : {true, false}) {
            CAPTURE(reset);
            const auto rejected_before =
                t.serve.count([](const json& e) { return e.value("event", "") == "rejected"; });
            std::vector<std::unique_ptr<vt::raw_client>> raws;
            for (std::size_t i = 0; i < n; ++i)
                raws.push_back(std::make_unique<vt::raw_client>(t.ioc.get_executor()));
            std::size_t ready = 0;
            t.run(
                [&]() -> asio::awaitable<void> {
                    for (auto& raw : raws) {
                        auto ec = co_await raw->connect(t.serve.port());
                        if (!ec)
                            ec = co_await raw->write(half);
                        ready += ec ? 0 : 1;
                    }
                },
                60s);
            opened += ready;
            // Every one of them is in the server now, mid-request.
            vh::wait_fds_at_least(t.serve.pid(), t.fds_before + n, 10s);
            peak_fds = std::max(peak_fds, vh::count_fds(t.serve.pid()));
            const auto last_name = raws.back()->local_name();
            for (auto& raw : raws) {
                if (reset) {
                    raw->abort();  // SO_LINGER 0, then close: a TCP reset
                } else {
                    error_code ignored;
                    raw->socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
                }
            }
            // The server turns every one of them away (reading the request failed).
            auto is_rejected = [](const json& e) { return e.value("event", "") == "rejected"; };
            const auto rejected_now = t.serve.wait_count(is_rejected, rejected_before + n, 15s);
            CHECK(rejected_now - rejected_before == n);
            if (!reset) {
                // Our half-closed sockets see the server close; then we close them.
                t.run(
                    [&]() -> asio::awaitable<void> {
                        for (auto& raw : raws)
                            co_await raw->wait_closed(3s);
                    },
                    30s);
            }
            raws.clear();
            auto sample = t.serve.rejected(last_name, 0ms);
            std::printf("figures: %s mid-request: %zu connections, e.g. %s\n", reset ? "reset" : "half-closed", n,
                        sample ? sample->dump().c_str() : "(none)");
        }
        CHECK(opened == 2 * n);
        std::printf("figures: reset/half-closed: peak %zu descriptors in vigil-serve\n", peak_fds);
        t.check_server("1,000 reset + 1,000 half-closed mid-handshake");
    }

    TEST_CASE("a client that never reads while the server broadcasts fast is ended; the others keep receiving")
    {
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        vh::serve_process serve({"--mode", "broadcast"});
        const auto fds_before = vh::count_fds(serve.pid());
        const auto before = vh::proc_status(serve.pid()).value_or(vh::memory{});
        asio::io_context ioc(1);
        std::size_t sent = 0;
        std::size_t received = 0;  // by the reader, in order
        bool in_order = true;
        std::string stuck_name;
        std::optional<json> stuck_line;
        milliseconds ended_after{0};
        error_code ec;
        bool done = false;
        asio::co_spawn(
            ioc,
            [&]() -> asio::awaitable<void> {
                auto ex = co_await asio::this_coro::executor;
                vt::raw_client reader(ex);
                vt::raw_client stuck(ex);
                vt::raw_client sender(ex);
                ec = co_await vh::open_upgraded(reader, serve.port());
                if (!ec)
                    ec = co_await vh::open_upgraded(stuck, serve.port(), 4096);
                if (!ec)
                    ec = co_await vh::open_upgraded(sender, serve.port());
                if (ec)
                    co_return;
                stuck_name = stuck.local_name();
                bool sending = true;
                // The reader and the sender read everything (the sender gets its own broadcasts).
                auto drain = [&](vt::raw_client& c, bool count) -> asio::awaitable<void> {
                    while (sending || (count && received < sent)) {
                        vt::raw_frame f;
                        if (co_await c.read_frame(f, 5s))
                            break;
                        if (f.op == vt::opcode::ping) {
                            co_await c.write(vt::raw_client::frame(vt::opcode::pong, f.payload));
                        } else if (count && f.op == vt::opcode::binary) {
                            in_order = in_order && f.payload.compare(0, 8, std::to_string(10'000'000 + received)) == 0;
                            ++received;
                        }
                    }
                };
                int draining = 2;
                auto drained = [&](std::exception_ptr) { --draining; };
                asio::co_spawn(ex, drain(reader, true), drained);
                asio::co_spawn(ex, drain(sender, false), drained);
                // 1 KiB messages, 20 every 2 ms (10,000 a second), until the server ends the
                // client that never reads.
                const auto start = steady::now();
                asio::steady_timer pace(ex);
                while (!stuck_line && steady::now() - start < 40s) {
                    std::string batch;
                    for (int i = 0; i < 20; ++i, ++sent)
                        batch += vt::raw_client::frame(vt::opcode::binary,
                                                       std::to_string(10'000'000 + sent) + std::string(1016, 'm'));
                    if ((ec = co_await sender.write(batch)))
                        break;
                    pace.expires_after(2ms);
                    co_await pace.async_wait(asio::as_tuple(asio::use_awaitable));
                    stuck_line = serve.disconnected(stuck_name, 0ms);
                }
                ended_after = vt::ms_since(start);
                sending = false;
                co_await vt::eventually([&] { return received >= sent; }, 10s);
                stuck.abort();
                // The drains read from sockets that end with this coroutine: end them first.
                reader.socket().close();
                sender.socket().close();
                co_await vt::eventually([&] { return draining == 0; }, 10s);
                done = true;
            },
            asio::detached);
        ioc.run_for(90s);
        REQUIRE(done);
        CHECK_MESSAGE(!ec, describe(ec));
        REQUIRE_MESSAGE(stuck_line.has_value(), serve.transcript());
        const auto why = reason_of(stuck_line);
        CHECK_MESSAGE((why == "slow_consumer" || why == "write_timeout"), stuck_line->dump());
        // slow_consumer: 1,024 queued messages (send_queue_limit) beyond what the socket took;
        // write_timeout: 10 s. Either comes well within 15 s at this rate.
        CHECK(ended_after < 15s);
        CHECK(received == sent);
        CHECK(in_order);
        const auto after = vh::proc_status(serve.pid()).value_or(vh::memory{});
        CHECK(after.hwm_kib <= before.rss_kib + rss_bound_kib);
        CHECK(serve.running());
        const auto fds_after = vh::wait_fds_at_most(serve.pid(), fds_before, fd_bound);
        CHECK(fds_after <= fds_before);
        std::printf(
            "figures: never-reading client under broadcast: ended after %lld ms, %zu messages sent, %zu received "
            "by the reader; RSS %.1f MiB before, peak %.1f MiB; fds %zu before, %zu after; vigil-serve: %s\n",
            static_cast<long long>(ended_after.count()), sent, received, vh::mib(before.rss_kib),
            vh::mib(after.hwm_kib), fds_before, fds_after, stuck_line->dump().c_str());
    }

    // ---- The memory budget and the limits for strangers (server_session_defaults) ----

    TEST_CASE("40 connections sending 15 MiB of a 16,000,000-byte frame: refused at the header with 1009")
    {
        // The attack that once made vigil-serve hold 495 MiB: the server's default
        // max_message_size (1 MiB) refuses the frame as soon as its header announces more.
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        under_attack t;
        std::vector<std::uint16_t> codes;
        t.run(
            [&]() -> asio::awaitable<void> {
                auto ex = co_await asio::this_coro::executor;
                // The header and the first 64 KiB: the rest would never be read anyway.
                const auto head = vt::raw_client::frame(vt::opcode::binary, std::string(16'000'000, 'x'))
                                      .substr(0, 64 * 1024);
                std::vector<std::unique_ptr<vt::raw_client>> raws;
                for (int i = 0; i < 40; ++i) {
                    raws.push_back(std::make_unique<vt::raw_client>(ex));
                    if (co_await vh::open_upgraded(*raws.back(), t.serve.port()))
                        co_return;
                    co_await raws.back()->write(head, 2s);
                }
                for (auto& r : raws)
                    codes.push_back((co_await vh::read_until_close(*r, 3s)).code);
            },
            60s);
        REQUIRE(codes.size() == 40);
        CHECK(std::count(codes.begin(), codes.end(), std::uint16_t{1009}) == 40);
        // Each line comes once its connection is over: wait for them.
        CHECK(t.serve.wait_count(
                  [](const json& j) {
                      return j.value("event", "") == "client_disconnected" && j.value("reason", "") == "message_too_big";
                  },
                  40, 5s) == 40);
        t.check_server("40 x a 16,000,000-byte frame");
    }

    TEST_CASE("160 connections each holding all but the last byte of a 1 MiB message: the budget holds, the heaviest go")
    {
        // 160 MiB of messages in progress against the default 128 MiB budget: the server stops
        // reading what does not fit, and after budget_grace (2 s) ends the heaviest with 1009
        // until half the budget is free. Its memory stays within the budget plus its own
        // (bench/hostile measured 122-133 MiB of RSS from 8.5 MiB), and the well-behaved
        // client, whose messages are light, is served throughout.
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        under_attack t;
        std::vector<std::uint16_t> codes;
        vh::memory at_peak;
        t.run(
            [&]() -> asio::awaitable<void> {
                auto ex = co_await asio::this_coro::executor;
                const auto body =
                    vt::raw_client::frame(vt::opcode::binary, std::string(1024 * 1024, 'x')).substr(0, 1024 * 1024 + 13);
                std::vector<std::unique_ptr<vt::raw_client>> raws;
                int writing = 0;
                for (int i = 0; i < 160; ++i) {
                    raws.push_back(std::make_unique<vt::raw_client>(ex));
                    if (co_await vh::open_upgraded(*raws.back(), t.serve.port()))
                        co_return;
                    ++writing;
                    // Written concurrently: those the server holds back stay stuck in TCP.
                    asio::co_spawn(
                        ex, [&r = *raws.back(), &body]() -> asio::awaitable<void> { co_await r.write(body, 8s); },
                        [&writing](std::exception_ptr) { --writing; });
                }
                co_await vt::eventually(
                    [&] {
                        return t.serve.count([](const json& j) {
                                   return j.value("reason", "") == "memory_budget_exceeded";
                               }) > 0;
                    },
                    10s);
                for (auto& r : raws)
                    codes.push_back((co_await vh::read_until_close(*r, 50ms)).code);
                at_peak = vh::proc_status(t.serve.pid()).value_or(vh::memory{});  // read_until_close closed them
                co_await vt::eventually([&] { return writing == 0; }, 10s);
            },
            60s);
        const auto evicted = std::count(codes.begin(), codes.end(), std::uint16_t{1009});
        CAPTURE(evicted);
        CHECK(evicted >= 1);
        // Each line comes once its close handshake is over (the attackers never answer it).
        const auto lines = t.serve.wait_count(
            [](const json& j) {
                return j.value("reason", "") == "memory_budget_exceeded" &&
                       j.value("detail", "").find("an incoming message in progress") != std::string::npos;
            },
            static_cast<std::size_t>(evicted), 10s);
        CHECK(lines >= static_cast<std::size_t>(evicted));
        // The budget (128 MiB), plus what the server held before, plus 16 MiB for the
        // allocator and the handshakes of 160 connections.
        CHECK(at_peak.hwm_kib <= t.before.rss_kib + (128 + 16) * 1024);
        std::printf("figures: 160 x a 1 MiB message in progress: %lld ended with 1009, peak RSS %.1f MiB\n",
                    static_cast<long long>(evicted), vh::mib(at_peak.hwm_kib));
        t.check_server_within("160 x a 1 MiB message in progress", (128 + 16) * 1024);
    }

    TEST_CASE("a client sending 64 KiB messages flat out under broadcast is slowed down, and nobody is evicted")
    {
        // max_receive_rate (4 MiB/s by default) paces the sender, so the readers (who read as
        // fast as they can) keep up with what is broadcast to them instead of being ended as
        // slow consumers, and the sender itself is not ended either.
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::serve_unavailable());
        vh::serve_process serve({"--mode", "broadcast"});
        asio::io_context ioc(1);
        std::size_t sent_bytes = 0;
        std::vector<std::size_t> got(3, 0);
        bool done = false;
        milliseconds took{0};
        asio::co_spawn(
            ioc,
            [&]() -> asio::awaitable<void> {
                auto ex = co_await asio::this_coro::executor;
                std::vector<std::unique_ptr<vt::raw_client>> readers;
                for (int i = 0; i < 3; ++i) {
                    readers.push_back(std::make_unique<vt::raw_client>(ex));
                    if (co_await vh::open_upgraded(*readers.back(), serve.port()))
                        co_return;
                }
                vt::raw_client sender(ex);
                if (co_await vh::open_upgraded(sender, serve.port()))
                    co_return;
                bool sending = true;
                int draining = 4;
                auto drain = [&](vt::raw_client& c, std::size_t* count) -> asio::awaitable<void> {
                    while (sending) {
                        vt::raw_frame f;
                        if (co_await c.read_frame(f, 2s))
                            continue;
                        if (count && (f.op == vt::opcode::binary || f.op == vt::opcode::continuation))
                            *count += f.payload.size();
                    }
                };
                for (int i = 0; i < 3; ++i)
                    asio::co_spawn(ex, drain(*readers[i], &got[i]), [&](std::exception_ptr) { --draining; });
                asio::co_spawn(ex, drain(sender, nullptr), [&](std::exception_ptr) { --draining; });
                // 8 MiB as fast as the socket takes it: about a second of burst, then 4 MiB/s.
                const auto message = vt::raw_client::frame(vt::opcode::binary, std::string(64 * 1024, 's'));
                const auto start = steady::now();
                for (int i = 0; i < 128; ++i) {
                    if (co_await sender.write(message, 10s))
                        break;
                    sent_bytes += 64 * 1024;
                }
                co_await vt::eventually(
                    [&] { return std::all_of(got.begin(), got.end(), [&](std::size_t n) { return n >= sent_bytes; }); },
                    10s);
                took = vt::ms_since(start);
                sending = false;
                co_await vt::eventually([&] { return draining == 0; }, 5s);
                done = true;
            },
            asio::detached);
        ioc.run_for(60s);
        REQUIRE(done);
        CHECK(sent_bytes == 128u * 64 * 1024);
        for (auto n : got)
            CHECK(n == sent_bytes);
        // 8 MiB at 4 MiB/s after a 4 MiB burst: about a second at least.
        CHECK(took >= 800ms);
        CHECK(serve.count([](const json& j) { return j.value("event", "") == "client_disconnected"; }) == 0);
        std::printf("figures: 8 MiB sent flat out under broadcast to 3 readers: all received in %lld ms, nobody "
                    "evicted\n",
                    static_cast<long long>(took.count()));
    }

}  // TEST_SUITE
