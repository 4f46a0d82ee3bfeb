// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-soak: supervised clients against a server while faults are injected, then a check
// that no message was lost silently, duplicated or reordered, and that nothing leaked.
//
//   vigil-soak run [--duration S] [--clients N] [--rate-ms N] [--dir D] [--seed N]
//                  [--ping-ms N] [--pong-ms N]
//
// `run` starts the other two roles of this binary as child processes (`server`, which it
// kills and restarts, and `clients`, N vigil::supervisors), puts a relay of its own between
// them, and injects faults until the end; bench/README.md describes the phases and every
// check. Exit status 0 when every check passed, 1 otherwise, 2 when the run itself failed.

#include "fault_relay.hpp"
#include "soak.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace soak {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {
const auto process_start = steady::now();
}

long rss_kb()
{
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0)
            return std::stol(line.substr(6));
    return -1;
}

long heap_kb()
{
    const auto m = ::mallinfo2();
    return static_cast<long>((m.uordblks + m.hblkhd) / 1024);
}

int count_fds()
{
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (auto* e = ::readdir(d))
            if (e->d_name[0] != '.')
                ++n;
        ::closedir(d);
        --n;  // the directory stream itself
    }
    return n;
}

void emit(const char* event, json fields)
{
    fields["event"] = event;
    fields["t"] = std::chrono::duration<double>(steady::now() - process_start).count();
    const auto line = fields.dump() + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
}

void raise_fd_limit()
{
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

std::string make_message(std::uint32_t client, std::uint64_t seq, std::size_t padding)
{
    std::string s = std::to_string(client);
    s += ' ';
    s += std::to_string(seq);
    s += ' ';
    s.append(padding, 'p');
    return s;
}

arg_list::arg_list(const std::vector<std::string>& args)
{
    for (std::size_t i = 0; i < args.size(); i += 2) {
        if (args[i].rfind("--", 0) != 0 || i + 1 >= args.size())
            throw std::invalid_argument("expected --name value pairs, got \"" + args[i] + "\"");
        pairs.emplace_back(args[i], args[i + 1]);
    }
}

std::string arg_list::get(const std::string& name, const std::string& fallback) const
{
    for (const auto& [k, v] : pairs)
        if (k == name)
            return v;
    return fallback;
}

long arg_list::get_int(const std::string& name, long fallback) const
{
    return has(name) ? std::stol(get(name, "")) : fallback;
}

double arg_list::get_double(const std::string& name, double fallback) const
{
    return has(name) ? std::stod(get(name, "")) : fallback;
}

bool arg_list::has(const std::string& name) const
{
    for (const auto& [k, v] : pairs)
        if (k == name)
            return true;
    return false;
}

namespace {

// ---------------------------------------------------------------------------------------
// Child processes: stdout read as JSON lines, stderr to a file (scanned for sanitizer reports
// at the end). Spawned with every inherited descriptor above 2 closed: the relay's sockets
// must never leak into a server, where they would hold connections open and count as fds.

class child {
public:
    child(std::string name, const std::vector<std::string>& argv, const std::string& stderr_path)
        : name_(std::move(name)), stderr_path_(stderr_path)
    {
        int out[2];
        if (::pipe2(out, O_CLOEXEC) != 0)
            throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
        posix_spawn_file_actions_t fa;
        ::posix_spawn_file_actions_init(&fa);
        ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        ::posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        ::posix_spawn_file_actions_addopen(&fa, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::posix_spawn_file_actions_addclosefrom_np(&fa, 3);
        std::vector<char*> cargv;
        for (const auto& a : argv)
            cargv.push_back(const_cast<char*>(a.c_str()));
        cargv.push_back(nullptr);
        const int rc = ::posix_spawn(&pid_, cargv[0], &fa, nullptr, cargv.data(), environ);
        ::posix_spawn_file_actions_destroy(&fa);
        ::close(out[1]);
        if (rc != 0) {
            ::close(out[0]);
            throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
        }
        out_ = out[0];
        ::fcntl(out_, F_SETFL, ::fcntl(out_, F_GETFL) | O_NONBLOCK);
    }

    ~child()
    {
        if (!status_) {
            ::kill(pid_, SIGKILL);
            int st = 0;
            ::waitpid(pid_, &st, 0);
        }
        if (out_ >= 0)
            ::close(out_);
    }

    child(const child&) = delete;
    child& operator=(const child&) = delete;

    const std::string& name() const noexcept { return name_; }
    const std::string& stderr_path() const noexcept { return stderr_path_; }
    pid_t pid() const noexcept { return pid_; }

    /// Reads what is there; returns the JSON lines that arrived.
    std::vector<json> pump()
    {
        std::vector<json> fresh;
        char buf[65536];
        for (;;) {
            auto n = ::read(out_, buf, sizeof buf);
            if (n <= 0)
                break;
            pending_.append(buf, static_cast<std::size_t>(n));
        }
        std::size_t pos;
        while ((pos = pending_.find('\n')) != std::string::npos) {
            auto line = pending_.substr(0, pos);
            pending_.erase(0, pos + 1);
            auto j = json::parse(line, nullptr, false);
            if (!j.is_discarded() && j.is_object())
                fresh.push_back(std::move(j));
            else
                bad_lines_.push_back(line);
        }
        return fresh;
    }

    void signal(int sig)
    {
        if (!status_)
            ::kill(pid_, sig);
    }

    /// Reaps the child if it exited; its status (128 + signal when a signal ended it).
    std::optional<int> poll_exit()
    {
        if (status_)
            return status_;
        int st = 0;
        if (::waitpid(pid_, &st, WNOHANG) == pid_)
            status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return status_;
    }

    const std::vector<std::string>& bad_lines() const noexcept { return bad_lines_; }

private:
    std::string name_;
    std::string stderr_path_;
    pid_t pid_ = -1;
    int out_ = -1;
    std::string pending_;
    std::vector<std::string> bad_lines_;
    std::optional<int> status_;
};

// ---------------------------------------------------------------------------------------

struct instance {
    int number = 0;
    std::unique_ptr<child> proc;
    json listening;
    json last_stats;
    std::vector<json> slow_ends;
    bool stopped_event = false;
    std::string ended_by;  // "SIGKILL", "SIGTERM", or "" while it runs
    std::optional<int> exit_status;
};

struct check_row {
    std::string name;
    bool pass;
    std::string detail;
    bool skipped = false;
};

// AddressSanitizer keeps freed memory in quarantine: RSS then says nothing about leaks (its
// own leak checker at exit does).
#if defined(__SANITIZE_ADDRESS__)
constexpr bool under_asan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool under_asan = true;
#else
constexpr bool under_asan = false;
#endif
#else
constexpr bool under_asan = false;
#endif

std::string fmt_int(std::uint64_t v)
{
    // Built by appending: g++ 12 misreads an insert() into the same string as an overlapping
    // copy (-Wrestrict).
    const auto digits = std::to_string(v);
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0)
            out.push_back(',');
        out.push_back(digits[i]);
    }
    return out;
}

class soak_run {
public:
    soak_run(const arg_list& a, std::string self) : self_(std::move(self))
    {
        duration_ = std::chrono::duration<double>(a.get_double("--duration", 600));
        clients_ = static_cast<std::size_t>(a.get_int("--clients", 1000));
        rate_ms_ = a.get_int("--rate-ms", 500);
        ping_ms_ = a.get_int("--ping-ms", 1000);
        pong_ms_ = a.get_int("--pong-ms", 500);
        seed_ = static_cast<std::uint64_t>(a.get_int("--seed", static_cast<long>(std::random_device{}() & 0x7fffffff)));
        rng_.seed(seed_);
        dir_ = a.get("--dir", "");
        if (dir_.empty()) {
            char tmpl[] = "/tmp/vigil-soak-XXXXXX";
            if (!::mkdtemp(tmpl))
                throw std::runtime_error("mkdtemp failed");
            dir_ = tmpl;
        } else {
            ::mkdir(dir_.c_str(), 0755);
        }
        const double d = duration_.count();
        warmup_ = std::clamp(d * 0.1, 15.0, 40.0);
        cooldown_ = std::clamp(d * 0.1, 10.0, 30.0);
        if (d < warmup_ + cooldown_ + 10)
            throw std::invalid_argument("--duration must be at least " + std::to_string(warmup_ + cooldown_ + 10) + " s");
    }

    int run();

private:
    // Time since the run began, in seconds.
    double now_s() const { return std::chrono::duration<double>(steady::now() - t0_).count(); }
    void log(const std::string& what)
    {
        std::printf("[%7.1f s] %s\n", now_s(), what.c_str());
        std::fflush(stdout);
    }

    void service();
    void watch_children();
    void record_timeline();
    void idle_for(std::chrono::duration<double> d);
    bool wait_for(const std::function<bool()>& pred, std::chrono::duration<double> timeout);
    instance& server() { return *instances_.back(); }
    void start_server();
    void stop_server(int sig);
    enum class fault { kill, silence, accept_pause, slow };
    fault next_fault(bool kills_allowed);
    void inject_fault(fault kind);
    std::vector<check_row> check();

    std::string self_;
    std::string dir_;
    std::chrono::duration<double> duration_;
    double warmup_ = 10;
    double cooldown_ = 10;
    std::size_t clients_ = 1000;
    long rate_ms_ = 500;
    long ping_ms_ = 1000;
    long pong_ms_ = 500;
    std::uint64_t seed_ = 0;
    std::mt19937_64 rng_;
    steady::time_point t0_ = steady::now();

    std::uint16_t server_port_ = 0;
    std::vector<std::unique_ptr<instance>> instances_;
    std::unique_ptr<child> clients_proc_;
    std::unique_ptr<fault_relay> relay_;
    json client_stats_;
    json client_final_;
    std::ofstream timeline_;
    double timeline_next_ = 0;
    bool drained_ = false;

    // What was injected.
    bool restarting_ = false;
    bool clients_stopping_ = false;
    std::size_t crashes_ = 0;
    std::vector<fault> round_;
    bool round_with_kills_ = true;
    std::size_t silences_ = 0;
    std::size_t kills_[2] = {0, 0};  // SIGKILL, SIGTERM
    std::size_t silenced_brief_ = 0, silenced_dead_ = 0, resets_ = 0, accept_pauses_ = 0, slow_requested_ = 0;

    // Baselines.
    json client_base_;
    json server_base_;
    int final_instance_base_ = 0;  // instance whose RSS baseline was taken

    // At the end.
    json client_end_;
    json server_end_;
    bool recovered_ = false;
    fault_relay::counters relay_stats_;
    std::uint64_t received_ = 0;
    std::uint64_t written_not_received_ = 0;
};

void soak_run::service()
{
    for (auto& inst : instances_) {
        if (!inst->proc)
            continue;
        for (auto& e : inst->proc->pump()) {
            const auto ev = e.value("event", "");
            if (ev == "stats")
                inst->last_stats = e;
            else if (ev == "slow_end")
                inst->slow_ends.push_back(e);
            else if (ev == "stopped")
                inst->stopped_event = true;
            else if (ev == "listening" || ev == "listen_failed")
                inst->listening = e;
        }
    }
    record_timeline();
    watch_children();
    if (clients_proc_) {
        for (auto& e : clients_proc_->pump()) {
            const auto ev = e.value("event", "");
            if (ev == "stats")
                client_stats_ = e;
            else if (ev == "drained")
                drained_ = true;
            else if (ev == "final")
                client_final_ = e;
        }
    }
}

void soak_run::record_timeline()
{
    if (!timeline_.is_open()) {
        timeline_.open(dir_ + "/timeline.csv");
        timeline_ << "t,clients_up,clients_rss_kb,clients_heap_kb,clients_fds,sent,written,failed,pending,"
                     "server_instance,server_open,server_rss_kb,server_heap_kb,server_fds,server_received\n";
    }
    if (client_stats_.is_null() || instances_.empty() || now_s() < timeline_next_)
        return;
    timeline_next_ = now_s() + 1;
    const auto& c = client_stats_;
    const auto& s = server().last_stats;
    char buf[256];
    std::snprintf(buf, sizeof buf, "%.1f,%zu,%ld,%ld,%d,%llu,%llu,%llu,%llu,%d,%ld,%ld,%ld,%ld,%llu\n", now_s(),
                  c["up"].get<std::size_t>(), c["rss_kb"].get<long>(), c["heap_kb"].get<long>(), c["fds"].get<int>(),
                  c["sent"].get<unsigned long long>(), c["ok"].get<unsigned long long>(),
                  c["failed"].get<unsigned long long>(), c["pending"].get<unsigned long long>(), server().number,
                  s.is_null() ? -1L : s["open"].get<long>(), s.is_null() ? -1L : s["rss_kb"].get<long>(),
                  s.is_null() ? -1L : s["heap_kb"].get<long>(),
                  s.is_null() ? -1L : s["fds"].get<long>(), s.is_null() ? 0ULL : s["received"].get<unsigned long long>());
    timeline_ << buf << std::flush;
}

void soak_run::watch_children()
{
    if (clients_proc_ && !clients_stopping_) {
        if (auto st = clients_proc_->poll_exit())
            throw std::runtime_error("the clients process exited on its own (status " + std::to_string(*st) + "); see " +
                                     clients_proc_->stderr_path());
    }
    // A server that exits without being told to crashed: the run goes on with a new one, and
    // the crash fails the soak.
    if (restarting_ || instances_.empty())
        return;
    auto& s = server();
    if (!s.ended_by.empty())
        return;
    if (auto st = s.proc->poll_exit()) {
        s.ended_by = "crashed";
        s.exit_status = st;
        ++crashes_;
        log("server instance " + std::to_string(s.number) + " exited on its own (status " + std::to_string(*st) +
            "; see " + s.proc->stderr_path() + "): starting another");
        start_server();
    }
}

void soak_run::idle_for(std::chrono::duration<double> d)
{
    const auto end = steady::now() + std::chrono::duration_cast<steady::duration>(d);
    while (steady::now() < end) {
        service();
        std::this_thread::sleep_for(milliseconds(20));
    }
    service();
}

bool soak_run::wait_for(const std::function<bool()>& pred, std::chrono::duration<double> timeout)
{
    const auto end = steady::now() + std::chrono::duration_cast<steady::duration>(timeout);
    for (;;) {
        service();
        if (pred())
            return true;
        if (steady::now() >= end)
            return false;
        std::this_thread::sleep_for(milliseconds(20));
    }
}

void soak_run::start_server()
{
    // A start that fails to listen is not a crash: the watch stays off meanwhile.
    struct no_watch {
        bool& flag;
        bool was;
        explicit no_watch(bool& f) : flag(f), was(f) { flag = true; }
        ~no_watch() { flag = was; }
    } guard(restarting_);
    for (int attempt = 0; attempt < 50; ++attempt) {
        auto inst = std::make_unique<instance>();
        inst->number = static_cast<int>(instances_.size()) + 1;
        const auto base = dir_ + "/server-" + std::to_string(inst->number);
        inst->proc = std::make_unique<child>(
            "server", std::vector<std::string>{self_, "server", "--port", std::to_string(server_port_), "--log",
                                               base + ".log", "--ping-ms", std::to_string(ping_ms_), "--pong-ms",
                                               std::to_string(pong_ms_)},
            base + ".stderr");
        instances_.push_back(std::move(inst));
        auto& s = server();
        if (!wait_for([&] { return !s.listening.is_null() || s.proc->poll_exit(); }, std::chrono::seconds(10)))
            throw std::runtime_error("the server did not start within 10 s; see " + s.proc->stderr_path());
        if (s.listening.value("event", "") == "listening") {
            server_port_ = s.listening["port"].get<std::uint16_t>();
            return;
        }
        // Could not bind (the old process's port not yet free): try again shortly.
        wait_for([&] { return s.proc->poll_exit().has_value(); }, std::chrono::seconds(5));
        s.ended_by = "listen failed";
        s.exit_status = s.proc->poll_exit();
        std::this_thread::sleep_for(milliseconds(100));
    }
    throw std::runtime_error("the server could not listen again on port " + std::to_string(server_port_));
}

void soak_run::stop_server(int sig)
{
    auto& s = server();
    s.ended_by = sig == SIGKILL ? "SIGKILL" : "SIGTERM";
    s.proc->signal(sig);
    if (!wait_for([&] { return s.proc->poll_exit().has_value(); }, std::chrono::seconds(sig == SIGKILL ? 5 : 10))) {
        log("server instance " + std::to_string(s.number) + " did not exit after signal " + std::to_string(sig) +
            ": SIGKILL");
        s.proc->signal(SIGKILL);
        wait_for([&] { return s.proc->poll_exit().has_value(); }, std::chrono::seconds(5));
    }
    s.exit_status = s.proc->poll_exit();
}

soak_run::fault soak_run::next_fault(bool kills_allowed)
{
    // Shuffled rounds holding one fault of each kind, so that even a short run injects every
    // kind; the first round after the kills starts with slow consumers, so that the server
    // instance that runs to the end meets some.
    if (kills_allowed != round_with_kills_) {
        round_.clear();
        round_with_kills_ = kills_allowed;
        if (!kills_allowed)
            round_.push_back(fault::slow);
    }
    if (round_.empty()) {
        round_ = {fault::silence, fault::accept_pause, fault::slow};
        if (kills_allowed)
            round_.push_back(fault::kill);
        std::shuffle(round_.begin(), round_.end(), rng_);
    }
    const auto f = round_.back();
    round_.pop_back();
    return f;
}

void soak_run::inject_fault(fault kind)
{
    std::uniform_real_distribution<double> u(0.0, 1.0);
    auto ms = [&](double lo, double hi) { return milliseconds(static_cast<long>(lo + (hi - lo) * u(rng_))); };
    switch (kind) {
    case fault::kill: {
        // SIGKILL and SIGTERM by turns, SIGKILL first.
        const bool graceful = (kills_[0] + kills_[1]) % 2 == 1;
        const auto down = ms(200, 1500);
        log("fault: server instance " + std::to_string(server().number) +
            (graceful ? " stopped (SIGTERM)" : " killed (SIGKILL)") + ", down for " + std::to_string(down.count()) +
            " ms");
        stop_server(graceful ? SIGTERM : SIGKILL);
        ++kills_[graceful ? 1 : 0];
        idle_for(down);
        start_server();
        break;
    }
    case fault::silence: {
        // By turns: a silence that ends before the heartbeat can judge it (shorter than
        // pong_timeout: the connection must survive and deliver what was held), and one that
        // lasts until both ends have declared the connection dead, then reset.
        const bool dead = (silences_++ % 2) == 1;
        const auto d = dead ? ms(static_cast<double>(ping_ms_ + pong_ms_) + 1000,
                                 static_cast<double>(ping_ms_ + pong_ms_) + 3000)
                            : ms(100, static_cast<double>(pong_ms_) * 0.6);
        const auto n = relay_->silence(0.05, d, dead);
        (dead ? silenced_dead_ : silenced_brief_) += n;
        log("fault: " + std::to_string(n) + " connections silenced for " + std::to_string(d.count()) + " ms" +
            (dead ? ", then reset" : ", then resumed"));
        break;
    }
    case fault::accept_pause: {
        const auto d = ms(1000, 4000);
        // Some clients must be reconnecting while the door is shut.
        const auto n = relay_->reset_some(0.02);
        relay_->pause_accept(d);
        resets_ += n;
        ++accept_pauses_;
        log("fault: accepting nothing for " + std::to_string(d.count()) + " ms (" + std::to_string(n) +
            " connections reset first)");
        break;
    }
    case fault::slow: {
        const int n = 1 + static_cast<int>(u(rng_) * 2);
        relay_->open_slow_consumers(server_port_, n, std::chrono::seconds(5));
        slow_requested_ += static_cast<std::size_t>(n);
        log("fault: " + std::to_string(n) + " slow consumer(s) opened to the server");
        break;
    }
    }
}

int soak_run::run()
{
    raise_fd_limit();
    // This process relays every client (two descriptors each) and holds the slow consumers.
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2 * clients_ + 256)
        throw std::runtime_error("RLIMIT_NOFILE is " + std::to_string(rl.rlim_cur) + ": " +
                                 std::to_string(clients_) + " clients need at least " +
                                 std::to_string(2 * clients_ + 256) + " (ulimit -n)");
    const double fault_end = duration_.count() - cooldown_;
    const double kill_end = warmup_ + (fault_end - warmup_) * 0.6;
    std::printf("vigil soak: %zu clients, %.0f s (warm-up %.0f s, faults until %.0f s with server kills until %.0f s, "
                "cool-down %.0f s), seed %llu, files in %s\n",
                clients_, duration_.count(), warmup_, fault_end, kill_end, cooldown_,
                static_cast<unsigned long long>(seed_), dir_.c_str());
    std::fflush(stdout);

    start_server();
    relay_ = std::make_unique<fault_relay>(server_port_);
    clients_proc_ = std::make_unique<child>(
        "clients",
        std::vector<std::string>{self_, "clients", "--url", "ws://127.0.0.1:" + std::to_string(relay_->port()),
                                 "--clients", std::to_string(clients_), "--report", dir_ + "/clients.report",
                                 "--rate-ms", std::to_string(rate_ms_), "--ping-ms", std::to_string(ping_ms_),
                                 "--pong-ms", std::to_string(pong_ms_), "--expected-messages",
                                 std::to_string(static_cast<long>(duration_.count() * 1000 / static_cast<double>(rate_ms_) * 1.25) + 64)},
        dir_ + "/clients.stderr");

    auto all_up = [&] {
        return !client_stats_.is_null() && client_stats_["up"].get<std::size_t>() == clients_;
    };
    if (!wait_for(all_up, std::chrono::seconds(120)))
        throw std::runtime_error("not every client connected within 120 s");
    log("all " + std::to_string(clients_) + " clients up; warming up");
    // The warm-up includes one server restart: the first reconnect wave sets the clients'
    // working set (handshakes in flight, outboxes filled while away); growth past it is what
    // a leak would look like.
    idle_for(std::chrono::seconds(2));
    inject_fault(fault::kill);
    if (!wait_for(all_up, std::chrono::seconds(60)))
        throw std::runtime_error("the clients did not all come back after the warm-up restart");
    idle_for(std::chrono::duration<double>(std::max(0.0, warmup_ - now_s())));
    wait_for(all_up, std::chrono::seconds(30));
    client_base_ = client_stats_;
    log("baseline: clients RSS " + std::to_string(client_base_["rss_kb"].get<long>()) + " KiB, " +
        std::to_string(client_base_["fds"].get<int>()) + " fds");

    std::uniform_real_distribution<double> gap(1.0, 3.0);
    bool server_base_taken = false;
    double server_base_at = 0;
    while (now_s() < fault_end) {
        inject_fault(next_fault(now_s() < kill_end));
        idle_for(std::chrono::duration<double>(gap(rng_)));
        // The final server instance's baseline: once kills are over and its clients are back.
        if (!server_base_taken && now_s() >= kill_end) {
            if (server_base_at == 0 && all_up())
                server_base_at = now_s() + 3;
            if (server_base_at != 0 && now_s() >= server_base_at && !server().last_stats.is_null()) {
                server_base_ = server().last_stats;
                final_instance_base_ = server().number;
                server_base_taken = true;
                log("baseline: server instance " + std::to_string(server().number) + " RSS " +
                    std::to_string(server_base_["rss_kb"].get<long>()) + " KiB");
            }
        }
    }
    log("faults over; restoring the relay and waiting for every client");
    relay_->restore();
    const bool recovered = wait_for(
        [&] {
            return all_up() && !server().last_stats.is_null() &&
                   server().last_stats["open"].get<std::size_t>() == clients_;
        },
        std::chrono::duration<double>(std::max(cooldown_, 60.0)));
    idle_for(std::chrono::duration<double>(std::max(0.0, duration_.count() - now_s())));
    if (!server_base_taken) {
        server_base_ = server().last_stats;  // kills until the end: the best there is
        final_instance_base_ = server().number;
    }

    log("stopping the senders");
    clients_proc_->signal(SIGUSR1);
    if (!wait_for([&] { return drained_; }, std::chrono::seconds(60)))
        log("the clients did not drain within 60 s");
    // Fresh figures from both (each prints them every second), taken after the drain.
    idle_for(std::chrono::milliseconds(2500));
    json client_end = client_stats_;
    json server_end = server().last_stats;
    // Descriptor counts settle within a moment of the last disconnect: look a few times.
    for (int i = 0; i < 5; ++i) {
        const bool cl = client_end["fds"].get<long>() - client_end["up"].get<long>() ==
                        client_base_["fds"].get<long>() - client_base_["up"].get<long>();
        const bool sv = server_end["fds"].get<long>() - server_end["open"].get<long>() ==
                        server().listening["fds"].get<long>();
        if (cl && sv)
            break;
        idle_for(std::chrono::seconds(1));
        client_end = client_stats_;
        server_end = server().last_stats;
    }
    client_end_ = client_end;
    server_end_ = server_end;
    recovered_ = recovered;

    log("stopping the clients");
    clients_stopping_ = true;
    clients_proc_->signal(SIGTERM);
    if (!wait_for([&] { return clients_proc_->poll_exit().has_value(); }, std::chrono::seconds(60))) {
        log("the clients did not exit within 60 s: SIGKILL");
        clients_proc_->signal(SIGKILL);
        wait_for([&] { return clients_proc_->poll_exit().has_value(); }, std::chrono::seconds(5));
    }
    service();
    log("stopping the server");
    stop_server(SIGTERM);
    service();
    relay_stats_ = relay_->stats();
    relay_.reset();

    auto rows = check();
    // The summary.
    std::ostringstream out;
    const auto& f = client_final_;
    out << "\nvigil soak summary: " << clients_ << " clients, " << duration_.count() << " s, seed " << seed_ << "\n";
    double load[3] = {0, 0, 0};
    if (::getloadavg(load, 3) == 3) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "load average at the end: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
        out << buf;
    }
    out << "faults: server killed " << kills_[0] << "x (SIGKILL), stopped " << kills_[1] << "x (SIGTERM); "
        << silenced_brief_ << " connections silenced briefly, " << silenced_dead_ << " silenced until dead; "
        << accept_pauses_ << " accept pauses (" << resets_ << " connections reset before them); " << slow_requested_
        << " slow consumers\n";
    out << "relay: " << relay_stats_.accepted << " connections accepted, " << relay_stats_.upstream_refused
        << " refused while the server was down; slow consumers upgraded " << relay_stats_.slow_opened << ", failed "
        << relay_stats_.slow_failed << "\n";
    if (f.is_object()) {
        out << "messages: " << fmt_int(f.value("sent", 0ull)) << " sent, " << fmt_int(f.value("ok", 0ull))
            << " written, " << fmt_int(f.value("failed", 0ull)) << " failed " << f.value("failures", json::object()).dump()
            << "; reconnects " << fmt_int(f.value("ups", 0ull)) << "; disconnects "
            << f.value("disconnects", json::object()).dump() << "; broadcasts received " << fmt_int(f.value("broadcasts", 0ull))
            << "\n";
    }
    out << "received by the servers: " << fmt_int(received_) << "; written but never received (in flight when their "
        << "connection died): " << fmt_int(written_not_received_) << "\n\n";
    std::size_t w = 0;
    for (auto& r : rows)
        w = std::max(w, r.name.size());
    bool all_pass = true;
    for (auto& r : rows) {
        all_pass = all_pass && r.pass;
        out << "  " << r.name << std::string(w - r.name.size() + 2, ' ')
            << (r.skipped ? "SKIP  " : r.pass ? "PASS  " : "FAIL  ") << r.detail << "\n";
    }
    out << "\n" << (all_pass ? "soak: every check passed" : "soak: FAILED") << " (files in " << dir_ << ")\n";
    std::cout << out.str() << std::flush;
    std::ofstream(dir_ + "/summary.txt") << out.str();
    return all_pass ? 0 : 1;
}

std::vector<check_row> soak_run::check()
{
    std::vector<check_row> rows;
    // The clients' report: what each send came to.
    std::vector<std::vector<std::uint8_t>> status(clients_);  // 1 written, 2 failed, 0 never completed
    std::uint64_t never = 0, twice = 0, report_lines = 0;
    {
        std::ifstream in(dir_ + "/clients.report");
        std::string kind;
        std::uint64_t id = 0, a = 0;
        while (in >> kind >> id >> a) {
            ++report_lines;
            if (id >= clients_)
                continue;
            if (kind == "c") {
                status[id].assign(a, 1);
            } else if (kind == "e") {
                std::string name;
                in >> name;
                if (a >= 1 && a <= status[id].size())
                    status[id][a - 1] = 2;
            } else if (kind == "d") {
                ++twice;
            } else if (kind == "p") {
                ++never;
                if (a >= 1 && a <= status[id].size())
                    status[id][a - 1] = 0;
            }
        }
    }
    const bool have_report = report_lines >= clients_;
    rows.push_back({"every send completed exactly once", have_report && never == 0 && twice == 0,
                    have_report ? fmt_int(never) + " never completed, " + fmt_int(twice) + " completed twice"
                                : "no report from the clients"});

    // The servers' logs, in instance order: "<connection> <client> <seq>".
    std::vector<std::vector<std::uint8_t>> got(clients_);
    for (std::size_t i = 0; i < clients_; ++i)
        got[i].assign(status[i].size(), 0);
    std::vector<std::uint64_t> last_global(clients_, 0);
    std::uint64_t unknown = 0, dup = 0, after_failure = 0, conn_order = 0, global_order = 0, gaps = 0;
    received_ = 0;
    for (auto& inst : instances_) {
        std::ifstream in(dir_ + "/server-" + std::to_string(inst->number) + ".log");
        std::map<std::uint64_t, std::uint64_t> last_in_conn;
        std::uint64_t conn = 0, id = 0, seq = 0;
        while (in >> conn >> id >> seq) {
            ++received_;
            if (id >= clients_ || seq == 0 || seq > status[id].size()) {
                ++unknown;
                continue;
            }
            auto& mine = got[id][seq - 1];
            if (mine)
                ++dup;
            mine = 1;
            if (status[id][seq - 1] != 1)
                ++after_failure;
            auto [it, fresh] = last_in_conn.emplace(conn, seq);
            if (!fresh) {
                if (seq <= it->second) {
                    ++conn_order;
                } else {
                    // Within one connection, everything written between two received messages
                    // was written to that same connection: it must have arrived too.
                    for (auto s = it->second + 1; s < seq; ++s)
                        if (status[id][s - 1] == 1 && !got[id][s - 1])
                            ++gaps;
                }
                it->second = seq;
            }
            if (seq <= last_global[id])
                ++global_order;
            last_global[id] = seq;
        }
    }
    written_not_received_ = 0;
    for (std::size_t i = 0; i < clients_; ++i)
        for (std::size_t k = 0; k < status[i].size(); ++k)
            if (status[i][k] == 1 && !got[i][k])
                ++written_not_received_;

    rows.push_back({"nothing received that was reported failed", after_failure == 0,
                    fmt_int(after_failure) + " received although their send failed"});
    rows.push_back({"nothing received twice", dup == 0 && unknown == 0,
                    fmt_int(dup) + " duplicates, " + fmt_int(unknown) + " never sent"});
    rows.push_back({"in order within each connection", conn_order == 0, fmt_int(conn_order) + " out of order"});
    rows.push_back({"in order across reconnects", global_order == 0, fmt_int(global_order) + " out of order"});
    rows.push_back({"no gap inside a live connection", gaps == 0,
                    fmt_int(gaps) + " written between two received messages of one connection, never received"});
    rows.push_back({"messages flowed", received_ > 0 && client_final_.value("broadcasts", 0ull) > 0,
                    fmt_int(received_) + " received by the servers"});

    const auto up_end = client_end_.is_null() ? 0 : client_end_["up"].get<std::size_t>();
    rows.push_back({"all clients reconnected", recovered_ && up_end == clients_,
                    std::to_string(up_end) + "/" + std::to_string(clients_) + " up at the end"});

    const long cf0 = client_base_["fds"].get<long>(), cu0 = client_base_["up"].get<long>();
    const long cf1 = client_end_["fds"].get<long>(), cu1 = client_end_["up"].get<long>();
    rows.push_back({"clients: no descriptor leak", cf1 - cu1 == cf0 - cu0,
                    "after warm-up " + std::to_string(cf0) + " fds with " + std::to_string(cu0) + " up, at the end " +
                        std::to_string(cf1) + " with " + std::to_string(cu1) + " up"});
    const auto& s = server();
    const long sf = server_end_.is_null() ? -1 : server_end_["fds"].get<long>();
    const long so = server_end_.is_null() ? -1 : server_end_["open"].get<long>();
    const long sbase = s.listening["fds"].get<long>();
    rows.push_back({"server: no descriptor leak", sf - so == sbase,
                    "instance " + std::to_string(s.number) + ": " + std::to_string(sf) + " fds with " +
                        std::to_string(so) + " connections open; " + std::to_string(sbase) + " when listening"});

    // Two questions, two measures. A leak grows the heap in use (mallinfo2, exact): within 5%
    // of warm-up. RSS also holds what the allocator keeps after the churn of thousands of
    // reconnects (+5.7% seen with the heap in use 4% lower): within 10%, which still catches
    // bloat that the heap count would miss (buffers kept outside malloc).
    auto memory_rows = [&](const std::string& who, const json& base, const json& end, const std::string& what) {
        const double b = base.is_null() ? 0 : base["rss_kb"].get<double>();
        const double e = end.is_null() ? 0 : end["rss_kb"].get<double>();
        const double hb = base.is_null() ? 0 : base["heap_kb"].get<double>();
        const double he = end.is_null() ? 0 : end["heap_kb"].get<double>();
        char heap[160];
        std::snprintf(heap, sizeof heap, "%s: %.0f KiB -> %.0f KiB (%+.1f%%)", what.c_str(), hb, he,
                      hb > 0 ? (he / hb - 1) * 100 : 0.0);
        char rss[160];
        std::snprintf(rss, sizeof rss, "%s: %.0f KiB -> %.0f KiB (%+.1f%%)", what.c_str(), b, e,
                      b > 0 ? (e / b - 1) * 100 : 0.0);
        if (under_asan) {
            const std::string why = " (not judged under ASan: freed memory sits in quarantine)";
            rows.push_back({who + ": heap in use within 5% of warm-up", true, heap + why, true});
            rows.push_back({who + ": RSS within 10% of warm-up", true, rss + why, true});
            return;
        }
        rows.push_back({who + ": heap in use within 5% of warm-up", hb > 0 && he <= hb * 1.05, heap});
        rows.push_back({who + ": RSS within 10% of warm-up", b > 0 && e <= b * 1.10, rss});
    };
    memory_rows("clients", client_base_, client_end_, "after warm-up -> end");
    memory_rows("server", final_instance_base_ == s.number ? server_base_ : json(), server_end_,
                "instance " + std::to_string(s.number) + " after its warm-up -> end");

    // Slow consumers: the final server instance ran to the end, so each one it saw must have
    // been dropped by it for not reading.
    std::size_t slow_seen = s.last_stats.is_null() ? 0 : s.last_stats["slow_connections"].get<std::size_t>();
    std::size_t slow_dropped = 0;
    std::map<std::string, std::size_t> slow_reasons;
    for (auto& inst : instances_)
        for (auto& e : inst->slow_ends)
            ++slow_reasons[e["reason"].get<std::string>()];
    for (auto& e : s.slow_ends) {
        auto r = e["reason"].get<std::string>();
        if (r == "slow_consumer" || r == "write_timeout")
            ++slow_dropped;
    }
    rows.push_back({"slow consumers dropped by the server", slow_seen > 0 && slow_seen == slow_dropped,
                    "final instance: " + std::to_string(slow_dropped) + "/" + std::to_string(slow_seen) +
                        " dropped; all instances: " + json(slow_reasons).dump()});

    // Exits and sanitizers.
    std::string exits;
    bool exits_ok = true;
    const auto cstat = clients_proc_->poll_exit();
    exits_ok = exits_ok && cstat == 0 && client_final_.is_object();
    exits += "clients " + (cstat ? std::to_string(*cstat) : std::string("running"));
    for (auto& inst : instances_) {
        if (inst->ended_by == "SIGTERM") {
            const bool ok = inst->exit_status == 0 && inst->stopped_event;
            exits_ok = exits_ok && ok;
            if (!ok)
                exits += ", server " + std::to_string(inst->number) + " exited " +
                         (inst->exit_status ? std::to_string(*inst->exit_status) : std::string("?")) + " after SIGTERM";
        }
    }
    exits += ", every SIGTERM'd server exited 0";
    rows.push_back({"processes exited cleanly", exits_ok, exits});
    rows.push_back({"no server crashed", crashes_ == 0,
                    std::to_string(crashes_) + " server instances exited without being told to"});

    std::vector<std::string> reports;
    auto scan = [&](const std::string& path) {
        std::ifstream in(path);
        std::string line;
        while (std::getline(in, line)) {
            if (line.find("ERROR: AddressSanitizer") != std::string::npos ||
                line.find("ERROR: LeakSanitizer") != std::string::npos ||
                line.find("runtime error:") != std::string::npos ||
                line.find("WARNING: ThreadSanitizer") != std::string::npos) {
                reports.push_back(path + ": " + line);
                return;
            }
        }
    };
    scan(clients_proc_->stderr_path());
    for (auto& inst : instances_)
        scan(inst->proc->stderr_path());
    rows.push_back({"no sanitizer report", reports.empty(), reports.empty() ? "stderr of every child scanned" : reports[0]});
    return rows;
}

}  // namespace

int run_main(const std::vector<std::string>& args, const std::string& self_exe)
{
    arg_list a(args);
    soak_run r(a, self_exe);
    return r.run();
}

}  // namespace soak

int main(int argc, char** argv)
{
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::fprintf(stderr, "usage: vigil-soak run [--duration S] [--clients N] [--rate-ms N] [--dir D] [--seed N] "
                             "[--ping-ms N] [--pong-ms N]\n");
        return 64;
    }
    const auto role = args[0];
    args.erase(args.begin());
    // The children are this same binary.
    char self[4096];
    const auto n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        std::perror("readlink /proc/self/exe");
        return 2;
    }
    self[n] = '\0';
    try {
        soak::raise_fd_limit();
        if (role == "run")
            return soak::run_main(args, self);
        if (role == "server")
            return soak::server_main(args);
        if (role == "clients")
            return soak::clients_main(args);
        std::fprintf(stderr, "vigil-soak: unknown role %s\n", role.c_str());
        return 64;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vigil-soak %s: %s\n", role.c_str(), e.what());
        return 2;
    }
}
