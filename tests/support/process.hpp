// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Child processes for tests that talk to third-party peers (Node's ws, Python's websockets
// and websocket-client): spawn one with its stdout on a pipe, read the JSON lines it prints
// with bounded waits, signal it, and never leave it behind (the destructor terminates and
// reaps it). No Asio here: reads either wait with poll() on the calling thread, or take only
// what is already there (`pump()`), for tests that run an io_context in between.

#include <nlohmann/json.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vigil::test {

/// A running child process whose stdout is read as JSON lines (one object per line).
/// Its stdin is /dev/null; its stderr is collected for failure messages.
class child_process {
public:
    /// Starts `argv[0]` (a path; no PATH search) with the given arguments, and `env`
    /// (`NAME=value` entries) as its whole environment, or the test's own when nullopt.
    /// Throws std::runtime_error when it cannot be started.
    explicit child_process(std::vector<std::string> argv,
                           std::optional<std::vector<std::string>> env = std::nullopt);
    /// Terminates the child if it is still running (SIGTERM, SIGKILL after a second) and
    /// reaps it.
    ~child_process();
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    pid_t pid() const noexcept { return pid_; }

    /// Reads what the child printed, waiting at most `timeout` for the first bytes (zero:
    /// only what is already there). Returns how many new JSON lines were parsed.
    std::size_t pump(std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

    /// The next JSON line not yet taken by `next_event` or `wait_for`, waiting at most
    /// `timeout`; nullopt when none came in time or the child closed its stdout.
    std::optional<nlohmann::json> next_event(std::chrono::milliseconds timeout);

    /// Takes lines (as `next_event`) until one has `"event": name`; returns it, or nullopt
    /// when none came within `timeout`. Skipped lines stay in `events()`.
    std::optional<nlohmann::json> wait_for(std::string_view name, std::chrono::milliseconds timeout);

    /// How many lines named `name` were printed so far (reads what is there first).
    std::size_t count(std::string_view name);

    /// Every JSON line printed so far, in order.
    const std::vector<nlohmann::json>& events() const noexcept { return events_; }

    /// Lines that were not JSON objects.
    const std::vector<std::string>& bad_lines() const noexcept { return bad_lines_; }

    /// What the child wrote to stderr so far (reads what is there first).
    const std::string& stderr_text();

    /// The child's lines and stderr, for a failure message.
    std::string transcript();

    /// Sends `sig` (if the child has not been reaped yet).
    void signal(int sig);

    /// Waits at most `timeout` for the child to exit, reading its output meanwhile. Returns
    /// the exit status, or 128 + signal number when a signal ended it; nullopt if it is
    /// still running.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout);

    /// SIGTERM, then `wait_exit(grace)`, then SIGKILL if needed. Returns the exit status
    /// (128 + 9 after SIGKILL).
    int terminate(std::chrono::milliseconds grace = std::chrono::milliseconds(1000));

    /// True until the child has been reaped (checks without blocking).
    bool running();

private:
    bool read_some(int& fd, std::string& into);
    void take_lines();
    bool reap(bool block);

    pid_t pid_ = -1;
    int out_ = -1;
    int err_ = -1;
    std::optional<int> status_;
    std::string pending_;
    std::string err_text_;
    std::vector<nlohmann::json> events_;
    std::vector<std::string> bad_lines_;
    std::size_t cursor_ = 0;
};

/// The directory holding the peer scripts, from the VIGIL_PEERS_DIR environment variable
/// (set by the build for the peers tests); nullopt when unset.
std::optional<std::string> peers_dir();

/// Path of an executable named `name` found in PATH, or nullopt.
std::optional<std::string> find_in_path(std::string_view name);

/// `node` in PATH.
std::optional<std::string> find_node();

/// True when the `ws` package is installed next to the peer scripts
/// (`npm ci --prefix tests/peers` puts it in tests/peers/node_modules).
bool have_node_ws();

/// The Python interpreter that has Debian's third-party packages.
inline constexpr const char* system_python = "/usr/bin/python3";

/// True when `system_python -c 'import <name>'` succeeds (within a few seconds).
bool python_has_module(const std::string& name);

}  // namespace vigil::test
