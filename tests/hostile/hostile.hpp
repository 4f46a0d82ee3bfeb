// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The hostile-input suite's toolkit, for its test cases and for benchmarks that measure a
// server under attack:
//
// - `serve_process`: the real vigil-serve (path in VIGIL_SERVE) as a child process on a
//   port it picks, its JSON lines collected by a thread of their own, searchable at any
//   time and awaitable with a bound;
// - `proc_status`, `count_fds`, `wait_fds_at_most`: a process's memory (VmRSS, VmHWM) and
//   open descriptors, from /proc;
// - `echo_prober`: a well-behaved client on a thread and io_context of its own, which sends
//   a message every few milliseconds and measures the echo's round trip while an attack runs;
// - attack primitives over `vigil::test::raw_client` (hand-written frames and HTTP on a bare
//   socket): an upgraded raw connection, the frames an attack sends, reading until the
//   server's close frame.
//
// Every wait has a bound. Nothing here is thread-safe unless it says so.

#include <support/process.hpp>
#include <support/raw_client.hpp>

#include <vigil/error.hpp>

#include <boost/asio/awaitable.hpp>

#include <nlohmann/json.hpp>

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace vigil::hostile {

using std::chrono::milliseconds;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------
// Skipping

/// Records that the running case cannot run here and why (printed at once and at the end).
/// The case returns after calling it; main() exits 77 (SKIP) when every case skipped.
void skip_case(const std::string& why);
/// Records that a case started (every case calls it first, through HOSTILE_CASE_START).
void case_started();
/// How many cases started and how many of them skipped.
std::size_t cases_started();
std::size_t cases_skipped();

/// Why this machine cannot run the cases that need vigil-serve (VIGIL_SERVE unset or not
/// executable), or nullopt.
std::optional<std::string> serve_unavailable();
/// Why this machine cannot measure a process (no /proc), or nullopt.
std::optional<std::string> proc_unavailable();

// ---------------------------------------------------------------------------------------
// A process seen from /proc

/// Memory of a process, from /proc/<pid>/status, in KiB.
struct memory {
    std::size_t rss_kib = 0;  ///< VmRSS: resident now
    std::size_t hwm_kib = 0;  ///< VmHWM: the most resident since the process started
};

/// The memory of `pid` (0: this process); nullopt when /proc cannot tell.
std::optional<memory> proc_status(pid_t pid = 0);

/// Open descriptors of `pid` (0: this process): the entries of /proc/<pid>/fd; 0 when
/// /proc cannot tell.
std::size_t count_fds(pid_t pid = 0);

/// Waits until `pid` has at most `n` open descriptors, looking every 10 ms, at most `bound`.
/// Returns the last count seen.
std::size_t wait_fds_at_most(pid_t pid, std::size_t n, milliseconds bound);

/// Waits until `pid` has at least `n` open descriptors (connections it accepted), at most
/// `bound`. Returns the last count seen.
std::size_t wait_fds_at_least(pid_t pid, std::size_t n, milliseconds bound);

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it) and
/// returns the soft limit now in force.
std::size_t raise_fd_limit();

inline double mib(std::size_t kib)
{
    return static_cast<double>(kib) / 1024.0;
}

// ---------------------------------------------------------------------------------------
// vigil-serve

/// vigil-serve started with `args` and `--port 0`, from the path in VIGIL_SERVE. The
/// constructor waits (at most 5 s) for its "listening" line and throws std::runtime_error
/// without one. A thread reads its stdout as it comes, so the child never blocks on a full
/// pipe (echo mode prints a line for every message), and the lines can be looked at from
/// any thread. The destructor terminates and reaps the child.
class serve_process {
public:
    explicit serve_process(std::vector<std::string> args = {"--mode", "echo"});
    ~serve_process();
    serve_process(const serve_process&) = delete;
    serve_process& operator=(const serve_process&) = delete;

    pid_t pid() const noexcept { return pid_; }
    std::uint16_t port() const noexcept { return port_; }

    /// True until the child has exited. Any thread.
    bool running();

    /// The first line (oldest first) for which `pred` holds, waiting at most `bound` for one
    /// to be printed; nullopt when none came. Any thread.
    std::optional<json> wait_for(const std::function<bool(const json&)>& pred, milliseconds bound);

    /// The same, without waiting.
    std::optional<json> find(const std::function<bool(const json&)>& pred);

    /// How many lines `pred` holds for, so far.
    std::size_t count(const std::function<bool(const json&)>& pred);

    /// Waits at most `bound` until `pred` holds for `n` lines; returns how many it holds for.
    std::size_t wait_count(const std::function<bool(const json&)>& pred, std::size_t n, milliseconds bound);

    /// The "rejected" line of the client at `remote` ("127.0.0.1:port"), waiting at most `bound`.
    std::optional<json> rejected(const std::string& remote, milliseconds bound);

    /// The "client_disconnected" line of the client at `remote`, waiting at most `bound`: the
    /// connection is found by its "client_connected" line.
    std::optional<json> disconnected(const std::string& remote, milliseconds bound);

    /// The last lines and stderr, for a failure message.
    std::string transcript();

private:
    void pump();

    std::unique_ptr<test::child_process> child_;
    pid_t pid_ = -1;
    std::uint16_t port_ = 0;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::atomic<bool> stop_{false};
    std::thread reader_;
};

// ---------------------------------------------------------------------------------------
// A well-behaved client

/// Round trips of echoed messages.
struct latency_report {
    std::size_t sent = 0;
    std::size_t echoed = 0;
    milliseconds p50{0};
    milliseconds p99{0};
    milliseconds max{0};
    /// Empty while all went well; what failed otherwise (connect, upgrade, a read).
    std::string error;

    /// "412 echoed, p50 0.3 ms, p99 2.1 ms, max 5.0 ms" (with the error, if any).
    std::string describe() const;
};

/// A client that behaves: connects to 127.0.0.1:`port`, upgrades, and then sends a short text
/// message every `every` and waits for its echo before the next (answering the server's
/// pings meanwhile), on a thread and an io_context of its own, so that an attack driven from
/// the test's thread does not slow it down. `stop()` (or the destructor) ends it.
class echo_prober {
public:
    explicit echo_prober(std::uint16_t port, milliseconds every = milliseconds(5));
    ~echo_prober();
    echo_prober(const echo_prober&) = delete;
    echo_prober& operator=(const echo_prober&) = delete;

    /// Waits at most `bound` until `n` echoes came back; false if not (or it failed).
    bool wait_echoes(std::size_t n, milliseconds bound);
    /// Echoes so far. Any thread.
    std::size_t echoed() const noexcept { return echoed_.load(); }
    /// Closes with 1000 and ends the thread; then `report()` covers the whole run.
    void stop();
    /// Starts a new measurement: `report()` covers only the round trips after this call.
    void reset();
    /// The round trips measured since the start (or `reset()`). Any thread.
    latency_report report();
    /// "127.0.0.1:<port>", as the server names it; empty before it connected.
    std::string local_name();

private:
    void run(std::uint16_t port, milliseconds every);

    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<double> rtt_ms_;
    std::size_t sent_ = 0;
    std::string error_;
    std::string local_name_;
    std::atomic<std::size_t> echoed_{0};
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// ---------------------------------------------------------------------------------------
// Attack primitives

/// Connects `raw` to 127.0.0.1:`port` and upgrades; empty code for 101.
boost::asio::awaitable<error_code> open_upgraded(test::raw_client& raw, std::uint16_t port, int receive_buffer = 0);

/// A masked client ping (or pong) with `size` bytes of payload (a control frame carries
/// at most 125 by the RFC; more is an attack of its own).
std::string ping_frame(std::size_t size = 125, std::uint8_t op = test::opcode::ping);

/// What the server answered an attack on an upgraded connection.
struct close_seen {
    error_code ec = error::not_connected;  ///< of reading the close frame
    std::uint16_t code = 0;  ///< its close code (1005: none)
    std::string reason;
    std::size_t frames_before = 0;  ///< other frames read first (pongs, echoes)
    error_code end;  ///< how TCP ended after it (eof, reset) or timed_out
};

/// Reads frames until the server's close frame (at most `bound`), then until TCP ends, and
/// closes the socket.
boost::asio::awaitable<close_seen> read_until_close(test::raw_client& raw, milliseconds bound);

/// An upgrade request for `target` with `extra` header lines, as `raw_client::upgrade_request`,
/// with the text `from` replaced by `to` (once): for the request that is valid but for one thing.
std::string altered_request(std::string_view from, std::string_view to, std::string_view extra = {});

/// The percentile `p` (0 to 1) of `values`, which it sorts; 0 when empty.
double percentile(std::vector<double>& values, double p);

}  // namespace vigil::hostile

/// Every case starts with it: counts the case (for the exit status 77 when all skipped).
#define HOSTILE_CASE_START() ::vigil::hostile::case_started()

/// Skips the rest of the case when `why` (an optional<string>) holds a reason.
#define HOSTILE_SKIP_IF(why)                                                                                           \
    do {                                                                                                               \
        if (auto hostile_why_ = (why)) {                                                                               \
            ::vigil::hostile::skip_case(*hostile_why_);                                                                \
            return;                                                                                                    \
        }                                                                                                              \
    } while (false)
