// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include "hostile.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace vigil::hostile {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------
// Skipping

namespace {

std::atomic<std::size_t> started{0};
std::atomic<std::size_t> skipped{0};

std::string proc_path(pid_t pid, const char* what)
{
    return "/proc/" + (pid == 0 ? std::string("self") : std::to_string(pid)) + "/" + what;
}

}  // namespace

void skip_case(const std::string& why)
{
    ++skipped;
    std::cerr << "\n*** vigil-hostile: SKIPPED this case: " << why << " ***\n\n";
}

void case_started()
{
    ++started;
}

std::size_t cases_started()
{
    return started.load();
}

std::size_t cases_skipped()
{
    return skipped.load();
}

std::optional<std::string> serve_unavailable()
{
    const char* path = std::getenv("VIGIL_SERVE");
    if (!path || !*path)
        return "VIGIL_SERVE does not name the vigil-serve binary (meson sets it when examples are built)";
    if (::access(path, X_OK) != 0)
        return std::string("VIGIL_SERVE (") + path + ") is not an executable";
    return proc_unavailable();
}

std::optional<std::string> proc_unavailable()
{
    if (!proc_status() || count_fds() == 0)
        return "/proc/self/status or /proc/self/fd cannot be read: no way to measure memory and descriptors";
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// /proc

std::optional<memory> proc_status(pid_t pid)
{
    std::ifstream in(proc_path(pid, "status"));
    if (!in)
        return std::nullopt;
    memory m;
    bool rss = false;
    bool hwm = false;
    for (std::string line; std::getline(in, line);) {
        // "VmRSS:	    5420 kB"
        auto take = [&](const char* key, std::size_t& into) {
            if (line.rfind(key, 0) != 0)
                return false;
            into = std::strtoull(line.c_str() + std::char_traits<char>::length(key), nullptr, 10);
            return true;
        };
        rss = take("VmRSS:", m.rss_kib) || rss;
        hwm = take("VmHWM:", m.hwm_kib) || hwm;
    }
    if (!rss || !hwm)
        return std::nullopt;
    return m;
}

std::size_t count_fds(pid_t pid)
{
    DIR* dir = ::opendir(proc_path(pid, "fd").c_str());
    if (!dir)
        return 0;
    std::size_t n = 0;
    while (const dirent* e = ::readdir(dir)) {
        if (e->d_name[0] != '.')
            ++n;
    }
    ::closedir(dir);
    // Our own count reads through a descriptor of its own.
    return pid == 0 || pid == ::getpid() ? n - 1 : n;
}

namespace {

std::size_t wait_fds(pid_t pid, const std::function<bool(std::size_t)>& done, milliseconds bound)
{
    const auto deadline = steady::now() + bound;
    for (;;) {
        const auto now_open = count_fds(pid);
        if (done(now_open) || steady::now() >= deadline)
            return now_open;
        // /proc has no notification for descriptors: look again shortly.
        std::this_thread::sleep_for(10ms);
    }
}

}  // namespace

std::size_t wait_fds_at_most(pid_t pid, std::size_t n, milliseconds bound)
{
    return wait_fds(
        pid, [n](std::size_t open) { return open <= n; }, bound);
}

std::size_t wait_fds_at_least(pid_t pid, std::size_t n, milliseconds bound)
{
    return wait_fds(
        pid, [n](std::size_t open) { return open >= n; }, bound);
}

std::size_t raise_fd_limit()
{
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0)
        return 0;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &lim);
        ::getrlimit(RLIMIT_NOFILE, &lim);
    }
    return static_cast<std::size_t>(lim.rlim_cur);
}

// ---------------------------------------------------------------------------------------
// vigil-serve

serve_process::serve_process(std::vector<std::string> args)
{
    const char* path = std::getenv("VIGIL_SERVE");
    if (!path)
        throw std::runtime_error("VIGIL_SERVE is not set");
    std::vector<std::string> argv{path};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--port", "0"});
    child_ = std::make_unique<test::child_process>(std::move(argv));
    pid_ = child_->pid();
    auto listening = child_->wait_for("listening", 5s);
    if (!listening)
        throw std::runtime_error("vigil-serve printed no listening line: " + child_->transcript());
    port_ = (*listening)["port"].get<std::uint16_t>();
    reader_ = std::thread([this] { pump(); });
}

serve_process::~serve_process()
{
    stop_ = true;
    if (reader_.joinable())
        reader_.join();
    std::lock_guard lock(mutex_);
    child_->terminate();
}

void serve_process::pump()
{
    while (!stop_) {
        std::size_t fresh = 0;
        {
            std::lock_guard lock(mutex_);
            fresh = child_->pump();
        }
        if (fresh > 0)
            changed_.notify_all();
        // child_process reads without blocking here (a blocking read would hold the lock);
        // a pipe of 64 KiB drained every 2 ms keeps up with any line rate vigil-serve has.
        std::this_thread::sleep_for(2ms);
    }
}

bool serve_process::running()
{
    std::lock_guard lock(mutex_);
    return child_->running();
}

std::optional<json> serve_process::wait_for(const std::function<bool(const json&)>& pred, milliseconds bound)
{
    const auto deadline = steady::now() + bound;
    std::size_t from = 0;  // the lines looked at already
    std::unique_lock lock(mutex_);
    for (;;) {
        const auto& lines = child_->events();
        for (; from < lines.size(); ++from) {
            if (pred(lines[from]))
                return lines[from];
        }
        if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && from == child_->events().size())
            return std::nullopt;
    }
}

std::optional<json> serve_process::find(const std::function<bool(const json&)>& pred)
{
    return wait_for(pred, 0ms);
}

std::size_t serve_process::count(const std::function<bool(const json&)>& pred)
{
    std::lock_guard lock(mutex_);
    const auto& lines = child_->events();
    return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), pred));
}

std::size_t serve_process::wait_count(const std::function<bool(const json&)>& pred, std::size_t n, milliseconds bound)
{
    const auto deadline = steady::now() + bound;
    std::size_t from = 0;
    std::size_t holds = 0;
    std::unique_lock lock(mutex_);
    for (;;) {
        const auto& lines = child_->events();
        for (; from < lines.size(); ++from)
            holds += pred(lines[from]) ? 1 : 0;
        if (holds >= n)
            return holds;
        if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && from == child_->events().size())
            return holds;
    }
}

std::optional<json> serve_process::rejected(const std::string& remote, milliseconds bound)
{
    return wait_for(
        [&](const json& e) { return e.value("event", "") == "rejected" && e.value("remote", "") == remote; }, bound);
}

std::optional<json> serve_process::disconnected(const std::string& remote, milliseconds bound)
{
    const auto deadline = steady::now() + bound;
    auto joined = wait_for(
        [&](const json& e) { return e.value("event", "") == "client_connected" && e.value("remote", "") == remote; },
        bound);
    if (!joined)
        return std::nullopt;
    const auto id = (*joined)["id"];
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
    return wait_for([&](const json& e) { return e.value("event", "") == "client_disconnected" && e["id"] == id; },
                    std::max(left, 0ms));
}

std::string serve_process::transcript()
{
    std::lock_guard lock(mutex_);
    // The whole transcript can be a line per echoed message: the last lines say enough.
    const auto& lines = child_->events();
    std::string out = "vigil-serve (" + std::to_string(lines.size()) + " lines, the last 40):\n";
    for (std::size_t i = lines.size() > 40 ? lines.size() - 40 : 0; i < lines.size(); ++i)
        out += lines[i].dump() + "\n";
    out += "stderr: " + child_->stderr_text();
    return out;
}

// ---------------------------------------------------------------------------------------
// The well-behaved client

std::string latency_report::describe() const
{
    char text[160];
    std::snprintf(text, sizeof text, "%zu of %zu echoed, p50 %lld ms, p99 %lld ms, max %lld ms", echoed, sent,
                  static_cast<long long>(p50.count()), static_cast<long long>(p99.count()),
                  static_cast<long long>(max.count()));
    return error.empty() ? text : std::string(text) + " (" + error + ")";
}

echo_prober::echo_prober(std::uint16_t port, milliseconds every)
{
    thread_ = std::thread([this, port, every] { run(port, every); });
}

echo_prober::~echo_prober()
{
    stop();
}

void echo_prober::run(std::uint16_t port, milliseconds every)
{
    asio::io_context ioc(1);
    auto fail = [this](std::string what, const error_code& ec) {
        std::lock_guard lock(mutex_);
        if (error_.empty())
            error_ = std::move(what) + ": " + ec.message() + " [" + error_name(ec) + "]";
        changed_.notify_all();
    };
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            test::raw_client raw(co_await asio::this_coro::executor);
            if (auto ec = co_await open_upgraded(raw, port)) {
                fail("upgrade", ec);
                co_return;
            }
            {
                std::lock_guard lock(mutex_);
                local_name_ = raw.local_name();
            }
            asio::steady_timer pace(co_await asio::this_coro::executor);
            for (std::size_t n = 0; !stop_; ++n) {
                pace.expires_after(every);
                const std::string text = "probe " + std::to_string(n);
                const auto sent_at = steady::now();
                if (auto ec = co_await raw.write(test::raw_client::frame(test::opcode::text, text))) {
                    fail("sending a probe", ec);
                    co_return;
                }
                {
                    std::lock_guard lock(mutex_);
                    ++sent_;
                }
                for (;;) {
                    test::raw_frame f;
                    if (auto ec = co_await raw.read_frame(f, 5s)) {
                        fail("waiting for the echo of \"" + text + "\"", ec);
                        co_return;
                    }
                    if (f.op == test::opcode::ping) {
                        co_await raw.write(test::raw_client::frame(test::opcode::pong, f.payload));
                        continue;
                    }
                    if (f.op == test::opcode::text && f.payload == text)
                        break;
                    fail("unexpected frame (opcode " + std::to_string(f.op) + ") instead of an echo",
                         error::not_connected);
                    co_return;
                }
                const double rtt = std::chrono::duration<double, std::milli>(steady::now() - sent_at).count();
                {
                    std::lock_guard lock(mutex_);
                    rtt_ms_.push_back(rtt);
                }
                ++echoed_;
                changed_.notify_all();
                co_await pace.async_wait(asio::as_tuple(asio::use_awaitable));
            }
            co_await raw.write(test::raw_client::close_frame(1000, "done"));
            co_await read_until_close(raw, 2s);
        },
        asio::detached);
    ioc.run();
}

bool echo_prober::wait_echoes(std::size_t n, milliseconds bound)
{
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, bound, [&] { return echoed_.load() >= n || !error_.empty(); }) && error_.empty();
}

void echo_prober::stop()
{
    stop_ = true;
    if (thread_.joinable())
        thread_.join();
}

void echo_prober::reset()
{
    std::lock_guard lock(mutex_);
    rtt_ms_.clear();
    sent_ = 0;
}

latency_report echo_prober::report()
{
    std::lock_guard lock(mutex_);
    latency_report r;
    r.sent = sent_;
    r.echoed = rtt_ms_.size();
    r.error = error_;
    auto values = rtt_ms_;
    auto ms = [](double v) { return milliseconds(static_cast<long long>(std::ceil(v))); };
    r.p50 = ms(percentile(values, 0.50));
    r.p99 = ms(percentile(values, 0.99));
    r.max = ms(percentile(values, 1.0));
    return r;
}

std::string echo_prober::local_name()
{
    std::lock_guard lock(mutex_);
    return local_name_;
}

// ---------------------------------------------------------------------------------------
// Attack primitives

asio::awaitable<error_code> open_upgraded(test::raw_client& raw, std::uint16_t port, int receive_buffer)
{
    if (auto ec = co_await raw.connect(port, receive_buffer))
        co_return ec;
    co_return co_await raw.upgrade("/");
}

std::string ping_frame(std::size_t size, std::uint8_t op)
{
    return test::raw_client::frame(op, std::string(size, 'p'));
}

asio::awaitable<close_seen> read_until_close(test::raw_client& raw, milliseconds bound)
{
    close_seen seen;
    const auto deadline = steady::now() + bound;
    for (;;) {
        test::raw_frame f;
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
        seen.ec = co_await raw.read_frame(f, std::max(left, 1ms));
        if (seen.ec)
            break;
        if (f.op == test::opcode::close) {
            seen.code = f.close_code();
            seen.reason = f.close_reason();
            break;
        }
        ++seen.frames_before;
    }
    if (!seen.ec) {
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
        seen.end = co_await raw.wait_closed(std::max(left, 1ms));
    }
    error_code ignored;
    raw.socket().close(ignored);
    co_return seen;
}

std::string altered_request(std::string_view from, std::string_view to, std::string_view extra)
{
    auto req = test::raw_client::upgrade_request("/", extra);
    if (const auto at = req.find(from); at != std::string::npos)
        req.replace(at, from.size(), to);
    return req;
}

double percentile(std::vector<double>& values, double p)
{
    if (values.empty())
        return 0;
    std::sort(values.begin(), values.end());
    const auto at = static_cast<std::size_t>(std::ceil(p * static_cast<double>(values.size())));
    return values[std::min(values.size() - 1, at == 0 ? 0 : at - 1)];
}

}  // namespace vigil::hostile
