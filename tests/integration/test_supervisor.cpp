// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <vigil/supervisor.hpp>

#include <vigil/server.hpp>

#include <support/one_thread.hpp>
#include <support/peer.hpp>
#include <support/pki.hpp>
#include <support/relay.hpp>
#include <support/testing.hpp>
#include <support/wait.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;
using vigil::error;
using vigil::error_code;
using vigil::message_type;

using vt::describe;
using vt::eventually;
using vt::ms_between;
using vt::ms_since;
using vt::tolerance;

vigil::session_config quick_session()
{
    vigil::session_config cfg;
    cfg.ping_interval = 200ms;
    cfg.pong_timeout = 150ms;
    cfg.connect_timeout = 2s;
    cfg.tls_handshake_timeout = 2s;
    cfg.handshake_timeout = 2s;
    cfg.write_timeout = 2s;
    cfg.close_timeout = 500ms;
    return cfg;
}

vigil::supervisor_config quick_config()
{
    vigil::supervisor_config cfg;
    cfg.session = quick_session();
    cfg.min_delay = 10ms;
    cfg.stable_after = 5s;
    return cfg;
}

vigil::exponential_backoff seeded(milliseconds initial, milliseconds max, std::uint64_t seed)
{
    return vigil::exponential_backoff({.initial = initial, .multiplier = 2.0, .max = max, .seed = seed});
}

// Built by appending: g++ 12 warns (-Wrestrict, a false positive) on `"literal" + to_string()`.
std::string local_url(std::uint16_t port)
{
    std::string url = "ws://127.0.0.1:";
    url += std::to_string(port);
    url += '/';
    return url;
}

// A port on which every connection is refused: a socket is bound to it but never listens,
// which also keeps the port from being handed out as an ephemeral one meanwhile.
struct refused_port {
    refused_port()
    {
        asio::ip::tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), 0);
        sock.open(ep.protocol());
        sock.bind(ep);
    }
    std::string url() const { return local_url(sock.local_endpoint().port()); }

    asio::io_context ioc;
    asio::ip::tcp::acceptor sock{ioc};
};

// The io_context lives in a base, named first in harness's initializer list, so that it is
// built before the supervisor that uses it. (clang 14's -Wuninitialized flags the same order
// among plain members, wrongly.)
struct io_base {
    asio::io_context ioc{vt::concurrency_hint()};
};

// A supervisor on the test thread's io_context, and what its events said.
struct harness : io_base {
    template <class Policy = vigil::exponential_backoff>
    explicit harness(std::string url, vigil::supervisor_config cfg = quick_config(), Policy policy = Policy{})
        : io_base(), sup(ioc.get_executor(), std::move(url), std::move(cfg), std::move(policy))
    {
        auto& ev = sup.events();
        ev.on_up = [this] {
            ++ups;
            ups_seen.store(ups);
            up = true;
            up_since = steady::now();
        };
        ev.on_retry = [this](const vigil::retry_info& info) {
            retries.push_back(info);
            retry_times.push_back(steady::now());
            retries_seen.store(retries.size());
            up = false;
        };
        ev.on_gave_up = [this](const error_code& reason, const vigil::disconnect_info& last) {
            gave_up.emplace_back(reason, last);
        };
        sup.session_event_handlers().on_message = [this](std::string_view data, message_type) {
            messages.emplace_back(data);
        };
        sup.session_event_handlers().on_pong = [this](std::chrono::microseconds) { ++pongs; };
    }

    ~harness()
    {
        // A failed case must not leave coroutines pointing into a destroyed supervisor.
        if (started && !run_done) {
            sup.stop();
            ioc.restart();
            ioc.run_for(3s);
        }
    }

    // Runs until `n` retries were reported (waiting at most `bound`), then stop()s and lets
    // run() finish: for cases that judge the retries themselves.
    void run_until_retries(std::size_t n, milliseconds bound = 4s)
    {
        start_run();
        spawn([this, n, bound]() -> asio::awaitable<void> {
            co_await eventually([this, n] { return retries.size() >= n; }, bound);
            sup.stop();
        });
        ioc.run_for(bound + 2s);
    }

    // Runs until `n` connections came up (waiting at most `bound`), then stop()s and lets
    // run() finish.
    void run_until_ups(int n, milliseconds bound = 3s)
    {
        start_run();
        spawn([this, n, bound]() -> asio::awaitable<void> {
            co_await eventually([this, n] { return ups >= n; }, bound);
            sup.stop();
        });
        ioc.run_for(bound + 2s);
    }

    template <class F>
    void spawn(F f)
    {
        asio::co_spawn(ioc, std::move(f), [](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
        });
    }

    void start_run()
    {
        started = true;
        spawn([this]() -> asio::awaitable<void> {
            run_ec = co_await sup.run();
            run_ended = steady::now();
            run_done = true;
        });
    }

    // Sends `data`, recording its fate in `fates[index]` (how many completions, which code).
    void send(std::string data, std::size_t index)
    {
        if (fates.size() <= index)
            fates.resize(index + 1);
        sup.async_send(std::move(data), message_type::text, [this, index](error_code ec) {
            ++fates[index].completions;
            fates[index].ec = ec;
        });
    }

    struct fate {
        int completions = 0;
        error_code ec = error::not_connected;
    };

    vigil::supervisor sup;

    int ups = 0;
    bool up = false;
    steady::time_point up_since{};
    std::atomic<int> ups_seen{0};
    std::vector<vigil::retry_info> retries;
    std::vector<steady::time_point> retry_times;
    std::atomic<std::size_t> retries_seen{0};
    std::vector<std::pair<error_code, vigil::disconnect_info>> gave_up;
    std::vector<std::string> messages;
    int pongs = 0;  // heartbeat rounds of every session
    std::vector<fate> fates;

    bool started = false;
    error_code run_ec = error::not_connected;
    bool run_done = false;
    steady::time_point run_ended{};
};

vt::peer_options rejecting(unsigned status, std::vector<std::pair<std::string, std::string>> headers = {})
{
    vt::peer_options o;
    o.behaviour = vt::peer_behaviour::reject;
    o.reject_status = status;
    o.reject_headers = std::move(headers);
    return o;
}

// Records what the supervisor asks of it; delays grow linearly. Defined here, not in the
// library: the supervisor must take any type that models the concept.
struct linear_backoff {
    milliseconds step;
    std::shared_ptr<std::vector<vigil::retry_context>> asked = std::make_shared<std::vector<vigil::retry_context>>();
    std::shared_ptr<int> resets = std::make_shared<int>(0);

    milliseconds next_delay(const vigil::retry_context& c)
    {
        asked->push_back(c);
        return step * static_cast<int>(c.attempt);
    }
    void reset() { ++*resets; }
};
static_assert(vigil::backoff_policy<linear_backoff>);

}  // namespace

TEST_SUITE("supervisor")
{

TEST_CASE("a server killed and restarted on the same port: reconnect, re-subscribe, queued messages in order")
{
    auto server = std::make_unique<vt::peer>();
    const auto port = server->port();
    const auto url = server->url();
    auto cfg = quick_config();
    cfg.min_delay = 20ms;
    harness h(url, cfg, seeded(50ms, 200ms, 11));

    int hook_runs = 0;
    std::vector<error_code> subscribe_results;
    h.sup.on_connected([&](vigil::session& s) -> asio::awaitable<error_code> {
        ++hook_runs;
        auto ec = co_await s.send("subscribe");
        subscribe_results.push_back(ec);
        co_return ec;
    });

    bool first_up = false;
    bool noticed_death = false;
    bool queued_across_a_retry = false;
    int completed_before_restart = -1;
    bool all_back = false;
    const std::vector<std::string> queued = {"m0", "m1", "m2", "m3", "m4"};

    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        first_up = co_await eventually([&] { return h.ups == 1 && h.messages.size() == 1; }, 3s);
        if (!first_up)
            co_return;
        server.reset();  // killed: its connections closed, its port free
        noticed_death = co_await eventually([&] { return !h.retries.empty(); }, 3s);
        for (std::size_t i = 0; i < queued.size(); ++i)
            h.send(queued[i], i);
        // At least one more attempt fails (refused) while the messages wait.
        const auto seen = h.retries.size();
        queued_across_a_retry = co_await eventually([&] { return h.retries.size() > seen; }, 3s);
        completed_before_restart = 0;
        for (const auto& f : h.fates)
            completed_before_restart += f.completions;
        vt::peer_options again;
        again.port = port;
        server = std::make_unique<vt::peer>(again);
        all_back = co_await eventually([&] { return h.messages.size() >= 2 + queued.size(); }, 3s);
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(first_up);
    REQUIRE(noticed_death);
    CHECK(queued_across_a_retry);
    CHECK(completed_before_restart == 0);
    REQUIRE(all_back);
    const std::vector<std::string> expected = {"subscribe", "subscribe", "m0", "m1", "m2", "m3", "m4"};
    CHECK(h.messages == expected);
    const auto c = h.sup.counters();
    CHECK(hook_runs == 2);
    CHECK(c.connects == 2);
    CHECK(h.ups == 2);
    CHECK(c.attempts >= 3);  // the first, at least one refused, the reconnect
    CHECK(c.messages_sent == queued.size());
    CHECK(c.messages_failed == 0);
    for (const auto& ec : subscribe_results)
        CHECK_CODE(ec, error_code{});
    for (const auto& f : h.fates) {
        CHECK(f.completions == 1);
        CHECK_CODE(f.ec, error_code{});
    }
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(h.gave_up.empty());
    // Every failure on the way was transient: the death (eof or reset) and the refusals.
    for (const auto& r : h.retries)
        CHECK_FALSE(vigil::is_permanent(r.last.reason));
    CHECK(c.disconnects.contains("connection_refused"));
}

TEST_CASE("metrics(): traffic, pending sends, round trips and backoff waits, against what happened")
{
    auto server = std::make_unique<vt::peer>();
    const auto port = server->port();
    auto cfg = quick_config();  // pings after 200 ms of silence
    cfg.min_delay = 20ms;
    harness h(server->url(), cfg, vigil::constant_backoff(100ms));

    vigil::supervisor_metrics up, down, back;
    bool echoed = false, waiting = false, all_back = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        h.send("hello", 0);  // 5 bytes
        h.send("world!", 1);  // 6 bytes
        // Both echoed, and a ping answered.
        echoed = co_await eventually([&] {
            return h.messages.size() == 2 && h.sup.metrics().round_trips.count >= 1;
        }, 3s);
        up = h.sup.metrics();
        server.reset();  // killed: the connection ends, the port refuses
        waiting = co_await eventually([&] { return h.retries.size() >= 3; }, 3s);
        h.send("queued", 2);  // 6 bytes, waiting for a connection
        down = h.sup.metrics();
        vt::peer_options again;
        again.port = port;
        server = std::make_unique<vt::peer>(again);
        all_back = co_await eventually([&] { return h.messages.size() == 3; }, 3s);
        back = h.sup.metrics();
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(echoed);
    CHECK(up.connected);
    CHECK(up.traffic.messages_out == 2);
    CHECK(up.traffic.bytes_out == 11);
    CHECK(up.traffic.messages_in == 2);
    CHECK(up.traffic.bytes_in == 11);
    CHECK(up.pending_messages == 0);
    CHECK(up.pending_bytes == 0);
    CHECK(up.counters.messages_sent == 2);
    // Loopback round trips: each well under the 150 ms pong timeout.
    CHECK(up.round_trips.count >= 1);
    CHECK(up.round_trips.sum < up.round_trips.count * 150ms);
    CHECK(up.backoff_waits.count == 0);

    REQUIRE(waiting);
    CHECK_FALSE(down.connected);
    CHECK(down.pending_messages == 1);
    CHECK(down.pending_bytes == 6);
    CHECK(down.traffic.messages_out == 2);  // nothing more was written meanwhile

    REQUIRE(all_back);
    CHECK(back.connected);
    CHECK(back.pending_messages == 0);
    CHECK(back.pending_bytes == 0);
    CHECK(back.traffic.messages_out == 3);
    CHECK(back.traffic.bytes_out == 17);
    CHECK(back.traffic.messages_in == 3);
    CHECK(back.traffic.bytes_in == 17);
    CHECK(back.counters.connects == 2);
    // Every wait between attempts ended before the reconnect: each is in the histogram, and
    // each lasted the policy's 100 ms (measured from the retry event, a little after the
    // delay was decided), none a tight loop.
    CHECK(back.backoff_waits.count == back.counters.retries);
    CHECK(back.backoff_waits.count >= 3);
    CHECK(back.backoff_waits.sum >= back.backoff_waits.count * 90ms);
    for (std::size_t i = 0; i < 7; ++i)  // the buckets up to 25 ms
        CHECK(back.backoff_waits.counts[i] == 0);
}

TEST_CASE("refused port: retries with growing, jittered, floored delays")
{
    refused_port closed;
    const auto initial = 40ms;
    const auto cap = 320ms;
    const std::uint64_t seed = 1234;
    auto cfg = quick_config();
    cfg.min_delay = 15ms;
    harness h(closed.url(), cfg, seeded(initial, cap, seed));
    const std::size_t wanted = 6;

    h.run_until_retries(wanted);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    REQUIRE(h.retries.size() >= wanted);

    // The same seed gives the same draws: the supervisor used the policy, attempt after
    // attempt with no reset, and applied its floor.
    auto reference = seeded(initial, cap, seed);
    bool some_below_ceiling = false;
    for (std::size_t i = 0; i < wanted; ++i) {
        CAPTURE(i);
        const auto& r = h.retries[i];
        const std::size_t attempt = i + 1;
        CHECK(r.attempt == attempt);
        CHECK(r.last.reason == asio::error::connection_refused);
        const auto drawn = reference.next_delay({attempt, asio::error::connection_refused});
        CHECK(r.delay == std::max(drawn, cfg.min_delay));
        const auto ceiling = std::min(cap, initial * (1 << i));
        CHECK(r.delay >= cfg.min_delay);
        CHECK(r.delay <= std::max(ceiling, cfg.min_delay));
        if (r.delay < ceiling)
            some_below_ceiling = true;
        // The wait really happened: the next attempt failed no sooner than the delay.
        if (i + 1 < h.retry_times.size())
            CHECK(ms_between(h.retry_times[i], h.retry_times[i + 1]) >= r.delay - 2ms);
    }
    CHECK(some_below_ceiling);  // jitter: delays are drawn, not pinned to the ceiling
    const auto c = h.sup.counters();
    CHECK(c.connects == 0);
    // stop() may have cut the wait after the last retry, or the attempt that followed it.
    CHECK(c.attempts >= h.retries.size());
    CHECK(c.attempts <= h.retries.size() + 1);
    CHECK(c.retries == h.retries.size());
    CHECK(c.disconnects.at("connection_refused") >= wanted);
}

TEST_CASE("retry_now() cuts a long backoff wait short")
{
    refused_port closed;
    harness h(closed.url(), quick_config(), vigil::constant_backoff(5s));
    steady::time_point asked{};

    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.retries.size() == 1; }, 2s))
            co_return;
        // The scenario: a wait well under way (retry_now() from on_retry, before the wait
        // begins, is a case below).
        co_await vt::pause(200ms);
        asked = steady::now();
        h.sup.retry_now();
        co_await eventually([&] { return h.retries.size() == 2; }, 2s);
        h.sup.stop();
    });
    const auto start = steady::now();
    h.ioc.run_for(6s);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    REQUIRE(h.retries.size() == 2);
    CHECK(h.retries[0].delay == 5s);
    CHECK(h.retries[1].attempt == 2);
    // The second attempt started (and was refused) right after retry_now, not 5 s later.
    CHECK(h.retry_times[1] >= asked);
    CHECK(ms_between(asked, h.retry_times[1]) < 100ms + tolerance);
    CHECK(h.sup.counters().attempts == 2);
    CHECK(ms_since(start) < 2s);
}

TEST_CASE("a handshake rejected with 401, 403 or 404 is permanent: one attempt")
{
    for (unsigned status : {401u, 403u, 404u}) {
        CAPTURE(status);
        vt::peer server(rejecting(status));
        harness h(server.url(), quick_config(), vigil::constant_backoff(20ms));
        h.send("early", 0);  // queued before run(): fails with the permanent reason
        h.start_run();
        h.ioc.run_for(5s);

        REQUIRE(h.run_done);
        CHECK(vigil::http_status_of(h.run_ec) == status);
        CHECK(vigil::is_permanent(h.run_ec));
        CHECK(h.sup.counters().attempts == 1);
        CHECK(h.sup.counters().retries == 0);
        CHECK(h.retries.empty());
        CHECK(server.connections() == 1);
        REQUIRE(h.gave_up.size() == 1);
        CHECK(h.gave_up[0].first == h.run_ec);
        CHECK(h.gave_up[0].second.http_status == status);
        CHECK(h.sup.last_disconnect().http_status == status);
        REQUIRE(h.fates.size() == 1);
        CHECK(h.fates[0].completions == 1);
        CHECK(h.fates[0].ec == h.run_ec);
        CHECK(h.sup.counters().messages_failed == 1);
    }
}

TEST_CASE("Retry-After on 503 and 429 is honoured, within max_retry_after")
{
    unsigned status = 503;
    std::string retry_after = "1";
    auto cfg = quick_config();
    milliseconds expected = 1000ms;
    SUBCASE("503 Retry-After: 1")
    {
    }
    SUBCASE("429 Retry-After: 1")
    {
        status = 429;
    }
    SUBCASE("503 Retry-After: 100 bounded by max_retry_after 300 ms")
    {
        retry_after = "100";
        cfg.max_retry_after = 300ms;
        expected = 300ms;
    }
    CAPTURE(status);
    CAPTURE(retry_after);

    vt::peer server(rejecting(status, {{"Retry-After", retry_after}}));
    // The policy alone would retry after 50 ms.
    harness h(server.url(), cfg, vigil::constant_backoff(50ms));
    h.run_until_retries(2);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    REQUIRE(h.retries.size() >= 2);
    CHECK(h.retries[0].last.http_status == status);
    CHECK(h.retries[0].last.retry_after == std::chrono::seconds(std::stoi(retry_after)));
    CHECK(h.retries[0].delay == expected);
    const auto gap = ms_between(h.retry_times[0], h.retry_times[1]);
    CHECK(gap >= expected - 50ms);
    CHECK(gap < expected + tolerance);
    CHECK(h.gave_up.empty());
}

TEST_CASE("TLS with an untrusted certificate is permanent: one attempt")
{
    vt::test_pki pki;
    vt::peer_options o;
    o.tls = true;
    o.cert_file = pki.self_signed_cert;
    o.key_file = pki.self_signed_key;
    vt::peer server(o);
    auto cfg = quick_config();
    cfg.session.tls.ca_file = pki.ca_cert;
    harness h(server.url("localhost"), cfg, vigil::constant_backoff(20ms));
    h.start_run();
    h.ioc.run_for(5s);

    REQUIRE(h.run_done);
    CHECK(vigil::is_permanent(h.run_ec));
    CHECK(vigil::error_name(h.run_ec) == "tls_certificate_verify_failed");
    CHECK(h.sup.counters().attempts == 1);
    CHECK(h.retries.empty());
    REQUIRE(h.gave_up.size() == 1);
    CHECK(h.gave_up[0].first == h.run_ec);
    CHECK(server.upgrades() == 0);
}

TEST_CASE("a DNS failure is transient: retried")
{
    auto cfg = quick_config();
    // Bounds a resolver that hangs instead of answering NXDOMAIN.
    cfg.session.connect_timeout = 500ms;
    harness h("ws://nonexistent.invalid/", cfg, vigil::constant_backoff(30ms));
    h.run_until_retries(2);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    REQUIRE(h.retries.size() >= 2);
    CHECK(h.sup.counters().attempts >= 2);
    for (const auto& r : h.retries) {
        CAPTURE(describe(r.last.reason));
        CHECK(r.last.reason);
        CHECK_FALSE(vigil::is_permanent(r.last.reason));
    }
    CHECK(h.gave_up.empty());
}

TEST_CASE("a server that accepts and closes at once meets growing delays")
{
    std::uint16_t code = 1001;
    SUBCASE("1001 going away") {}
    SUBCASE("1011 internal error")
    {
        code = 1011;
    }
    CAPTURE(code);
    vt::peer_options o;
    o.behaviour = vt::peer_behaviour::close_with;
    o.close_code = code;
    o.close_reason = "bye";
    vt::peer server(o);

    const auto initial = 40ms;
    const auto cap = 2000ms;
    const std::uint64_t seed = 99;
    auto cfg = quick_config();
    cfg.min_delay = 1ms;
    cfg.stable_after = 2s;  // far longer than any of these connections lasts
    harness h(server.url(), cfg, seeded(initial, cap, seed));
    const std::size_t wanted = 5;
    h.run_until_retries(wanted);

    REQUIRE(h.run_done);
    REQUIRE(h.retries.size() >= wanted);
    auto reference = seeded(initial, cap, seed);
    for (std::size_t i = 0; i < wanted; ++i) {
        CAPTURE(i);
        const auto& r = h.retries[i];
        // Each attempt connected, yet the streak kept growing: no reset before stable_after.
        CHECK(r.attempt == i + 1);
        CHECK(vigil::close_code_of(r.last.reason) == code);
        CHECK(r.last.close_code == code);
        CHECK(r.last.close_reason == "bye");
        const auto drawn = reference.next_delay({i + 1, r.last.reason});
        CHECK(r.delay == std::max(drawn, cfg.min_delay));
        CHECK(r.delay <= initial * (1 << i));
    }
    CHECK(h.ups >= static_cast<int>(wanted));
    CHECK(h.sup.counters().connects >= wanted);
    CHECK(server.upgrades() >= wanted);
    CHECK(h.sup.counters().disconnects.at("closed_by_peer") >= wanted);
}

TEST_CASE("a connection that stays up for stable_after resets the streak")
{
    vt::peer_options o;
    o.behaviour = vt::peer_behaviour::close_with;
    o.close_code = 1001;
    vt::peer server(o);
    auto cfg = quick_config();
    cfg.min_delay = 1ms;
    cfg.stable_after = 150ms;
    linear_backoff policy{10ms};
    auto asked = policy.asked;
    auto resets = policy.resets;
    harness h(server.url(), cfg, policy);

    // A heartbeat round takes longer than stable_after: the first pong of the connection
    // shows it has been up that long.
    REQUIRE(cfg.stable_after < cfg.session.ping_interval);

    std::size_t streak_before = 0;
    int resets_before = -1;
    bool stayed_up = false;
    milliseconds up_for{};
    bool dropped = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.retries.size() >= 3; }, 3s))
            co_return;
        server.set_behaviour(vt::peer_behaviour::echo);
        stayed_up = co_await eventually([&] { return h.up && h.pongs >= 1; }, 3s);
        if (!stayed_up)
            co_return;
        up_for = ms_since(h.up_since);
        streak_before = h.retries.back().attempt;
        resets_before = *resets;
        const auto seen = h.retries.size();
        server.reset_all();
        dropped = co_await eventually([&] { return h.retries.size() > seen; }, 3s);
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(stayed_up);
    CHECK(up_for > cfg.stable_after);
    REQUIRE(dropped);
    CHECK(streak_before >= 3);
    CHECK(resets_before == 0);  // the short connections did not reset anything
    CHECK(h.retries.back().attempt == 1);
    CHECK(*resets == 1);
    REQUIRE_FALSE(asked->empty());
    CHECK(asked->back().attempt == 1);
    CHECK(h.retries.back().delay == 10ms);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("max_attempts: gives up with retries_exhausted")
{
    refused_port closed;
    auto cfg = quick_config();
    cfg.max_attempts = 3;
    harness h(closed.url(), cfg, vigil::constant_backoff(20ms));
    h.send("never", 0);
    h.start_run();
    h.ioc.run_for(5s);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error::retries_exhausted);
    const auto c = h.sup.counters();
    CHECK(c.attempts == 3);
    CHECK(c.retries == 2);
    CHECK(h.retries.size() == 2);
    REQUIRE(h.gave_up.size() == 1);
    CHECK_CODE(h.gave_up[0].first, error::retries_exhausted);
    CHECK(h.gave_up[0].second.reason == asio::error::connection_refused);
    CHECK(h.sup.last_disconnect().reason == asio::error::connection_refused);
    REQUIRE(h.fates.size() == 1);
    CHECK(h.fates[0].completions == 1);
    CHECK(h.fates[0].ec);
}

TEST_CASE("message fate: expired, or delivered in order after reconnect")
{
    // A port nobody listens on yet; later a server starts there.
    std::uint16_t port = 0;
    {
        vt::peer placeholder;
        port = placeholder.port();
    }
    std::unique_ptr<vt::peer> server;
    auto cfg = quick_config();
    cfg.message_ttl = 300ms;
    harness h(local_url(port), cfg, vigil::constant_backoff(40ms));

    steady::time_point sent_at{};
    steady::time_point expired_at{};
    bool expired = false;
    bool delivered = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return !h.retries.empty(); }, 2s))
            co_return;
        sent_at = steady::now();
        h.send("stale 0", 0);
        h.send("stale 1", 1);
        expired = co_await eventually([&] { return h.fates[0].completions && h.fates[1].completions; }, 2s);
        expired_at = steady::now();
        h.send("fresh 2", 2);
        h.send("fresh 3", 3);
        vt::peer_options o;
        o.port = port;
        server = std::make_unique<vt::peer>(o);
        delivered = co_await eventually([&] { return h.messages.size() >= 2; }, 3s);
        h.sup.stop();
    });
    h.ioc.run_for(6s);

    REQUIRE(expired);
    CHECK_CODE(h.fates[0].ec, error::message_expired);
    CHECK_CODE(h.fates[1].ec, error::message_expired);
    // Expired close to the TTL, not at the next attempt or never.
    CHECK(ms_between(sent_at, expired_at) >= 300ms - 5ms);
    CHECK(ms_between(sent_at, expired_at) < 300ms + tolerance);
    REQUIRE(delivered);
    CHECK(h.messages == std::vector<std::string>{"fresh 2", "fresh 3"});
    CHECK_CODE(h.fates[2].ec, error_code{});
    CHECK_CODE(h.fates[3].ec, error_code{});
    for (const auto& f : h.fates)
        CHECK(f.completions == 1);
    const auto c = h.sup.counters();
    CHECK(c.messages_sent == 2);
    CHECK(c.messages_failed == 2);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("message fate: a message's own TTL, shorter or longer than the default, in any order")
{
    refused_port closed;
    auto cfg = quick_config();
    cfg.message_ttl = 600ms;
    harness h(closed.url(), cfg, vigil::constant_backoff(5s));
    std::vector<std::pair<std::string, steady::time_point>> expired;
    std::vector<std::pair<std::string, error_code>> ended;
    auto send = [&](std::string name, std::optional<milliseconds> ttl) {
        auto done = [&, name](error_code ec) {
            ended.emplace_back(name, ec);
            if (ec == error::message_expired)
                expired.emplace_back(name, steady::now());
        };
        if (ttl)
            h.sup.async_send(name, message_type::text, *ttl, done);
        else
            h.sup.async_send(name, message_type::text, done);
    };
    steady::time_point sent_at{};
    bool three = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return !h.retries.empty(); }, 2s))
            co_return;
        sent_at = steady::now();
        send("order", 300ms);
        send("quote", 100ms);  // behind the order, yet it goes first
        send("default", std::nullopt);
        send("cancel", 0ms);  // no limit: waits as long as it takes
        send("bad", -1ms);
        three = co_await eventually([&] { return expired.size() == 3; }, 2s);
        h.sup.stop();
    });
    h.ioc.run_for(4s);

    REQUIRE(three);
    const std::vector<std::pair<std::string, milliseconds>> expected = {
        {"quote", 100ms}, {"order", 300ms}, {"default", 600ms}};
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(expired[i].first == expected[i].first);
        CHECK(ms_between(sent_at, expired[i].second) >= expected[i].second - 5ms);
        CHECK(ms_between(sent_at, expired[i].second) < expected[i].second + tolerance);
    }
    REQUIRE(ended.size() == 5);
    CHECK(ended[0] == std::make_pair(std::string("bad"), error_code(error::invalid_config)));
    CHECK(ended.back() == std::make_pair(std::string("cancel"), error_code(error::supervisor_stopped)));
    REQUIRE(h.run_done);
}

TEST_CASE("counters().time_connected counts the live connection too")
{
    vt::peer server;
    harness h(server.url());
    milliseconds while_up{};
    milliseconds up_for{};
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.ups == 1 && ms_since(h.up_since) >= 300ms; }, 3s))
            co_return;
        while_up = h.sup.counters().time_connected;
        up_for = ms_since(h.up_since);
        h.sup.stop();
    });
    h.ioc.run_for(5s);

    REQUIRE(h.run_done);
    CHECK(while_up >= 300ms);
    CHECK(while_up <= up_for + 5ms);
    CHECK(while_up >= up_for - tolerance);
    // Once ended, the connection is counted once, not twice.
    const auto after = h.sup.counters().time_connected;
    CHECK(after >= while_up);
    CHECK(after < while_up + tolerance + 1s);
}

TEST_CASE("message fate: every send completes exactly once")
{
    refused_port closed;
    auto cfg = quick_config();
    cfg.outbox_limit = 3;
    harness h(closed.url(), cfg, vigil::constant_backoff(30ms));
    const std::size_t sends = 5;
    std::size_t full_at_once = 0;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        for (std::size_t i = 0; i < sends; ++i)
            h.send(std::string(1, 'm') += std::to_string(i), i);
        // The two beyond the limit fail at once; the others wait through retries.
        co_await eventually([&] { return h.fates[3].completions && h.fates[4].completions; }, 1s);
        co_await eventually([&] { return h.retries.size() >= 2; }, 2s);
        for (std::size_t i = 0; i < sends; ++i)
            full_at_once += static_cast<std::size_t>(h.fates[i].completions);
        h.sup.stop();
    });
    h.ioc.run_for(5s);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(full_at_once == 2);

    // After run() ended, new sends fail at once.
    h.send("late", sends);
    h.ioc.restart();
    h.ioc.run_for(1s);

    REQUIRE(h.fates.size() == sends + 1);
    std::size_t completions = 0;
    for (std::size_t i = 0; i < h.fates.size(); ++i) {
        CAPTURE(i);
        CHECK(h.fates[i].completions == 1);
        completions += static_cast<std::size_t>(h.fates[i].completions);
    }
    CHECK(completions == sends + 1);
    for (std::size_t i = 0; i < 3; ++i)
        CHECK_CODE(h.fates[i].ec, error::supervisor_stopped);
    CHECK_CODE(h.fates[3].ec, error::send_queue_full);
    CHECK_CODE(h.fates[4].ec, error::send_queue_full);
    CHECK_CODE(h.fates[5].ec, error::supervisor_stopped);
    const auto c = h.sup.counters();
    CHECK(c.messages_sent + c.messages_failed == sends + 1);
    CHECK(c.messages_failed == sends + 1);
}

TEST_CASE("message fate under churn: a server that closes every connection at once")
{
    // Each connection gets one message to write while the peer's close frame is on its way,
    // so sends and the end of run() race in every order: written, then the end; the end, then
    // the write's failure; the end while the message waits. The supervisor must keep going
    // and account for every message exactly once.
    vt::peer_options o;
    o.behaviour = vt::peer_behaviour::close_with;
    o.close_code = 1012;
    vt::peer server(o);
    auto cfg = quick_config();
    cfg.min_delay = 1ms;
    harness h(server.url(), cfg, vigil::constant_backoff(1ms));
    const std::size_t rounds = 100;
    std::size_t sends = 0;
    h.sup.events().on_up = [&] {
        ++h.ups;
        h.send("up " + std::to_string(sends), sends);
        ++sends;
    };
    h.sup.events().on_retry = [&](const vigil::retry_info& info) {
        h.retries.push_back(info);
        h.send("retry " + std::to_string(sends), sends);
        ++sends;
    };
    bool kept_going = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        kept_going = co_await eventually([&] { return h.retries.size() >= rounds; }, 6s);
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    CHECK(kept_going);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    REQUIRE(h.fates.size() == sends);
    std::size_t written = 0;
    for (std::size_t i = 0; i < sends; ++i) {
        CAPTURE(i);
        CHECK(h.fates[i].completions == 1);
        if (!h.fates[i].ec)
            ++written;
        else
            CHECK_CODE(h.fates[i].ec, error::supervisor_stopped);
    }
    const auto c = h.sup.counters();
    CHECK(c.messages_sent == written);
    CHECK(c.messages_sent + c.messages_failed == sends);
    CHECK(server.messages() <= written);
}

TEST_CASE("stop() closes with a close handshake and run() returns empty")
{
    vt::peer server;
    harness h(server.url());
    bool was_up = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        // Up for a whole heartbeat round (a pong), so that there is connected time to count.
        was_up = co_await eventually([&] { return h.ups == 1 && h.pongs >= 1; }, 3s);
        h.sup.stop();
    });
    h.ioc.run_for(5s);

    REQUIRE(was_up);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(vt::wait_until([&] { return server.closes() == 1; }, 2s));
    CHECK(h.retries.empty());
    CHECK(h.gave_up.empty());
    CHECK(h.sup.counters().attempts == 1);
    CHECK(h.sup.counters().time_connected >= 50ms);
}

TEST_CASE("stop() or retry_now() from an event handler take effect at once")
{
    refused_port closed;
    harness h(closed.url(), quick_config(), vigil::constant_backoff(5s));
    bool from_retry_now = false;
    SUBCASE("stop() from on_retry")
    {
        h.sup.events().on_retry = [&](const vigil::retry_info& info) {
            h.retries.push_back(info);
            h.retry_times.push_back(steady::now());
            h.sup.stop();
        };
    }
    SUBCASE("retry_now() from on_retry, then stop()")
    {
        from_retry_now = true;
        h.sup.events().on_retry = [&](const vigil::retry_info& info) {
            h.retries.push_back(info);
            h.retry_times.push_back(steady::now());
            if (h.retries.size() == 1)
                h.sup.retry_now();
            else
                h.sup.stop();
        };
    }
    const auto start = steady::now();
    h.start_run();
    h.ioc.run_for(6s);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(h.retries.size() == (from_retry_now ? 2u : 1u));
    CHECK(h.sup.counters().attempts == (from_retry_now ? 2u : 1u));
    CHECK(ms_between(start, h.run_ended) < 1s);
}

TEST_CASE("stop() and retry_now() from another thread")
{
    SUBCASE("while waiting between attempts")
    {
        refused_port closed;
        harness h(closed.url(), quick_config(), vigil::constant_backoff(5s));
        steady::time_point asked{};
        std::atomic<bool> second_seen{false};
        h.start_run();
        std::thread other([&] {
            if (vt::wait_until([&] { return h.retries_seen.load() >= 1; }, 3s)) {
                asked = steady::now();
                h.sup.retry_now();
                second_seen = vt::wait_until([&] { return h.retries_seen.load() >= 2; }, 3s);
                (void)h.sup.counters();
            }
            h.sup.stop();
        });
        h.ioc.run_for(8s);
        other.join();

        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, error_code{});
        CHECK(second_seen);
        REQUIRE(h.retry_times.size() >= 2);
        CHECK(ms_between(asked, h.retry_times[1]) < 100ms + tolerance);
    }
    SUBCASE("while connected")
    {
        vt::peer server;
        harness h(server.url());
        std::atomic<int> send_result{-1};
        bool echoed = false;
        h.start_run();
        h.spawn([&]() -> asio::awaitable<void> {
            echoed = co_await eventually([&] { return !h.messages.empty(); }, 3s);
        });
        std::thread other([&] {
            if (vt::wait_until([&] { return h.ups_seen.load() >= 1; }, 3s)) {
                h.sup.retry_now();  // connected: a no-op
                h.sup.async_send("from another thread", message_type::text,
                                 [&](error_code ec) { send_result = ec ? 1 : 0; });
                vt::wait_until([&] { return send_result.load() >= 0; }, 3s);
                (void)h.sup.counters();
            }
            h.sup.stop();
        });
        h.ioc.run_for(8s);
        other.join();

        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, error_code{});
        CHECK(send_result.load() == 0);
        CHECK(echoed);
        CHECK(h.sup.counters().attempts == 1);
        CHECK(h.retries.empty());
        CHECK(vt::wait_until([&] { return server.closes() == 1; }, 2s));
    }
}

TEST_CASE("cancelling the coroutine awaiting run() ends it promptly and leaves nothing pending")
{
    std::optional<vt::peer> server;
    refused_port closed;
    std::string url;
    std::function<bool(const harness&)> ready;
    vigil::supervisor_config cfg = quick_config();
    SUBCASE("while connected")
    {
        server.emplace();
        url = server->url();
        ready = [](const harness& h) { return h.ups == 1; };
    }
    SUBCASE("while waiting between attempts")
    {
        url = closed.url();
        ready = [](const harness& h) { return h.retries.size() == 1; };
    }
    SUBCASE("while connecting")
    {
        vt::peer_options o;
        o.behaviour = vt::peer_behaviour::no_upgrade_answer;
        server.emplace(o);
        url = server->url();
        ready = [&](const harness&) { return server->connections() == 1; };
    }
    // Declared before the harness: the slot must outlive the operation bound to it, also when
    // a failed case leaves the harness to finish run() in its destructor.
    asio::cancellation_signal signal;
    harness h(url, cfg, vigil::constant_backoff(5s));
    h.send("queued", 0);
    steady::time_point cancelled_at{};
    h.started = true;
    asio::co_spawn(
        h.ioc,
        [&]() -> asio::awaitable<void> {
            h.run_ec = co_await h.sup.run();
            h.run_ended = steady::now();
            h.run_done = true;
        },
        asio::bind_cancellation_slot(signal.slot(), [](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
        }));
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return ready(h); }, 3s))
            co_return;
        cancelled_at = steady::now();
        signal.emit(asio::cancellation_type::terminal);
    });
    const auto start = steady::now();
    h.ioc.run_for(6s);
    const auto took = ms_since(start);

    REQUIRE(cancelled_at != steady::time_point{});
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, asio::error::operation_aborted);
    CHECK(ms_between(cancelled_at, h.run_ended) < tolerance);
    // The io_context ran out of work by itself: no timer or socket operation was left.
    CHECK(h.ioc.stopped());
    CHECK(took < 4s);
    CHECK(h.gave_up.empty());
    REQUIRE(h.fates.size() == 1);
    CHECK(h.fates[0].completions == 1);
    if (h.ups == 1) {
        // Connected: the queued message went out before the cancellation.
        CHECK_CODE(h.fates[0].ec, error_code{});
    } else {
        CHECK_CODE(h.fates[0].ec, error::supervisor_stopped);
    }
}

TEST_CASE("a user-defined backoff policy decides the delays")
{
    refused_port closed;
    auto cfg = quick_config();
    cfg.min_delay = 1ms;
    linear_backoff policy{30ms};
    auto asked = policy.asked;
    harness h(closed.url(), cfg, policy);
    h.run_until_retries(3, 3s);

    REQUIRE(h.run_done);
    REQUIRE(h.retries.size() >= 3);
    CHECK(h.retries[0].delay == 30ms);
    CHECK(h.retries[1].delay == 60ms);
    CHECK(h.retries[2].delay == 90ms);
    REQUIRE(asked->size() >= 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK((*asked)[i].attempt == i + 1);
        CHECK((*asked)[i].reason == asio::error::connection_refused);
    }

    // The floor applies whatever the policy says.
    linear_backoff zero{0ms};
    cfg.min_delay = 25ms;
    harness floored(closed.url(), cfg, zero);
    floored.start_run();
    floored.spawn([&]() -> asio::awaitable<void> {
        co_await eventually([&] { return floored.retries.size() >= 2; }, 3s);
        floored.sup.stop();
    });
    floored.ioc.run_for(5s);
    REQUIRE(floored.retries.size() >= 2);
    CHECK(floored.retries[0].delay == 25ms);
    CHECK(ms_between(floored.retry_times[0], floored.retry_times[1]) >= 25ms - 2ms);
}

TEST_CASE("a policy is told what the supervisor knows, and can be read back")
{
    // What the policy saw, copied while `last` is valid (only during next_delay()).
    struct seen {
        std::size_t attempt;
        milliseconds retry_after;
        milliseconds failing_for;
        milliseconds previous_delay;
        unsigned http_status;
    };
    struct telling_policy {
        std::shared_ptr<std::vector<seen>> log = std::make_shared<std::vector<seen>>();
        milliseconds next_delay(const vigil::retry_context& c)
        {
            log->push_back({c.attempt, c.retry_after, c.failing_for, c.previous_delay,
                            c.last ? c.last->http_status : 0u});
            return 20ms;
        }
        void reset() {}
    };
    vt::peer server(rejecting(503, {{"Retry-After", "1"}}));
    auto cfg = quick_config();
    cfg.max_retry_after = 200ms;  // keeps the test short: waits of 200 ms
    harness h(server.url(), cfg, telling_policy{});
    h.run_until_retries(3);

    REQUIRE(h.run_done);
    const auto* held = h.sup.policy().target<telling_policy>();
    REQUIRE(held != nullptr);
    CHECK(h.sup.policy().target<vigil::exponential_backoff>() == nullptr);
    const auto& log = *held->log;
    REQUIRE(log.size() >= 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(log[i].attempt == i + 1);
        CHECK(log[i].retry_after == 1000ms);  // what the server said, before max_retry_after
        CHECK(log[i].http_status == 503);
        // The wait chosen before the previous attempt: Retry-After, bounded to 200 ms.
        CHECK(log[i].previous_delay == (i == 0 ? 0ms : 200ms));
    }
    CHECK(log[0].failing_for == 0ms);
    CHECK(log[1].failing_for >= 200ms - 5ms);
    CHECK(log[2].failing_for >= 400ms - 5ms);
    CHECK(log[2].failing_for < 400ms + tolerance);
}

TEST_CASE("an invalid config ends run() at once with invalid_config")
{
    vt::peer server;
    auto cfg = quick_config();
    cfg.min_delay = 0ms;
    harness h(server.url(), cfg);
    h.send("never", 0);
    const auto start = steady::now();
    h.start_run();
    h.ioc.run_for(2s);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error::invalid_config);
    CHECK(ms_between(start, h.run_ended) < 100ms);
    CHECK(h.sup.counters().attempts == 0);
    CHECK(server.connections() == 0);
    CHECK(h.sup.last_disconnect().detail.find("min_delay") != std::string::npos);
    REQUIRE(h.gave_up.size() == 1);
    CHECK_CODE(h.gave_up[0].first, error::invalid_config);
    REQUIRE(h.fates.size() == 1);
    CHECK(h.fates[0].completions == 1);
    CHECK(h.fates[0].ec);
    // A send after that run() fails at once with its reason, as after any run(): it must not
    // wait in the outbox for a run that never comes.
    h.send("after", 1);
    h.ioc.restart();
    h.ioc.run_for(200ms);
    CHECK(h.fates[1].completions == 1);
    CHECK_CODE(h.fates[1].ec, error::invalid_config);
}

TEST_CASE("an on_connected hook failure fails the attempt and is classified")
{
    vt::peer server;
    harness h(server.url(), quick_config(), vigil::constant_backoff(20ms));
    int hook_runs = 0;

    SUBCASE("a transient code: retried")
    {
        h.sup.on_connected([&](vigil::session&) -> asio::awaitable<error_code> {
            ++hook_runs;
            co_return hook_runs == 1 ? vigil::make_close_error(1011) : error_code{};
        });
        h.start_run();
        h.spawn([&]() -> asio::awaitable<void> {
            co_await eventually([&] { return h.ups == 1; }, 3s);
            h.sup.stop();
        });
        h.ioc.run_for(5s);

        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, error_code{});
        REQUIRE(h.retries.size() == 1);
        CHECK(vigil::close_code_of(h.retries[0].last.reason) == 1011);
        CHECK(h.retries[0].last.detail.find("on_connected") != std::string::npos);
        CHECK(hook_runs == 2);
        CHECK(h.sup.counters().attempts == 2);
        CHECK(h.sup.counters().connects == 1);
    }
    SUBCASE("an exception: handler_exception, retried")
    {
        h.sup.on_connected([&](vigil::session&) -> asio::awaitable<error_code> {
            if (++hook_runs == 1)
                throw std::runtime_error("subscription refused");
            co_return error_code{};
        });
        h.start_run();
        h.spawn([&]() -> asio::awaitable<void> {
            co_await eventually([&] { return h.ups == 1; }, 3s);
            h.sup.stop();
        });
        h.ioc.run_for(5s);

        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, error_code{});
        REQUIRE(h.retries.size() == 1);
        CHECK_CODE(h.retries[0].last.reason, error::handler_exception);
        CHECK(hook_runs == 2);
    }
    SUBCASE("a permanent code: gave up")
    {
        h.sup.on_connected([&](vigil::session&) -> asio::awaitable<error_code> {
            ++hook_runs;
            co_return vigil::make_close_error(1002);
        });
        h.start_run();
        h.ioc.run_for(5s);

        REQUIRE(h.run_done);
        CHECK(vigil::close_code_of(h.run_ec) == 1002);
        CHECK(hook_runs == 1);
        CHECK(h.retries.empty());
        CHECK(h.sup.counters().attempts == 1);
        CHECK(h.sup.counters().connects == 0);
        CHECK(h.ups == 0);
        REQUIRE(h.gave_up.size() == 1);
        CHECK(h.gave_up[0].first == h.run_ec);
    }
}

TEST_CASE("before_attempt: its failure fails the attempt before any connect and is classified")
{
    vt::peer server;
    auto cfg = quick_config();
    cfg.prepare_timeout = 150ms;
    harness h(server.url(), cfg, vigil::constant_backoff(20ms));
    int hook_runs = 0;
    auto stop_when_up = [&] {
        h.run_until_ups(1);
        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, error_code{});
        CHECK(h.ups == 1);
        CHECK(server.connections() == 1);  // the failed attempt never connected
    };

    SUBCASE("a transient code: retried after the policy's delay")
    {
        h.sup.before_attempt([&](vigil::attempt_params&) -> asio::awaitable<error_code> {
            co_return ++hook_runs == 1 ? error_code(asio::error::connection_refused) : error_code{};
        });
        stop_when_up();
        REQUIRE(h.retries.size() == 1);
        CHECK_CODE(h.retries[0].last.reason, asio::error::connection_refused);
        CHECK(h.retries[0].last.detail == "before_attempt failed: connection_refused");
        CHECK(h.retries[0].delay >= 20ms);
        CHECK(h.sup.counters().attempts == 2);
    }
    SUBCASE("past prepare_timeout: prepare_timeout, and the hook is cancelled")
    {
        error_code hook_saw;
        h.sup.before_attempt([&](vigil::attempt_params&) -> asio::awaitable<error_code> {
            if (++hook_runs == 1) {
                asio::steady_timer t(co_await asio::this_coro::executor, 10s);
                auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
                hook_saw = ec;
            }
            co_return error_code{};
        });
        const auto start = steady::now();
        stop_when_up();
        REQUIRE(h.retries.size() == 1);
        CHECK_CODE(h.retries[0].last.reason, error::prepare_timeout);
        CHECK(h.retries[0].last.detail.find("prepare_timeout (150 ms)") != std::string::npos);
        CHECK_CODE(hook_saw, asio::error::operation_aborted);
        CHECK(ms_between(start, h.retry_times[0]) >= 150ms - 5ms);
        CHECK(ms_between(start, h.retry_times[0]) < 150ms + tolerance);
    }
    SUBCASE("an exception: handler_exception, retried")
    {
        h.sup.before_attempt([&](vigil::attempt_params&) -> asio::awaitable<error_code> {
            if (++hook_runs == 1)
                throw std::runtime_error("token service down");
            co_return error_code{};
        });
        stop_when_up();
        REQUIRE(h.retries.size() == 1);
        CHECK_CODE(h.retries[0].last.reason, error::handler_exception);
    }
    SUBCASE("a permanent code: gave up, nothing connected")
    {
        h.sup.before_attempt([&](vigil::attempt_params&) -> asio::awaitable<error_code> {
            ++hook_runs;
            co_return vigil::make_http_status_error(403);  // the token service said no
        });
        h.start_run();
        h.ioc.run_for(3s);
        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, vigil::make_http_status_error(403));
        REQUIRE(h.gave_up.size() == 1);
        CHECK(h.gave_up[0].second.http_status == 403);
        CHECK(hook_runs == 1);
        CHECK(h.retries.empty());
        CHECK(server.connections() == 0);
    }
    SUBCASE("headers it cannot send: invalid_config, naming the header but not its value")
    {
        h.sup.before_attempt([&](vigil::attempt_params& p) -> asio::awaitable<error_code> {
            p.headers.emplace_back("Authorization", "Bearer secret\r\nX-Evil: 1");
            co_return error_code{};
        });
        h.start_run();
        h.ioc.run_for(3s);
        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, error::invalid_config);
        REQUIRE(h.gave_up.size() == 1);
        const auto& detail = h.gave_up[0].second.detail;
        CHECK(detail.find("before_attempt: headers[0]") != std::string::npos);
        CHECK(detail.find("secret") == std::string::npos);
        CHECK(server.connections() == 0);
    }
    SUBCASE("a URL it cannot use: invalid_url, permanent")
    {
        h.sup.before_attempt([&](vigil::attempt_params& p) -> asio::awaitable<error_code> {
            p.url = "http://example.com/";
            co_return error_code{};
        });
        h.start_run();
        h.ioc.run_for(3s);
        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, error::unsupported_scheme);
        CHECK(h.retries.empty());
    }
    SUBCASE("stop() while it runs: cancelled, run() ends at once")
    {
        error_code hook_saw;
        h.sup.before_attempt([&](vigil::attempt_params&) -> asio::awaitable<error_code> {
            asio::steady_timer t(co_await asio::this_coro::executor, 10s);
            auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
            hook_saw = ec;
            co_return error_code{};
        });
        h.sup.events().on_connecting = [&](const vigil::attempt_params&) { FAIL("no attempt may connect"); };
        h.start_run();
        steady::time_point asked{};
        h.spawn([&]() -> asio::awaitable<void> {
            co_await vt::pause(50ms);  // the scenario: the hook is under way
            asked = steady::now();
            h.sup.stop();
        });
        h.ioc.run_for(3s);
        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, error_code{});
        CHECK_CODE(hook_saw, asio::error::operation_aborted);
        CHECK(ms_between(asked, h.run_ended) < tolerance);
        CHECK(server.connections() == 0);
    }
}

TEST_CASE("endpoints: a dead primary costs one refused connect, then the backup, in one round")
{
    refused_port primary;
    vt::peer backup;
    auto cfg = quick_config();
    cfg.backup_urls = {backup.url()};
    cfg.min_delay = 3s;  // a backoff wait would show
    harness h(primary.url(), cfg);
    std::vector<std::size_t> up_on;
    h.sup.events().on_up = [&] {
        ++h.ups;
        up_on.push_back(h.sup.current_endpoint());
    };
    std::vector<std::pair<std::size_t, std::string>> connecting;
    h.sup.events().on_connecting = [&](const vigil::attempt_params& p) { connecting.emplace_back(p.endpoint, p.url); };
    const auto start = steady::now();
    steady::time_point up_at{};
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (co_await eventually([&] { return h.ups == 1; }, 3s))
            up_at = steady::now();
        h.sup.stop();
    });
    h.ioc.run_for(5s);

    REQUIRE(h.run_done);
    CHECK(h.sup.endpoints() == std::vector<std::string>{primary.url(), backup.url()});
    REQUIRE(up_on.size() == 1);
    CHECK(up_on[0] == 1);
    CHECK(ms_between(start, up_at) < 1s);
    REQUIRE(connecting.size() == 2);
    CHECK(connecting[0] == std::make_pair(std::size_t{0}, primary.url()));
    CHECK(connecting[1] == std::make_pair(std::size_t{1}, backup.url()));
    REQUIRE(h.retries.size() == 1);
    CHECK(h.retries[0].endpoint == 0);
    CHECK(h.retries[0].next_endpoint == 1);
    CHECK(h.retries[0].delay == 0ms);
    CHECK_CODE(h.retries[0].last.reason, asio::error::connection_refused);
}

TEST_CASE("endpoints: all down, the policy's delay comes once per round, not per URL")
{
    refused_port a, b, c;
    auto cfg = quick_config();
    cfg.backup_urls = {b.url(), c.url()};
    cfg.min_delay = 10ms;
    harness h(a.url(), cfg, vigil::constant_backoff(300ms));
    h.run_until_retries(6);

    REQUIRE(h.retries.size() >= 6);
    const std::size_t expected_next[] = {1, 2, 0, 1, 2, 0};
    for (std::size_t i = 0; i < 6; ++i) {
        CAPTURE(i);
        CHECK(h.retries[i].endpoint == (expected_next[i] + 2) % 3);
        CHECK(h.retries[i].next_endpoint == expected_next[i]);
        CHECK(h.retries[i].delay == (expected_next[i] == 0 ? 300ms : 0ms));
        CHECK(h.retries[i].attempt == i + 1);
    }
    // Each round's three refusals come together; rounds are one delay apart.
    CHECK(ms_between(h.retry_times[0], h.retry_times[2]) < 200ms);
    CHECK(ms_between(h.retry_times[2], h.retry_times[3]) >= 300ms - 5ms);
}

// A primary that refuses until restore_primary() starts a server on its port, a backup that
// echoes, and a supervisor over both that records on which endpoint each connection came up.
struct failover_rig {
    static vigil::supervisor_config with_backup(vigil::supervisor_config cfg, const vt::peer& backup)
    {
        cfg.backup_urls = {backup.url()};
        return cfg;
    }

    explicit failover_rig(vigil::supervisor_config cfg)
        : h(local_url(primary_port), with_backup(std::move(cfg), backup))
    {
        h.sup.events().on_up = [this] {
            ++h.ups;
            h.up_since = steady::now();
            up_on.push_back(h.sup.current_endpoint());
        };
        h.sup.events().on_reconnect = [this](const std::string& r) { reasons.push_back(r); };
    }

    void restore_primary()
    {
        down.reset();
        primary = std::make_unique<vt::peer>(vt::peer_options{.port = primary_port});
    }

    std::optional<refused_port> down{std::in_place};
    std::uint16_t primary_port = down->sock.local_endpoint().port();
    vt::peer backup;
    std::unique_ptr<vt::peer> primary;
    harness h;
    std::vector<std::size_t> up_on;
    std::vector<std::string> reasons;
};

TEST_CASE("endpoints: with failback_after, the primary is taken back once it returns")
{
    auto cfg = quick_config();
    cfg.stable_after = 300ms;
    cfg.failback_after = 400ms;
    failover_rig f(cfg);
    auto& h = f.h;
    bool on_backup = false;
    bool back_on_primary = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        on_backup = co_await eventually([&] { return h.ups == 1; }, 3s);
        f.restore_primary();
        back_on_primary = co_await eventually([&] { return !f.up_on.empty() && f.up_on.back() == 0; }, 4s);
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(on_backup);
    CHECK(f.up_on[0] == 1);
    REQUIRE(back_on_primary);
    REQUIRE(!f.reasons.empty());
    CHECK(f.reasons.back() == "failback");
    CHECK(f.primary->upgrades() == 1);
    // Planned: no failure was counted on the way back (a failback tried before the primary
    // returned may have been refused once per period, and went back to the backup at once).
    for (const auto& r : h.retries)
        CHECK(r.delay == 0ms);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("endpoints: without failback_after a working backup is kept; its failure moves on to the primary")
{
    auto cfg = quick_config();
    cfg.min_delay = 3s;
    cfg.stable_after = 200ms;
    failover_rig f(cfg);
    auto& h = f.h;
    bool done = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.ups == 1; }, 3s))
            co_return;
        f.restore_primary();
        h.sup.reconnect("fresh snapshot");  // planned: the same endpoint
        if (!co_await eventually([&] { return h.ups == 2; }, 3s))
            co_return;
        // Once the backup proved stable, a new round begins with its failure: on to the
        // next endpoint, the primary, at once (an unstable one would end the round).
        if (!co_await eventually([&] { return ms_since(h.up_since) > 250ms; }, 1s))
            co_return;
        f.backup.reset_all();
        done = co_await eventually([&] { return h.ups == 3; }, 2s);
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(done);
    CHECK(f.up_on == std::vector<std::size_t>{1, 1, 0});
    CHECK(f.reasons == std::vector<std::string>{"fresh snapshot"});
    CHECK(f.backup.upgrades() == 2);
    CHECK(f.primary->upgrades() == 1);
    REQUIRE(h.retries.size() == 2);
    CHECK(h.retries[1].endpoint == 1);
    CHECK(h.retries[1].next_endpoint == 0);
    CHECK(h.retries[1].delay == 0ms);
    REQUIRE(h.run_done);
}

// "m0", "m1" ... (appended: g++ 12 warns wrongly on `"literal" + to_string()`).
std::string numbered(int i)
{
    std::string m = "m";
    m += std::to_string(i);
    return m;
}

TEST_CASE("a shared limiter: twelve supervisors connect at most four per window, and all come up")
{
    vt::peer server;
    auto limiter = std::make_shared<vigil::rate_limiter>(vigil::rate_limits{.connects = 4, .connect_window = 400ms});
    auto cfg = quick_config();
    cfg.limiter = limiter;
    io_base io;
    std::vector<std::unique_ptr<vigil::supervisor>> fleet;
    std::vector<steady::time_point> starts;
    int ups = 0;
    int ended = 0;
    const auto begin = steady::now();
    for (int i = 0; i < 12; ++i) {
        fleet.push_back(std::make_unique<vigil::supervisor>(io.ioc.get_executor(), server.url(), cfg));
        fleet.back()->events().on_connecting = [&](const vigil::attempt_params&) { starts.push_back(steady::now()); };
        fleet.back()->events().on_up = [&] { ++ups; };
        asio::co_spawn(io.ioc, fleet.back()->run(), [&](std::exception_ptr, error_code) { ++ended; });
    }
    steady::time_point all_up{};
    asio::co_spawn(
        io.ioc,
        [&]() -> asio::awaitable<void> {
            if (co_await eventually([&] { return ups == 12; }, 4s))
                all_up = steady::now();
            for (auto& s : fleet)
                s->stop();
        },
        asio::detached);
    io.ioc.run_for(8s);

    REQUIRE(ups == 12);
    CHECK(ended == 12);
    REQUIRE(starts.size() == 12);
    // The schedule is 4, 4, 4, 400 ms apart; the event loop may run a start a little late,
    // which can only bring two windows' starts closer, so allow it a margin.
    CHECK(vt::most_in_window(starts, 400ms - tolerance) <= 4);
    CHECK(ms_between(begin, all_up) >= 800ms - 5ms);
    CHECK(ms_between(begin, all_up) < 800ms + 2 * tolerance);
    CHECK(limiter->connects_reserved() == 12);
    std::size_t throttled = 0;
    for (auto& s : fleet)
        throttled += s->counters().throttled_connects;
    CHECK(throttled == 8);
    CHECK(server.upgrades() == 12);
}

TEST_CASE("a shared limiter: stop() ends an attempt waiting for its turn")
{
    vt::peer server;
    auto limiter = std::make_shared<vigil::rate_limiter>(vigil::rate_limits{.connects = 1, .connect_window = 10s});
    limiter->reserve_connect();  // another supervisor took this window's only connect
    auto cfg = quick_config();
    cfg.limiter = limiter;
    harness h(server.url(), cfg);
    h.sup.retry_now();  // cannot shorten the limiter's wait
    steady::time_point asked{};
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        // The scenario: the attempt has been waiting for its turn a while.
        co_await vt::pause(200ms);
        h.sup.retry_now();
        asked = steady::now();
        h.sup.stop();
    });
    h.ioc.run_for(3s);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(ms_between(asked, h.run_ended) < tolerance);
    CHECK(h.sup.counters().throttled_connects == 1);
    CHECK(server.connections() == 0);
}

TEST_CASE("a limiter's message window paces the outbox, leaving room for the heartbeat's pings")
{
    vt::peer server;
    auto cfg = quick_config();
    cfg.session.ping_interval = 1s;  // one ping per 300 ms window at most: two slots left of three
    cfg.session.pong_timeout = 500ms;
    cfg.limiter = std::make_shared<vigil::rate_limiter>(vigil::rate_limits{.messages = 3, .message_window = 300ms});
    harness h(server.url(), cfg);
    std::vector<steady::time_point> written;
    bool all = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.ups == 1; }, 3s))
            co_return;
        for (int i = 0; i < 8; ++i)
            h.sup.async_send(numbered(i), message_type::text,
                             [&](error_code ec) {
                                 if (!ec)
                                     written.push_back(steady::now());
                             });
        all = co_await eventually([&] { return h.messages.size() == 8; }, 4s);
        h.sup.stop();
    });
    h.ioc.run_for(7s);

    REQUIRE(all);
    for (int i = 0; i < 8; ++i)
        CHECK(h.messages[static_cast<std::size_t>(i)] == numbered(i));
    REQUIRE(written.size() == 8);
    CHECK(vt::most_in_window(written, 300ms - tolerance) <= 2);
    CHECK(ms_between(written.front(), written.back()) >= 900ms - 5ms);
    // m2 ... m7 had to wait for their window, except where the wait for the one before
    // already took them past it.
    CHECK(h.sup.counters().paced_messages >= 3);
    CHECK(h.sup.counters().paced_messages <= 6);
}

TEST_CASE("a limiter whose message limit the heartbeat alone would use up is refused")
{
    auto cfg = quick_config();  // ping_interval 200 ms: five pings per second
    cfg.limiter = std::make_shared<vigil::rate_limiter>(vigil::rate_limits{.messages = 5, .message_window = 1s});
    std::string detail;
    CHECK(vigil::validate(cfg, &detail) == error_code(error::invalid_config));
    CHECK(detail.find("heartbeat") != std::string::npos);
    cfg.limiter = std::make_shared<vigil::rate_limiter>(vigil::rate_limits{.connects = 1, .connect_window = 0ms});
    CHECK(vigil::validate(cfg, &detail) == error_code(error::invalid_config));
    CHECK(detail.find("connect_window") != std::string::npos);
}

TEST_CASE("endpoints, failback_after and prepare_timeout are checked by validate()")
{
    auto cfg = quick_config();
    std::string detail;
    SUBCASE("a backup URL that does not parse")
    {
        cfg.backup_urls = {"ws://127.0.0.1:1/", "ws://[::1/"};
        CHECK(vigil::validate(cfg, &detail) == error_code(error::invalid_config));
        CHECK(detail.find("backup_urls[1]") != std::string::npos);
        // run() says so before any attempt.
        harness h("ws://127.0.0.1:1/", cfg);
        h.start_run();
        h.ioc.run_for(1s);
        REQUIRE(h.run_done);
        CHECK_CODE(h.run_ec, error::invalid_config);
        CHECK(h.sup.counters().attempts == 0);
    }
    SUBCASE("failback_after below stable_after")
    {
        cfg.stable_after = 5s;
        cfg.failback_after = 1s;
        CHECK(vigil::validate(cfg, &detail) == error_code(error::invalid_config));
        CHECK(detail.find("failback_after") != std::string::npos);
    }
    SUBCASE("prepare_timeout zero")
    {
        cfg.prepare_timeout = 0ms;
        CHECK(vigil::validate(cfg, &detail) == error_code(error::invalid_config));
        CHECK(detail.find("prepare_timeout") != std::string::npos);
    }
}

TEST_CASE("delivery confirmed: a send succeeds only once the peer has read it; a silent outage reports the rest")
{
    vt::peer server;
    vt::relay path(server.port());
    auto cfg = quick_config();
    cfg.delivery = vigil::delivery_guarantee::confirmed;
    harness h(path.url(), cfg, vigil::constant_backoff(40ms));

    std::size_t read_when_confirmed = 0;
    bool confirmed = false;
    bool reported = false;
    steady::time_point frozen_at{};
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.up; }, 2s))
            co_return;
        for (std::size_t i = 0; i < 5; ++i)
            h.send("ok " + std::to_string(i), i);
        confirmed = co_await eventually(
            [&] {
                for (std::size_t i = 0; i < 5; ++i)
                    if (!h.fates[i].completions)
                        return false;
                return true;
            },
            2s);
        // A confirmation is a pong to a later ping: the peer had read every one of them.
        read_when_confirmed = server.messages();
        // Now the path dies silently. What is written from here on is never read; without
        // confirmation these sends would all have "succeeded".
        path.freeze();
        frozen_at = steady::now();
        for (std::size_t i = 5; i < 10; ++i)
            h.send("lost " + std::to_string(i), i);
        reported = co_await eventually(
            [&] {
                for (std::size_t i = 5; i < 10; ++i)
                    if (!h.fates[i].completions)
                        return false;
                return true;
            },
            3s);
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(confirmed);
    for (std::size_t i = 0; i < 5; ++i) {
        CAPTURE(i);
        CHECK_CODE(h.fates[i].ec, error_code{});
    }
    CHECK(read_when_confirmed >= 5);
    REQUIRE(reported);
    // Detected with the heartbeat's bound, then reported: none claimed as delivered.
    CHECK(ms_since(frozen_at) >= 0ms);
    for (std::size_t i = 5; i < 10; ++i) {
        CAPTURE(i);
        CHECK_CODE(h.fates[i].ec, error::delivery_unconfirmed);
    }
    CHECK(server.messages() == 5);
    for (const auto& f : h.fates)
        CHECK(f.completions == 1);
    const auto c = h.sup.counters();
    CHECK(c.messages_sent == 5);
    CHECK(c.messages_failed == 5);
    REQUIRE(h.run_done);
}

TEST_CASE("delivery confirmed: a confirmation costs about one round trip, not a wait for the timer grid")
{
    // The confirming ping goes out as soon as the write completes. It used to wait for the
    // session's 10 ms timer grid: 0.4-10.4 ms after the write, where the round trip on
    // loopback is well under a millisecond.
    vt::peer server;
    auto cfg = quick_config();
    cfg.session.ping_interval = 20s;  // no heartbeat ping in the way: every ping confirms
    cfg.session.pong_timeout = 5s;
    cfg.delivery = vigil::delivery_guarantee::confirmed;
    harness h(server.url(), cfg);
    std::vector<std::chrono::microseconds> rtts;
    h.sup.session_event_handlers().on_pong = [&](std::chrono::microseconds rtt) { rtts.push_back(rtt); };

    constexpr int rounds = 31;
    std::vector<double> extra_ms;  // send to confirmation, minus that ping's round trip
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.up; }, 2s))
            co_return;
        for (int i = 0; i < rounds; ++i) {
            const auto before = rtts.size();
            const auto sent = steady::now();
            auto ec = co_await h.sup.send("order " + std::to_string(i));
            const auto took = steady::now() - sent;
            if (ec || rtts.size() != before + 1)
                break;
            extra_ms.push_back(std::chrono::duration<double, std::milli>(took - rtts.back()).count());
        }
        h.sup.stop();
    });
    h.ioc.run_for(10s);

    REQUIRE(extra_ms.size() == static_cast<std::size_t>(rounds));  // one ping per confirmed send
    std::sort(extra_ms.begin(), extra_ms.end());
    const double median = extra_ms[extra_ms.size() / 2];
    CAPTURE(median);
    CAPTURE(extra_ms.back());
    // Waiting for the grid would put the median near 5 ms.
    CHECK(median < 2.0);
    REQUIRE(h.run_done);
}

TEST_CASE("delivery resend_unconfirmed: what a dead connection left unconfirmed goes out again, in order")
{
    vt::peer server;
    vt::relay path(server.port());
    auto cfg = quick_config();
    cfg.delivery = vigil::delivery_guarantee::resend_unconfirmed;
    harness h(path.url(), cfg, vigil::constant_backoff(40ms));

    bool all_done = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.up; }, 2s))
            co_return;
        path.freeze();
        for (std::size_t i = 0; i < 3; ++i)
            h.send("again " + std::to_string(i), i);
        // The silence is detected and the session ends; the three wait for the next one.
        if (!co_await eventually([&] { return !h.retries.empty(); }, 2s))
            co_return;
        CHECK(h.fates[0].completions == 0);
        // The old connection is gone for good (its held bytes with it); the path comes back.
        path.reset_all();
        path.thaw();
        all_done = co_await eventually([&] { return h.fates[2].completions && h.messages.size() >= 3; }, 3s);
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(!h.retries.empty());
    CHECK_CODE(h.retries[0].last.reason, error::pong_timeout);
    // The frozen relay's kernel still acknowledged what we sent: the far end, not the path.
    CHECK(h.retries[0].last.diagnosis == vigil::diagnosis::peer_unresponsive);
    const auto diagnoses = h.sup.counters().diagnoses;
    CHECK(diagnoses.count("peer_unresponsive") == 1);
    CHECK(diagnoses.count("network") == 0);
    REQUIRE(all_done);
    CHECK(h.messages == std::vector<std::string>{"again 0", "again 1", "again 2"});
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(h.fates[i].completions == 1);
        CHECK_CODE(h.fates[i].ec, error_code{});
    }
    REQUIRE(h.run_done);
}

TEST_CASE("delivery confirmation needs the heartbeat")
{
    auto cfg = quick_config();
    cfg.delivery = vigil::delivery_guarantee::confirmed;
    cfg.session.ping_interval = 0ms;
    harness h("ws://127.0.0.1:9/", cfg);
    h.start_run();
    h.ioc.run_for(1s);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error::invalid_config);
}

TEST_CASE("close code 1008 is retried, no sooner than policy_violation_delay")
{
    vt::peer_options po;
    po.behaviour = vt::peer_behaviour::close_with;
    po.close_code = 1008;
    po.close_reason = "too many requests";
    vt::peer server(po);
    auto cfg = quick_config();
    cfg.policy_violation_delay = 400ms;
    // The policy alone would retry after 20 ms.
    harness h(server.url(), cfg, vigil::constant_backoff(20ms));
    h.run_until_retries(2);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(h.gave_up.empty());
    REQUIRE(h.retries.size() >= 2);
    CHECK(vigil::close_code_of(h.retries[0].last.reason) == 1008);
    CHECK(h.retries[0].last.close_reason == "too many requests");
    CHECK(h.retries[0].delay == 400ms);
    const auto gap = ms_between(h.retry_times[0], h.retry_times[1]);
    CHECK(gap >= 400ms - 10ms);
    CHECK(gap < 400ms + tolerance);
    CHECK(server.upgrades() >= 2);
}

TEST_CASE("reconnect() from on_message replaces the connection at once: no delay, no failure, nothing lost")
{
    vt::peer server;  // echoes
    auto cfg = quick_config();
    cfg.min_delay = 2s;  // a retry would wait this long: a planned reconnect must not
    harness h(server.url(), cfg);
    int hook_runs = 0;
    h.sup.on_connected([&](vigil::session& s) -> asio::awaitable<error_code> {
        ++hook_runs;
        co_return co_await s.send("subscribe");
    });
    std::vector<std::string> reasons;
    h.sup.events().on_reconnect = [&](const std::string& r) { reasons.push_back(r); };
    std::vector<vigil::disconnect_info> ends;
    h.sup.session_event_handlers().on_disconnected = [&](const vigil::disconnect_info& i) { ends.push_back(i); };
    steady::time_point asked{};
    h.sup.session_event_handlers().on_message = [&](std::string_view data, message_type) {
        h.messages.emplace_back(data);
        if (data == "stale" && asked == steady::time_point{}) {
            asked = steady::now();
            h.sup.reconnect("checksum mismatch");
            // Sent while the old connection closes: they wait for the new one.
            h.send("m1", 1);
            h.send("m2", 2);
        }
    };
    bool done = false;
    milliseconds gap{};
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.ups == 1 && h.messages.size() == 1; }, 3s))
            co_return;
        h.send("stale", 0);  // its echo triggers the reconnect
        done = co_await eventually([&] { return h.ups == 2 && h.messages.size() == 5; }, 3s);
        gap = ms_since(asked);
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(done);
    CHECK(gap < 1s);  // well under min_delay: no backoff wait
    const std::vector<std::string> expected = {"subscribe", "stale", "subscribe", "m1", "m2"};
    CHECK(h.messages == expected);
    CHECK(reasons == std::vector<std::string>{"checksum mismatch"});
    CHECK(hook_runs == 2);
    CHECK(h.retries.empty());
    const auto c = h.sup.counters();
    CHECK(c.planned_reconnects == 1);
    CHECK(c.attempts == 2);
    CHECK(c.connects == 2);
    CHECK(c.retries == 0);
    CHECK(c.messages_sent == 3);
    CHECK(c.messages_failed == 0);
    // The old connection ended with a clean close handshake that the server saw.
    REQUIRE(ends.size() >= 1);
    CHECK_CODE(ends[0].reason, error_code{});
    CHECK(vt::wait_until([&] { return server.closes() >= 1; }, 2s));
    CHECK(server.upgrades() == 2);
    for (const auto& f : h.fates) {
        CHECK(f.completions == 1);
        CHECK_CODE(f.ec, error_code{});
    }
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("reconnect() while waiting starts the attempt now; before run() it does nothing")
{
    refused_port closed;
    harness h(closed.url(), quick_config(), vigil::constant_backoff(5s));
    h.sup.reconnect("idle");  // before run(): nothing to replace, and no stop either
    h.sup.events().on_retry = [&](const vigil::retry_info& info) {
        h.retries.push_back(info);
        h.retry_times.push_back(steady::now());
        if (h.retries.size() == 1)
            h.sup.reconnect("now");
        else
            h.sup.stop();
    };
    bool reconnect_event = false;
    h.sup.events().on_reconnect = [&](const std::string&) { reconnect_event = true; };
    const auto start = steady::now();
    h.start_run();
    h.ioc.run_for(6s);

    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(h.retries.size() == 2);
    CHECK(h.sup.counters().attempts == 2);
    CHECK(h.sup.counters().planned_reconnects == 0);
    CHECK_FALSE(reconnect_event);  // no live connection was replaced
    CHECK(ms_between(start, h.run_ended) < 1s);
}

TEST_CASE("max_connection_age: each connection is replaced within the last tenth of its age, with no failure")
{
    vt::peer server;
    auto cfg = quick_config();
    cfg.max_connection_age = 600ms;
    cfg.min_delay = 2s;
    harness h(server.url(), cfg);
    std::vector<std::string> reasons;
    std::vector<steady::time_point> up_at;
    std::vector<steady::time_point> replace_at;
    h.sup.events().on_up = [&] {
        ++h.ups;
        up_at.push_back(steady::now());
    };
    h.sup.events().on_reconnect = [&](const std::string& r) {
        reasons.push_back(r);
        replace_at.push_back(steady::now());
    };
    bool three = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        three = co_await eventually([&] { return h.ups >= 3; }, 4s);
        h.sup.stop();
    });
    h.ioc.run_for(7s);

    REQUIRE(three);
    REQUIRE(replace_at.size() >= 2);
    for (std::size_t i = 0; i < 2; ++i) {
        CAPTURE(i);
        CHECK(reasons[i] == "max_connection_age");
        const auto age = ms_between(up_at[i], replace_at[i]);
        CHECK(age >= 540ms - 5ms);
        CHECK(age <= 600ms + tolerance);
        // The next connection is up soon after: no backoff wait.
        CHECK(ms_between(replace_at[i], up_at[i + 1]) < 1s);
    }
    CHECK(h.retries.empty());
    CHECK(h.sup.counters().planned_reconnects >= 2);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("policy_violation_delay and max_connection_age must not be negative")
{
    auto cfg = quick_config();
    std::string detail;
    SUBCASE("policy_violation_delay")
    {
        cfg.policy_violation_delay = -1ms;
        CHECK(vigil::validate(cfg, &detail) == error_code(error::invalid_config));
        CHECK(detail.find("policy_violation_delay") != std::string::npos);
    }
    SUBCASE("max_connection_age")
    {
        cfg.max_connection_age = -1ms;
        CHECK(vigil::validate(cfg, &detail) == error_code(error::invalid_config));
        CHECK(detail.find("max_connection_age") != std::string::npos);
    }
}

// make-before-break ------------------------------------------------------------------------

// A free port on 127.0.0.1 for a server made after the supervisor that connects to it.
std::uint16_t free_port()
{
    asio::io_context ioc;
    asio::ip::tcp::acceptor a(ioc, asio::ip::tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
    return a.local_endpoint().port();
}

// A vigil::server on the test's io_context, as an exchange's feed: a connection that sends
// "subscribe" is answered 20 ms later (the snapshot being prepared) with an increasing counter,
// sent to every subscribed connection every millisecond, and "subscribed" after its first ten
// values. Other
// messages are echoed and recorded with the connection they came on. It counts how many
// connections it held at once.
struct counter_feed {
    counter_feed(asio::io_context& ioc, std::uint16_t port, std::size_t max_connections = 100)
        : ticker(ioc), srv(ioc.get_executor(), config(port, max_connections),
                           [this](vigil::server::connection_ptr c) { return echo(std::move(c)); })
    {
        srv.events().on_connected = [this](vigil::connection&) { max_open = std::max(max_open, ++open); };
        srv.events().on_disconnected = [this](vigil::connection& c) {
            --open;
            ends.push_back(c.last_disconnect());
        };
        srv.events().on_rejected = [this](const std::string&, const error_code&, const std::string&) { ++rejected; };
        REQUIRE_FALSE(srv.listen());
        asio::co_spawn(ioc, srv.run(), [this](std::exception_ptr, error_code) { stopped = true; });
        asio::co_spawn(ioc, tick(), asio::detached);
    }

    static vigil::server_config config(std::uint16_t port, std::size_t max_connections)
    {
        vigil::server_config cfg;
        cfg.port = port;
        cfg.max_connections = max_connections;
        cfg.retry_after = 1s;
        return cfg;
    }

    void stop()
    {
        ticking = false;
        ticker.cancel();
        srv.stop();
    }

    asio::awaitable<void> tick()
    {
        while (ticking) {
            ticker.expires_after(1ms);
            co_await ticker.async_wait(asio::as_tuple(asio::use_awaitable));
            auto value = std::make_shared<const std::string>(std::to_string(next++));
            for (const auto& c : srv.connections())
                if (subscribed.count(c->id()))
                    c->async_send(value, message_type::text, asio::detached);
        }
    }

    asio::awaitable<void> echo(vigil::server::connection_ptr c)
    {
        for (;;) {
            auto r = co_await c->receive();
            if (r.ec)
                co_return;
            if (r.data == "subscribe") {
                asio::steady_timer snapshot(c->get_executor(), 20ms);
                co_await snapshot.async_wait(asio::as_tuple(asio::use_awaitable));
                subscribed.insert(c->id());
                // The first values go out before the confirmation: a subscriber that waits for
                // it has seen the feed flow on the new connection while the old one still runs.
                const auto first = next;
                while (next < first + confirm_after && ticking) {
                    snapshot.expires_after(1ms);
                    co_await snapshot.async_wait(asio::as_tuple(asio::use_awaitable));
                }
                co_await c->send("subscribed");
                continue;
            }
            received.emplace_back(c->id(), r.data);
            std::string reply = "echo ";
            reply += r.data;
            co_await c->send(std::move(reply));
        }
    }

    asio::steady_timer ticker;
    vigil::server srv;
    bool ticking = true;
    bool stopped = false;
    std::uint64_t next = 0;
    std::uint64_t confirm_after = 10;  // values sent to a new subscriber before "subscribed"
    int open = 0;
    int max_open = 0;
    int rejected = 0;
    std::set<std::uint64_t> subscribed;  // connection ids
    std::vector<vigil::disconnect_info> ends;
    std::vector<std::pair<std::uint64_t, std::string>> received;  // (connection id, message)
};

// A supervisor and a counter feed on the same io_context, and what the supervisor's events said.
struct feed_rig {
    explicit feed_rig(vigil::supervisor_config cfg, std::size_t max_connections = 100)
        : h(local_url(port), std::move(cfg), vigil::constant_backoff(100ms)), feed(h.ioc, port, max_connections)
    {
        h.sup.events().on_reconnect = [this](const std::string& r) { reasons.push_back(r); };
        h.sup.events().on_replacement_failed = [this](const vigil::replacement_failure& f) {
            failures.push_back(f);
            failure_at_value.push_back(feed.next);
        };
        h.sup.session_event_handlers().on_disconnected = [this](const vigil::disconnect_info& i) {
            client_ends.push_back(i.reason);
        };
        h.sup.session_event_handlers().on_message = [this](std::string_view data, message_type) {
            h.messages.emplace_back(data);
            if (data == "subscribed")
                ++acks;
        };
    }

    // Each connection subscribes in its on_connected hook and is up once the feed confirmed.
    void subscribe_on_connect()
    {
        h.sup.on_connected([this](vigil::session& s) -> asio::awaitable<error_code> {
            const int before = acks;
            if (auto ec = co_await s.send("subscribe"))
                co_return ec;
            if (!co_await eventually([&] { return acks > before; }, 2s))
                co_return error::handshake_timeout;
            co_return error_code{};
        });
    }

    // Stops the supervisor, then the feed, and lets both finish.
    asio::awaitable<void> stop_all()
    {
        h.sup.stop();
        co_await eventually([this] { return h.run_done; }, 3s);
        feed.stop();
    }

    // The counter values received, in order of arrival (acks and echoes left out).
    std::vector<std::uint64_t> counters() const
    {
        std::vector<std::uint64_t> v;
        for (const auto& m : h.messages)
            if (!m.empty() && m.front() >= '0' && m.front() <= '9')
                v.push_back(std::stoull(m));
        return v;
    }

    // The same, duplicates merged.
    std::set<std::uint64_t> values() const
    {
        const auto all = counters();
        return {all.begin(), all.end()};
    }

    std::uint16_t port = free_port();
    harness h;
    counter_feed feed;
    std::vector<std::string> reasons;
    std::vector<vigil::replacement_failure> failures;
    std::vector<std::uint64_t> failure_at_value;
    std::vector<error_code> client_ends;
    int acks = 0;  // "subscribed" received, on any connection
};

// How many values between the lowest and the highest received are missing.
std::size_t missing(const std::set<std::uint64_t>& values)
{
    if (values.empty())
        return 0;
    return static_cast<std::size_t>(*values.rbegin() - *values.begin() + 1) - values.size();
}

vigil::supervisor_config aging(milliseconds age, bool make_before_break)
{
    auto cfg = quick_config();
    cfg.max_connection_age = age;
    cfg.make_before_break = make_before_break;
    cfg.min_delay = 2s;  // a retry would wait this long: none may happen
    return cfg;
}

TEST_CASE("make-before-break: across replacements of a 1 ms feed every value arrives, with two connections up at once")
{
    feed_rig r(aging(300ms, true));
    auto& h = r.h;
    r.subscribe_on_connect();
    bool replaced = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        replaced = co_await eventually([&] { return h.ups >= 4; }, 5s);
        co_await r.stop_all();
    });
    h.ioc.run_for(10s);

    REQUIRE(replaced);
    const auto values = r.values();
    CAPTURE(values.size());
    CHECK(values.size() > 500);  // about 0.9 s of a 1 ms feed
    CHECK(missing(values) == 0);
    // The new connection got ten values before its confirmation, while the old one still
    // delivered them: each overlap gave duplicates.
    CHECK(r.counters().size() > values.size());
    CHECK(r.feed.max_open == 2);
    REQUIRE(r.reasons.size() >= 3);
    for (const auto& reason : r.reasons)
        CHECK(reason == "max_connection_age");
    CHECK(h.retries.empty());
    CHECK(r.failures.empty());
    const auto c = h.sup.counters();
    CHECK(c.planned_reconnects >= 3);
    CHECK(c.connects >= 4);
    CHECK(c.attempts <= c.connects + 1);  // a replacement may have been under way at stop()
    CHECK(c.failed_replacements == 0);
    // Each replaced connection was closed by the client with 1000 and the reason.
    REQUIRE(r.feed.ends.size() >= 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(r.feed.ends[i].close_code == 1000);
        CHECK(r.feed.ends[i].close_reason == "max_connection_age");
    }
    REQUIRE(r.client_ends.size() >= 3);
    for (std::size_t i = 0; i < 3; ++i)
        CHECK_CODE(r.client_ends[i], error_code{});
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("make-before-break off (the control): one connection at a time, and the feed's values in between are lost")
{
    feed_rig r(aging(300ms, false));
    auto& h = r.h;
    r.subscribe_on_connect();
    bool replaced = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        replaced = co_await eventually([&] { return h.ups >= 4; }, 5s);
        co_await r.stop_all();
    });
    h.ioc.run_for(10s);

    REQUIRE(replaced);
    CHECK(r.feed.max_open == 1);
    const auto values = r.values();
    MESSAGE("values missed across 3 break-first replacements: ", missing(values));
    CHECK(missing(values) >= 3 * 5);  // the 20 ms of each new subscription, and the handshakes
    CHECK(r.counters().size() == values.size());  // one connection at a time: no duplicates
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("make-before-break: a refused replacement keeps the live connection, tried again before the cut")
{
    auto cfg = aging(600ms, true);
    cfg.min_delay = 50ms;
    cfg.max_retry_after = 0ms;  // ignore the 503's Retry-After of 1 s: the policy decides
    feed_rig r(cfg, 1);  // one connection: the replacement's upgrade is answered 503
    auto& h = r.h;
    r.subscribe_on_connect();
    bool refused_thrice = false;
    std::uint64_t last_value_then = 0;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        refused_thrice = co_await eventually([&] { return r.failures.size() >= 3; }, 5s);
        last_value_then = r.feed.next;
        // Messages keep flowing on the connection that stayed.
        co_await eventually([&] { return !r.values().empty() && *r.values().rbegin() > last_value_then + 50; }, 2s);
        co_await r.stop_all();
    });
    h.ioc.run_for(10s);

    REQUIRE(refused_thrice);
    CHECK(h.ups == 1);  // the first connection stayed up throughout
    // It ended only with stop(); every other end was a refused replacement's.
    REQUIRE(!r.client_ends.empty());
    CHECK_CODE(r.client_ends.back(), error_code{});
    for (std::size_t i = 0; i + 1 < r.client_ends.size(); ++i)
        CHECK(vigil::http_status_of(r.client_ends[i]) == 503);
    const auto values = r.values();
    CHECK(missing(values) == 0);
    CHECK(*values.rbegin() > last_value_then + 50);
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        const auto& f = r.failures[i];
        CHECK(vigil::http_status_of(f.last.reason) == 503);
        CHECK(f.failures == i + 1);
        CHECK(f.endpoint == 0);
        REQUIRE(f.retry_in.has_value());
        // The policy's 100 ms, no later than halfway to the cut, at least min_delay.
        CHECK(*f.retry_in <= 100ms);
        CHECK(*f.retry_in >= 50ms);
    }
    // One reconnect event per try: each failed, and one more may have been under way at stop().
    CHECK(r.reasons.size() >= r.failures.size());
    CHECK(r.reasons.size() <= r.failures.size() + 1);
    CHECK(h.retries.empty());  // not a failure of the supervisor's: no backoff wait
    const auto c = h.sup.counters();
    CHECK(c.failed_replacements == r.failures.size());
    CHECK(c.planned_reconnects == 0);
    CHECK(c.connects == 1);
    CHECK(r.feed.rejected >= 3);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("make-before-break: stop() during the overlap closes both connections")
{
    feed_rig r(aging(300ms, true));
    auto& h = r.h;
    int hooks = 0;
    steady::time_point stopped_at{};
    h.sup.on_connected([&](vigil::session&) -> asio::awaitable<error_code> {
        if (++hooks == 2) {
            // The replacement is connected, the live one still runs: stop now.
            stopped_at = steady::now();
            h.sup.stop();
            asio::steady_timer t(co_await asio::this_coro::executor, 2s);
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        co_return error_code{};
    });
    bool done = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        done = co_await eventually([&] { return h.run_done; }, 3s);
        co_await eventually([&] { return r.feed.open == 0; }, 2s);
        r.feed.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(done);
    CHECK_CODE(h.run_ec, error_code{});
    CHECK(hooks == 2);
    CHECK(h.ups == 1);  // the replacement never came up
    CHECK(ms_between(stopped_at, h.run_ended) < 1s);
    CHECK(r.feed.max_open == 2);
    CHECK(r.feed.open == 0);
    REQUIRE(r.feed.ends.size() == 2);
    for (const auto& e : r.feed.ends)
        CHECK(e.close_code == 1000);  // both closed with a close handshake
    CHECK(r.client_ends.size() == 2);
    CHECK(h.sup.counters().planned_reconnects == 0);
}

TEST_CASE("make-before-break: sends during the overlaps complete exactly once and reach the server in order")
{
    feed_rig r(aging(200ms, true));
    auto& h = r.h;
    constexpr std::size_t count = 300;
    bool all = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.ups == 1; }, 3s))
            co_return;
        asio::steady_timer t(co_await asio::this_coro::executor);
        for (std::size_t i = 0; i < count; ++i) {
            h.send(numbered(static_cast<int>(i)), i);
            t.expires_after(2ms);
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        all = co_await eventually(
            [&] {
                return std::all_of(h.fates.begin(), h.fates.end(), [](const auto& f) { return f.completions > 0; });
            },
            3s);
        co_await eventually([&] { return r.feed.received.size() >= count; }, 2s);
        co_await r.stop_all();
    });
    h.ioc.run_for(12s);

    REQUIRE(all);
    CHECK(h.ups >= 3);  // the sends spanned two replacements at least
    for (std::size_t i = 0; i < count; ++i) {
        CAPTURE(i);
        CHECK(h.fates[i].completions == 1);
        CHECK_CODE(h.fates[i].ec, error_code{});
    }
    // The server got each once, in order, and a later message never went back to an older
    // connection.
    REQUIRE(r.feed.received.size() == count);
    std::uint64_t conn = 0;
    for (std::size_t i = 0; i < count; ++i) {
        CAPTURE(i);
        CHECK(r.feed.received[i].second == numbered(static_cast<int>(i)));
        CHECK(r.feed.received[i].first >= conn);
        conn = r.feed.received[i].first;
    }
    CHECK(h.sup.counters().messages_sent == count);
    CHECK(h.sup.counters().messages_failed == 0);
}

TEST_CASE("make-before-break: reconnect() opens the new connection before closing the old one with its reason")
{
    feed_rig r(aging(0ms, true));
    auto& h = r.h;
    r.subscribe_on_connect();
    bool replaced = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        if (!co_await eventually([&] { return h.ups == 1 && r.values().size() > 50; }, 3s))
            co_return;
        h.sup.reconnect("checksum mismatch");
        replaced = co_await eventually([&] { return h.ups == 2 && r.feed.ends.size() == 1; }, 3s);
        co_await eventually([&] { return r.values().size() > 150; }, 2s);
        co_await r.stop_all();
    });
    h.ioc.run_for(10s);

    REQUIRE(replaced);
    CHECK(r.reasons == std::vector<std::string>{"checksum mismatch"});
    CHECK(r.feed.max_open == 2);
    CHECK(r.feed.ends[0].close_code == 1000);
    CHECK(r.feed.ends[0].close_reason == "checksum mismatch");
    CHECK(missing(r.values()) == 0);
    CHECK(h.retries.empty());
    CHECK(h.sup.counters().planned_reconnects == 1);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("make-before-break: the old connection dying during the overlap leaves the new attempt to carry on")
{
    auto cfg = aging(300ms, true);
    feed_rig r(cfg);
    auto& h = r.h;
    r.subscribe_on_connect();
    // When the replacement arrives, the server tears the first connection down (no close
    // handshake) while the replacement's subscription is still being prepared.
    r.feed.srv.events().on_connected = [&](vigil::connection& c) {
        r.feed.max_open = std::max(r.feed.max_open, ++r.feed.open);
        if (c.id() == 2)
            for (const auto& other : r.feed.srv.connections())
                if (other->id() == 1)
                    other->cancel();
    };
    bool up_again = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        up_again = co_await eventually([&] { return h.ups == 2; }, 3s);
        co_await eventually([&] { return r.values().size() > 100; }, 2s);
        co_await r.stop_all();
    });
    h.ioc.run_for(10s);

    REQUIRE(up_again);
    REQUIRE(!r.client_ends.empty());
    CHECK(r.client_ends[0]);  // the first connection failed (torn down), not closed by us
    CHECK(r.reasons.size() == 1);
    CHECK(h.retries.empty());  // no backoff wait: the replacement became the attempt
    const auto c = h.sup.counters();
    CHECK(c.attempts == 2);
    CHECK(c.connects == 2);
    CHECK(c.planned_reconnects == 0);  // nothing was handed over
    CHECK(c.failed_replacements == 0);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("make-before-break: failback tries the primary beside the backup, and keeps the backup while it is down")
{
    auto cfg = quick_config();
    cfg.stable_after = 200ms;
    cfg.failback_after = 250ms;
    cfg.min_delay = 2s;  // a retry would wait this long: none may happen
    cfg.make_before_break = true;
    failover_rig f(cfg);
    auto& h = f.h;
    std::vector<vigil::replacement_failure> failures;
    h.sup.events().on_replacement_failed = [&](const vigil::replacement_failure& r) { failures.push_back(r); };
    bool back_on_primary = false;
    h.start_run();
    h.spawn([&]() -> asio::awaitable<void> {
        // On the backup; the primary refuses the first failback tries.
        if (!co_await eventually([&] { return h.ups == 1 && failures.size() >= 2; }, 3s))
            co_return;
        f.restore_primary();
        back_on_primary = co_await eventually([&] { return !f.up_on.empty() && f.up_on.back() == 0; }, 3s);
        co_await eventually([&] { return f.backup.closes() >= 1; }, 2s);
        h.sup.stop();
    });
    h.ioc.run_for(8s);

    REQUIRE(back_on_primary);
    CHECK(f.up_on == std::vector<std::size_t>{1, 0});  // the backup was kept until then
    REQUIRE(failures.size() >= 2);
    for (std::size_t i = 0; i < failures.size(); ++i) {
        CAPTURE(i);
        CHECK_CODE(failures[i].last.reason, error_code(asio::error::connection_refused));
        CHECK(failures[i].endpoint == 0);
        CHECK(failures[i].failures == i + 1);
        REQUIRE(failures[i].retry_in.has_value());
        CHECK(*failures[i].retry_in == 250ms);  // the next try comes a failback period later
    }
    CHECK(f.reasons.size() == failures.size() + 1);
    for (const auto& r : f.reasons)
        CHECK(r == "failback");
    // Only the first attempt (to the primary, refused) was a failure of the supervisor's.
    REQUIRE(h.retries.size() == 1);
    CHECK(h.retries[0].delay == 0ms);
    CHECK(f.backup.upgrades() == 1);
    CHECK(f.backup.closes() >= 1);  // closed by us once the primary was up
    CHECK(f.primary->upgrades() == 1);
    CHECK(h.sup.counters().planned_reconnects == 1);
    REQUIRE(h.run_done);
    CHECK_CODE(h.run_ec, error_code{});
}

TEST_CASE("make-before-break needs delivery_guarantee::written")
{
    auto cfg = quick_config();
    cfg.make_before_break = true;
    cfg.delivery = vigil::delivery_guarantee::confirmed;
    std::string detail;
    CHECK(vigil::validate(cfg, &detail) == error_code(error::invalid_config));
    CHECK(detail.find("make_before_break") != std::string::npos);
    cfg.delivery = vigil::delivery_guarantee::written;
    CHECK_FALSE(vigil::validate(cfg));
}

}  // TEST_SUITE
