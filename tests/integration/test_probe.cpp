// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-probe end to end: the built binary (its path in the VIGIL_PROBE environment
// variable) runs against an in-process peer, and its JSON lines are checked one by one.
// Every run is bounded: a probe that outlives its limit is killed and the test fails.

#include "integration_config.h"

#include <support/peer.hpp>
#include <support/scrape.hpp>
#include <support/testing.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using vigil::test::peer;
using vigil::test::peer_behaviour;

#ifdef VIGIL_PROBE_HAS_METRICS
constexpr bool probe_has_metrics = true;
#else
constexpr bool probe_has_metrics = false;
#endif
using vigil::test::peer_options;
using vigil::test::tolerance;

struct probe_run {
    // The exit status, or -1 when the probe died of a signal (ours after a timeout, too).
    int exit_code = -1;
    bool timed_out = false;
    std::vector<json> events;
    std::vector<std::string> bad_lines;
    std::string err;
    double wall_seconds = 0;
};

struct probe_options {
    std::chrono::milliseconds limit = 5s;
    // Written to the probe's stdin, which is then closed; without it stdin is /dev/null.
    std::optional<std::string> stdin_text;
    // Called for each JSON line as it arrives, with the probe's pid.
    std::function<void(const json&, pid_t)> on_event;
};

void close_fd(int& fd)
{
    if (fd >= 0) {
        ::close(fd);
        fd = -1;
    }
}

probe_run run_probe(const std::vector<std::string>& args, const probe_options& opts = {})
{
    const char* path = std::getenv("VIGIL_PROBE");
    REQUIRE_MESSAGE(path != nullptr, "VIGIL_PROBE must name the vigil-probe binary");
    // A probe that died before reading its stdin must fail the test, not kill it.
    std::signal(SIGPIPE, SIG_IGN);

    int out[2] = {-1, -1};
    int err[2] = {-1, -1};
    int in[2] = {-1, -1};
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
    if (opts.stdin_text) {
        REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    }

    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    if (opts.stdin_text) {
        ::posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    } else {
        ::posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    }
    ::posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    ::posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);

    std::vector<std::string> storage;
    storage.reserve(args.size() + 1);
    storage.emplace_back(path);
    storage.insert(storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : storage) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);

    auto start = clock_type::now();
    pid_t pid = -1;
    int spawn_error = ::posix_spawn(&pid, path, &actions, nullptr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    close_fd(out[1]);
    close_fd(err[1]);
    close_fd(in[0]);
    REQUIRE_MESSAGE(spawn_error == 0, "cannot start ", path);

    if (opts.stdin_text) {
        std::string_view rest = *opts.stdin_text;
        while (!rest.empty()) {
            auto n = ::write(in[1], rest.data(), rest.size());
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            rest.remove_prefix(static_cast<std::size_t>(n));
        }
        close_fd(in[1]);
    }

    probe_run run;
    auto deadline = start + opts.limit;
    std::string pending;
    auto take_lines = [&] {
        for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
            std::string line = pending.substr(0, nl);
            pending.erase(0, nl + 1);
            auto j = json::parse(line, nullptr, false);
            if (j.is_discarded() || !j.is_object()) {
                run.bad_lines.push_back(line);
                continue;
            }
            run.events.push_back(j);
            if (opts.on_event) {
                opts.on_event(j, pid);
            }
        }
    };

    while (out[0] >= 0 || err[0] >= 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
        if (left <= 0ms) {
            run.timed_out = true;
            break;
        }
        pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
        int ready = ::poll(fds, 2, static_cast<int>(left.count()));
        if (ready < 0 && errno != EINTR) {
            break;
        }
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
                continue;
            }
            char chunk[4096];
            auto n = ::read(fds[i].fd, chunk, sizeof chunk);
            if (n > 0) {
                (i == 0 ? pending : run.err).append(chunk, static_cast<std::size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                close_fd(i == 0 ? out[0] : err[0]);
            }
        }
        take_lines();
    }
    close_fd(out[0]);
    close_fd(err[0]);
    if (!pending.empty()) {
        run.bad_lines.push_back(pending);
    }

    // Output closed means the probe is on its way out; still, never wait unboundedly (a
    // probe that timed out is killed first: it may never exit on its own).
    int status = 0;
    for (;;) {
        if (run.timed_out || clock_type::now() >= deadline) {
            run.timed_out = true;
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            break;
        }
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            break;
        }
        ::poll(nullptr, 0, 5);
    }
    run.wall_seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return run;
}

const json* find_event(const probe_run& run, std::string_view name)
{
    for (const auto& e : run.events) {
        if (e.value("event", "") == name) {
            return &e;
        }
    }
    return nullptr;
}

// Copies, so that a test can index a missing key (null) instead of tripping an assertion.
std::vector<json> events_named(const probe_run& run, std::string_view name)
{
    std::vector<json> found;
    for (const auto& e : run.events) {
        if (e.value("event", "") == name) {
            found.push_back(e);
        }
    }
    return found;
}

// Every line is an object with an event name and a time that never goes backwards.
void check_well_formed(const probe_run& run)
{
    CHECK(run.bad_lines.empty());
    double last_t = 0;
    for (const auto& e : run.events) {
        REQUIRE(e.contains("event"));
        CHECK(e["event"].is_string());
        REQUIRE(e.contains("t"));
        REQUIRE(e["t"].is_number());
        double t = e["t"].get<double>();
        CHECK(t >= last_t);
        last_t = t;
    }
}

}  // namespace

TEST_SUITE("probe")
{
    TEST_CASE("probe connects, heartbeats with round-trip times, and stops after --duration")
    {
        // --duration is under test: the probe runs for it, and heartbeats meanwhile.
        peer server;
        auto run = run_probe({"--ping-interval", "0.1", "--pong-timeout", "0.05", "--duration",
                              "0.5", server.url()});
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);

        REQUIRE(run.events.size() >= 4);
        CHECK(run.events.front()["event"] == "connecting");
        CHECK(run.events.front()["url"] == server.url());
        CHECK(run.events[1]["event"] == "connected");

        auto pongs = events_named(run, "pong");
        CHECK(pongs.size() >= 2);
        CHECK(events_named(run, "ping").size() >= pongs.size());
        for (auto& p : pongs) {
            REQUIRE(p["rtt_ms"].is_number());
            CHECK(p["rtt_ms"].get<double>() >= 0);
            CHECK(p["rtt_ms"].get<double>() < 100);
        }

        auto last = run.events.back();
        CHECK(last["event"] == "disconnected");
        CHECK(last["reason"] == "ok");
        // Stopped by --duration, not by a timeout far later.
        CHECK(last["t"].get<double>() >= 0.45);
        CHECK(last["t"].get<double>() < 2.0);
        CHECK(server.closes() == 1);
    }

    TEST_CASE("probe sends --send texts in order and prints the echoes")
    {
        peer server;
        probe_options opts;
        // The last text's echo is the end: anything sent twice would have come back before it.
        opts.on_event = [](const json& e, pid_t pid) {
            if (e.value("event", "") == "message" && e.value("text", "") == "end") {
                ::kill(pid, SIGTERM);
            }
        };
        auto run = run_probe({"--send", "hello", "--send", "second message", "--send", "end", server.url()}, opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);

        auto messages = events_named(run, "message");
        REQUIRE(messages.size() == 3);
        CHECK(messages[0]["text"] == "hello");
        CHECK(messages[1]["text"] == "second message");
        CHECK(messages[2]["text"] == "end");
        CHECK(server.messages() == 3);
        // Where each came from: one connection, in order.
        for (std::size_t i = 0; i < messages.size(); ++i) {
            CAPTURE(i);
            REQUIRE(messages[i]["connection"].is_number_unsigned());
            CHECK(messages[i]["connection"] == messages[0]["connection"]);
            CHECK(messages[i]["sequence"] == i + 1);
        }
    }

    TEST_CASE("probe --write-timeout: a peer that stops reading ends the connection")
    {
        // The peer never reads, with a small receive buffer: once the kernel's buffers are
        // full (a few MiB), the stdin lines' writes stall.
        peer server({.behaviour = peer_behaviour::stop_reading});
        probe_options opts;
        opts.stdin_text = std::string();
        for (int i = 0; i < 128; ++i)
            *opts.stdin_text += std::string(128 * 1024, 'w') + '\n';
        auto run = run_probe({"--ping-interval", "0", "--write-timeout", "0.3", "--no-reconnect", server.url()}, opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 1);
        auto last = run.events.back();
        CHECK(last["event"] == "disconnected");
        CHECK(last["reason"] == "write_timeout");
    }

    TEST_CASE("probe --fresh-field: a feed that still sends, but nothing fresh, is stale")
    {
        // The peer streams "stream N" texts every 20 ms; none has the field, so none is fresh.
        peer server({.behaviour = vigil::test::peer_behaviour::stream, .stream_period = std::chrono::milliseconds(20)});
        auto run = run_probe({"--ping-interval", "0.2", "--pong-timeout", "0.1", "--idle-timeout", "0.4", "--fresh-field", "type=update", "--no-reconnect", server.url()});
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 1);
        CHECK(events_named(run, "message").size() >= 5);  // still delivered
        auto last = run.events.back();
        CHECK(last["event"] == "disconnected");
        CHECK(last["reason"] == "idle_timeout");
    }

    TEST_CASE("probe sends each stdin line and keeps running after stdin ends")
    {
        // --duration is under test: the end of stdin does not end the probe before it.
        peer server;
        probe_options opts;
        opts.stdin_text = "line one\nline two\r\nlast line without newline";
        auto run = run_probe({"--send", "first", "--duration", "0.6", server.url()}, opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);

        auto messages = events_named(run, "message");
        REQUIRE(messages.size() == 4);
        CHECK(messages[0]["text"] == "first");
        CHECK(messages[1]["text"] == "line one");
        CHECK(messages[2]["text"] == "line two");
        CHECK(messages[3]["text"] == "last line without newline");
        // End of stdin came almost at once; the probe still ran until --duration.
        CHECK(run.events.back()["event"] == "disconnected");
        CHECK(run.events.back()["t"].get<double>() >= 0.55);
    }

    TEST_CASE("probe --message-limit paces stdin lines; --connect-limit and the limits' syntax")
    {
        peer server;
        probe_options opts;
        opts.stdin_text = "a\nb\nc\nd\ne\nf\n";
        int echoes = 0;
        opts.on_event = [&](const json& e, pid_t pid) {
            if (e.value("event", "") == "message" && ++echoes == 6) {
                ::kill(pid, SIGTERM);
            }
        };
        // Two lines per 0.3 s: the heartbeat (one ping per 2 s at most) keeps one slot of three.
        auto run = run_probe({"--ping-interval", "2", "--pong-timeout", "1", "--message-limit", "3/0.3",
                              "--connect-limit", "10/60", server.url()},
                             opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);
        auto messages = events_named(run, "message");
        REQUIRE(messages.size() == 6);
        // Echoed in pairs, 0.3 s apart: the last pair came two windows after the first.
        const double span = messages[5]["t"].get<double>() - messages[0]["t"].get<double>();
        CHECK(span >= 0.6 - 0.01);
        CHECK(span < 0.6 + 2 * std::chrono::duration<double>(tolerance).count());
        for (const auto& bad : {"3", "0/1", "3/0", "x/1", "3/-1"}) {
            CAPTURE(bad);
            auto refused = run_probe({"--message-limit", bad, "ws://127.0.0.1:1/"});
            CHECK(refused.exit_code == 64);
        }
        // A limit the heartbeat alone would use up is a configuration error, exit status 2.
        auto starved = run_probe({"--ping-interval", "0.1", "--message-limit", "5/1", "ws://127.0.0.1:1/"});
        CHECK(starved.exit_code == 2);
        REQUIRE_FALSE(starved.events.empty());
        CHECK(starved.events.back()["reason"] == "invalid_config");
        CHECK(starved.events.back()["detail"].get<std::string>().find("heartbeat") != std::string::npos);
    }

    TEST_CASE("probe --duration 0.5 closes with a handshake and exits 0")
    {
        // --duration is under test.
        peer server;
        auto run = run_probe({"--duration", "0.5", server.url()});
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);
        CHECK(run.wall_seconds >= 0.45);
        CHECK(run.wall_seconds < 3.0);
        REQUIRE(find_event(run, "connected") != nullptr);
        CHECK(server.closes() == 1);
        CHECK(run.err.empty());
    }

    TEST_CASE("probe reports pong_timeout when the peer goes silent")
    {
        peer server;
        probe_options opts;
        bool silenced = false;
        opts.on_event = [&](const json& e, pid_t) {
            if (!silenced && e.value("event", "") == "pong") {
                silenced = true;
                server.set_behaviour(peer_behaviour::silent);
            }
        };
        auto run = run_probe({"--no-reconnect", "--ping-interval", "0.2", "--pong-timeout", "0.1",
                              "--close-timeout", "0.2", server.url()},
                             opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(silenced);
        CHECK(run.exit_code == 1);

        auto last = run.events.back();
        CHECK(last["event"] == "disconnected");
        CHECK(last["reason"] == "pong_timeout");
        CHECK(last.contains("detail"));
        // The peer's process stopped answering; its kernel still acknowledges our pings.
        CHECK(last["diagnosis"] == "peer_unresponsive");
        REQUIRE(last["silent_ms"].is_number_integer());
        // ping_interval + pong_timeout, plus slack for a loaded machine.
        CHECK(last["silent_ms"].get<long long>() >= 250);
        CHECK(last["silent_ms"].get<long long>() <= 300 + tolerance.count());
    }

    TEST_CASE("probe stopped longer than its pong timeout: a stall event, and no verdict against a live peer")
    {
        peer server;
        probe_options opts;
        bool stopped = false;
        opts.on_event = [&](const json& e, pid_t pid) {
            if (!stopped && e.value("event", "") == "pong") {
                // A deliberate outage of the probe's own loop, several pong timeouts long,
                // while the peer (its own thread) keeps answering.
                stopped = true;
                ::kill(pid, SIGSTOP);
                std::this_thread::sleep_for(std::chrono::milliseconds(600));
                ::kill(pid, SIGCONT);
            }
        };
        auto run = run_probe({"--no-reconnect", "--ping-interval", "0.2", "--pong-timeout", "0.1", "--duration", "1.5",
                              server.url()},
                             opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(stopped);
        CHECK(run.exit_code == 0);
        auto stalls = events_named(run, "stall");
        REQUIRE(stalls.size() >= 1);
        // The first wake-up due in the outage came at most ping_interval into it.
        CHECK(stalls[0]["late_ms"].get<long long>() >= 600 - 200 - tolerance.count());
        CHECK(stalls[0]["late_ms"].get<long long>() <= 600 + tolerance.count());
        auto last = run.events.back();
        CHECK(last["event"] == "disconnected");
        CHECK(last["reason"] == "ok");  // --duration, not pong_timeout
        CHECK_FALSE(last.contains("diagnosis"));
    }

    TEST_CASE("probe reports the close code and reason a peer sends")
    {
        SUBCASE("1008 is transient: retried after --policy-violation-delay, then --max-attempts")
        {
            peer_options po;
            po.behaviour = peer_behaviour::close_with;
            po.close_code = 1008;
            po.close_reason = "policy";
            peer server(po);
            auto run = run_probe({"--policy-violation-delay", "0.3", "--backoff-initial", "0.1",
                                  "--max-attempts", "2", server.url()});
            INFO("stderr: ", run.err);
            REQUIRE_FALSE(run.timed_out);
            check_well_formed(run);
            CHECK(run.exit_code == 2);  // --max-attempts ran out
            CHECK(events_named(run, "connecting").size() == 2);
            auto retries = events_named(run, "retry");
            REQUIRE(retries.size() == 1);
            CHECK(retries[0]["delay_ms"] == 300);  // the backoff alone: at most 100
            CHECK(retries[0]["close_code"] == 1008);
            auto disconnected = events_named(run, "disconnected");
            REQUIRE(disconnected.size() == 2);
            CHECK(disconnected[0]["reason"] == "closed_by_peer");
            CHECK(disconnected[0]["close_code"] == 1008);
            CHECK(disconnected[0]["close_reason"] == "policy");
            CHECK(disconnected[1]["t"].get<double>() - retries[0]["t"].get<double>() >= 0.29);
            auto last = run.events.back();
            CHECK(last["event"] == "gave_up");
            CHECK(last["reason"] == "retries_exhausted");
            CHECK(last["last_reason"] == "closed_by_peer");
            CHECK(server.upgrades() == 2);
        }
        SUBCASE("1002 is permanent: no retry, exit 2")
        {
            peer_options po;
            po.behaviour = peer_behaviour::close_with;
            po.close_code = 1002;
            po.close_reason = "protocol";
            peer server(po);
            auto run = run_probe({server.url()});
            INFO("stderr: ", run.err);
            REQUIRE_FALSE(run.timed_out);
            check_well_formed(run);
            CHECK(run.exit_code == 2);
            CHECK(events_named(run, "connecting").size() == 1);
            CHECK(find_event(run, "retry") == nullptr);
            auto last = run.events.back();
            CHECK(last["event"] == "gave_up");
            CHECK(last["reason"] == "closed_by_peer");
            CHECK(last["close_code"] == 1002);
            CHECK(server.upgrades() == 1);
        }
        SUBCASE("1000 is a clean close")
        {
            peer_options po;
            po.behaviour = peer_behaviour::close_with;
            po.close_code = 1000;
            po.close_reason = "bye";
            peer server(po);
            auto run = run_probe({"--no-reconnect", server.url()});
            INFO("stderr: ", run.err);
            REQUIRE_FALSE(run.timed_out);
            check_well_formed(run);
            CHECK(run.exit_code == 0);
            CHECK(run.events.back()["close_code"] == 1000);
        }
    }

    TEST_CASE("probe gives up at once on a 401 and exits 2")
    {
        peer_options po;
        po.behaviour = peer_behaviour::reject;
        po.reject_status = 401;
        peer server(po);
        auto run = run_probe({"--backoff-initial", "0.1", server.url()});
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 2);
        CHECK(find_event(run, "connected") == nullptr);
        CHECK(find_event(run, "retry") == nullptr);
        CHECK(events_named(run, "connecting").size() == 1);
        REQUIRE(run.events.size() == 3);
        CHECK(run.events[1]["event"] == "disconnected");
        CHECK(run.events[1]["reason"] == "handshake_rejected");
        CHECK(run.events[1]["status"] == 401);
        auto last = run.events.back();
        CHECK(last["event"] == "gave_up");
        CHECK(last["reason"] == "handshake_rejected");
        CHECK(last["status"] == 401);
        CHECK(server.connections() == 1);
    }

    TEST_CASE("probe --no-reconnect reports a rejected upgrade with its HTTP status")
    {
        peer_options po;
        po.behaviour = peer_behaviour::reject;
        po.reject_status = 403;
        peer server(po);
        auto run = run_probe({"--no-reconnect", server.url()});
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        // Permanent, with or without reconnecting.
        CHECK(run.exit_code == 2);
        CHECK(find_event(run, "gave_up") == nullptr);
        auto last = run.events.back();
        CHECK(last["event"] == "disconnected");
        CHECK(last["reason"] == "handshake_rejected");
        CHECK(last["status"] == 403);
    }

    TEST_CASE("probe --close-timeout bounds a server that breaks the protocol and keeps its socket open")
    {
        // A frame header claiming 2^63 + 5 bytes, then silence with the socket open: the
        // probe's close frame (1009) is never answered. Heartbeat off, so that only
        // close_timeout can end the connection, and the reason must stay the violation.
        peer_options po;
        po.behaviour = peer_behaviour::send_raw;
        po.raw_bytes = std::string("\x82\x7f\x80\0\0\0\0\0\0\x05hello", 15);
        peer server(po);
        probe_options opts;
        opts.limit = 4s;
        auto run = run_probe({"--no-reconnect", "--ping-interval", "0", "--close-timeout", "1", server.url()}, opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 1);
        const auto* connected = find_event(run, "connected");
        REQUIRE(connected != nullptr);
        auto last = run.events.back();
        CHECK(last["event"] == "disconnected");
        CHECK(last["reason"] == "message_too_big");
        const double held = last["t"].get<double>() - (*connected)["t"].get<double>();
        CHECK(held <= 1.0 + tolerance.count() / 1000.0);
    }

    TEST_CASE("probe exits on SIGTERM with a clean close")
    {
        peer server;
        probe_options opts;
        opts.on_event = [](const json& e, pid_t pid) {
            if (e.value("event", "") == "connected") {
                ::kill(pid, SIGTERM);
            }
        };
        auto run = run_probe({"--duration", "30", server.url()}, opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);
        CHECK(run.wall_seconds < 3.0);
        CHECK(run.events.back()["event"] == "disconnected");
        CHECK(server.closes() == 1);
    }

    TEST_CASE("probe stops on a signal even when the peer ignores the close handshake")
    {
        peer_options po;
        po.behaviour = peer_behaviour::ignore_close;
        SUBCASE("one signal: the close handshake is bounded by --close-timeout")
        {
            peer server(po);
            probe_options opts;
            opts.on_event = [](const json& e, pid_t pid) {
                if (e.value("event", "") == "connected") {
                    ::kill(pid, SIGTERM);
                }
            };
            auto run = run_probe({"--close-timeout", "0.3", server.url()}, opts);
            INFO("stderr: ", run.err);
            REQUIRE_FALSE(run.timed_out);
            check_well_formed(run);
            CHECK(run.exit_code == 0);
            auto last = run.events.back();
            CHECK(last["event"] == "disconnected");
            CHECK(last["reason"] == "close_timeout");
            CHECK(find_event(run, "retry") == nullptr);
            CHECK(server.closes() == 1);
        }
        SUBCASE("a second signal ends it at once")
        {
            peer server(po);
            probe_options opts;
            opts.on_event = [](const json& e, pid_t pid) {
                if (e.value("event", "") == "connected") {
                    // Queued by the probe's signal handling if they arrive together.
                    ::kill(pid, SIGTERM);
                    ::kill(pid, SIGINT);
                }
            };
            auto run = run_probe({"--close-timeout", "5", server.url()}, opts);
            INFO("stderr: ", run.err);
            REQUIRE_FALSE(run.timed_out);
            check_well_formed(run);
            CHECK(run.exit_code == 0);
            // Far less than the 5 s the close handshake was allowed.
            CHECK(run.wall_seconds < 2.0);
            CHECK(run.events.back()["event"] == "disconnected");
        }
    }

    TEST_CASE("probe rejects bad arguments with exit status 64")
    {
        const std::vector<std::vector<std::string>> bad = {
            {"--bogus", "ws://127.0.0.1:1/"},
            {"ws://127.0.0.1:1/", "--ping-interval"},
            {"--ping-interval", "soon", "ws://127.0.0.1:1/"},
            {"--pong-timeout", "-1", "ws://127.0.0.1:1/"},
            {"--duration", "nan", "ws://127.0.0.1:1/"},
            {"--ping-mode", "sometimes", "ws://127.0.0.1:1/"},
            {"--insecure=yes", "ws://127.0.0.1:1/"},
            {"--duration", "1"},
            {},
            {"--no-reconnect", "ws://127.0.0.1:1/", "ws://127.0.0.1:2/"},
            {"--failback", "soon", "ws://127.0.0.1:1/", "ws://127.0.0.1:2/"},
            {"--max-attempts", "-1", "ws://127.0.0.1:1/"},
            {"--max-attempts", "2.5", "ws://127.0.0.1:1/"},
            {"--backoff-initial", "0", "ws://127.0.0.1:1/"},
            {"--backoff-initial", "2", "--backoff-max", "1", "ws://127.0.0.1:1/"},
            {"--no-reconnect=yes", "ws://127.0.0.1:1/"},
            {"--fresh-field", "update", "ws://127.0.0.1:1/"},
            {"--write-timeout", "-1", "ws://127.0.0.1:1/"},
            {"--metrics-port", "65536", "ws://127.0.0.1:1/"},
            {"--metrics-port", "0", "--no-reconnect", "ws://127.0.0.1:1/"},
        };
        for (const auto& args : bad) {
            std::string joined;
            for (const auto& a : args) {
                joined += a + ' ';
            }
            CAPTURE(joined);
            auto run = run_probe(args);
            REQUIRE_FALSE(run.timed_out);
            CHECK(run.exit_code == 64);
            CHECK(run.events.empty());
            CHECK(run.err.find("usage") != std::string::npos);
        }
    }

    // Skipped (and counted so) where vigil-probe was built without prometheus-cpp.
    TEST_CASE("probe --metrics-port: a scrape counts the supervisor's messages, bytes, round trips and connects"
              * doctest::skip(!probe_has_metrics))
    {
        peer server;
        probe_options opts;
        opts.stdin_text = "one\ntwo\nthree\n";  // 11 bytes in three messages
        std::uint16_t port = 0;
        int echoes = 0;
        int pongs = 0;
        int pongs_before = 0;  // the pong events printed before the scrape
        std::string text;
        // Scraped once the three echoes are back and a ping (every 0.1 s when idle) was
        // answered, while the probe runs; then it is stopped.
        opts.on_event = [&](const json& e, pid_t pid) {
            const auto name = e.value("event", "");
            if (name == "metrics_listening") {
                port = e["metrics_port"].get<std::uint16_t>();
            }
            echoes += name == "message";
            pongs += name == "pong";
            if (text.empty() && port != 0 && echoes == 3 && pongs >= 1) {
                text = vigil::test::scrape(port);
                pongs_before = pongs;
                ::kill(pid, SIGTERM);
            }
        };
        auto run = run_probe({"--ping-interval", "0.1", "--pong-timeout", "0.05", "--metrics-port", "0", server.url()},
                             opts);
        INFO("stderr: ", run.err);
        INFO("scraped:\n", text);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);
        REQUIRE(run.events.front()["event"] == "metrics_listening");
        REQUIRE_FALSE(text.empty());
        auto at = [&](const std::string& name) {
            return vigil::test::sample(text, name + "{supervisor=\"probe\"}");
        };
        CHECK(at("vigil_supervisor_up") == 1);
        CHECK(at("vigil_supervisor_attempts_total") == 1);
        CHECK(at("vigil_supervisor_connects_total") == 1);
        CHECK(at("vigil_supervisor_retries_total") == 0);
        CHECK(at("vigil_supervisor_messages_delivered_total") == 3);
        CHECK(at("vigil_supervisor_messages_failed_total") == 0);
        CHECK(at("vigil_supervisor_messages_sent_total") == 3);
        CHECK(at("vigil_supervisor_sent_bytes_total") == 11);
        CHECK(at("vigil_supervisor_messages_received_total") == 3);
        CHECK(at("vigil_supervisor_received_bytes_total") == 11);
        CHECK(at("vigil_supervisor_pending_messages") == 0);
        CHECK(at("vigil_supervisor_pending_bytes") == 0);
        CHECK(at("vigil_supervisor_round_trip_seconds_count") >= pongs_before);
        CHECK(at("vigil_supervisor_round_trip_seconds_sum") < at("vigil_supervisor_round_trip_seconds_count"));
        CHECK(at("vigil_supervisor_backoff_wait_seconds_count") == 0);
        CHECK(text.find("# TYPE vigil_supervisor_backoff_wait_seconds histogram") != std::string::npos);
    }

    TEST_CASE("probe --help prints the options and exits 0")
    {
        auto run = run_probe({"--help"});
        REQUIRE_FALSE(run.timed_out);
        CHECK(run.exit_code == 0);
        CHECK(run.events.empty());
    }

    TEST_CASE("probe gives up on a bad URL or config, which is not a usage error")
    {
        struct bad_input {
            std::vector<std::string> args;
            std::string reason;
        };
        const std::vector<bad_input> cases = {
            {{"not a url"}, "invalid_url"},
            {{"http://127.0.0.1/"}, "unsupported_scheme"},
            {{"ws://127.0.0.1:99999/"}, "invalid_port"},
            {{"--ping-interval", "0.1", "--pong-timeout", "0.2", "ws://127.0.0.1:1/"},
             "invalid_config"},
            {{"ws://127.0.0.1:1/", "not a url"}, "invalid_config"},
            {{"--proxy", "socks4://127.0.0.1:1080", "ws://127.0.0.1:1/"}, "invalid_config"},
            {{"--bind", "eth0", "ws://127.0.0.1:1/"}, "invalid_config"},
        };
        for (const auto& c : cases) {
            CAPTURE(c.reason);
            auto run = run_probe(c.args);
            INFO("stderr: ", run.err);
            REQUIRE_FALSE(run.timed_out);
            check_well_formed(run);
            CHECK(run.exit_code == 2);
            // A config the supervisor refuses before any attempt has no "connecting".
            const std::size_t at = c.reason == "invalid_config" ? 0 : 1;
            REQUIRE(run.events.size() == at + 2);
            if (at == 1)
                CHECK(run.events[0]["event"] == "connecting");
            CHECK(run.events[at]["event"] == "disconnected");
            CHECK(run.events[at]["reason"] == c.reason);
            CHECK_FALSE(run.events[at].value("detail", std::string()).empty());
            CHECK_FALSE(run.events[at].contains("silent_ms"));
            CHECK(run.events[at + 1]["event"] == "gave_up");
            CHECK(run.events[at + 1]["reason"] == c.reason);
        }
    }

    TEST_CASE("probe reports a refused connection")
    {
        std::uint16_t port = 0;
        {
            peer gone;
            port = gone.port();
        }
        auto run = run_probe({"--no-reconnect", "ws://127.0.0.1:" + std::to_string(port) + "/"});
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        // Transient: a single session that failed, not a permanent verdict.
        CHECK(run.exit_code == 1);
        CHECK(find_event(run, "retry") == nullptr);
        CHECK(run.events.back()["event"] == "disconnected");
        CHECK(run.events.back()["reason"] == "connection_refused");
    }

    TEST_CASE("probe reconnects after the server resets every connection")
    {
        peer server;
        probe_options opts;
        int connected = 0;
        opts.on_event = [&](const json& e, pid_t pid) {
            if (e.value("event", "") != "connected") {
                return;
            }
            if (++connected == 1) {
                server.reset_all();
            } else {
                ::kill(pid, SIGTERM);
            }
        };
        auto run = run_probe({"--backoff-initial", "0.1", "--ping-interval", "0.2",
                              "--pong-timeout", "0.1", server.url()},
                             opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);
        CHECK(connected == 2);

        std::vector<std::string> names;
        for (const auto& e : run.events) {
            auto name = e.value("event", "");
            if (name != "ping" && name != "pong") {
                names.push_back(name);
            }
        }
        const std::vector<std::string> expected = {"connecting", "connected",  "disconnected",
                                                   "retry",      "connecting", "connected",
                                                   "disconnected"};
        CHECK(names == expected);

        auto disconnected = events_named(run, "disconnected");
        REQUIRE(disconnected.size() == 2);
        CHECK(disconnected[0]["reason"] != "ok");
        CHECK(disconnected[1]["reason"] == "ok");
        auto retry = events_named(run, "retry");
        REQUIRE(retry.size() == 1);
        CHECK(retry[0]["attempt"] == 1);
        CHECK(retry[0]["permanent"] == false);
        CHECK(retry[0]["reason"] == disconnected[0]["reason"]);
        // Full jitter under a 100 ms ceiling, then the 100 ms floor.
        CHECK(retry[0]["delay_ms"] == 100);
        CHECK(server.upgrades() == 2);
        CHECK(server.closes() == 1);
    }

    TEST_CASE("probe with a backup URL: the refused primary, then the backup at once; events name the endpoint")
    {
        std::uint16_t port = 0;
        {
            peer gone;
            port = gone.port();
        }
        peer backup;
        probe_options opts;
        opts.on_event = [&](const json& e, pid_t pid) {
            if (e.value("event", "") == "connected") {
                ::kill(pid, SIGTERM);
            }
        };
        const std::string primary = "ws://127.0.0.1:" + std::to_string(port) + "/";
        // A backoff wait would take 3 s at least: a round through the list takes none.
        auto run = run_probe({"--backoff-initial", "3", primary, backup.url()}, opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);
        CHECK(run.wall_seconds < 2.5);
        auto connecting = events_named(run, "connecting");
        REQUIRE(connecting.size() == 2);
        CHECK(connecting[0]["url"] == primary);
        CHECK(connecting[0]["endpoint"] == 0);
        CHECK(connecting[1]["url"] == backup.url());
        CHECK(connecting[1]["endpoint"] == 1);
        auto retries = events_named(run, "retry");
        REQUIRE(retries.size() == 1);
        CHECK(retries[0]["reason"] == "connection_refused");
        CHECK(retries[0]["delay_ms"] == 0);
        CHECK(retries[0]["endpoint"] == 0);
        CHECK(retries[0]["next_endpoint"] == 1);
        CHECK(backup.upgrades() == 1);
    }

    TEST_CASE("probe --max-attempts 2 against a refused port gives up with retries_exhausted")
    {
        std::uint16_t port = 0;
        {
            peer gone;
            port = gone.port();
        }
        auto run = run_probe({"--max-attempts", "2", "--backoff-initial", "0.1",
                              "ws://127.0.0.1:" + std::to_string(port) + "/"});
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 2);
        CHECK(events_named(run, "connecting").size() == 2);
        auto retries = events_named(run, "retry");
        REQUIRE(retries.size() == 1);
        CHECK(retries[0]["attempt"] == 1);
        CHECK(retries[0]["reason"] == "connection_refused");
        auto disconnected = events_named(run, "disconnected");
        REQUIRE(disconnected.size() == 2);
        for (auto& d : disconnected) {
            CHECK(d["reason"] == "connection_refused");
        }
        auto last = run.events.back();
        CHECK(last["event"] == "gave_up");
        CHECK(last["reason"] == "retries_exhausted");
        CHECK(last["last_reason"] == "connection_refused");
        CHECK_FALSE(last.contains("status"));
    }

    TEST_CASE("probe retries at once on SIGUSR1 during a long backoff")
    {
        std::uint16_t port = 0;
        {
            peer gone;
            port = gone.port();
        }
        probe_options opts;
        opts.limit = 8s;
        // Delays are jittered: wait for one long enough that an early attempt can only be
        // SIGUSR1's doing (one in five is shorter than 1 s; those just pass).
        enum class stage { waiting_for_long_delay, signalled, done } state = stage::waiting_for_long_delay;
        json long_retry;
        opts.on_event = [&](const json& e, pid_t pid) {
            auto name = e.value("event", "");
            if (name != "retry") {
                return;
            }
            if (state == stage::waiting_for_long_delay && e["delay_ms"].get<long long>() >= 1000) {
                long_retry = e;
                state = stage::signalled;
                ::kill(pid, SIGUSR1);
            } else if (state == stage::signalled) {
                // The attempt SIGUSR1 started has failed: that is all this test needs.
                state = stage::done;
                ::kill(pid, SIGTERM);
            }
        };
        auto run = run_probe({"--backoff-initial", "5", "--backoff-max", "5",
                              "ws://127.0.0.1:" + std::to_string(port) + "/"},
                             opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);
        REQUIRE(state == stage::done);

        // After the long retry: retry_now, then a new attempt that failed, all well within
        // half a second although the delay was at least a second.
        std::size_t at = 0;
        while (at < run.events.size() && run.events[at] != long_retry) {
            ++at;
        }
        REQUIRE(at + 3 < run.events.size());
        const double t0 = long_retry["t"].get<double>();
        CHECK(run.events[at + 1]["event"] == "retry_now");
        CHECK(run.events[at + 2]["event"] == "connecting");
        CHECK(run.events[at + 3]["event"] == "disconnected");
        CHECK(run.events[at + 3]["reason"] == "connection_refused");
        CHECK(run.events[at + 3]["t"].get<double>() - t0 < 0.5);
        CHECK(run.events.back()["event"] != "gave_up");
    }

    TEST_CASE("probe replaces its connection: --max-connection-age, and SIGUSR2")
    {
        peer server;
        probe_options opts;
        std::vector<std::string> args;
        std::string expected_reason;
        SUBCASE("--max-connection-age")
        {
            expected_reason = "max_connection_age";
            args = {"--max-connection-age", "0.4", "--backoff-initial", "5", "--send", "sub", "--duration", "1.5"};
        }
        SUBCASE("SIGUSR2")
        {
            expected_reason = "SIGUSR2";
            args = {"--backoff-initial", "5", "--send", "sub", "--duration", "1.5"};
            // The first subscription's echo: the connection is up, replace it.
            opts.on_event = [sent = false](const json& e, pid_t pid) mutable {
                if (!sent && e.value("event", "") == "message") {
                    sent = true;
                    ::kill(pid, SIGUSR2);
                }
            };
        }
        CAPTURE(expected_reason);
        args.push_back(server.url());
        auto run = run_probe(args, opts);
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);
        CHECK(find_event(run, "retry") == nullptr);  // never a failure, never a backoff wait
        // reconnect, then the old connection's clean end, then the next attempt, up again and
        // subscribed again, within far less than the 5 s a backoff could take.
        std::size_t at = 0;
        while (at < run.events.size() && run.events[at]["event"] != "reconnect") {
            ++at;
        }
        REQUIRE(at + 4 < run.events.size());
        CHECK(run.events[at]["reason"] == expected_reason);
        CHECK(run.events[at + 1]["event"] == "disconnected");
        CHECK(run.events[at + 1]["reason"] == "ok");
        CHECK(run.events[at + 2]["event"] == "connecting");
        CHECK(run.events[at + 3]["event"] == "connected");
        CHECK(run.events[at + 4]["event"] == "message");
        CHECK(run.events[at + 4]["text"] == "sub");
        CHECK(run.events[at + 4]["t"].get<double>() - run.events[at]["t"].get<double>() < 1.0);
        const auto connected = events_named(run, "connected").size();
        if (expected_reason == "max_connection_age") {
            // Up at about 0, 0.4, 0.8, 1.2: each replaced within 0.36-0.4 s.
            CHECK(connected >= 3);
            CHECK(events_named(run, "reconnect").size() == connected - 1);
        } else {
            CHECK(connected == 2);
        }
        CHECK(server.upgrades() == connected);
    }
    TEST_CASE("probe --make-before-break: the new connection is up before the old one closes")
    {
        peer server;
        auto run = run_probe({"--make-before-break", "--max-connection-age", "0.4", "--backoff-initial", "5", "--send",
                              "sub", "--duration", "1.5", server.url()});
        INFO("stderr: ", run.err);
        REQUIRE_FALSE(run.timed_out);
        check_well_formed(run);
        CHECK(run.exit_code == 0);
        CHECK(find_event(run, "retry") == nullptr);
        CHECK(find_event(run, "replacement_failed") == nullptr);
        const auto connected = events_named(run, "connected").size();
        CHECK(connected >= 3);  // up at about 0, 0.4, 0.8, 1.2
        // A replacement begun (at a jittered moment) just before --duration ran out may be
        // abandoned by the stop before its connection is up: then one reconnect more.
        const auto reconnects = events_named(run, "reconnect");
        CHECK(reconnects.size() >= connected - 1);
        CHECK(reconnects.size() <= connected);
        // Each replacement: reconnect, the new one's connecting and connected, then (its
        // subscription echoed meanwhile or after) the old one's clean end, before the next.
        const std::size_t judged = connected - 1;  // the replacements that came up
        std::size_t replacements = 0;
        for (std::size_t at = 0; at < run.events.size() && replacements < judged; ++at) {
            if (run.events[at]["event"] != "reconnect")
                continue;
            CAPTURE(at);
            ++replacements;
            CHECK(run.events[at]["reason"] == "max_connection_age");
            REQUIRE(at + 2 < run.events.size());
            CHECK(run.events[at + 1]["event"] == "connecting");
            CHECK(run.events[at + 2]["event"] == "connected");
            bool old_closed = false;
            bool resubscribed = false;
            for (std::size_t i = at + 3; i < run.events.size() && run.events[i]["event"] != "reconnect"; ++i) {
                if (run.events[i]["event"] == "disconnected" && !old_closed) {
                    old_closed = true;
                    CHECK(run.events[i]["reason"] == "ok");
                }
                if (run.events[i]["event"] == "message" && run.events[i]["text"] == "sub")
                    resubscribed = true;
            }
            CHECK(old_closed);
            CHECK(resubscribed);
        }
        CHECK(replacements >= 2);
        CHECK(server.upgrades() == connected);
    }
}

