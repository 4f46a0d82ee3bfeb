// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-serve end to end: the built binary (its path in the VIGIL_SERVE environment
// variable) runs as a child process, vigil clients on the test's io_context talk to it, and
// its JSON lines are checked as they arrive. vigil-probe (VIGIL_PROBE) talks to it with
// application-level heartbeats. Every wait is bounded; a child still running at the end of
// a case is killed.

#include <vigil/heartbeat.hpp>
#include <vigil/session.hpp>

#include "integration_config.h"

#include <support/one_thread.hpp>
#include <support/pki.hpp>
#include <support/relay.hpp>
#include <support/scrape.hpp>
#include <support/testing.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

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
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iterator>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

#ifdef VIGIL_SERVE_HAS_METRICS
constexpr bool serve_has_metrics = true;
#else
constexpr bool serve_has_metrics = false;
#endif

namespace {

namespace asio = boost::asio;
namespace vt = vigil::test;
using json = nlohmann::json;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;
using vigil::error_code;
using vigil::message_type;
using vt::sample;
using vt::scrape;
using vt::tolerance;

void close_fd(int& fd)
{
    if (fd >= 0) {
        ::close(fd);
        fd = -1;
    }
}

// The whole of a small file, empty if it cannot be read.
std::string read_file(const std::string& path)
{
    std::string text;
    if (std::FILE* f = std::fopen(path.c_str(), "r")) {
        char buf[512];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) {
            text.append(buf, n);
        }
        std::fclose(f);
    }
    return text;
}

// A child process that prints JSON lines, started from the binary named by an environment
// variable. A thread of its own collects its output, so that the test can drive clients on
// its io_context meanwhile and look at the lines so far at any time.
class child {
public:
    child(const char* env_var, const std::vector<std::string>& args)
    {
        const char* path = std::getenv(env_var);
        REQUIRE_MESSAGE(path != nullptr, std::string(env_var), " must name the binary to test");

        int out[2] = {-1, -1};
        int err[2] = {-1, -1};
        REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
        REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
        posix_spawn_file_actions_t actions;
        ::posix_spawn_file_actions_init(&actions);
        ::posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        ::posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
        ::posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);

        std::vector<std::string> storage;
        storage.emplace_back(path);
        storage.insert(storage.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : storage) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);

        int spawn_error = ::posix_spawn(&pid_, path, &actions, nullptr, argv.data(), environ);
        ::posix_spawn_file_actions_destroy(&actions);
        close_fd(out[1]);
        close_fd(err[1]);
        if (spawn_error != 0) {
            close_fd(out[0]);
            close_fd(err[0]);
            pid_ = -1;
        }
        REQUIRE_MESSAGE(spawn_error == 0, "cannot start ", std::string(path));
        reader_ = std::thread([this, o = out[0], e = err[0]] { read_output(o, e); });
    }

    ~child()
    {
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGKILL);
            int status = 0;
            ::waitpid(pid_, &status, 0);
        }
        // The pipes close with the process, and the reader with them.
        if (reader_.joinable()) {
            reader_.join();
        }
    }

    child(const child&) = delete;
    child& operator=(const child&) = delete;

    pid_t pid() const noexcept { return pid_; }
    void signal(int sig) const { ::kill(pid_, sig); }

    // Waits, at most `bound`, until the process sleeps in epoll_wait (its event loop idle),
    // as /proc/PID/stat and /proc/PID/wchan tell; returns as soon as it sleeps where the
    // kernel does not name the place (wchan "0"). Why: under clang 14's ThreadSanitizer about
    // one vigil-serve in 100 ignored a SIGINT sent right after "listening" (it then slept in
    // epoll_wait with nothing pending, and a second signal was handled as the first); never
    // in 400 release starts signalled the same way, nor in 1,000 TSan starts signalled once
    // the loop slept. TSan defers asynchronous signals and sets up a thread's signal state
    // on its first blocking call, which is that first epoll_wait; a signal caught meanwhile
    // appears to be dropped. A script signalling a release build meets no such window.
    void wait_asleep(milliseconds bound) const
    {
        const auto deadline = clock_type::now() + bound;
        const std::string dir = "/proc/" + std::to_string(pid_) + "/";
        for (;;) {
            const std::string stat = read_file(dir + "stat");
            // "pid (comm) S ...": the state follows the last ')'.
            const auto paren = stat.rfind(')');
            const char state = paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
            const std::string where = read_file(dir + "wchan");
            if (stat.empty() || clock_type::now() >= deadline
                || (state == 'S' && (where == "0" || where.find("epoll_wait") != std::string::npos))) {
                return;
            }
            std::this_thread::sleep_for(1ms);
        }
    }

    // The first line for which `pred` holds, waiting at most `bound` (the calling thread
    // blocks: for cases with no client of their own to drive).
    std::optional<json> wait_for(const std::function<bool(const json&)>& pred, milliseconds bound)
    {
        std::unique_lock lock(mutex_);
        std::optional<json> found;
        cv_.wait_for(lock, bound, [&] {
            found = find_locked(pred);
            return found.has_value() || output_done_;
        });
        if (!found) {
            found = find_locked(pred);
        }
        return found;
    }

    // Whether `count` lines named `name` arrived, waiting at most `bound` (the calling thread
    // blocks).
    bool wait_for_count(std::string_view name, std::size_t count, milliseconds bound)
    {
        std::unique_lock lock(mutex_);
        auto enough = [&] {
            std::size_t n = 0;
            for (const auto& e : events_) {
                n += e.value("event", "") == name ? 1 : 0;
            }
            return n >= count;
        };
        cv_.wait_for(lock, bound, [&] { return enough() || output_done_; });
        return enough();
    }

    std::optional<json> find(const std::function<bool(const json&)>& pred) const
    {
        std::lock_guard lock(mutex_);
        return find_locked(pred);
    }

    std::vector<json> events() const
    {
        std::lock_guard lock(mutex_);
        return events_;
    }

    std::vector<json> events_named(std::string_view name) const
    {
        std::vector<json> found;
        for (auto& e : events()) {
            if (e.value("event", "") == name) {
                found.push_back(e);
            }
        }
        return found;
    }

    std::string err() const
    {
        std::lock_guard lock(mutex_);
        return err_;
    }

    std::vector<std::string> bad_lines() const
    {
        std::lock_guard lock(mutex_);
        return bad_lines_;
    }

    // Waits for the process to end (its output first), at most `bound`. The exit status,
    // -1 if a signal killed it, nullopt if it is still running.
    std::optional<int> wait_exit(milliseconds bound)
    {
        const auto deadline = clock_type::now() + bound;
        {
            std::unique_lock lock(mutex_);
            cv_.wait_until(lock, deadline, [&] { return output_done_; });
        }
        for (;;) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                reaped_ = true;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            if (clock_type::now() >= deadline) {
                return std::nullopt;
            }
            std::this_thread::sleep_for(2ms);
        }
    }

private:
    std::optional<json> find_locked(const std::function<bool(const json&)>& pred) const
    {
        for (const auto& e : events_) {
            if (pred(e)) {
                return e;
            }
        }
        return std::nullopt;
    }

    void read_output(int out, int err)
    {
        std::string pending;
        while (out >= 0 || err >= 0) {
            pollfd fds[2] = {{out, POLLIN, 0}, {err, POLLIN, 0}};
            if (::poll(fds, 2, -1) < 0) {
                if (errno == EINTR) {
                    continue;
                }
                break;
            }
            for (int i = 0; i < 2; ++i) {
                if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
                    continue;
                }
                char chunk[4096];
                auto n = ::read(fds[i].fd, chunk, sizeof chunk);
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                if (n <= 0) {
                    close_fd(i == 0 ? out : err);
                    continue;
                }
                std::lock_guard lock(mutex_);
                if (i == 1) {
                    err_.append(chunk, static_cast<std::size_t>(n));
                    continue;
                }
                pending.append(chunk, static_cast<std::size_t>(n));
                for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
                    std::string line = pending.substr(0, nl);
                    pending.erase(0, nl + 1);
                    auto j = json::parse(line, nullptr, false);
                    if (j.is_discarded() || !j.is_object()) {
                        bad_lines_.push_back(line);
                    } else {
                        events_.push_back(std::move(j));
                    }
                }
            }
            cv_.notify_all();
        }
        close_fd(out);
        close_fd(err);
        std::lock_guard lock(mutex_);
        if (!pending.empty()) {
            bad_lines_.push_back(pending);
        }
        output_done_ = true;
        cv_.notify_all();
    }

    pid_t pid_ = -1;
    bool reaped_ = false;
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<json> events_;
    std::vector<std::string> bad_lines_;
    std::string err_;
    bool output_done_ = false;
    std::thread reader_;
};

std::function<bool(const json&)> named(std::string name)
{
    return [name = std::move(name)](const json& e) { return e.value("event", "") == name; };
}

std::function<bool(const json&)> named_for(std::string name, std::uint64_t id)
{
    return [name = std::move(name), id](const json& e) {
        return e.value("event", "") == name && e.value("id", std::uint64_t{0}) == id;
    };
}

// Every line is an object with an event name and a time that never goes backwards.
void check_well_formed(const child& c)
{
    CHECK(c.bad_lines().empty());
    double last_t = 0;
    for (const auto& e : c.events()) {
        REQUIRE(e.contains("event"));
        CHECK(e["event"].is_string());
        REQUIRE(e.contains("t"));
        REQUIRE(e["t"].is_number());
        double t = e["t"].get<double>();
        CHECK(t >= last_t);
        last_t = t;
    }
}

// vigil-serve with `args`, once it has printed its port.
struct server_process {
    explicit server_process(const std::vector<std::string>& args) : proc("VIGIL_SERVE", args)
    {
        auto listening = proc.wait_for(named("listening"), 5s);
        INFO("stderr: ", proc.err());
        REQUIRE(listening.has_value());
        // The very first line.
        REQUIRE(proc.events().front() == *listening);
        REQUIRE((*listening)["port"].is_number_unsigned());
        port = (*listening)["port"].get<std::uint16_t>();
        REQUIRE(port != 0);
        proc.wait_asleep(2s);
    }

    std::string url(std::string_view scheme = "ws") const
    {
        std::string u(scheme);
        u += "://127.0.0.1:";
        u += std::to_string(port);
        u += '/';
        return u;
    }

    child proc;
    std::uint16_t port = 0;
};

// Runs the test's io_context until `pred` holds, at most `bound`. The work guard keeps it
// from running out of work, so every slice really waits.
bool drive(asio::io_context& ioc, const std::function<bool()>& pred, milliseconds bound)
{
    const auto deadline = clock_type::now() + bound;
    while (!pred()) {
        if (clock_type::now() >= deadline) {
            return false;
        }
        ioc.run_for(2ms);
    }
    return true;
}

// Waits for a line of `proc` while the test's clients keep running on `ioc`.
std::optional<json> drive_until(asio::io_context& ioc, const child& proc,
                                const std::function<bool(const json&)>& pred, milliseconds bound)
{
    std::optional<json> found;
    drive(ioc, [&] { return (found = proc.find(pred)).has_value(); }, bound);
    return found;
}

vigil::session_config client_config()
{
    vigil::session_config cfg;
    // The server's heartbeat is under test; the client's own stays out of the way.
    cfg.ping_interval = 0ms;
    cfg.connect_timeout = 2s;
    cfg.tls_handshake_timeout = 2s;
    cfg.handshake_timeout = 2s;
    cfg.close_timeout = 1s;
    return cfg;
}

// A vigil session on the test's io_context, and what it saw.
struct client {
    client(asio::io_context& ioc, vigil::session_config cfg = client_config())
        : ioc(ioc), s(ioc.get_executor(), std::move(cfg))
    {
        auto& ev = s.events();
        ev.on_message = [this](std::string_view data, message_type type) {
            messages.emplace_back(data);
            types.push_back(type);
        };
        ev.on_pong = [this](std::chrono::microseconds) { ++pongs; };
    }

    ~client()
    {
        // A failed case must not leave a coroutine pointing into a destroyed session.
        if (running && !ended) {
            s.cancel();
            drive(ioc, [this] { return ended.has_value(); }, 3s);
        }
    }

    client(const client&) = delete;
    client& operator=(const client&) = delete;

    // Connects and starts run(); fails the case if the connection cannot be opened.
    void open(const std::string& url)
    {
        auto ec = connect(url);
        REQUIRE_MESSAGE(!ec, "connect: ", vt::describe(ec), " ", s.last_disconnect().detail);
        start_run();
    }

    error_code connect(const std::string& url)
    {
        std::optional<error_code> result;
        asio::co_spawn(s.get_executor(), s.connect(url), [&result](std::exception_ptr e, error_code ec) {
            if (e) {
                std::rethrow_exception(e);
            }
            result = ec;
        });
        REQUIRE(drive(ioc, [&] { return result.has_value(); }, 5s));
        return *result;
    }

    void start_run()
    {
        running = true;
        asio::co_spawn(s.get_executor(), s.run(), [this](std::exception_ptr e, error_code ec) {
            if (e) {
                std::rethrow_exception(e);
            }
            ended = ec;
        });
    }

    void send(std::string data, message_type type = message_type::text)
    {
        s.async_send(std::move(data), type, [this](error_code ec) {
            if (ec) {
                send_errors.push_back(ec);
            }
        });
    }

    asio::io_context& ioc;
    vigil::session s;
    bool running = false;
    std::optional<error_code> ended;
    std::vector<std::string> messages;
    std::vector<message_type> types;
    std::vector<error_code> send_errors;
    int pongs = 0;
};

// The io_context of a case, kept busy by a work guard so that drive() can wait on it.
struct io_fixture {
    asio::io_context ioc{vt::concurrency_hint()};
    asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(ioc);
};

std::string joined(const std::vector<std::string>& args)
{
    std::string all;
    for (const auto& a : args) {
        all += a + ' ';
    }
    return all;
}


}  // namespace

TEST_SUITE("serve")
{
    TEST_CASE("vigil-serve reports connections and messages, and echoes")
    {
        io_fixture io;
        server_process server({"--port", "0", "--mode", "echo"});
        client c(io.ioc);
        c.open(server.url());

        auto connected = drive_until(io.ioc, server.proc, named("client_connected"), 3s);
        REQUIRE(connected.has_value());
        CHECK((*connected)["id"] == 1);
        const auto remote = (*connected)["remote"].get<std::string>();
        CHECK(remote.rfind("127.0.0.1:", 0) == 0);

        c.send("hello");
        c.send(std::string("\x01\x02\x03", 3), message_type::binary);
        REQUIRE(drive(io.ioc, [&] { return c.messages.size() == 2; }, 3s));
        CHECK(c.messages[0] == "hello");
        CHECK(c.types[0] == message_type::text);
        CHECK(c.messages[1] == std::string("\x01\x02\x03", 3));
        CHECK(c.types[1] == message_type::binary);

        // The echoes can arrive before the server's lines about them have been read.
        REQUIRE(drive(io.ioc, [&] { return server.proc.events_named("message").size() >= 2; }, 3s));
        auto messages = server.proc.events_named("message");
        REQUIRE(messages.size() == 2);
        CHECK(messages[0]["id"] == 1);
        CHECK(messages[0]["bytes"] == 5);
        CHECK(messages[1]["bytes"] == 3);

        // A client that leaves with a close handshake is reported with its close code.
        std::optional<error_code> closed;
        asio::co_spawn(c.s.get_executor(), c.s.close(1000, "bye"),
                       [&closed](std::exception_ptr, error_code ec) { closed = ec; });
        REQUIRE(drive(io.ioc, [&] { return closed && c.ended; }, 3s));
        CHECK_CODE(*closed, error_code{});
        auto left = drive_until(io.ioc, server.proc, named_for("client_disconnected", 1), 3s);
        REQUIRE(left.has_value());
        CHECK((*left)["reason"] == "closed_by_peer");
        CHECK((*left)["close_code"] == 1000);
        CHECK((*left)["close_reason"] == "bye");
        CHECK((*left)["silent_ms"].is_number_integer());
        check_well_formed(server.proc);
    }

    TEST_CASE("vigil-serve --mode broadcast sends every message to every client")
    {
        io_fixture io;
        server_process server({"--mode", "broadcast"});
        client a(io.ioc);
        client b(io.ioc);
        a.open(server.url());
        b.open(server.url());
        REQUIRE(drive_until(io.ioc, server.proc, named_for("client_connected", 2), 3s).has_value());

        a.send("to everyone");
        REQUIRE(drive(io.ioc, [&] { return a.messages.size() == 1 && b.messages.size() == 1; }, 3s));
        CHECK(a.messages[0] == "to everyone");
        CHECK(b.messages[0] == "to everyone");
        REQUIRE(drive(io.ioc, [&] { return !server.proc.events_named("message").empty(); }, 3s));
        auto messages = server.proc.events_named("message");
        REQUIRE(messages.size() == 1);
        CHECK(messages[0]["id"] == 1);
        CHECK(messages[0]["bytes"] == 11);
    }

    TEST_CASE("vigil-serve serves wss:// with --tls-cert and --tls-key")
    {
        vt::test_pki pki;
        io_fixture io;
        server_process server({"--tls-cert", pki.server_cert, "--tls-key", pki.server_key});
        auto cfg = client_config();
        cfg.tls.ca_file = pki.ca_cert;
        client c(io.ioc, cfg);
        c.open(server.url("wss"));
        c.send("secret");
        REQUIRE(drive(io.ioc, [&] { return c.messages.size() == 1; }, 3s));
        CHECK(c.messages[0] == "secret");
        CHECK(drive_until(io.ioc, server.proc, named("message"), 3s).has_value());
    }

    TEST_CASE("vigil-serve keeps quiet live clients and evicts a silent one with pong_timeout")
    {
        io_fixture io;
        server_process server({"--ping-interval", "0.3", "--pong-timeout", "0.2"});
        // The relay stands for the network path: frozen, it is a client that vanished without
        // a FIN (a NAT entry expired, a phone lost its radio).
        vt::relay link(server.port);
        client c(io.ioc);
        c.open(link.url());
        REQUIRE(drive_until(io.ioc, server.proc, named("client_connected"), 3s).has_value());

        // The client sends nothing, but answers the server's pings: it is not evicted while
        // three of them go out and are answered.
        CHECK(drive(io.ioc, [&] { return link.pongs_to_target() >= 3; }, 3s));
        CHECK_FALSE(server.proc.find(named("client_disconnected")).has_value());

        link.freeze();
        const auto frozen_at = clock_type::now();
        std::optional<json> evicted;
        drive(io.ioc, [&] { return (evicted = server.proc.find(named("client_disconnected"))).has_value(); },
              3s);
        const auto detection = vt::ms_since(frozen_at);
        REQUIRE(evicted.has_value());
        CHECK((*evicted)["id"] == 1);
        CHECK((*evicted)["reason"] == "pong_timeout");
        // The frozen relay's kernel still acknowledges the server's pings.
        CHECK((*evicted)["diagnosis"] == "peer_unresponsive");
        REQUIRE((*evicted)["silent_ms"].is_number_integer());
        const auto silent = milliseconds((*evicted)["silent_ms"].get<long long>());
        // ping_interval + pong_timeout is the bound (jitter only makes pings earlier).
        CHECK(silent >= 200ms);
        CHECK(silent <= 500ms + tolerance);
        CHECK(detection <= 500ms + tolerance);
        check_well_formed(server.proc);
    }

    TEST_CASE("vigil-serve --app-ping/--app-pong: application-level heartbeats both ways")
    {
        io_fixture io;
        server_process server(
            {"--app-ping", "ping", "--app-pong", "pong", "--ping-interval", "0.2", "--pong-timeout", "0.15"});

        // Pings the server with "ping" and answers the server's "ping" with "pong". Its own
        // pings come every 0.4 s, later than the server's pong deadline: only its answers to
        // the server's pings keep it connected.
        auto cfg = client_config();
        cfg.heartbeat = vigil::message_heartbeat::text("ping", "pong");
        cfg.ping = vigil::ping_mode::fixed;
        cfg.ping_interval = 400ms;
        cfg.pong_timeout = 300ms;
        client speaks(io.ioc, cfg);
        speaks.open(server.url());
        REQUIRE(drive_until(io.ioc, server.proc, named_for("client_connected", 1), 3s).has_value());

        // Knows nothing of the text heartbeat: sees the server's pings as messages, never
        // answers, and is evicted.
        client deaf(io.ioc);
        deaf.open(server.url());
        REQUIRE(drive_until(io.ioc, server.proc, named_for("client_connected", 2), 3s).has_value());

        speaks.send("data still flows");
        CHECK(drive(io.ioc, [&] { return speaks.pongs >= 3 && deaf.ended; }, 3s));
        CHECK(speaks.pongs >= 3);
        REQUIRE(speaks.messages.size() == 1);
        CHECK(speaks.messages[0] == "data still flows");
        CHECK_FALSE(speaks.ended.has_value());
        CHECK_FALSE(server.proc.find(named_for("client_disconnected", 1)).has_value());

        REQUIRE_FALSE(deaf.messages.empty());
        for (const auto& m : deaf.messages) {
            CHECK(m == "ping");
        }
        auto evicted = drive_until(io.ioc, server.proc, named_for("client_disconnected", 2), 1s);
        REQUIRE(evicted.has_value());
        CHECK((*evicted)["reason"] == "pong_timeout");
        // The heartbeat is not data: only the one real message is reported.
        CHECK(server.proc.events_named("message").size() == 1);
    }

    TEST_CASE("vigil-serve reports a refused client and a client that never upgrades")
    {
        io_fixture io;
        server_process server({"--max-connections", "1", "--handshake-timeout", "0.3"});
        client first(io.ioc);
        first.open(server.url());

        client second(io.ioc);
        auto ec = second.connect(server.url());
        CHECK(vigil::http_status_of(ec) == 503);
        auto rejected = drive_until(io.ioc, server.proc, named("rejected"), 3s);
        REQUIRE(rejected.has_value());
        CHECK((*rejected)["reason"] == "handshake_rejected");
        CHECK((*rejected)["status"] == 503);
        CHECK((*rejected)["remote"].get<std::string>().rfind("127.0.0.1:", 0) == 0);

        // Room again once the first client has left.
        first.s.cancel();
        REQUIRE(drive_until(io.ioc, server.proc, named_for("client_disconnected", 1), 3s).has_value());

        // A TCP connection that never sends its upgrade request.
        asio::ip::tcp::socket mute(io.ioc);
        mute.connect({asio::ip::make_address_v4("127.0.0.1"), server.port});
        const auto connected_at = clock_type::now();
        auto handshake_timeout = [](const json& e) {
            return e.value("event", "") == "rejected" && e.value("reason", "") == "handshake_timeout";
        };
        auto timed_out = drive_until(io.ioc, server.proc, handshake_timeout, 3s);
        REQUIRE(timed_out.has_value());
        CHECK(vt::ms_since(connected_at) <= 300ms + tolerance);
    }

    TEST_CASE("vigil-serve --max-per-address and --connects-per-address: 503 and 429 with the limit in the rejected event")
    {
        io_fixture io;
        server_process server({"--max-per-address", "1", "--connects-per-address", "2/60"});
        auto rejected_with = [](unsigned status) {
            return [status](const json& e) {
                return e.value("event", "") == "rejected" && e.value("status", 0u) == status;
            };
        };

        // One open connection from 127.0.0.1 is its share: a second is refused with 503.
        client first(io.ioc);
        first.open(server.url());
        client second(io.ioc);
        auto ec = second.connect(server.url());
        CHECK(vigil::http_status_of(ec) == 503);
        CHECK(second.s.last_disconnect().retry_after == 5000ms);
        auto busy = drive_until(io.ioc, server.proc, rejected_with(503), 3s);
        REQUIRE(busy.has_value());
        CHECK((*busy)["reason"] == "handshake_rejected");
        CHECK((*busy)["remote"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
        CHECK((*busy)["detail"].get<std::string>().rfind("127.0.0.1 at max_connections_per_address (1 open)", 0) == 0);

        // Once it has left, the next connection is the second of the minute (the refused one
        // did not count), and the one after that is one too many: 429.
        first.s.cancel();
        REQUIRE(drive_until(io.ioc, server.proc, named_for("client_disconnected", 1), 3s).has_value());
        client third(io.ioc);
        third.open(server.url());
        third.s.cancel();
        REQUIRE(drive(io.ioc, [&] { return server.proc.events_named("client_disconnected").size() == 2; }, 3s));
        client fourth(io.ioc);
        ec = fourth.connect(server.url());
        CHECK(vigil::http_status_of(ec) == 429);
        CHECK_FALSE(vigil::is_permanent(ec));
        // The window frees a slot a minute after the first connect, less the time since.
        CHECK(fourth.s.last_disconnect().retry_after >= 59s);
        CHECK(fourth.s.last_disconnect().retry_after <= 60s);
        auto fast = drive_until(io.ioc, server.proc, rejected_with(429), 3s);
        REQUIRE(fast.has_value());
        CHECK((*fast)["reason"] == "handshake_rejected");
        CHECK((*fast)["detail"].get<std::string>().rfind("127.0.0.1 at connects_per_address (2 in 60000 ms)", 0) == 0);
        check_well_formed(server.proc);
    }

    TEST_CASE("vigil-serve --allow-origin, --token, --subprotocol: 403, 401, and the agreed subprotocol in both events")
    {
        io_fixture io;
        server_process server({"--allow-origin", "https://chat.example", "--token", "s3cret", "--subprotocol",
                               "chat.v2", "--subprotocol", "chat.v1"});
        auto cfg = client_config();
        cfg.headers = {{"Origin", "https://evil.example"}, {"Authorization", "Bearer s3cret"}};
        client foreign(io.ioc, cfg);
        auto ec = foreign.connect(server.url());
        CHECK(vigil::http_status_of(ec) == 403);
        CHECK(vigil::is_permanent(ec));

        cfg.headers = {{"Origin", "https://chat.example"}};
        client anonymous(io.ioc, cfg);
        ec = anonymous.connect(server.url());
        CHECK(vigil::http_status_of(ec) == 401);
        CHECK(vigil::is_permanent(ec));

        // No Origin (not a browser), the token in the URL, two subprotocols offered.
        child probe("VIGIL_PROBE", {"--no-reconnect", "--subprotocol", "chat.v1", "--subprotocol", "chat.v2",
                                    server.url() + "?token=s3cret"});
        auto connected = probe.wait_for(named("connected"), 5s);
        INFO("probe stderr: ", probe.err());
        REQUIRE(connected.has_value());
        CHECK((*connected)["subprotocol"] == "chat.v2");
        auto joined_event = server.proc.wait_for(named("client_connected"), 3s);
        REQUIRE(joined_event.has_value());
        CHECK((*joined_event)["subprotocol"] == "chat.v2");
        probe.signal(SIGTERM);
        CHECK(probe.wait_exit(5s).value_or(-1) == 0);

        auto rejected = server.proc.events_named("rejected");
        REQUIRE(rejected.size() == 2);
        CHECK(rejected[0]["status"] == 403);
        CHECK(rejected[0]["detail"].get<std::string>().find("Origin \"https://evil.example\" is not an allowed origin") !=
              std::string::npos);
        CHECK(rejected[1]["status"] == 401);
        check_well_formed(server.proc);
        check_well_formed(probe);
    }

    TEST_CASE("vigil-serve closes every client with 1001 on SIGTERM, prints stopped and exits 0")
    {
        io_fixture io;
        server_process server({});
        client a(io.ioc);
        client b(io.ioc);
        a.open(server.url());
        b.open(server.url());
        REQUIRE(drive_until(io.ioc, server.proc, named_for("client_connected", 2), 3s).has_value());

        server.proc.signal(SIGTERM);
        REQUIRE(drive(io.ioc, [&] { return a.ended && b.ended; }, 3s));
        CHECK(vigil::close_code_of(*a.ended) == 1001);
        CHECK(vigil::close_code_of(*b.ended) == 1001);
        CHECK(a.s.last_disconnect().close_code == 1001);

        auto status = server.proc.wait_exit(3s);
        INFO("stderr: ", server.proc.err());
        REQUIRE(status.has_value());
        CHECK(*status == 0);
        check_well_formed(server.proc);
        auto events = server.proc.events();
        REQUIRE_FALSE(events.empty());
        CHECK(events.back()["event"] == "stopped");
        auto left = server.proc.events_named("client_disconnected");
        REQUIRE(left.size() == 2);
        for (const auto& e : left) {
            CHECK(e["reason"] == "server_shutdown");
        }
    }

    TEST_CASE("vigil-serve: a second signal drops connections whose close handshake hangs")
    {
        io_fixture io;
        server_process server({});
        vt::relay link(server.port);
        client c(io.ioc);
        c.open(link.url());
        REQUIRE(drive_until(io.ioc, server.proc, named("client_connected"), 3s).has_value());

        // Frozen, the client can never answer the close frame: the first signal alone would
        // wait out the close timeout (5 s).
        link.freeze();
        const auto signalled_at = clock_type::now();
        server.proc.signal(SIGTERM);
        server.proc.signal(SIGINT);
        auto status = server.proc.wait_exit(4s);
        INFO("stderr: ", server.proc.err());
        REQUIRE(status.has_value());
        CHECK(*status == 0);
        CHECK(vt::ms_since(signalled_at) < 2s);
        auto events = server.proc.events();
        REQUIRE_FALSE(events.empty());
        CHECK(events.back()["event"] == "stopped");
    }

    TEST_CASE("vigil-serve --idle-timeout evicts a client that answers pings but sends no data")
    {
        io_fixture io;
        server_process server({"--idle-timeout", "0.5", "--ping-interval", "0.2", "--pong-timeout", "0.1"});
        client c(io.ioc);
        c.open(server.url());
        const auto opened_at = clock_type::now();
        auto evicted = drive_until(io.ioc, server.proc, named("client_disconnected"), 3s);
        REQUIRE(evicted.has_value());
        CHECK((*evicted)["reason"] == "idle_timeout");
        CHECK(vt::ms_since(opened_at) >= 450ms);
        CHECK(vt::ms_since(opened_at) <= 500ms + tolerance);
    }

    TEST_CASE("vigil-serve stops on SIGINT with no client too")
    {
        server_process server({});
        server.proc.signal(SIGINT);
        auto status = server.proc.wait_exit(3s);
        INFO("stderr: ", server.proc.err());
        REQUIRE(status.has_value());
        CHECK(*status == 0);
        auto events = server.proc.events();
        REQUIRE(events.size() == 2);
        CHECK(events.back()["event"] == "stopped");
    }

    TEST_CASE("vigil-serve rejects bad arguments with exit status 64, naming the flag")
    {
        struct bad_args {
            std::vector<std::string> args;
            std::string named;
        };
        const std::vector<bad_args> cases = {
            {{"--bogus"}, "--bogus"},
            {{"stray"}, "stray"},
            {{"--port"}, "--port"},
            {{"--port", "70000"}, "--port"},
            {{"--port", "eighty"}, "--port"},
            {{"--mode", "sideways"}, "--mode"},
            {{"--ping-interval", "soon"}, "--ping-interval"},
            {{"--pong-timeout", "-1"}, "--pong-timeout"},
            {{"--pong-timeout", "0"}, "--pong-timeout"},
            {{"--idle-timeout", "nan"}, "--idle-timeout"},
            {{"--ping-interval", "1", "--pong-timeout", "2"}, "--pong-timeout"},
            {{"--ping-interval", "2", "--pong-timeout", "1", "--idle-timeout", "1"}, "--idle-timeout"},
            {{"--handshake-timeout", "0"}, "--handshake-timeout"},
            {{"--max-connections", "0"}, "--max-connections"},
            {{"--max-connections", "-3"}, "--max-connections"},
            {{"--max-per-address", "0"}, "--max-per-address"},
            {{"--max-per-address", "many"}, "--max-per-address"},
            {{"--connects-per-address", "5"}, "--connects-per-address"},
            {{"--connects-per-address", "0/1"}, "--connects-per-address"},
            {{"--connects-per-address", "5/0"}, "--connects-per-address"},
            {{"--max-message", "0"}, "--max-message"},
            {{"--tls-cert", "cert.pem"}, "--tls-key"},
            {{"--tls-key", "key.pem"}, "--tls-cert"},
            {{"--app-ping", "ping"}, "--app-pong"},
            {{"--app-pong", "pong"}, "--app-ping"},
            {{"--app-ping", "same", "--app-pong", "same"}, "--app-pong"},
            {{"--help=yes"}, "--help"},
            {{"--allow-origin", "chat.example"}, "--allow-origin"},
            {{"--require-origin"}, "--require-origin"},
            {{"--token", ""}, "--token"},
        };
        for (const auto& c : cases) {
            CAPTURE(joined(c.args));
            child proc("VIGIL_SERVE", c.args);
            auto status = proc.wait_exit(5s);
            REQUIRE(status.has_value());
            CHECK(*status == 64);
            CHECK(proc.events().empty());
            const auto err = proc.err();
            CHECK_MESSAGE(err.find(c.named) != std::string::npos, "stderr: ", err);
            CHECK(err.find("usage") != std::string::npos);
        }
    }

    TEST_CASE("vigil-serve: unreadable TLS files exit 64, a port in use exits 1")
    {
        {
            child proc("VIGIL_SERVE",
                       {"--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"});
            auto status = proc.wait_exit(5s);
            REQUIRE(status.has_value());
            CHECK(*status == 64);
            CHECK(proc.events().empty());
            CHECK_MESSAGE(proc.err().find("cert.pem") != std::string::npos, "stderr: ", proc.err());
        }
        server_process first({});
        child second("VIGIL_SERVE", {"--port", std::to_string(first.port)});
        auto status = second.wait_exit(5s);
        REQUIRE(status.has_value());
        CHECK(*status == 1);
        CHECK(second.events().empty());
        CHECK_FALSE(second.err().empty());
    }

    // Skipped (and counted so) where vigil-serve was built without prometheus-cpp.
    TEST_CASE("vigil-serve --metrics-port: a scrape of /metrics counts the connects, refusals and ends that happened"
              * doctest::skip(!serve_has_metrics))
    {
        io_fixture io;
        server_process server({"--ping-interval", "0.3", "--pong-timeout", "0.2", "--max-per-address", "3",
                               "--metrics-port", "0"});
        const auto listening = server.proc.events().front();
        REQUIRE(listening.contains("metrics_port"));
        const auto metrics_port = listening["metrics_port"].get<std::uint16_t>();
        REQUIRE(metrics_port != 0);

        // Three clients: one stays, one leaves with a close handshake, one vanishes (its
        // relay freezes) and is evicted; a fourth is refused (503, over --max-per-address).
        vt::relay link(server.port);
        client stays(io.ioc), leaves(io.ioc), vanishes(io.ioc), refused(io.ioc);
        stays.open(server.url());
        leaves.open(server.url());
        vanishes.open(link.url());
        REQUIRE(drive(io.ioc, [&] { return server.proc.events_named("client_connected").size() == 3; }, 3s));
        CHECK(vigil::http_status_of(refused.connect(server.url())) == 503);
        constexpr int m = 5;
        for (int i = 0; i < m; ++i) {
            stays.send("message " + std::to_string(i));
        }
        REQUIRE(drive(io.ioc, [&] { return stays.messages.size() == m; }, 3s));
        std::optional<error_code> closed;
        asio::co_spawn(leaves.s.get_executor(), leaves.s.close(1000, "bye"),
                       [&closed](std::exception_ptr, error_code ec) { closed = ec; });
        link.freeze();
        REQUIRE(drive(io.ioc, [&] { return server.proc.events_named("client_disconnected").size() == 2; }, 3s));

        const auto text = scrape(metrics_port);
        INFO("scraped:\n", text);
        REQUIRE_FALSE(text.empty());
        CHECK(sample(text, "vigil_server_accepted_total") == 4);
        CHECK(sample(text, "vigil_server_connected_total") == 3);
        CHECK(sample(text, "vigil_server_connections_open") == 1);
        CHECK(sample(text, "vigil_server_rejected_total{reason=\"http_503\"}") == 1);
        CHECK(sample(text, "vigil_server_disconnects_total{reason=\"closed_by_peer\"}") == 1);
        CHECK(sample(text, "vigil_server_disconnects_total{reason=\"pong_timeout\"}") == 1);
        CHECK(sample(text, "vigil_server_disconnects_total{reason=\"network_error\"}") == -1);
        CHECK(text.find("# TYPE vigil_server_disconnects_total counter") != std::string::npos);
        // The five messages each way, "message 0" .. "message 4" (9 bytes each), and nothing
        // else: the clients use protocol pings, which are not data messages.
        CHECK(sample(text, "vigil_server_messages_received_total") == m);
        CHECK(sample(text, "vigil_server_received_bytes_total") == 9 * m);
        CHECK(sample(text, "vigil_server_messages_sent_total") == m);
        CHECK(sample(text, "vigil_server_sent_bytes_total") == 9 * m);
        CHECK(sample(text, "vigil_server_send_queue_messages") == 0);
        CHECK(sample(text, "vigil_server_send_queue_bytes") == 0);
        CHECK(sample(text, "vigil_server_receive_queue_messages") == 0);
        CHECK(text.find("# TYPE vigil_server_round_trip_seconds histogram") != std::string::npos);
        // The client that stays answers the server's pings (every 0.3 s when idle): each
        // answer is a round trip, all of them far below a second on loopback.
        std::string later;
        REQUIRE(drive(io.ioc, [&] {
            later = scrape(metrics_port);
            return sample(later, "vigil_server_round_trip_seconds_count") >= 1;
        }, 3s));
        INFO("scraped later:\n", later);
        const auto trips = sample(later, "vigil_server_round_trip_seconds_count");
        CHECK(sample(later, "vigil_server_round_trip_seconds_bucket{le=\"1\"}") == trips);
        CHECK(sample(later, "vigil_server_round_trip_seconds_bucket{le=\"+Inf\"}") == trips);
        CHECK(sample(later, "vigil_server_round_trip_seconds_sum") < trips);

        // A second vigil-serve asking for the same metrics port fails clearly, exit 1.
        child second("VIGIL_SERVE", {"--metrics-port", std::to_string(metrics_port)});
        auto status = second.wait_exit(5s);
        REQUIRE(status.has_value());
        CHECK(*status == 1);
        CHECK_MESSAGE(second.err().find("cannot listen for metrics on 127.0.0.1:" + std::to_string(metrics_port)) !=
                          std::string::npos,
                      "stderr: ", second.err());
        check_well_formed(server.proc);
    }

    TEST_CASE("vigil-serve --help prints the options and exits 0")
    {
        child proc("VIGIL_SERVE", {"--help"});
        auto status = proc.wait_exit(5s);
        REQUIRE(status.has_value());
        CHECK(*status == 0);
        CHECK(proc.events().empty());
        CHECK(proc.bad_lines().size() > 10);
    }

    TEST_CASE("vigil-serve --deflate: compressed clients say so in client_connected, others still served")
    {
        io_fixture io;
        server_process server({"--deflate", "--deflate-window-bits", "12"});
        auto cfg = client_config();
        cfg.deflate.enabled = true;
        client zipped(io.ioc, cfg);
        zipped.open(server.url());
        auto first = drive_until(io.ioc, server.proc, named("client_connected"), 3s);
        REQUIRE(first.has_value());
        CHECK((*first)["compressed"] == true);
        CHECK(zipped.s.compressed());
        const std::string tick(3000, 'x');
        zipped.send(tick);
        REQUIRE(drive(io.ioc, [&] { return zipped.messages.size() == 1; }, 3s));
        CHECK(zipped.messages[0] == tick);

        client plain(io.ioc);
        plain.open(server.url());
        auto second = drive_until(io.ioc, server.proc, named_for("client_connected", 2), 3s);
        REQUIRE(second.has_value());
        CHECK((*second)["compressed"] == false);
        CHECK_FALSE(plain.s.compressed());
        plain.send("hello");
        REQUIRE(drive(io.ioc, [&] { return plain.messages.size() == 1; }, 3s));
        CHECK(plain.messages[0] == "hello");
        check_well_formed(server.proc);

        child bad("VIGIL_SERVE", {"--deflate", "--deflate-window-bits", "8"});
        auto status = bad.wait_exit(5s);
        REQUIRE(status.has_value());
        CHECK(*status == 64);
        CHECK_MESSAGE(bad.err().find("--deflate-window-bits must be in [9, 15]") != std::string::npos, bad.err());
    }
}

TEST_SUITE("probe")
{
    TEST_CASE("probe --deflate against vigil-serve --deflate: both report compression in use")
    {
        server_process server({"--deflate"});
        child probe("VIGIL_PROBE", {"--deflate", "--no-reconnect", "--duration", "0.5", server.url()});
        auto status = probe.wait_exit(5s);
        INFO("probe stderr: ", probe.err());
        REQUIRE(status.has_value());
        CHECK(*status == 0);
        auto connected = probe.events_named("connected");
        REQUIRE(connected.size() == 1);
        CHECK(connected[0]["compressed"] == true);
        auto seen = server.proc.wait_for(named("client_connected"), 3s);
        REQUIRE(seen.has_value());
        CHECK((*seen)["compressed"] == true);
        check_well_formed(probe);
    }

    TEST_CASE("probe --app-ping/--app-pong against vigil-serve: text pongs, both ways")
    {
        // The server pings every 0.2 s when idle and the probe every 0.4 s whatever happens:
        // each answers the other's text pings, and neither sees them as messages.
        server_process server(
            {"--app-ping", "ping", "--app-pong", "pong", "--ping-interval", "0.2", "--pong-timeout", "0.15"});
        child probe("VIGIL_PROBE", {"--app-ping", "ping", "--app-pong", "pong", "--ping-mode", "fixed",
                                    "--ping-interval", "0.4", "--pong-timeout", "0.3", server.url()});
        // Three of the probe's rounds, with a round of the server's between each two; then
        // the probe leaves with its close handshake.
        CHECK(probe.wait_for_count("pong", 3, 5s));
        probe.signal(SIGTERM);
        auto status = probe.wait_exit(5s);
        INFO("probe stderr: ", probe.err());
        REQUIRE(status.has_value());
        CHECK(*status == 0);
        check_well_formed(probe);

        auto pongs = probe.events_named("pong");
        CHECK(pongs.size() >= 3);
        for (auto& p : pongs) {
            REQUIRE(p["rtt_ms"].is_number());
            CHECK(p["rtt_ms"].get<double>() >= 0);
            CHECK(p["rtt_ms"].get<double>() < 300);
        }
        CHECK(probe.events_named("message").empty());
        auto disconnected = probe.events_named("disconnected");
        REQUIRE(disconnected.size() == 1);
        CHECK(disconnected[0]["reason"] == "ok");

        // The probe left with its own close handshake, never evicted.
        auto left = server.proc.wait_for(named("client_disconnected"), 3s);
        REQUIRE(left.has_value());
        CHECK((*left)["close_code"] == 1000);
        CHECK(server.proc.events_named("message").empty());
    }

    TEST_CASE("probe --app-pong-field recognises a JSON pong by one field")
    {
        // The server's pong carries more than the field the probe looks for.
        server_process server(
            {"--app-ping", R"({"type":"ping"})", "--app-pong", R"({"seq":1,"type":"pong"})"});
        child probe("VIGIL_PROBE", {"--app-ping", R"({"type":"ping"})", "--app-pong-field", "type=pong",
                                    "--ping-interval", "0.2", "--pong-timeout", "0.15", server.url()});
        CHECK(probe.wait_for_count("pong", 3, 5s));
        probe.signal(SIGTERM);
        auto status = probe.wait_exit(5s);
        INFO("probe stderr: ", probe.err());
        REQUIRE(status.has_value());
        CHECK(*status == 0);
        check_well_formed(probe);
        auto pongs = probe.events_named("pong");
        CHECK(pongs.size() >= 3);
        for (auto& p : pongs) {
            REQUIRE(p["rtt_ms"].is_number());
            CHECK(p["rtt_ms"].get<double>() >= 0);
        }
        CHECK(probe.events_named("ping").size() >= pongs.size());
        CHECK(probe.events_named("message").empty());
        CHECK(probe.events_named("disconnected").size() == 1);
    }

    TEST_CASE("probe rejects inconsistent --app-ping/--app-pong/--app-pong-field with 64")
    {
        struct bad_args {
            std::vector<std::string> args;
            std::string named;
        };
        const std::vector<bad_args> cases = {
            {{"--app-ping", "ping"}, "--app-pong"},
            {{"--app-pong", "pong"}, "--app-ping"},
            {{"--app-pong-field", "type=pong"}, "--app-ping"},
            {{"--app-ping", "ping", "--app-pong-field", "no-equals-sign"}, "--app-pong-field"},
            {{"--app-ping", "ping", "--app-pong-field", "=pong"}, "--app-pong-field"},
            {{"--app-ping", "", "--app-pong", "pong"}, "--app-ping"},
            {{"--app-ping", "same", "--app-pong", "same"}, "--app-pong"},
        };
        for (const auto& c : cases) {
            auto args = c.args;
            args.emplace_back("ws://127.0.0.1:1/");
            CAPTURE(joined(args));
            child proc("VIGIL_PROBE", args);
            auto status = proc.wait_exit(5s);
            REQUIRE(status.has_value());
            CHECK(*status == 64);
            CHECK(proc.events().empty());
            CHECK_MESSAGE(proc.err().find(c.named) != std::string::npos, "stderr: ", proc.err());
        }
    }
}
