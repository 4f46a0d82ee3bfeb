// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The rules of time of a connection (lib/detail/liveness), stepped with a fake clock: no
// socket, no real time. Every bound the headers promise is checked here exactly.

#include "detail/liveness.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <vector>

namespace {

using namespace std::chrono_literals;
using vigil::detail::expiry;
using vigil::detail::liveness;
using vigil::detail::path_news;
using vigil::detail::path_watch;
using vigil::detail::tcp_view;
using vigil::detail::write_confirmation;
using vigil::detail::on_grid;
using vigil::detail::ping_carrier;
using vigil::detail::time_point;
using vigil::detail::timer_grain;
using duration = vigil::detail::duration;

// An instant off the 10 ms grid, so that rounding shows.
const time_point t0 = time_point(std::chrono::hours(1000) + 3ms);

vigil::session_config settings(std::chrono::milliseconds interval = 1000ms, std::chrono::milliseconds timeout = 500ms)
{
    vigil::session_config s;
    s.ping_interval = interval;
    s.pong_timeout = timeout;
    s.idle_timeout = 0ms;
    s.write_timeout = 10s;
    s.close_timeout = 5s;
    return s;
}

// Plays the session's part: wakes at the grid point of the next wake-up (plus how late the
// event loop is), lets the heartbeat ping if one is due, then asks the watchdog.
struct session_model {
    explicit session_model(vigil::session_config s, time_point start = t0, std::uint64_t seed = 1,
                           write_confirmation confirm = write_confirmation::off, path_watch watch = path_watch::off)
        : cfg(std::move(s))
    {
        l.start(cfg, confirm, watch, start, seed);
        now = start;
    }

    expiry tick(duration late = 0ms)
    {
        const auto wake = l.next_wakeup();
        REQUIRE(wake != time_point::max());
        now = on_grid(wake) + late;
        if (auto stall = l.woke(on_grid(wake), now))
            stalls.push_back(*stall);
        if (l.ping_due() <= now) {
            l.ping_sent(now, ping_carrier::control_frame);
            pings.push_back(now);
            l.ping_write_done();
        }
        return l.expired(now);
    }

    // Ticks until a verdict; a cap guards against a rule that never decides.
    expiry run_until_verdict(int cap = 100000)
    {
        for (int i = 0; i < cap; ++i) {
            if (auto e = tick(); e != expiry::none)
                return e;
        }
        FAIL("no verdict after " << cap << " wake-ups");
        return expiry::none;
    }

    vigil::session_config cfg;  // the rules read it for as long as the connection lasts
    liveness l;
    time_point now;
    std::vector<time_point> pings;
    std::vector<duration> stalls;
};

}  // namespace

TEST_SUITE("liveness")
{
    TEST_CASE("the grid: wake-ups round up to 10 ms, never down")
    {
        const time_point base(std::chrono::hours(1));
        CHECK(on_grid(base) == base);
        CHECK(on_grid(base + 1ns) == base + 10ms);
        CHECK(on_grid(base + 9ms) == base + 10ms);
        CHECK(on_grid(base + 10ms) == base + 10ms);
        CHECK(on_grid(time_point::max()) == time_point::max());
        CHECK(on_grid(time_point::max() - 1ms) == time_point::max());
        CHECK(on_grid(time_point{}) == time_point{});
    }

    TEST_CASE("a vanished peer is declared dead exactly interval + timeout after its last frame, on the grid")
    {
        session_model m(settings(1000ms, 500ms));
        const auto verdict = m.run_until_verdict();
        CHECK(verdict == expiry::pong);
        REQUIRE(m.pings.size() == 1);
        CHECK(m.pings[0] == on_grid(t0 + 1000ms));
        // The bound: on the grid point at or after last frame + interval + timeout.
        CHECK(m.now == on_grid(t0 + 1500ms));
        CHECK(m.now - m.l.last_received() <= 1500ms + timer_grain);
    }

    TEST_CASE("a late event loop does not add the grid twice")
    {
        // The ping's tick comes 9 ms after the grid point, which is itself 9 ms after the
        // ping was due; the deadline still counts from when it was due, so the verdict falls
        // on the first grid point after interval + timeout, not a grain later as when the
        // deadline counted from the late send (the demo's 1,520 ms for 1,000 + 500).
        session_model m(settings(1000ms, 500ms), time_point(std::chrono::hours(2)) + 1ms);
        CHECK(m.tick(9ms) == expiry::none);
        REQUIRE(m.pings.size() == 1);
        const auto start = time_point(std::chrono::hours(2)) + 1ms;
        CHECK(m.l.pong_deadline() == start + 1500ms);
        CHECK(m.tick(0ms) == expiry::pong);
        CHECK(m.now == on_grid(start + 1500ms));
        CHECK(m.now - start <= 1500ms + timer_grain);
    }

    TEST_CASE("a ping sent long after it was due still gives the peer half its pong_timeout")
    {
        // Our own loop stalled for 3 s: the verdict must not fall the moment the ping leaves.
        session_model m(settings(1000ms, 500ms));
        m.now = t0 + 4000ms;
        REQUIRE(m.l.ping_due() <= m.now);
        m.l.ping_sent(m.now, ping_carrier::control_frame);
        CHECK(m.l.expired(m.now) == expiry::none);
        CHECK(m.l.pong_deadline() == m.now + 250ms);
        CHECK(m.l.expired(m.now + 249ms) == expiry::none);
        CHECK(m.l.expired(m.now + 250ms) == expiry::pong);
    }

    TEST_CASE("any frame after a ping proves the peer alive, not only the pong")
    {
        session_model m(settings(1000ms, 500ms));
        CHECK(m.tick() == expiry::none);  // the ping
        REQUIRE(m.pings.size() == 1);
        m.l.frame_received(m.pings[0] + 100ms);  // a data frame, say; no pong ever
        CHECK(m.l.expired(m.pings[0] + 600ms) == expiry::none);
        CHECK(m.l.pong_deadline() == time_point::max());
        // The next ping is due an interval after that frame.
        CHECK(m.l.ping_due() == m.pings[0] + 1100ms);
    }

    TEST_CASE("the pong reports its round trip once, for the ping it answers")
    {
        session_model m(settings(1000ms, 500ms));
        CHECK_FALSE(m.l.pong_received(t0 + 10ms).has_value());  // no ping yet
        m.tick();
        REQUIRE(m.pings.size() == 1);
        auto news = m.l.pong_received(m.pings[0] + 42ms);
        REQUIRE(news.has_value());
        CHECK(news->rtt == 42ms);
        CHECK_FALSE(m.l.pong_received(m.pings[0] + 50ms).has_value());  // a repeat
    }

    TEST_CASE("idle mode sends no ping on a busy connection; fixed mode pings on schedule")
    {
        for (auto mode : {vigil::ping_mode::idle, vigil::ping_mode::fixed}) {
            CAPTURE(static_cast<int>(mode));
            auto s = settings(1000ms, 500ms);
            s.ping = mode;
            session_model m(s);
            // Frames every 100 ms for 10 s (and the pings due by then answered at once); the
            // model wakes whenever something is due.
            int pings_answered = 0;
            for (auto t = t0 + 100ms; t <= t0 + 10s + 100ms; t += 100ms) {
                while (on_grid(m.l.next_wakeup()) <= t) {
                    CHECK(m.tick() == expiry::none);
                }
                m.l.data_received(t);
                if (m.l.pong_received(t))
                    ++pings_answered;
            }
            if (mode == vigil::ping_mode::idle) {
                CHECK(m.pings.empty());
            } else {
                CHECK(m.pings.size() == 10);
                CHECK(pings_answered == 10);
                for (std::size_t i = 0; i < m.pings.size(); ++i)
                    CHECK(m.pings[i] == on_grid(t0 + 1000ms * static_cast<int>(i + 1)));
            }
        }
    }

    TEST_CASE("fixed mode: a peer that stops answering is dead within interval + timeout")
    {
        auto s = settings(1000ms, 500ms);
        s.ping = vigil::ping_mode::fixed;
        session_model m(s);
        m.tick();  // ping 1 at +1000
        m.l.pong_received(m.now + 20ms);
        const auto last = m.now + 20ms;
        CHECK(m.run_until_verdict() == expiry::pong);
        CHECK(m.now - last <= 1500ms + timer_grain);
    }

    TEST_CASE("jitter: each ping goes up to ping_jitter * interval early, spread, never late")
    {
        auto s = settings(1000ms, 500ms);
        s.ping_jitter = 0.2;
        session_model m(s, t0, 12345);
        std::vector<duration> early;
        for (int i = 0; i < 200; ++i) {
            const auto base = std::max(m.l.last_received(), m.pings.empty() ? t0 : m.pings.back()) + 1000ms;
            const auto due = m.l.ping_due();
            CHECK(due <= base);
            CHECK(due >= base - 200ms);
            early.push_back(base - due);
            m.tick();
            REQUIRE(m.pings.size() == static_cast<std::size_t>(i + 1));
            m.l.pong_received(m.now + 1ms);
        }
        const auto [lo, hi] = std::minmax_element(early.begin(), early.end());
        CHECK(*lo < 20ms);
        CHECK(*hi > 180ms);
        // Reproducible for a seed.
        session_model again(s, t0, 12345);
        CHECK(again.l.ping_due() == t0 + 1000ms - early[0]);
    }

    TEST_CASE("reading paused: no verdict and no ping until it resumes, then both start afresh")
    {
        auto s = settings(1000ms, 500ms);
        s.idle_timeout = 3s;
        session_model m(s);
        m.tick();  // the ping
        m.l.reading_paused();
        CHECK(m.l.ping_due() == time_point::max());
        CHECK(m.l.next_deadline() == time_point::max());
        CHECK(m.l.expired(t0 + 1h) == expiry::none);
        const auto resumed = t0 + 1h;
        m.l.reading_resumed(resumed);
        CHECK(m.l.last_received() == resumed);
        CHECK(m.l.ping_due() == resumed + 1000ms);
        CHECK(m.l.expired(resumed + 2999ms) == expiry::none);
        m.now = resumed;
        CHECK(m.run_until_verdict() == expiry::pong);
        CHECK(m.now == on_grid(resumed + 1500ms));
    }

    TEST_CASE("idle_timeout: data resets it, heartbeat traffic does not")
    {
        auto s = settings(1000ms, 500ms);
        s.idle_timeout = 3s;
        session_model m(s);
        m.l.data_received(t0 + 500ms);
        // Pongs (and app-level heartbeat messages) are frames, not data.
        for (int i = 0; i < 10 && m.l.expired(m.now) == expiry::none; ++i) {
            m.tick();
            if (m.l.expired(m.now) == expiry::none)
                m.l.pong_received(m.now + 5ms);
        }
        CHECK(m.l.expired(t0 + 3499ms) == expiry::none);
        CHECK(m.l.expired(t0 + 3500ms) == expiry::idle);
        // Saying goodbye starts the close deadline and ends the idle watch.
        m.l.close_started(t0 + 3500ms);
        CHECK(m.l.expired(t0 + 8499ms) == expiry::none);
        CHECK(m.l.expired(t0 + 8500ms) == expiry::close);
    }

    TEST_CASE("a write that stalls ends the connection after write_timeout; one that finishes does not")
    {
        auto s = settings(0ms, 0ms);  // no heartbeat: only the write deadline is watched
        s.write_timeout = 2s;
        session_model m(s);
        CHECK(m.l.next_wakeup() == time_point::max());
        m.l.write_started(t0 + 100ms);
        CHECK(m.l.next_deadline() == t0 + 2100ms);
        m.l.write_finished();
        CHECK(m.l.next_deadline() == time_point::max());
        m.l.write_started(t0 + 200ms);
        CHECK(m.l.expired(t0 + 2199ms) == expiry::none);
        CHECK(m.l.expired(t0 + 2200ms) == expiry::write);
        s.write_timeout = 0ms;  // off
        session_model off(s);
        off.l.write_started(t0);
        CHECK(off.l.expired(t0 + 24h) == expiry::none);
    }

    TEST_CASE("the write deadline counts from the last progress of a long write")
    {
        auto s = settings(0ms, 0ms);
        s.write_timeout = 2s;
        session_model m(s);
        m.l.write_started(t0);
        // A piece written every 1.5 s: slow, never stalled, however long the message.
        for (int piece = 1; piece <= 10; ++piece) {
            const auto at = t0 + 1500ms * piece;
            CHECK(m.l.expired(at - 1ms) == expiry::none);
            m.l.write_progressed(at);
            CHECK(m.l.next_deadline() == at + 2s);
        }
        const auto last = t0 + 15s;
        m.l.write_progressed(last - 1s);  // an older report moves nothing back
        CHECK(m.l.next_deadline() == last + 2s);
        CHECK(m.l.expired(last + 2s) == expiry::write);  // then no progress for write_timeout
        m.l.write_finished();
        m.l.write_progressed(last + 3s);  // no write in progress: nothing to move
        CHECK(m.l.next_deadline() == time_point::max());
    }

    TEST_CASE("the close deadline: from its start, once, and no pings meanwhile")
    {
        session_model m(settings(1000ms, 500ms));
        m.l.close_started(t0 + 100ms);
        m.l.close_started(t0 + 900ms);  // later calls change nothing
        CHECK(m.l.ping_due() == time_point::max());
        CHECK(m.l.next_wakeup() == t0 + 5100ms);
        CHECK(m.l.expired(t0 + 5099ms) == expiry::none);
        CHECK(m.l.expired(t0 + 5100ms) == expiry::close);
    }

    TEST_CASE("the pong deadline comes first when several have passed")
    {
        auto s = settings(1000ms, 500ms);
        s.idle_timeout = 1200ms;
        s.write_timeout = 1100ms;
        session_model m(s);
        m.l.write_started(t0);
        m.tick();  // ping at +1000
        CHECK(m.l.expired(t0 + 1600ms) == expiry::pong);
        m.l.frame_received(t0 + 1010ms);
        CHECK(m.l.expired(t0 + 1600ms) == expiry::idle);
    }

    TEST_CASE("a protocol ping still being written holds back the next one")
    {
        session_model m(settings(1000ms, 500ms));
        m.now = on_grid(m.l.ping_due());
        m.l.ping_sent(m.now, ping_carrier::control_frame);
        m.l.frame_received(m.now + 1ms);  // proof of life, so the next ping would be due
        CHECK(m.l.ping_due() == time_point::max());
        m.l.ping_write_done();
        CHECK(m.l.ping_due() == m.now + 1ms + 1000ms);
        // A ping that travels as a message goes through the send queue: nothing to hold.
        m.l.ping_sent(m.now + 2s, ping_carrier::message);
        m.l.frame_received(m.now + 2001ms);
        CHECK(m.l.ping_due() == m.now + 3001ms);
    }

    TEST_CASE("confirming writes: a ping at once after a write, one in flight, the pong confirms")
    {
        session_model m(settings(1000ms, 500ms), t0, 1, write_confirmation::on);
        CHECK(m.l.ping_due() == t0 + 1000ms);  // nothing written: the usual heartbeat
        m.l.message_written();
        m.l.message_written();
        CHECK(m.l.confirmation_due());
        CHECK(m.l.ping_due() <= t0);  // due now, whenever the writes completed
        m.tick();
        REQUIRE(m.pings.size() == 1);
        m.l.message_written();  // written after the ping: not covered by it
        CHECK_FALSE(m.l.confirmation_due());
        CHECK(m.l.ping_due() == m.pings[0] + 1000ms);  // one in flight at a time
        auto news = m.l.pong_received(m.pings[0] + 3ms);
        REQUIRE(news.has_value());
        CHECK(news->confirmed == 2);
        CHECK(m.l.confirmation_due());
        CHECK(m.l.ping_due() == m.pings[0]);  // the next one goes as soon as the pong is in
        m.now = m.pings[0] + 3ms;  // the session sends it on the pong, not on a wake-up
        m.l.ping_sent(m.now, ping_carrier::control_frame);
        m.l.ping_write_done();
        CHECK_FALSE(m.l.confirmation_due());
        news = m.l.pong_received(m.now + 3ms);
        REQUIRE(news.has_value());
        CHECK(news->confirmed == 3);
        CHECK(m.l.ping_due() == m.now + 3ms + 1000ms);
    }

    TEST_CASE("no heartbeat: no ping, no pong verdict, the other deadlines still hold")
    {
        auto s = settings(0ms, 0ms);
        s.idle_timeout = 2s;
        session_model m(s);
        CHECK(m.l.ping_due() == time_point::max());
        CHECK(m.l.pong_deadline() == time_point::max());
        CHECK(m.run_until_verdict() == expiry::idle);
        CHECK(m.now == on_grid(t0 + 2s));
        CHECK(m.pings.empty());
    }

    TEST_CASE("start() forgets the previous connection")
    {
        session_model m(settings(1000ms, 500ms));
        m.l.write_started(t0);
        m.l.close_started(t0);
        m.l.reading_paused();
        m.l.message_written();
        const auto again = t0 + 1h;
        m.l.start(m.cfg, write_confirmation::off, path_watch::off, again, 7);
        CHECK(m.l.next_deadline() == time_point::max());
        CHECK(m.l.ping_due() == again + 1000ms);
        CHECK(m.l.last_received() == again);
    }
}

// What the kernel says of a connection, made up: `unacked` segments of ours unacknowledged,
// the oldest retransmitted `retransmits` times, the last ACK `since_ack` ago.
tcp_view kernel(std::uint32_t unacked, std::uint32_t retransmits, std::chrono::milliseconds since_ack = 0ms,
                std::uint32_t queued = 0)
{
    tcp_view v;
    v.from = tcp_view::source::kernel;
    v.unacked = unacked;
    v.retransmits = retransmits;
    v.since_ack = since_ack;
    v.queued = queued;
    return v;
}

TEST_SUITE("diagnosis")
{
    using vigil::diagnosis;

    TEST_CASE("diagnosis names are the ones the command-line tools print")
    {
        CHECK(vigil::diagnosis_name(diagnosis::none) == "none");
        CHECK(vigil::diagnosis_name(diagnosis::network) == "network");
        CHECK(vigil::diagnosis_name(diagnosis::peer_unresponsive) == "peer_unresponsive");
        CHECK(vigil::diagnosis_name(diagnosis::local_stall) == "local_stall");
        CHECK(vigil::diagnosis_name(diagnosis::unknown) == "unknown");
    }

    TEST_CASE("the stall threshold is a quarter of pong_timeout unless set")
    {
        session_model m(settings(1000ms, 500ms));
        CHECK(m.l.stall_threshold() == 125ms);
        auto cfg = settings(1000ms, 500ms);
        cfg.stall_threshold = 40ms;
        session_model n(cfg);
        CHECK(n.l.stall_threshold() == 40ms);
    }

    TEST_CASE("a wake-up later than the threshold is a stall, reported once")
    {
        session_model m(settings(1000ms, 500ms));
        CHECK(m.tick(125ms) == expiry::none);  // exactly the threshold: not a stall
        CHECK(m.stalls.empty());
        // The pong deadline, found 300 ms late: a stall of 300 ms.
        CHECK(m.tick(300ms) == expiry::pong);
        REQUIRE(m.stalls.size() == 1);
        CHECK(m.stalls[0] == 300ms);
        // Looked at again (the deadline is still in the past): the same stall, not a new one.
        CHECK_FALSE(m.l.woke(on_grid(m.l.next_wakeup()), m.now + 5ms));
        // ...whose lateness still stands for the verdict.
        CHECK(m.l.diagnose(m.now + 5ms, kernel(1, 2)) == diagnosis::local_stall);
    }

    TEST_CASE("whose fault: the loop first, then the kernel's view")
    {
        session_model m(settings(1000ms, 500ms));
        REQUIRE(m.run_until_verdict() == expiry::pong);
        const auto ping = m.pings.at(0);
        const auto since_ping = std::chrono::duration_cast<std::chrono::milliseconds>(m.now - ping);
        // Our ping unacknowledged and retransmitted: the path.
        CHECK(m.l.diagnose(m.now, kernel(1, 2, since_ping + 100ms)) == diagnosis::network);
        // Unacknowledged, not yet retransmitted (a retransmission timeout longer than
        // pong_timeout), but no ACK at all since the ping: the path still.
        CHECK(m.l.diagnose(m.now, kernel(1, 0, since_ping)) == diagnosis::network);
        // Something in flight but ACKs keep coming since the ping: the peer's kernel is there.
        CHECK(m.l.diagnose(m.now, kernel(1, 0, 20ms)) == diagnosis::peer_unresponsive);
        // Everything acknowledged: the peer's kernel answers, its application does not.
        CHECK(m.l.diagnose(m.now, kernel(0, 0, 480ms)) == diagnosis::peer_unresponsive);
        // Our own host's packets dropped on the way out: nothing counts as sent, the ping
        // waits in the send queue, and no ACK came since: the path.
        CHECK(m.l.diagnose(m.now, kernel(0, 0, since_ping + 300ms, 60)) == diagnosis::network);
        // Queued behind a full window the peer keeps acknowledging: the peer.
        CHECK(m.l.diagnose(m.now, kernel(0, 0, 30ms, 60)) == diagnosis::peer_unresponsive);
        // No view (not Linux, not TCP).
        CHECK(m.l.diagnose(m.now, tcp_view{}) == diagnosis::unknown);
    }

    TEST_CASE("a verdict found by a late wake-up is our own loop's, whatever the kernel says")
    {
        session_model m(settings(1000ms, 500ms));
        CHECK(m.tick() == expiry::none);  // the ping
        CHECK(m.tick(200ms) == expiry::pong);
        CHECK(m.l.diagnose(m.now, kernel(1, 3)) == diagnosis::local_stall);
        CHECK(m.l.diagnose(m.now, tcp_view{}) == diagnosis::local_stall);
    }

    TEST_CASE("no look at the path unless watching, and none when no pong is awaited")
    {
        session_model off(settings(1000ms, 500ms));
        CHECK(off.tick() == expiry::none);
        CHECK(off.l.path_check_due() == time_point::max());

        session_model m(settings(1000ms, 500ms), t0, 1, write_confirmation::off, path_watch::on);
        CHECK(m.l.path_check_due() == time_point::max());  // no ping yet
        CHECK(m.tick() == expiry::none);
        const auto ping = m.pings.at(0);
        CHECK(m.l.path_step() == 50ms);
        CHECK(m.l.path_check_due() == ping + 50ms);
        CHECK(m.l.next_wakeup() == ping + 50ms);
        // The pong: nothing more to look at until the next ping.
        REQUIRE(m.l.pong_received(ping + 2ms));
        CHECK(m.l.path_check_due() == time_point::max());
    }

    TEST_CASE("a retransmitted ping is a suspicion, once per ping; the verdict still waits")
    {
        session_model m(settings(1000ms, 500ms), t0, 1, write_confirmation::off, path_watch::on);
        CHECK(m.tick() == expiry::none);
        const auto ping = m.pings.at(0);
        CHECK(m.l.path_checked(ping + 50ms, kernel(1, 0, 50ms)) == path_news::quiet);
        CHECK(m.l.path_check_due() == ping + 100ms);
        // A late wake-up looks once, not once per step missed.
        CHECK(m.l.path_checked(ping + 260ms, kernel(1, 1, 260ms)) == path_news::suspect);
        CHECK(m.l.path_check_due() == time_point::max());
        CHECK(m.l.expired(ping + 260ms) == expiry::none);
        CHECK(m.l.expired(m.l.pong_deadline()) == expiry::pong);
        // The next ping is watched afresh.
        m.l.ping_sent(ping + 1000ms, ping_carrier::control_frame);
        CHECK(m.l.path_check_due() == ping + 1050ms);
    }

    TEST_CASE("a host that cannot send at all is suspected once TCP's shortest RTO has passed")
    {
        session_model m(settings(1000ms, 500ms), t0, 1, write_confirmation::off, path_watch::on);
        CHECK(m.tick() == expiry::none);
        const auto ping = m.pings.at(0);
        // The ping never left (unacked 0, retransmits 0), still queued; no ACK since.
        CHECK(m.l.path_checked(ping + 150ms, kernel(0, 0, 400ms, 60)) == path_news::quiet);
        CHECK(m.l.path_checked(ping + 200ms, kernel(0, 0, 450ms, 60)) == path_news::suspect);
    }

    TEST_CASE("end_on_suspect: the first unacknowledged retransmission is the verdict")
    {
        auto cfg = settings(1000ms, 500ms);
        cfg.end_on_suspect = true;
        session_model m(cfg, t0, 1, write_confirmation::off, path_watch::on);
        CHECK(m.tick() == expiry::none);
        const auto ping = m.pings.at(0);
        // TCP's first retransmission comes one RTO (200 ms at least) after the ping; the
        // next look after it ends the connection: within RTO + one step.
        for (auto at = ping + 50ms; at < ping + 200ms; at += 50ms)
            CHECK(m.l.path_checked(at, kernel(1, 0, std::chrono::duration_cast<std::chrono::milliseconds>(at - ping))) ==
                  path_news::quiet);
        CHECK(m.l.path_checked(ping + 250ms, kernel(1, 1, 250ms)) == path_news::dead);
    }

    TEST_CASE("looks at the path stop before the pong deadline, which looks itself")
    {
        session_model m(settings(1000ms, 500ms), t0, 1, write_confirmation::off, path_watch::on);
        CHECK(m.tick() == expiry::none);
        const auto ping = m.pings.at(0);
        for (auto at = ping + 50ms; at < ping + 500ms; at += 50ms)
            CHECK(m.l.path_checked(at, kernel(0, 0)) == path_news::quiet);
        CHECK(m.l.path_check_due() == time_point::max());
        CHECK(m.l.next_wakeup() == m.l.pong_deadline());
    }
}

TEST_CASE("liveness: a verdict held back by unread bytes gives up after write_timeout without a frame read")
{
    auto cfg = settings();
    cfg.write_timeout = 2s;
    liveness l;
    l.start(cfg, write_confirmation::off, path_watch::off, t0, 1);
    CHECK_FALSE(l.unread_held(t0 + 10s));  // held from now
    CHECK_FALSE(l.unread_held(t0 + 11s));
    // A frame read: the read moves, the count starts again.
    l.frame_received(t0 + 11500ms);
    CHECK_FALSE(l.unread_held(t0 + 12s));
    CHECK_FALSE(l.unread_held(t0 + 13999ms));
    CHECK(l.unread_held(t0 + 14s));
    // write_timeout zero: never.
    cfg.write_timeout = 0ms;
    liveness off;
    off.start(cfg, write_confirmation::off, path_watch::off, t0, 1);
    CHECK_FALSE(off.unread_held(t0));
    CHECK_FALSE(off.unread_held(t0 + 1h));
}
