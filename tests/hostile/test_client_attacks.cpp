// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// Hostile servers against vigil clients: raw TCP servers in the test, on 127.0.0.1, that
// answer the upgrade request with what a well-behaved server never sends (an endless or a
// gigantic header, a wrong Sec-WebSocket-Accept, no Upgrade, a redirect), or upgrade and
// then send a frame claiming 2^63 bytes, a forbidden close code, or ping floods while never
// reading. Each case says what the client reports, how the supervisor classifies it
// (permanent: stop; transient: retry), and that the client's memory stays bounded.

#include "hostile.hpp"

#include <vigil/supervisor.hpp>

#include <support/raw_client.hpp>
#include <support/server_rig.hpp>
#include <support/testing.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <set>
#include <string>

namespace {

namespace asio = boost::asio;
namespace vh = vigil::hostile;
namespace vt = vigil::test;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using tcp = asio::ip::tcp;
using vigil::error;
using vigil::error_code;
using vt::describe;

// What a hostile server does with one accepted connection: `peer` is the accepted socket
// (in a raw_client, for its frame reading and bounded writes), `request` the client's
// upgrade request head.
using script = std::function<asio::awaitable<void>(vt::raw_client& peer, std::string request)>;

// A raw TCP server on 127.0.0.1 that runs `s` for every connection it accepts.
class hostile_server {
public:
    hostile_server(asio::io_context& ioc, script s)
        : ioc_(ioc), acceptor_(ioc, {asio::ip::make_address_v4("127.0.0.1"), 0})
    {
        asio::co_spawn(ioc, serve(std::move(s)), [this](std::exception_ptr) { serving_ = false; });
    }

    // Ends the accept loop and every connection's script, and lets them unwind on the
    // io_context, so that no coroutine outlives what it refers to.
    ~hostile_server()
    {
        stop();
        for (auto* p : peers_) {
            error_code ignored;
            p->socket().close(ignored);
        }
        ioc_.restart();
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while ((serving_ || !peers_.empty()) && std::chrono::steady_clock::now() < deadline)
            ioc_.run_one_until(deadline);
        ioc_.restart();
    }

    std::string url() const { return "ws://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/"; }
    std::size_t accepted() const noexcept { return accepted_; }
    void stop()
    {
        error_code ignored;
        acceptor_.close(ignored);
    }

private:
    asio::awaitable<void> serve(script s)
    {
        for (;;) {
            auto [ec, sock] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec)
                co_return;
            ++accepted_;
            asio::co_spawn(
                acceptor_.get_executor(),
                [this, s, sock = std::move(sock)]() mutable -> asio::awaitable<void> {
                    vt::raw_client peer(sock.get_executor());
                    peer.socket() = std::move(sock);
                    peers_.insert(&peer);
                    std::string request;
                    auto [rec, n] = co_await asio::async_read_until(peer.socket(), asio::dynamic_buffer(request),
                                                                    "\r\n\r\n", asio::as_tuple(asio::use_awaitable));
                    if (!rec) {
                        request.resize(n);
                        co_await s(peer, std::move(request));
                    }
                    peers_.erase(&peer);
                },
                asio::detached);
        }
    }

    asio::io_context& ioc_;
    tcp::acceptor acceptor_;
    std::size_t accepted_ = 0;
    bool serving_ = true;
    std::set<vt::raw_client*> peers_;
};

// The Sec-WebSocket-Accept a request's key calls for (RFC 6455 4.2.2).
std::string accept_for(const std::string& request)
{
    const std::string name = "Sec-WebSocket-Key: ";
    const auto at = request.find(name);
    if (at == std::string::npos)
        return {};
    const auto key = request.substr(at + name.size(), request.find("\r\n", at) - at - name.size());
    const std::string text = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
    unsigned char out[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
    const int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
    return std::string(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
}

std::string switching(const std::string& request, bool with_upgrade = true, std::string accept = {})
{
    std::string res = "HTTP/1.1 101 Switching Protocols\r\n";
    if (with_upgrade)
        res += "Upgrade: websocket\r\n";
    res +=
        "Connection: Upgrade\r\nSec-WebSocket-Accept: " + (accept.empty() ? accept_for(request) : accept) + "\r\n\r\n";
    return res;
}

// An unmasked server frame whose header claims `length` bytes, followed by no payload.
std::string frame_header(std::uint8_t op, std::uint64_t length)
{
    std::string h;
    h += static_cast<char>(0x80 | op);
    h += static_cast<char>(127);
    for (int i = 7; i >= 0; --i)
        h += static_cast<char>((length >> (8 * i)) & 0xff);
    return h;
}

// How much this process's resident memory may grow while a hostile server attacks one
// client: a few buffers, not the attack's size. Measured: +4 MiB while 64 MiB of response
// header are sent (most of it the hostile server's own 1 MiB chunks and socket buffers in
// this process), +0 under the ping flood and the 2^63-byte frames. An allocation of what
// the attack claims would show 64 MiB or exabytes.
constexpr std::size_t client_rss_bound_kib = 16 * 1024;

// A client with short deadlines (the defaults are 10 s each) and no heartbeat of its own.
vigil::session_config client_config()
{
    auto cfg = vt::quick_client();
    cfg.handshake_timeout = 1s;
    return cfg;
}

void print_outcome(const char* name, const error_code& ec, const vigil::disconnect_info& info)
{
    std::printf("figures: client vs %s: %s, %s, detail \"%s\"\n", name, describe(ec).c_str(),
                vigil::is_permanent(ec) ? "permanent" : "transient", info.detail.c_str());
    std::fflush(stdout);
}

// Runs `ioc` until `done()` holds, at most `bound` (the hostile server's accept loop keeps
// it busy for ever).
void run_until(asio::io_context& ioc, const std::function<bool()>& done, milliseconds bound)
{
    const auto deadline = std::chrono::steady_clock::now() + bound;
    while (!done() && !ioc.stopped() && std::chrono::steady_clock::now() < deadline)
        ioc.run_one_until(deadline);
    ioc.restart();
}

// Connects a session to `srv` and lets it run to its end, and `also()` to hold (what the
// server saw), at most `bound`.
struct client_run {
    client_run(
        hostile_server& srv, asio::io_context& ioc, vigil::session_config cfg, milliseconds bound,
        const std::function<bool()>& also = [] { return true; })
        : c(ioc, std::move(cfg))
    {
        c.start(srv.url());
        run_until(
            ioc, [&] { return c.run_done && also(); }, bound);
    }
    vt::rig_client c;
};

}  // namespace

TEST_SUITE("hostile-client")
{
    TEST_CASE("a response header trickled without end: the client gives up at handshake_timeout")
    {
        HOSTILE_CASE_START();
        asio::io_context ioc(1);
        hostile_server srv(ioc, [](vt::raw_client& peer, std::string) -> asio::awaitable<void> {
            if (co_await peer.write("HTTP/1.1 101 Switching Protocols\r\n"))
                co_return;
            asio::steady_timer pace(co_await asio::this_coro::executor);
            for (;;) {
                pace.expires_after(20ms);
                co_await pace.async_wait(asio::as_tuple(asio::use_awaitable));
                if (co_await peer.write("X-Trickle: a\r\n"))
                    co_return;
            }
        });
        client_run r(srv, ioc, client_config(), 5s);
        REQUIRE(r.c.connect_done);
        CHECK_CODE(r.c.connect_ec, error::handshake_timeout);
        CHECK(r.c.connect_took <= 1s + vt::tolerance);
        CHECK_FALSE(vigil::is_permanent(r.c.connect_ec));
        print_outcome("an endless response header", r.c.connect_ec, r.c.last);
    }

    TEST_CASE("a gigantic response header: an error, no crash, memory bounded")
    {
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::proc_unavailable());
        asio::io_context ioc(1);
        hostile_server srv(ioc, [](vt::raw_client& peer, std::string request) -> asio::awaitable<void> {
            // 64 MiB of one header line, as fast as the client takes it.
            auto head = switching(request);
            head.resize(head.size() - 2);
            co_await peer.write(head + "X-Big: ");
            const std::string chunk(1 << 20, 'a');
            for (int i = 0; i < 64; ++i) {
                if (co_await peer.write(chunk, 2s))
                    co_return;
            }
            co_await peer.write("\r\n\r\n");
        });
        const auto before = vh::proc_status().value_or(vh::memory{});
        client_run r(srv, ioc, client_config(), 5s);
        const auto after = vh::proc_status().value_or(vh::memory{});
        REQUIRE(r.c.connect_done);
        CHECK(r.c.connect_ec);
        CHECK(r.c.connect_took <= 1s + vt::tolerance);
        // Beast's response parser stops at its header limit (8 KiB): nothing near 64 MiB.
        CHECK(after.rss_kib <= before.rss_kib + client_rss_bound_kib);
        print_outcome("a 64 MiB response header", r.c.connect_ec, r.c.last);
        std::printf("figures: client RSS %.1f MiB before, %.1f MiB after\n", vh::mib(before.rss_kib),
                    vh::mib(after.rss_kib));
    }

    TEST_CASE("a 101 with a wrong Sec-WebSocket-Accept, and a 101 without Upgrade: refused")
    {
        HOSTILE_CASE_START();
        for (const bool wrong_accept : {true, false}) {
            CAPTURE(wrong_accept);
            asio::io_context ioc(1);
            hostile_server srv(ioc, [wrong_accept](vt::raw_client& peer, std::string request) -> asio::awaitable<void> {
                // (Built before the co_await: GCC 12 destroys the temporaries of a conditional
                // expression in a co_await twice.)
                std::string answer =
                    switching(request, wrong_accept, wrong_accept ? "c2VydmVyIG1hZGUgdGhpcyB1cA==" : "");
                co_await peer.write(std::move(answer));
                co_await peer.wait_closed(3s);
            });
            client_run r(srv, ioc, client_config(), 3s);
            REQUIRE(r.c.connect_done);
            CHECK(r.c.connect_ec);
            CHECK(r.c.connect_ec != error::handshake_timeout);
            print_outcome(wrong_accept ? "a wrong Sec-WebSocket-Accept" : "a 101 without Upgrade", r.c.connect_ec,
                          r.c.last);
        }
    }

    TEST_CASE("a redirect: a permanent error naming the status, and the supervisor stops")
    {
        HOSTILE_CASE_START();
        for (const unsigned status : {301u, 302u}) {
            CAPTURE(status);
            asio::io_context ioc(1);
            hostile_server srv(ioc, [status](vt::raw_client& peer, std::string) -> asio::awaitable<void> {
                co_await peer.write("HTTP/1.1 " + std::to_string(status) +
                                    " Moved\r\nLocation: ws://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n");
                co_await peer.wait_closed(3s);
            });
            vigil::supervisor_config cfg;
            cfg.session = client_config();
            vigil::supervisor sup(ioc.get_executor(), srv.url(), cfg);
            error_code ran = error::not_connected;
            bool done = false;
            asio::co_spawn(
                ioc,
                [&]() -> asio::awaitable<void> {
                    ran = co_await sup.run();
                    done = true;
                },
                asio::detached);
            run_until(
                ioc, [&] { return done; }, 5s);
            REQUIRE(done);
            CHECK(vigil::http_status_of(ran) == status);
            CHECK(vigil::is_permanent(ran));
            CHECK(sup.counters().attempts == 1);
            CHECK(srv.accepted() == 1);
            CHECK_MESSAGE(sup.last_disconnect().detail.find("HTTP " + std::to_string(status)) != std::string::npos,
                          sup.last_disconnect().detail);
            print_outcome(status == 301 ? "a 301 redirect" : "a 302 redirect", ran, sup.last_disconnect());
        }
    }

    TEST_CASE("a frame claiming 2^63 - 1 or 2^63 bytes: 1009, nothing allocated")
    {
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::proc_unavailable());
        for (const std::uint64_t length : {(std::uint64_t(1) << 63) - 1, std::uint64_t(1) << 63}) {
            CAPTURE(length);
            asio::io_context ioc(1);
            std::uint16_t answered = 0;
            bool read_answer = false;
            hostile_server srv(ioc, [&](vt::raw_client& peer, std::string request) -> asio::awaitable<void> {
                co_await peer.write(switching(request) + frame_header(vt::opcode::binary, length) + "payload");
                vt::raw_frame f;
                if (!co_await peer.read_frame(f, 3s))
                    answered = f.close_code();
                read_answer = true;
                co_await peer.wait_closed(1s);
            });
            const auto before = vh::proc_status().value_or(vh::memory{});
            client_run r(srv, ioc, client_config(), 5s, [&] { return read_answer; });
            const auto after = vh::proc_status().value_or(vh::memory{});
            REQUIRE(r.c.run_done);
            // 2^63 has the bit set that RFC 6455 5.2 requires to be 0: a protocol error (1002)
            // by the letter, but Beast 1.81 compares the length with the limit first.
            CHECK(answered == 1009);
            CHECK(after.rss_kib <= before.rss_kib + client_rss_bound_kib);
            print_outcome(length >> 63 ? "a frame claiming 2^63 bytes" : "a frame claiming 2^63 - 1 bytes", r.c.run_ec,
                          r.c.last);
        }
    }

    TEST_CASE("a server that closes with code 5000 is answered 1002, and the client says why")
    {
        HOSTILE_CASE_START();
        asio::io_context ioc(1);
        vt::raw_frame answer;
        error_code answer_ec = error::not_connected;
        bool read_answer = false;
        hostile_server srv(ioc, [&](vt::raw_client& peer, std::string request) -> asio::awaitable<void> {
            co_await peer.write(switching(request) + std::string("\x88\x05\x13\x88"
                                                                 "bye",
                                                                 7));
            answer_ec = co_await peer.read_frame(answer, 3s);
            read_answer = true;
            co_await peer.wait_closed(1s);
        });
        client_run r(srv, ioc, client_config(), 5s, [&] { return read_answer; });
        REQUIRE(r.c.run_done);
        REQUIRE_MESSAGE(!answer_ec, describe(answer_ec));
        CHECK(answer.op == vt::opcode::close);
        CHECK(answer.masked);
        CHECK(answer.close_code() == 1002);
        CHECK(answer.close_reason().empty());  // Beast's echo carries the code alone
        CHECK(vigil::error_name(r.c.run_ec) == "bad_close_code");
        CHECK(r.c.last.close_code == 5000);
        CHECK_MESSAGE(r.c.last.detail.find("close code 5000") != std::string::npos, r.c.last.detail);
        print_outcome("a close with code 5000", r.c.run_ec, r.c.last);
    }

    TEST_CASE("125-byte pings thousands of times a second from a server that never reads our pongs: memory stays flat, the session ends")
    {
        // What happens (as on the server side, see the hostile-server case): Beast writes each
        // pong from inside the read; once the server's receive buffer and our send buffer are
        // full, our read waits for that write, we read nothing more, and TCP pushes back on the
        // flood. Nothing queues in our memory. The heartbeat verdict that falls due is held
        // back while the peer's bytes sit unread in the socket (they may hold the pong); once
        // that has lasted write_timeout with nothing read, the session ends with write_timeout.
        HOSTILE_CASE_START();
        HOSTILE_SKIP_IF(vh::proc_unavailable());
        asio::io_context ioc(1);
        std::size_t pings = 0;
        bool stalled = false;
        bool client_done = false;
        hostile_server srv(ioc, [&](vt::raw_client& peer, std::string request) -> asio::awaitable<void> {
            // A small receive buffer: our pongs fill it soon, and it is never read.
            error_code ignored;
            peer.socket().set_option(asio::socket_base::receive_buffer_size(4096), ignored);
            if (co_await peer.write(switching(request)))
                co_return;
            std::string batch;
            for (int i = 0; i < 50; ++i)
                batch += std::string("\x89\x7d", 2) + std::string(125, 'p');
            asio::steady_timer pace(co_await asio::this_coro::executor);
            for (;;) {
                // 50 every 5 ms: 10,000 a second, until a write stays stuck for 1 s.
                auto ec = co_await peer.write(batch, 1s);
                if (ec == asio::error::timed_out)
                    stalled = true;
                if (ec)
                    break;
                pings += 50;
                pace.expires_after(5ms);
                co_await pace.async_wait(asio::as_tuple(asio::use_awaitable));
            }
            // Then hold the connection open, still never reading, until the case is over
            // (closing it here would reset it and end the session for another reason).
            while (!client_done) {
                pace.expires_after(10ms);
                if (std::get<0>(co_await pace.async_wait(asio::as_tuple(asio::use_awaitable))))
                    co_return;
            }
        });
        auto cfg = client_config();
        // A heartbeat of a few seconds, so that three of its periods pass in the case.
        cfg.ping_interval = 2s;
        cfg.pong_timeout = 1s;
        cfg.write_timeout = 2s;
        const auto before = vh::proc_status().value_or(vh::memory{});
        vt::rig_client c(ioc, cfg);
        c.start(srv.url());
        run_until(
            ioc, [&] { return stalled || c.run_done; }, 20s);
        REQUIRE(stalled);
        const auto at_stall = vh::proc_status().value_or(vh::memory{});
        // Three times ping_interval + pong_timeout, and write_timeout, after the stall.
        run_until(
            ioc, [&] { return c.run_done; }, 9s);
        const auto after = vh::proc_status().value_or(vh::memory{});
        const bool held = !c.run_done;
        client_done = true;
        c.s.cancel();
        run_until(
            ioc, [&] { return c.run_done; }, 5s);
        const auto rss_growth_kib = after.rss_kib > before.rss_kib ? after.rss_kib - before.rss_kib : 0;
        // Our pongs are written by Beast's read, one at a time: none queue up in memory.
        CHECK(rss_growth_kib <= client_rss_bound_kib);
        CHECK(after.rss_kib <= at_stall.rss_kib + 4 * 1024);
        // ping_interval + pong_timeout + write_timeout after the stall, within the 9 s.
        CHECK_FALSE(held);
        CHECK_MESSAGE(c.run_ec == error::write_timeout, describe(c.run_ec));
        std::printf("figures: client vs ping flood: %zu pings sent before TCP pushed back; client RSS %.1f MiB before, "
                    "%.1f MiB at the stall, %.1f MiB 9 s later (+%.1f MiB); the session %s\n",
                    pings, vh::mib(before.rss_kib), vh::mib(at_stall.rss_kib), vh::mib(after.rss_kib),
                    vh::mib(rss_growth_kib), held ? "was still open 9 s after the stall" : describe(c.run_ec).c_str());
    }

}  // TEST_SUITE
