// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// Through real proxies: a vigil client (and vigil-probe) reaches a vigil server through
// tinyproxy's HTTP CONNECT and microsocks' SOCKS5, ws:// and wss://, with and without
// credentials; what each refusal is called and whether a retry follows; and, with fake
// proxies made here, a proxy that refuses the connection, never answers, or answers
// something else. Connections bound to a local address close the file.

#include "proxies.hpp"

#include <support/pki.hpp>
#include <support/process.hpp>
#include <support/server_rig.hpp>
#include <support/testing.hpp>

#include <vigil/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
namespace pt = vigil::proxy_test;
using namespace std::chrono_literals;
using vigil::error;
using vigil::error_code;
using vigil::test::describe;
using vigil::test::eventually;
using vigil::test::tolerance;
using json = nlohmann::json;

// What one client saw, and what the server saw of it.
struct attempt {
    error_code ec = error::not_connected;
    std::string detail;
    std::chrono::milliseconds took{0};
    bool echoed = false;
    std::string server_saw;  // the client's address as the server saw it
    std::string explain() const { return describe(ec) + ": " + detail; }
};

struct target {
    bool tls = false;
    std::string host = "127.0.0.1";
    std::optional<vt::test_pki> pki;
    enum class cert { right, wrong_host } certificate = cert::right;
};

// One server (ws:// or wss://), one client with `ccfg`, connect to the server's URL with
// `host`, echo one message, close; all within a bound.
attempt run_client(target& t, vigil::session_config ccfg, std::chrono::milliseconds bound = 8s)
{
    auto scfg = vt::quick_server();
    if (t.tls) {
        if (!t.pki)
            t.pki.emplace();
        const bool right = t.certificate == target::cert::right;
        scfg.tls.cert_file = right ? t.pki->server_cert : t.pki->wrong_host_cert;
        scfg.tls.key_file = right ? t.pki->server_key : t.pki->wrong_host_key;
        ccfg.tls.ca_file = t.pki->ca_cert;
    }
    vt::server_rig rig(scfg);
    std::string why;
    const auto listen_ec = rig.start(&why);
    REQUIRE_MESSAGE(!listen_ec, describe(listen_ec) << ": " << why);
    vt::rig_client c(rig.ioc, ccfg);
    attempt a;
    c.start(rig.url(t.tls ? "wss" : "ws", t.host, "/through"));
    rig.spawn([&]() -> asio::awaitable<void> {
        co_await eventually([&] { return c.connect_done; }, bound);
        if (c.connect_done && !c.connect_ec) {
            c.send("through the proxy");
            a.echoed = co_await eventually([&] { return !c.messages.empty(); }, 3s);
            co_await c.s.close(1000, "bye");
        }
        rig.srv.stop();
    });
    rig.ioc.run_for(bound + 5s);
    REQUIRE_MESSAGE(c.connect_done, "connect did not finish within " << (bound + 5s).count() << " ms");
    a.ec = c.connect_ec;
    a.detail = c.s.last_disconnect().detail;
    a.took = c.connect_took;
    if (!rig.connected.empty())
        a.server_saw = rig.connected.front().remote;
    return a;
}

vigil::session_config via(const std::string& proxy_url)
{
    auto cfg = vt::quick_client();
    cfg.proxy.url = proxy_url;
    return cfg;
}

// A fake proxy on 127.0.0.1: accepts one connection and, unless silent, answers the first
// request (read up to "\r\n\r\n") with `answer`, then keeps the socket open.
class fake_proxy {
public:
    enum class mode { silent, answer };

    fake_proxy(asio::io_context& ioc, mode m, std::string answer = {})
        : acceptor_(ioc, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), mode_(m),
          answer_(std::move(answer))
    {
        if (mode_ == mode::answer)
            vt::spawn_on(ioc, serve());
        // Silent: the kernel completes the handshake from the backlog, and nobody ever reads.
    }

    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port()); }

private:
    asio::awaitable<void> serve()
    {
        auto [ec, s] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
        if (ec)
            co_return;
        peer_.emplace(std::move(s));
        std::string request;
        auto [rec, n] = co_await asio::async_read_until(*peer_, asio::dynamic_buffer(request), "\r\n\r\n",
                                                        asio::as_tuple(asio::use_awaitable));
        if (rec)
            co_return;
        co_await asio::async_write(*peer_, asio::buffer(answer_), asio::as_tuple(asio::use_awaitable));
    }

    asio::ip::tcp::acceptor acceptor_;
    mode mode_;
    std::string answer_;
    std::optional<asio::ip::tcp::socket> peer_;
};

// Runs a client against a fake proxy on the same io_context as the server.
attempt run_with_fake(fake_proxy::mode m, std::string answer, std::chrono::milliseconds connect_timeout = 2s)
{
    auto scfg = vt::quick_server();
    vt::server_rig rig(scfg);
    REQUIRE(!rig.start());
    fake_proxy proxy(rig.ioc, m, std::move(answer));
    auto ccfg = via(proxy.url());
    ccfg.connect_timeout = connect_timeout;
    vt::rig_client c(rig.ioc, ccfg);
    c.start(rig.url("ws", "127.0.0.1", "/"));
    rig.spawn([&]() -> asio::awaitable<void> {
        co_await eventually([&] { return c.connect_done; }, connect_timeout + 3s);
        rig.srv.stop();
    });
    rig.ioc.run_for(connect_timeout + 5s);
    REQUIRE(c.connect_done);
    attempt a;
    a.ec = c.connect_ec;
    a.detail = c.s.last_disconnect().detail;
    a.took = c.connect_took;
    a.server_saw = rig.connected.empty() ? "" : rig.connected.front().remote;
    return a;
}

bool has(const std::string& text, const std::string& part)
{
    return text.find(part) != std::string::npos;
}

// ---- vigil-probe -------------------------------------------------------------------------

std::string probe_path()
{
    const char* path = std::getenv("VIGIL_PROBE");
    REQUIRE_MESSAGE(path != nullptr, "VIGIL_PROBE must name the vigil-probe binary");
    return path;
}

// The probe against a server the test runs on another thread: the rig's io_context runs
// there until the probe is done.
struct probe_result {
    std::optional<int> exit_code;
    std::vector<json> events;
    std::string transcript;
    std::size_t count(const std::string& name) const
    {
        std::size_t n = 0;
        for (const auto& e : events)
            n += e.value("event", "") == name;
        return n;
    }
    std::optional<json> first(const std::string& name) const
    {
        for (const auto& e : events)
            if (e.value("event", "") == name)
                return e;
        return std::nullopt;
    }
};

probe_result run_probe(std::vector<std::string> args, std::optional<std::vector<std::string>> env)
{
    vt::server_rig rig(vt::quick_server());
    REQUIRE(!rig.start());
    for (auto& a : args) {
        if (a == "URL")
            a = rig.url("ws", "127.0.0.1", "/probe");
    }
    args.insert(args.begin(), probe_path());
    vt::child_process probe(args, std::move(env));
    probe_result r;
    // Every case ends the probe by itself (--duration, --no-reconnect, a permanent failure).
    // The server runs on this thread between reads of the probe's output: no sleeps, and
    // the wait is bounded.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (probe.running() && std::chrono::steady_clock::now() < deadline) {
        rig.ioc.run_for(20ms);
        probe.pump();
    }
    r.exit_code = probe.wait_exit(0ms);
    if (!r.exit_code)
        probe.terminate();
    r.events = probe.events();
    r.transcript = probe.transcript();
    rig.srv.stop();
    rig.ioc.run_for(300ms);
    return r;
}

std::vector<std::string> base_env()
{
    std::vector<std::string> env;
    if (const char* path = std::getenv("PATH"))
        env.push_back(std::string("PATH=") + path);
    return env;
}

}  // namespace

TEST_SUITE("http")
{
    TEST_CASE("ws:// and wss:// through tinyproxy's HTTP CONNECT; TLS verifies the server, not the proxy")
    {
        pt::proxy_process proxy(pt::proxy_process::kind::tinyproxy);
        target t;
        SUBCASE("ws:// to an address")
        {
        }
        SUBCASE("ws:// to a name, which the proxy resolves")
        {
            t.host = "localhost";
        }
        SUBCASE("wss://: SNI and the certificate name the server")
        {
            t.tls = true;
            t.host = "localhost";
        }
        CAPTURE(t.tls);
        CAPTURE(t.host);
        const auto a = run_client(t, via(proxy.url("http")));
        REQUIRE_MESSAGE(!a.ec, a.explain() << "\n" << proxy.log());
        CHECK(a.echoed);
        CHECK_MESSAGE(has(proxy.log(), "CONNECT"), proxy.log());
    }

    TEST_CASE("wss:// through the proxy to a server whose certificate names another host fails verification")
    {
        pt::proxy_process proxy(pt::proxy_process::kind::tinyproxy);
        target t;
        t.tls = true;
        t.host = "localhost";
        t.certificate = target::cert::wrong_host;
        const auto a = run_client(t, via(proxy.url("http")));
        CHECK_MESSAGE(vigil::is_permanent(a.ec), a.explain());
        CHECK(vigil::error_name(a.ec) == "tls_certificate_verify_failed");
        CHECK_MESSAGE(has(a.detail, "TLS handshake with localhost (through proxy 127.0.0.1:"), a.detail);
        CHECK(a.server_saw.empty());
    }

    TEST_CASE("Basic authentication: the right credentials pass; none or wrong ones are a permanent 407")
    {
        const pt::credentials right{"trader", "s3cret"};
        pt::proxy_process proxy(pt::proxy_process::kind::tinyproxy, right);
        target t;
        SUBCASE("right credentials")
        {
            const auto a = run_client(t, via(proxy.url("http", right)));
            REQUIRE_MESSAGE(!a.ec, a.explain() << "\n" << proxy.log());
            CHECK(a.echoed);
        }
        SUBCASE("no credentials")
        {
            const auto a = run_client(t, via(proxy.url("http")));
            CHECK_CODE(a.ec, error::proxy_auth_required);
            CHECK(vigil::is_permanent(a.ec));
            CHECK_MESSAGE(has(a.detail, "proxy 127.0.0.1:" + std::to_string(proxy.port())), a.detail);
            CHECK_MESSAGE(has(a.detail, "with HTTP 407"), a.detail);
            CHECK_MESSAGE(has(a.detail, "no credentials"), a.detail);
        }
        SUBCASE("wrong password")
        {
            const auto a = run_client(t, via(proxy.url("http", {"trader", "wrong-pw"})));
            // tinyproxy says 401 to wrong credentials, 407 to none: both are ours to fix.
            CHECK_CODE(a.ec, error::proxy_auth_required);
            CHECK_MESSAGE(has(a.detail, "credentials were rejected"), a.detail);
            CHECK(!has(a.detail, "wrong-pw"));
        }
    }

    TEST_CASE("a target the proxy cannot reach: transient, and the detail says so")
    {
        pt::proxy_process proxy(pt::proxy_process::kind::tinyproxy);
        auto cfg = via(proxy.url("http"));
        vt::server_rig rig(vt::quick_server());
        REQUIRE(!rig.start());
        vt::rig_client c(rig.ioc, cfg);
        c.start("ws://127.0.0.1:" + std::to_string(pt::free_port()) + "/");
        rig.spawn([&]() -> asio::awaitable<void> {
            co_await eventually([&] { return c.connect_done; }, 5s);
            rig.srv.stop();
        });
        rig.ioc.run_for(8s);
        REQUIRE(c.connect_done);
        const auto& detail = c.s.last_disconnect().detail;
        CHECK_MESSAGE(c.connect_ec == error::proxy_target_unreachable, describe(c.connect_ec) << ": " << detail);
        CHECK(c.connect_ec == vigil::condition::transient);
        CHECK_MESSAGE(has(detail, "answered CONNECT 127.0.0.1:"), detail);
    }

    TEST_CASE("vigil-probe --proxy: connected through tinyproxy; wrong credentials end it at once with exit 2")
    {
        const pt::credentials right{"trader", "s3cret"};
        pt::proxy_process proxy(pt::proxy_process::kind::tinyproxy, right);
        SUBCASE("right credentials")
        {
            auto r = run_probe({"--proxy", proxy.url("http", right), "--duration", "0.3", "URL"}, std::nullopt);
            CHECK_MESSAGE(r.count("connected") == 1, r.transcript);
            CHECK_MESSAGE(r.exit_code == 0, r.transcript);
            CHECK(!has(r.transcript, "s3cret"));
        }
        SUBCASE("wrong credentials: permanent, no retry")
        {
            auto r = run_probe({"--proxy", proxy.url("http", {"trader", "nope-pw"}), "--backoff-initial", "0.1", "URL"},
                               std::nullopt);
            CHECK_MESSAGE(r.exit_code == 2, r.transcript);
            CHECK(r.count("connecting") == 1);
            CHECK(r.count("retry") == 0);
            REQUIRE_MESSAGE(r.first("gave_up"), r.transcript);
            CHECK(r.first("gave_up")->at("reason") == "proxy_auth_required");
            CHECK(!has(r.transcript, "nope-pw"));
        }
    }

    TEST_CASE("vigil-probe --proxy-from-env: http_proxy for ws://, and no_proxy bypasses it")
    {
        pt::proxy_process proxy(pt::proxy_process::kind::tinyproxy, {"u", "p"});
        const auto dead = "http://127.0.0.1:" + std::to_string(pt::free_port());
        SUBCASE("http_proxy with credentials")
        {
            auto env = base_env();
            env.push_back("http_proxy=" + proxy.url("http", {"u", "p"}));
            env.push_back("https_proxy=" + dead);  // for wss:// only
            auto r = run_probe({"--proxy-from-env", "--duration", "0.3", "URL"}, env);
            CHECK_MESSAGE(r.count("connected") == 1, r.transcript);
            CHECK_MESSAGE(has(proxy.log(), "CONNECT"), proxy.log());
        }
        SUBCASE("HTTP_PROXY is not read (curl's rule), so the connection is direct")
        {
            auto env = base_env();
            env.push_back("HTTP_PROXY=" + dead);
            auto r = run_probe({"--proxy-from-env", "--duration", "0.3", "URL"}, env);
            CHECK_MESSAGE(r.count("connected") == 1, r.transcript);
        }
        SUBCASE("no_proxy names the server: direct, although the proxy is dead")
        {
            auto env = base_env();
            env.push_back("http_proxy=" + dead);
            env.push_back("no_proxy=localhost,127.0.0.1");
            auto r = run_probe({"--proxy-from-env", "--duration", "0.3", "URL"}, env);
            CHECK_MESSAGE(r.count("connected") == 1, r.transcript);
        }
        SUBCASE("without no_proxy the dead proxy is used: refused, transient, named")
        {
            auto env = base_env();
            env.push_back("http_proxy=" + dead);
            auto r = run_probe({"--proxy-from-env", "--no-reconnect", "URL"}, env);
            CHECK_MESSAGE(r.exit_code == 1, r.transcript);
            REQUIRE_MESSAGE(r.first("disconnected"), r.transcript);
            CHECK(r.first("disconnected")->at("reason") == "connection_refused");
            CHECK(has(r.first("disconnected")->at("detail").get<std::string>(), "connecting to proxy 127.0.0.1:"));
        }
        SUBCASE("without --proxy-from-env the environment is ignored")
        {
            auto env = base_env();
            env.push_back("http_proxy=" + dead);
            auto r = run_probe({"--duration", "0.3", "URL"}, env);
            CHECK_MESSAGE(r.count("connected") == 1, r.transcript);
        }
    }
}

TEST_SUITE("socks")
{
    TEST_CASE("ws:// and wss:// through microsocks: socks5h sends the name, socks5 resolves it here")
    {
        pt::proxy_process proxy(pt::proxy_process::kind::microsocks);
        target t;
        std::string scheme = "socks5h";
        SUBCASE("socks5h, a name")
        {
            t.host = "localhost";
        }
        SUBCASE("socks5h, wss:// to a name")
        {
            t.host = "localhost";
            t.tls = true;
        }
        SUBCASE("socks5, a name resolved here")
        {
            scheme = "socks5";
            t.host = "localhost";
        }
        SUBCASE("socks5, an address")
        {
            scheme = "socks5";
        }
        CAPTURE(scheme);
        CAPTURE(t.host);
        CAPTURE(t.tls);
        const auto a = run_client(t, via(proxy.url(scheme)));
        REQUIRE_MESSAGE(!a.ec, a.explain() << "\n" << proxy.log());
        CHECK(a.echoed);
    }

    TEST_CASE("remote DNS: a name that does not resolve fails at the proxy with socks5h, here with socks5")
    {
        pt::proxy_process proxy(pt::proxy_process::kind::microsocks);
        auto run = [&](const std::string& scheme) {
            vt::server_rig rig(vt::quick_server());
            REQUIRE(!rig.start());
            vt::rig_client c(rig.ioc, via(proxy.url(scheme)));
            c.start("ws://no-such-host.invalid:80/");
            rig.spawn([&]() -> asio::awaitable<void> {
                co_await eventually([&] { return c.connect_done; }, 5s);
                rig.srv.stop();
            });
            rig.ioc.run_for(8s);
            REQUIRE(c.connect_done);
            return std::make_pair(c.connect_ec, c.s.last_disconnect().detail);
        };
        // Plain variables, not structured bindings: clang 14 cannot capture those in INFO.
        const auto remote = run("socks5h");
        CHECK_MESSAGE(remote.first == error::proxy_target_unreachable, describe(remote.first) << ": " << remote.second);
        CHECK_MESSAGE(has(remote.second, "answered the SOCKS5 CONNECT with reply"), remote.second);
        CHECK_MESSAGE(has(remote.second, "no-such-host.invalid:80"), remote.second);
        const auto local = run("socks5");
        CHECK_MESSAGE(has(local.second, "resolving \"no-such-host.invalid\""),
                      describe(local.first) << ": " << local.second);
        CHECK(local.first != error::proxy_target_unreachable);
    }

    TEST_CASE("username/password: the right ones pass; none or wrong ones are proxy_auth_required")
    {
        const pt::credentials right{"trader", "s3cret"};
        pt::proxy_process proxy(pt::proxy_process::kind::microsocks, right);
        target t;
        SUBCASE("right")
        {
            const auto a = run_client(t, via(proxy.url("socks5h", right)));
            REQUIRE_MESSAGE(!a.ec, a.explain());
            CHECK(a.echoed);
        }
        SUBCASE("none")
        {
            const auto a = run_client(t, via(proxy.url("socks5h")));
            CHECK_CODE(a.ec, error::proxy_auth_required);
            CHECK(vigil::is_permanent(a.ec));
            CHECK_MESSAGE(has(a.detail, "wants credentials"), a.detail);
        }
        SUBCASE("wrong")
        {
            const auto a = run_client(t, via(proxy.url("socks5h", {"trader", "wrong-pw"})));
            CHECK_CODE(a.ec, error::proxy_auth_required);
            CHECK_MESSAGE(has(a.detail, "rejected the SOCKS5 user name and password"), a.detail);
            CHECK(!has(a.detail, "wrong-pw"));
        }
    }
}

TEST_SUITE("local")
{
    TEST_CASE("a proxy that is not listening: connection_refused, transient, naming the proxy")
    {
        const auto port = pt::free_port();
        target t;
        const auto a = run_client(t, via("http://127.0.0.1:" + std::to_string(port)));
        CHECK_CODE(a.ec, asio::error::connection_refused);
        CHECK(a.ec == vigil::condition::transient);
        CHECK_MESSAGE(has(a.detail, "connecting to proxy 127.0.0.1:" + std::to_string(port)), a.detail);
    }

    TEST_CASE("a proxy that accepts and never answers: connect_timeout within the bound")
    {
        for (const char* scheme : {"http", "socks5h"}) {
            CAPTURE(scheme);
            auto scfg = vt::quick_server();
            vt::server_rig rig(scfg);
            REQUIRE(!rig.start());
            fake_proxy proxy(rig.ioc, fake_proxy::mode::silent);
            auto ccfg = via(std::string(scheme) + "://127.0.0.1:" + std::to_string(proxy.port()));
            ccfg.connect_timeout = 400ms;
            vt::rig_client c(rig.ioc, ccfg);
            c.start(rig.url("ws", "127.0.0.1", "/"));
            rig.spawn([&]() -> asio::awaitable<void> {
                co_await eventually([&] { return c.connect_done; }, 3s);
                rig.srv.stop();
            });
            rig.ioc.run_for(5s);
            REQUIRE(c.connect_done);
            const auto& detail = c.s.last_disconnect().detail;
            CHECK_CODE(c.connect_ec, error::connect_timeout);
            CHECK(c.connect_took >= 400ms);
            CHECK(c.connect_took <= 400ms + tolerance);
            CHECK_MESSAGE(has(detail, "through proxy 127.0.0.1:" + std::to_string(proxy.port())), detail);
            CHECK_MESSAGE(has(detail, std::string(scheme) == "http" ? "did not answer CONNECT" : "SOCKS5 negotiation"),
                          detail);
        }
    }

    TEST_CASE("what a proxy answers decides the code: 403, 502, not HTTP, bytes after the reply")
    {
        struct row {
            const char* answer;
            error_code expected;
            const char* said;
        };
        const row rows[] = {
            {"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", error::proxy_denied, "with HTTP 403 Forbidden"},
            {"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", error::proxy_target_unreachable, "HTTP 502"},
            {"SSH-2.0-OpenSSH_9.2\r\n\r\n", error::proxy_protocol_error, "not HTTP"},
            {"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n", error::proxy_protocol_error,
             "bytes after its HTTP 200 answer"},
        };
        for (const auto& r : rows) {
            CAPTURE(r.answer);
            const auto a = run_with_fake(fake_proxy::mode::answer, r.answer);
            CHECK_MESSAGE(a.ec == r.expected, a.explain());
            CHECK_MESSAGE(has(a.detail, r.said), a.detail);
            CHECK(vigil::is_permanent(a.ec) == (r.expected != error::proxy_target_unreachable));
        }
    }

    TEST_CASE("local_address: bound to 127.0.0.2 the server sees 127.0.0.2; an address not on this host fails")
    {
        target t;
        auto cfg = vt::quick_client();
        SUBCASE("127.0.0.2")
        {
            cfg.local_address = "127.0.0.2";
            const auto a = run_client(t, cfg);
            REQUIRE_MESSAGE(!a.ec, a.explain());
            CHECK_MESSAGE(a.server_saw.rfind("127.0.0.2:", 0) == 0, a.server_saw);
        }
        SUBCASE("127.0.0.2 through a proxy: the connection to the proxy is bound")
        {
            // The fake proxy only needs to see who connected; it answers 403.
            auto scfg = vt::quick_server();
            vt::server_rig rig(scfg);
            REQUIRE(!rig.start());
            asio::ip::tcp::acceptor acceptor(rig.ioc, {asio::ip::make_address("127.0.0.1"), 0});
            std::string proxy_saw;
            rig.spawn([&]() -> asio::awaitable<void> {
                auto [ec, s] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
                if (!ec)
                    proxy_saw = s.remote_endpoint().address().to_string();
            });
            cfg.local_address = "127.0.0.2";
            cfg.proxy.url = "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
            cfg.connect_timeout = 300ms;
            vt::rig_client c(rig.ioc, cfg);
            c.start(rig.url("ws", "127.0.0.1", "/"));
            rig.spawn([&]() -> asio::awaitable<void> {
                co_await eventually([&] { return c.connect_done; }, 3s);
                rig.srv.stop();
            });
            rig.ioc.run_for(5s);
            CHECK(proxy_saw == "127.0.0.2");
        }
        SUBCASE("an address of another host: local_address_unusable, permanent")
        {
            cfg.local_address = "192.0.2.77";  // TEST-NET-1, never assigned
            const auto a = run_client(t, cfg);
            CHECK_CODE(a.ec, error::local_address_unusable);
            CHECK(vigil::is_permanent(a.ec));
            CHECK_MESSAGE(has(a.detail, "binding to local_address 192.0.2.77"), a.detail);
        }
        SUBCASE("IPv6 local address, IPv4-only server: no address to try")
        {
            cfg.local_address = "::1";
            const auto a = run_client(t, cfg);
            CHECK_CODE(a.ec, error::local_address_unusable);
            CHECK_MESSAGE(has(a.detail, "is IPv6, and none of the 1 addresses of 127.0.0.1"), a.detail);
        }
        SUBCASE("not an address: invalid_config from validate()")
        {
            cfg.local_address = "eth0";
            const auto a = run_client(t, cfg);
            CHECK_CODE(a.ec, error::invalid_config);
            CHECK_MESSAGE(has(a.detail, "local_address \"eth0\" is not an IP address"), a.detail);
        }
    }

    TEST_CASE("vigil-probe --bind 127.0.0.2 and a bad --proxy")
    {
        SUBCASE("--bind")
        {
            auto r = run_probe({"--bind", "127.0.0.2", "--duration", "0.3", "URL"}, std::nullopt);
            CHECK_MESSAGE(r.count("connected") == 1, r.transcript);
        }
        SUBCASE("--proxy with an unsupported scheme: invalid_config, exit 2, no password shown")
        {
            auto r = run_probe({"--proxy", "https://u:topsecret@127.0.0.1:3128", "URL"}, std::nullopt);
            CHECK_MESSAGE(r.exit_code == 2, r.transcript);
            REQUIRE_MESSAGE(r.first("gave_up"), r.transcript);
            CHECK(r.first("gave_up")->at("reason") == "invalid_config");
            CHECK(has(r.first("gave_up")->at("detail").get<std::string>(), "proxy.url"));
            CHECK(!has(r.transcript, "topsecret"));
        }
    }
}
