// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// Admitting clients: the server's upgrade check (refusals with status, body and headers,
// user data, its deadline and its failures), the Origin and token policies, and
// subprotocols on both sides, with vigil clients, a supervisor and raw clients.

#include <vigil/server.hpp>
#include <vigil/session.hpp>
#include <vigil/supervisor.hpp>
#include <vigil/upgrade.hpp>

#include <support/pki.hpp>
#include <support/raw_client.hpp>
#include <support/server_rig.hpp>
#include <support/testing.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using vigil::error;
using vigil::error_code;

using vt::describe;
using vt::eventually;

struct user {
    std::string name;
};

// Admits the token "s3cret" as alice, with her name as user data; others get 401.
asio::awaitable<vigil::upgrade_decision> alice_only(const vigil::upgrade_request& req)
{
    if (vigil::presented_token(req) == "s3cret")
        co_return vigil::upgrade_decision::accept({}, std::make_shared<user>(user{"alice"}));
    co_return vigil::upgrade_decision::refuse(401, "who are you?", "bad token from " + req.remote,
                                              {{"WWW-Authenticate", "Bearer"}});
}

// A raw request with `extra` header lines; the answer in `res`.
asio::awaitable<error_code> ask(vt::raw_client& rc, std::uint16_t port, std::string target, std::string extra,
                                vt::raw_http_response& res)
{
    if (auto ec = co_await rc.connect(port))
        co_return ec;
    if (auto ec = co_await rc.write(vt::raw_client::upgrade_request(target, extra)))
        co_return ec;
    co_return co_await rc.read_http(res);
}

bool contains(const std::string& s, const std::string& part)
{
    return s.find(part) != std::string::npos;
}

}  // namespace

TEST_SUITE("upgrade")
{

TEST_CASE("an upgrade check: 401 with its body and headers, user data reaching the handler, permanent for a client")
{
    auto cfg = vt::quick_server();
    cfg.check_upgrade = alice_only;
    std::string seen_user;
    vt::server_rig rig(cfg, [&](vigil::server::connection_ptr c) -> asio::awaitable<void> {
        if (auto u = std::static_pointer_cast<user>(c->user_data()))
            seen_user = u->name;
        co_await c->receive();
    });
    REQUIRE(!rig.start());

    auto bad_cfg = vt::quick_client();
    bad_cfg.headers = {{"Authorization", "Bearer nope"}};
    vt::rig_client bad(rig.ioc, bad_cfg);
    auto good_cfg = vt::quick_client();
    good_cfg.headers = {{"Authorization", "Bearer s3cret"}};
    vt::rig_client good(rig.ioc, good_cfg);
    vt::rig_client by_query(rig.ioc, vt::quick_client());
    vt::raw_client raw(rig.ioc.get_executor());
    vt::raw_http_response res;
    error_code raw_ec = error::not_connected;
    rig.spawn([&]() -> asio::awaitable<void> {
        bad.start(rig.url());
        good.start(rig.url());
        by_query.start(rig.url("ws", "127.0.0.1", "/chat?token=s3cret"));
        raw_ec = co_await ask(raw, rig.srv.port(), "/", "Authorization: Bearer wrong", res);
        co_await eventually([&] { return bad.connect_done && good.connect_done && by_query.connect_done; }, 3s);
        co_await eventually([&] { return !seen_user.empty(); }, 2s);
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    REQUIRE(bad.connect_done);
    CHECK(vigil::http_status_of(bad.connect_ec) == 401);
    CHECK(vigil::is_permanent(bad.connect_ec));
    CHECK(!good.connect_ec);
    CHECK(!by_query.connect_ec);
    CHECK(seen_user == "alice");
    CHECK(!raw_ec);
    CHECK(res.status == 401);
    CHECK(res.body == "who are you?\n");
    CHECK(res.header("WWW-Authenticate") == "Bearer");
    CHECK(res.header("Connection") == "close");
    REQUIRE(rig.rejected.size() == 2);
    for (const auto& r : rig.rejected) {
        CHECK(vigil::http_status_of(r.why) == 401);
        CHECK_MESSAGE(contains(r.detail, "check_upgrade refused with 401: bad token from 127.0.0.1:"), r.detail);
    }
}

TEST_CASE("allow_origins: a foreign Origin and a missing one are refused 403, an allowed one (any case, default port) admitted")
{
    auto cfg = vt::quick_server();
    cfg.check_upgrade = vigil::allow_origins({"https://chat.example", "http://localhost:8080"},
                                             vigil::missing_origin::refuse);
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    struct probe {
        std::string extra;
        unsigned want;
    };
    const std::vector<probe> probes = {
        {"Origin: https://evil.example", 403},
        {"Origin: https://chat.example.evil.example", 403},
        {"Origin: http://chat.example", 403},  // another scheme is another origin
        {"Origin: null", 403},
        {"", 403},  // no Origin, and the policy wants one
        {"Origin: https://CHAT.example:443", 101},
        {"Origin: http://localhost:8080", 101},
    };
    std::vector<unsigned> got(probes.size(), 0);
    bool done = false;
    rig.spawn([&]() -> asio::awaitable<void> {
        for (std::size_t i = 0; i < probes.size(); ++i) {
            vt::raw_client rc(rig.ioc.get_executor());
            vt::raw_http_response res;
            if (!co_await ask(rc, rig.srv.port(), "/", probes[i].extra, res))
                got[i] = res.status;
        }
        done = true;
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    REQUIRE(done);
    for (std::size_t i = 0; i < probes.size(); ++i) {
        CAPTURE(probes[i].extra);
        CHECK(got[i] == probes[i].want);
    }
    REQUIRE(rig.rejected.size() == 5);
    CHECK(contains(rig.rejected[0].detail, "Origin \"https://evil.example\" is not an allowed origin"));
    CHECK(contains(rig.rejected[4].detail, "no Origin header"));
    CHECK_THROWS_AS(vigil::allow_origins({"https://chat.example/path"}, vigil::missing_origin::allow),
                    std::invalid_argument);
}

TEST_CASE("an upgrade check's 429 with Retry-After is transient: a supervisor waits as told, then gets in")
{
    auto cfg = vt::quick_server();
    int asked = 0;
    cfg.check_upgrade = [&](const vigil::upgrade_request&) -> asio::awaitable<vigil::upgrade_decision> {
        if (++asked == 1)
            co_return vigil::upgrade_decision::refuse(429, "slow down", "rate", {{"Retry-After", "1"}});
        co_return vigil::upgrade_decision::accept();
    };
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    vigil::supervisor_config scfg;
    scfg.session = vt::quick_client();
    scfg.min_delay = 10ms;
    scfg.max_retry_after = 5s;
    vigil::supervisor sup(rig.ioc.get_executor(), rig.url(), scfg, vigil::constant_backoff(50ms));
    std::vector<vigil::retry_info> retries;
    int ups = 0;
    steady::time_point up_at{};
    sup.events().on_retry = [&](const vigil::retry_info& r) { retries.push_back(r); };
    sup.events().on_up = [&] {
        ++ups;
        up_at = steady::now();
    };
    bool sup_done = false;
    steady::time_point started{};
    rig.spawn([&]() -> asio::awaitable<void> {
        started = steady::now();
        rig.spawn([&]() -> asio::awaitable<void> {
            co_await sup.run();
            sup_done = true;
        });
        co_await eventually([&] { return ups == 1; }, 4s);
        sup.stop();
        co_await eventually([&] { return sup_done; }, 2s);
        rig.srv.stop();
    });
    rig.ioc.run_for(10s);

    REQUIRE(retries.size() == 1);
    CHECK(retries[0].last.http_status == 429);
    CHECK(retries[0].last.retry_after == 1000ms);
    CHECK(retries[0].delay == 1000ms);
    CHECK_FALSE(vigil::is_permanent(retries[0].last.reason));
    CHECK(ups == 1);
    CHECK(vt::ms_between(started, up_at) >= 1000ms);
    CHECK(asked == 2);
}

TEST_CASE("an upgrade check that overruns handshake_timeout, throws, or answers nonsense is bounded and reported")
{
    auto cfg = vt::quick_server();
    cfg.session.handshake_timeout = 300ms;
    cfg.check_upgrade = [](const vigil::upgrade_request& req) -> asio::awaitable<vigil::upgrade_decision> {
        if (req.target == "/slow") {
            asio::steady_timer t(co_await asio::this_coro::executor, 30s);
            co_await t.async_wait(asio::use_awaitable);  // cancelled at handshake_timeout
        }
        if (req.target == "/throw")
            throw std::runtime_error("the user database is down");
        if (req.target == "/ok-as-refusal")
            co_return vigil::upgrade_decision::refuse(200, "fine");
        if (req.target == "/unoffered")
            co_return vigil::upgrade_decision::accept("chat.v9");
        co_return vigil::upgrade_decision::accept();
    };
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    error_code slow_end = error::not_connected;
    steady::time_point slow_start{}, slow_closed{};
    std::vector<unsigned> statuses;
    bool done = false;
    rig.spawn([&]() -> asio::awaitable<void> {
        {
            vt::raw_client rc(rig.ioc.get_executor());
            co_await rc.connect(rig.srv.port());
            slow_start = steady::now();
            co_await rc.write(vt::raw_client::upgrade_request("/slow"));
            slow_end = co_await rc.wait_closed(3s);
            slow_closed = steady::now();
        }
        for (std::string target : {"/throw", "/ok-as-refusal", "/unoffered", "/"}) {
            vt::raw_client rc(rig.ioc.get_executor());
            vt::raw_http_response res;
            co_await ask(rc, rig.srv.port(), target, "", res);
            statuses.push_back(res.status);
        }
        done = true;
        rig.srv.stop();
    });
    rig.ioc.run_for(10s);

    REQUIRE(done);
    CHECK_MESSAGE((slow_end == asio::error::eof || slow_end == asio::error::connection_reset), describe(slow_end));
    CHECK(vt::ms_between(slow_start, slow_closed) < 300ms + vt::tolerance + 500ms);
    CHECK(statuses == std::vector<unsigned>{500, 500, 500, 101});
    REQUIRE(rig.rejected.size() == 4);
    CHECK_CODE(rig.rejected[0].why, error::handshake_timeout);
    CHECK_MESSAGE(contains(rig.rejected[0].detail, "check_upgrade) did not decide within 300 ms"),
                  rig.rejected[0].detail);
    CHECK(vigil::http_status_of(rig.rejected[1].why) == 500);
    CHECK(rig.rejected[1].detail == "check_upgrade threw: the user database is down");
    CHECK_MESSAGE(contains(rig.rejected[2].detail, "refused with status 200: only 4xx and 5xx"), rig.rejected[2].detail);
    CHECK_MESSAGE(contains(rig.rejected[3].detail, "chose subprotocol \"chat.v9\", which the client did not offer"),
                  rig.rejected[3].detail);
}

TEST_CASE("subprotocols: the server's preference among those offered, seen on both sides; none common fails the client unless allowed")
{
    auto cfg = vt::quick_server();
    cfg.subprotocols = {"chat.v2", "chat.v1"};
    std::vector<std::string> server_saw;
    vt::server_rig rig(cfg, [&](vigil::server::connection_ptr c) -> asio::awaitable<void> {
        server_saw.push_back(c->subprotocol());
        co_await c->receive();
    });
    REQUIRE(!rig.start());

    auto both = vt::quick_client();
    both.subprotocols = {"chat.v1", "chat.v2"};
    vt::rig_client a(rig.ioc, both);
    auto other = vt::quick_client();
    other.subprotocols = {"mqtt"};
    vt::rig_client strict(rig.ioc, other);
    other.subprotocol_required = false;
    vt::rig_client lenient(rig.ioc, other);
    vt::rig_client plain(rig.ioc, vt::quick_client());
    rig.spawn([&]() -> asio::awaitable<void> {
        a.start(rig.url());
        strict.start(rig.url());
        lenient.start(rig.url());
        plain.start(rig.url());
        co_await eventually([&] { return a.connect_done && strict.connect_done && lenient.connect_done &&
                                         plain.connect_done && server_saw.size() == 4; },
                            3s);
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    CHECK(!a.connect_ec);
    CHECK(a.s.subprotocol() == "chat.v2");
    CHECK_CODE(strict.connect_ec, error::subprotocol_mismatch);
    CHECK(vigil::is_permanent(strict.connect_ec));
    CHECK_MESSAGE(contains(strict.s.last_disconnect().detail, "chose no subprotocol (offered: mqtt"),
                  strict.s.last_disconnect().detail);
    CHECK(!lenient.connect_ec);
    CHECK(lenient.s.subprotocol().empty());
    CHECK(!plain.connect_ec);
    CHECK(plain.s.subprotocol().empty());
    // The server accepted all four (the strict client gave up after the 101).
    std::sort(server_saw.begin(), server_saw.end());
    CHECK(server_saw == std::vector<std::string>{"", "", "", "chat.v2"});
}

TEST_CASE("a server answering a subprotocol that was not offered is a permanent subprotocol_mismatch")
{
    asio::io_context ioc;
    asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    const auto port = acceptor.local_endpoint().port();
    // A fake server (Beast, not vigil) that answers whatever it was asked with "evil".
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < 2; ++i) {
                auto sock = co_await acceptor.async_accept(asio::use_awaitable);
                boost::beast::websocket::stream<asio::ip::tcp::socket> ws(std::move(sock));
                ws.set_option(boost::beast::websocket::stream_base::decorator(
                    [](boost::beast::websocket::response_type& res) {
                        res.set(boost::beast::http::field::sec_websocket_protocol, "evil");
                    }));
                co_await ws.async_accept(asio::as_tuple(asio::use_awaitable));
                boost::beast::flat_buffer buf;
                co_await ws.async_read(buf, asio::as_tuple(asio::use_awaitable));
            }
        },
        asio::detached);

    auto offered = vt::quick_client();
    offered.subprotocols = {"chat"};
    vt::rig_client a(ioc, offered);
    vt::rig_client none(ioc, vt::quick_client());
    a.start("ws://127.0.0.1:" + std::to_string(port) + "/");
    none.start("ws://127.0.0.1:" + std::to_string(port) + "/");
    vt::spawn_on(ioc, [&]() -> asio::awaitable<void> {
        co_await eventually([&] { return a.connect_done && none.connect_done; }, 3s);
        acceptor.close();
    });
    ioc.run_for(5s);

    REQUIRE(a.connect_done);
    CHECK_CODE(a.connect_ec, error::subprotocol_mismatch);
    CHECK(vigil::is_permanent(a.connect_ec));
    CHECK_MESSAGE(contains(a.s.last_disconnect().detail,
                           "answered subprotocol \"evil\", which was not offered (offered: chat)"),
                  a.s.last_disconnect().detail);
    REQUIRE(none.connect_done);
    CHECK_CODE(none.connect_ec, error::subprotocol_mismatch);
    CHECK_MESSAGE(contains(none.s.last_disconnect().detail, "(offered: none)"), none.s.last_disconnect().detail);
}

TEST_CASE("on wss:// the upgrade check sees the client's certificate in PEM, and nothing from a client without one")
{
    vt::test_pki pki;
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    ctx->use_certificate_chain_file(pki.server_cert);
    ctx->use_private_key_file(pki.server_key, asio::ssl::context::pem);
    // Ask for a certificate, take any: the check is what decides here.
    ctx->set_verify_mode(asio::ssl::verify_peer);
    ctx->set_verify_callback([](bool, asio::ssl::verify_context&) { return true; });
    auto cfg = vt::quick_server();
    cfg.tls.context = ctx;
    std::vector<std::string> seen;
    cfg.check_upgrade = [&](const vigil::upgrade_request& req) -> asio::awaitable<vigil::upgrade_decision> {
        seen.push_back(req.peer_certificate);
        co_return vigil::upgrade_decision::accept();
    };
    vt::server_rig rig(cfg);
    REQUIRE(!rig.start());

    auto with_cert = vt::quick_client();
    auto cctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    cctx->load_verify_file(pki.ca_cert);
    cctx->set_verify_mode(asio::ssl::verify_peer);
    cctx->use_certificate_chain_file(pki.self_signed_cert);
    cctx->use_private_key_file(pki.self_signed_key, asio::ssl::context::pem);
    with_cert.tls.context = cctx;
    vt::rig_client a(rig.ioc, with_cert);
    auto without = vt::quick_client();
    without.tls.ca_file = pki.ca_cert;
    vt::rig_client b(rig.ioc, without);
    rig.spawn([&]() -> asio::awaitable<void> {
        a.start(rig.url("wss", "localhost"));
        co_await eventually([&] { return a.connect_done; }, 3s);
        b.start(rig.url("wss", "localhost"));
        co_await eventually([&] { return b.connect_done; }, 3s);
        rig.srv.stop();
    });
    rig.ioc.run_for(8s);

    REQUIRE_MESSAGE(!a.connect_ec, describe(a.connect_ec), " ", a.s.last_disconnect().detail);
    REQUIRE(!b.connect_ec);
    REQUIRE(seen.size() == 2);
    std::ifstream in(pki.self_signed_cert);
    std::stringstream pem;
    pem << in.rdbuf();
    CHECK(seen[0].rfind("-----BEGIN CERTIFICATE-----", 0) == 0);
    CHECK(pem.str().find(seen[0]) == 0);  // the leaf, as the file has it
    CHECK(seen[1].empty());
}

}  // TEST_SUITE
