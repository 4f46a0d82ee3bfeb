// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-bench-storm: what a server restart looks like from the server's side. N supervised
// clients are connected to one server; the server goes away, comes back on the same port a
// moment later, and every client's reconnect time is recorded. Run with the default
// exponential backoff (full jitter), with a constant, jitter-free delay, and with full
// jitter under a shared rate_limiter: the question is how hard the returning clients hit the
// fresh server (the peak of handshakes in any 100 ms window against the mean rate; the most
// connection attempts in any window of the limiter's length) and how long until all are back.

#include <vigil/rate_limit.hpp>
#include <vigil/supervisor.hpp>

#include <support/peer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct settings {
    std::size_t clients = 2000;
    milliseconds down{200};            // how long the server stays away
    milliseconds constant_delay{500};  // the no-jitter policy's delay
    milliseconds window{100};          // for the peak rate
    milliseconds limit{40000};         // per phase: something is broken beyond this
    std::uint64_t seed = 1;            // 0: random
    int rounds = 3;
    std::size_t limit_connects = 100;    // the limited run: at most this many attempts ...
    milliseconds limit_window{1000};     // ... in any window this long
    std::string csv_path;
    std::string attempts_csv_path;
};

struct result {
    std::string policy;
    int round = 0;
    std::vector<double> reconnect_ms;  // per client, from the restart to its on_up
    std::vector<std::size_t> attempts;  // per client, attempts after the restart
    double all_back_ms = 0;
    std::size_t peak = 0;           // most reconnects in any `window`
    double mean_per_window = 0;     // over the recovery: from the restart to the last client back
    double first_back_ms = 0;
    double server_back_ms = 0;      // when the new server listened
    double ramp_ms = 0;             // time to bring the N clients up at the start
    std::vector<double> attempt_ms;  // every attempt's start after the restart
    std::size_t peak_attempts = 0;   // most attempt starts in any window of the limiter's length
};

// One client's slot. Written on the client thread, read by the driver after the counters
// say it is complete (acquire/release through `up_after_restart`).
struct client {
    std::unique_ptr<vigil::supervisor> sup;
    clock_type::time_point up_at{};
    std::size_t attempts_at_restart = 0;
    std::vector<clock_type::time_point> attempt_starts;  // after the restart
};

// Most of the sorted `times` within any window [t, t + w).
std::size_t most_within(const std::vector<double>& times, double w)
{
    std::size_t most = 0;
    std::size_t lo = 0;
    for (std::size_t hi = 0; hi < times.size(); ++hi) {
        while (times[hi] - times[lo] >= w) {
            ++lo;
        }
        most = std::max(most, hi - lo + 1);
    }
    return most;
}

std::uint64_t splitmix(std::uint64_t& state)
{
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

template <class Pred>
bool wait_for(Pred pred, milliseconds limit)
{
    const auto deadline = clock_type::now() + limit;
    while (!pred()) {
        if (clock_type::now() >= deadline) {
            return pred();
        }
        std::this_thread::sleep_for(milliseconds(2));
    }
    return true;
}

// Thousands of sockets on each side: far beyond the usual soft limit of 1024 descriptors.
void raise_fd_limit(std::size_t clients)
{
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        throw std::runtime_error("getrlimit failed");
    }
    const rlim_t wanted = static_cast<rlim_t>(clients) * 2 + 256;
    if (lim.rlim_cur >= wanted) {
        return;
    }
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < wanted) {
        throw std::runtime_error("RLIMIT_NOFILE hard limit " + std::to_string(lim.rlim_max) +
                                 " is below the " + std::to_string(wanted) +
                                 " descriptors needed; use fewer --clients");
    }
    lim.rlim_cur = wanted;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
        throw std::runtime_error("setrlimit(RLIMIT_NOFILE) failed");
    }
}

class storm {
public:
    storm(const settings& s, std::uint16_t port) : s_(s), port_(port), clients_(s.clients) {}

    template <class MakePolicy>
    result run(std::string name, int round, MakePolicy make_policy,
               std::shared_ptr<vigil::rate_limiter> limiter = nullptr)
    {
        result r;
        r.policy = std::move(name);
        r.round = round;
        auto server = std::make_unique<vigil::test::peer>(vigil::test::peer_options{.port = port_});
        const std::string url = server->url();

        asio::io_context ioc(1);
        auto guard = asio::make_work_guard(ioc);
        std::thread client_thread([&] { ioc.run(); });
        // However this ends, the client thread stops and the supervisors go before the
        // io_context their timers and sockets belong to.
        struct cleanup {
            storm& self;
            asio::executor_work_guard<asio::io_context::executor_type>& guard;
            asio::io_context& ioc;
            std::thread& t;
            ~cleanup()
            {
                guard.reset();
                ioc.stop();
                if (t.joinable()) {
                    t.join();
                }
                for (auto& c : self.clients_) {
                    c.sup.reset();
                }
            }
        } on_exit{*this, guard, ioc, client_thread};

        vigil::supervisor_config cfg;
        // The heartbeat stays on (its default) but plays no part here: the restart closes
        // every connection, so each client learns of it at once.
        // Streaks reset after a short healthy period, so every client meets the restart at
        // attempt 1 whatever happened during the initial ramp.
        cfg.stable_after = milliseconds(500);
        cfg.limiter = std::move(limiter);
        up_total_ = 0;
        up_after_restart_ = 0;
        ended_ = 0;
        restarted_ = false;

        const auto ramp_start = clock_type::now();
        for (std::size_t i = 0; i < clients_.size(); ++i) {
            auto& c = clients_[i];
            c = client{};
            c.sup = std::make_unique<vigil::supervisor>(ioc.get_executor(), url, cfg, make_policy(i));
            c.sup->events().on_connecting = [this, &c](const vigil::attempt_params&) {
                if (restarted_.load(std::memory_order_acquire)) {
                    c.attempt_starts.push_back(clock_type::now());
                }
            };
            c.sup->events().on_up = [this, &c] {
                if (restarted_.load(std::memory_order_acquire)) {
                    if (c.up_at == clock_type::time_point{}) {
                        c.up_at = clock_type::now();
                        up_after_restart_.fetch_add(1, std::memory_order_release);
                    }
                } else {
                    up_total_.fetch_add(1, std::memory_order_relaxed);
                }
            };
            asio::co_spawn(ioc, c.sup->run(), [this](std::exception_ptr, vigil::error_code) {
                ended_.fetch_add(1, std::memory_order_relaxed);
            });
        }
        const auto n = clients_.size();
        if (!wait_for([&] { return up_total_.load() >= n; }, s_.limit)) {
            throw std::runtime_error(r.policy + ": only " + std::to_string(up_total_.load()) +
                                     " of " + std::to_string(n) + " clients came up");
        }
        r.ramp_ms = std::chrono::duration<double, std::milli>(clock_type::now() - ramp_start).count();
        // Past stable_after, so every streak is reset.
        std::this_thread::sleep_for(cfg.stable_after + milliseconds(300));

        for (auto& c : clients_) {
            c.attempts_at_restart = c.sup->counters().attempts;
        }
        restarted_.store(true, std::memory_order_release);
        const auto restart = clock_type::now();
        server.reset();  // every connection closes, as when a server process dies
        std::this_thread::sleep_for(s_.down);
        server = std::make_unique<vigil::test::peer>(vigil::test::peer_options{.port = port_});
        const auto back = clock_type::now();

        if (!wait_for([&] { return up_after_restart_.load(std::memory_order_acquire) >= n; },
                      s_.limit)) {
            throw std::runtime_error(r.policy + ": only " + std::to_string(up_after_restart_.load()) +
                                     " of " + std::to_string(n) + " clients came back");
        }

        for (auto& c : clients_) {
            r.reconnect_ms.push_back(std::chrono::duration<double, std::milli>(c.up_at - restart).count());
            r.attempts.push_back(c.sup->counters().attempts - c.attempts_at_restart);
            for (auto t : c.attempt_starts) {
                r.attempt_ms.push_back(std::chrono::duration<double, std::milli>(t - restart).count());
            }
        }
        summarise(r, std::chrono::duration<double, std::milli>(back - restart).count());

        for (auto& c : clients_) {
            c.sup->stop();
        }
        if (!wait_for([&] { return ended_.load() >= n; }, s_.limit)) {
            throw std::runtime_error(r.policy + ": clients did not stop");
        }
        return r;
    }

private:
    void summarise(result& r, double server_back_ms) const
    {
        auto times = r.reconnect_ms;
        std::sort(times.begin(), times.end());
        r.all_back_ms = times.back();
        // Sliding window over the sorted times: the most reconnects within any window.
        const double w = static_cast<double>(s_.window.count());
        r.peak = most_within(times, w);
        // The recovery runs from the restart until the last client is back; the server's
        // downtime is part of it, as it is of every real restart.
        std::sort(r.attempt_ms.begin(), r.attempt_ms.end());
        // In a window 1 ms shorter than the limiter's: each start is stamped in on_connecting,
        // microseconds after the limiter counted it, and those microseconds can put one start
        // on either side of a window's edge.
        r.peak_attempts = most_within(r.attempt_ms, static_cast<double>(s_.limit_window.count()) - 1.0);
        const double recovery = std::max(r.all_back_ms, w);
        r.mean_per_window = static_cast<double>(times.size()) * w / recovery;
        r.first_back_ms = times.front();
        r.server_back_ms = server_back_ms;
    }

    const settings& s_;
    std::uint16_t port_;
    std::vector<client> clients_;
    std::atomic<std::size_t> up_total_{0};
    std::atomic<std::size_t> up_after_restart_{0};
    std::atomic<std::size_t> ended_{0};
    std::atomic<bool> restarted_{false};
};

double percentile(std::vector<double> v, double p)
{
    std::sort(v.begin(), v.end());
    auto idx = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(idx, v.size() - 1)];
}

settings parse_args(int argc, char** argv)
{
    settings s;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        auto next = [&]() -> std::string_view {
            if (i + 1 >= argc) {
                throw std::invalid_argument(std::string(arg) + " needs a value");
            }
            return argv[++i];
        };
        auto number = [&](std::string_view text) {
            std::uint64_t v = 0;
            auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
            if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) {
                throw std::invalid_argument(std::string(arg) + ": bad number");
            }
            return v;
        };
        if (arg == "--clients") {
            s.clients = number(next());
        } else if (arg == "--down-ms") {
            s.down = milliseconds(number(next()));
        } else if (arg == "--constant-ms") {
            s.constant_delay = milliseconds(number(next()));
        } else if (arg == "--rounds") {
            s.rounds = static_cast<int>(number(next()));
        } else if (arg == "--seed") {
            s.seed = number(next());
        } else if (arg == "--limit") {
            // COUNT/MS: at most COUNT attempts in any MS milliseconds.
            auto spec = next();
            auto slash = spec.find('/');
            if (slash == std::string_view::npos) {
                throw std::invalid_argument("--limit: COUNT/MS, e.g. 100/1000");
            }
            s.limit_connects = number(spec.substr(0, slash));
            s.limit_window = milliseconds(number(spec.substr(slash + 1)));
        } else if (arg == "--csv") {
            s.csv_path = std::string(next());
        } else if (arg == "--attempts-csv") {
            s.attempts_csv_path = std::string(next());
        } else {
            throw std::invalid_argument(
                "usage: vigil-bench-storm [--clients N] [--down-ms MS] [--constant-ms MS] "
                "[--limit COUNT/MS] [--rounds N] [--seed N] [--csv FILE] [--attempts-csv FILE]");
        }
    }
    if (s.clients == 0 || s.constant_delay.count() == 0 || s.rounds <= 0 || s.limit_connects == 0 ||
        s.limit_window.count() == 0) {
        throw std::invalid_argument("--clients, --constant-ms, --limit and --rounds must be positive");
    }
    return s;
}

}  // namespace

int main(int argc, char** argv)
{
    settings s;
    try {
        s = parse_args(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 64;
    }

    try {
        raise_fd_limit(s.clients);
        // One fixed port for every server of the run, as a restarted server process has.
        std::uint16_t port = 0;
        {
            vigil::test::peer probe_port;
            port = probe_port.port();
        }
        storm st(s, port);
        std::uint64_t seeds = s.seed;

        // Rounds alternate the policies, so that machine noise hits all alike.
        std::vector<result> results;
        auto jitter = [&](std::size_t) {
            vigil::exponential_backoff::options o;  // the defaults: 500 ms, x2, 30 s cap
            o.seed = s.seed == 0 ? 0 : splitmix(seeds) | 1;
            return vigil::exponential_backoff(o);
        };
        for (int round = 0; round < s.rounds; ++round) {
            results.push_back(st.run("full_jitter", round, jitter));
            results.push_back(st.run("constant", round, [&](std::size_t) {
                return vigil::constant_backoff(s.constant_delay);
            }));
            // One limiter shared by the whole fleet, fresh for each restart.
            results.push_back(st.run("limited", round, jitter,
                                     std::make_shared<vigil::rate_limiter>(vigil::rate_limits{
                                         .connects = s.limit_connects, .connect_window = s.limit_window})));
        }

        std::printf("reconnect storm: %zu clients, server away for %lld ms (plus its teardown), "
                    "%d rounds, window %lld ms, limited: %zu attempts per %lld ms\n\n",
                    s.clients, static_cast<long long>(s.down.count()), s.rounds,
                    static_cast<long long>(s.window.count()), s.limit_connects,
                    static_cast<long long>(s.limit_window.count()));
        std::printf("%-12s %5s %11s %10s %10s %10s %10s %10s %10s %9s %8s %12s %9s\n", "policy", "round",
                    "server back", "first back", "median", "p99", "all back", "peak/100ms",
                    "mean/100ms", "peak/mean", "attempts", "max/limit-w", "ramp");
        for (const auto& r : results) {
            std::size_t attempts = 0;
            for (auto a : r.attempts) {
                attempts += a;
            }
            std::printf("%-12s %5d %8.0f ms %7.0f ms %7.0f ms %7.0f ms %7.0f ms %10zu %10.1f %10.2f %8zu %12zu %6.0f ms\n",
                        r.policy.c_str(), r.round, r.server_back_ms, r.first_back_ms,
                        percentile(r.reconnect_ms, 0.5), percentile(r.reconnect_ms, 0.99),
                        r.all_back_ms, r.peak, r.mean_per_window,
                        static_cast<double>(r.peak) / r.mean_per_window, attempts, r.peak_attempts, r.ramp_ms);
        }
        std::printf("\nmedians over the rounds (times from the restart):\n");
        for (const char* policy : {"full_jitter", "constant", "limited"}) {
            std::vector<double> all_back, peak, mean, ratio, limit_peak;
            for (const auto& r : results) {
                if (r.policy == policy) {
                    all_back.push_back(r.all_back_ms);
                    peak.push_back(static_cast<double>(r.peak));
                    mean.push_back(r.mean_per_window);
                    ratio.push_back(static_cast<double>(r.peak) / r.mean_per_window);
                    limit_peak.push_back(static_cast<double>(r.peak_attempts));
                }
            }
            std::printf("%-12s all back %5.0f ms   peak %5.0f per 100 ms   mean %6.1f per 100 ms   "
                        "peak/mean %5.2f   attempts in a limit window: max %4.0f (limit %zu)\n",
                        policy, percentile(all_back, 0.5), percentile(peak, 0.5),
                        percentile(mean, 0.5), percentile(ratio, 0.5),
                        *std::max_element(limit_peak.begin(), limit_peak.end()), s.limit_connects);
        }

        if (!s.csv_path.empty()) {
            std::ofstream csv(s.csv_path);
            if (!csv) {
                throw std::runtime_error("cannot write " + s.csv_path);
            }
            csv << "policy,round,client,reconnect_ms,attempts,down_ms,server_back_ms\n";
            for (const auto& r : results) {
                for (std::size_t i = 0; i < r.reconnect_ms.size(); ++i) {
                    csv << r.policy << ',' << r.round << ',' << i << ',' << r.reconnect_ms[i] << ','
                        << r.attempts[i] << ',' << s.down.count() << ',' << r.server_back_ms << '\n';
                }
            }
            std::printf("\nper-client figures written to %s\n", s.csv_path.c_str());
        }
        if (!s.attempts_csv_path.empty()) {
            std::ofstream csv(s.attempts_csv_path);
            if (!csv) {
                throw std::runtime_error("cannot write " + s.attempts_csv_path);
            }
            csv << "policy,round,attempt_ms,limit_connects,limit_window_ms\n";
            for (const auto& r : results) {
                for (double t : r.attempt_ms) {
                    csv << r.policy << ',' << r.round << ',' << t << ',' << s.limit_connects << ','
                        << s.limit_window.count() << '\n';
                }
            }
            std::printf("attempt starts written to %s\n", s.attempts_csv_path.c_str());
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vigil-bench-storm: %s\n", e.what());
        return 1;
    }
}
