// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The fault rig: real hosts made of network namespaces joined by a veth pair, whose network
// the tests cut with iptables or by taking the link down; an nginx started with a generated
// configuration in a temporary directory; and the processes that run vigil on either side.
// Everything is removed again by destructors, and what a killed run left behind is removed
// at the next start (names carry the pid of the run that made them).

#include <support/process.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vigil::faults {

using nlohmann::json;
using std::chrono::milliseconds;

/// An executable found in PATH or in the sbin directories (which a non-login PATH may lack).
std::optional<std::string> find_tool(std::string_view name);

struct command_result {
    int status = -1;
    std::string output;  ///< stdout and stderr, for messages
};

/// Runs `argv` (argv[0] a name looked up with `find_tool`) and waits at most `timeout`.
command_result run_command(std::vector<std::string> argv, milliseconds timeout = milliseconds(10000));

/// `run_command`, throwing std::runtime_error with the command and its output unless it
/// exits 0.
void must_run(std::vector<std::string> argv);

/// CLOCK_MONOTONIC in milliseconds: the clock of the peers' "mono_ms".
double mono_ms();

/// Path of vigil-fault-peer (from the VIGIL_FAULT_PEER environment variable). Throws
/// when it is unset: a build problem, not a reason to skip.
std::string fault_peer_path();

/// Two hosts: network namespaces "server" and "client" joined by a veth pair, 10.77.0.1 and
/// 10.77.0.2 (/24). The addresses exist inside the namespaces only, so runs in parallel do
/// not collide. The destructor deletes both namespaces (their rules and links go with them).
class net_pair {
public:
    /// Throws std::runtime_error (with the failing command's output) when the namespaces
    /// cannot be made; what was made is removed first.
    net_pair();
    ~net_pair();
    net_pair(const net_pair&) = delete;
    net_pair& operator=(const net_pair&) = delete;

    enum class side { server, client };

    static constexpr const char* server_addr = "10.77.0.1";
    static constexpr const char* client_addr = "10.77.0.2";

    const std::string& ns(side s) const { return s == side::server ? server_ns_ : client_ns_; }
    const std::string& dev(side s) const { return s == side::server ? server_dev_ : client_dev_; }

    /// `argv` prefixed with `ip netns exec <ns>`.
    std::vector<std::string> exec_in(side s, std::vector<std::string> argv) const;

    /// Every packet in or out of that host is dropped from now on: nothing reaches the
    /// other side, no FIN, no RST.
    void drop_all(side s);
    /// Removes the drop rules again.
    void restore(side s);
    /// Takes that host's end of the veth down (and up again).
    void link_down(side s);
    void link_up(side s);

private:
    void iptables(side s, const char* op);
    std::string server_ns_;
    std::string client_ns_;
    std::string server_dev_;
    std::string client_dev_;
    std::vector<std::string> made_;  // namespaces to delete
};

/// Deletes namespaces, links and temporary directories left by runs whose process is gone
/// (killed by a timeout before its destructors ran).
void remove_stale();

/// Why the namespace tests cannot run here (not root, no ip or iptables, namespaces or
/// rules refused), after trying for real; nullopt when they can.
std::optional<std::string> netns_unavailable();

/// Why the nginx tests cannot run here; nullopt when they can.
std::optional<std::string> nginx_unavailable();

/// An nginx on 127.0.0.1 proxying WebSocket upgrades, started from a generated configuration
/// in a temporary directory (pid file, logs and temp paths there too), in the foreground as a
/// single process. Stopped and its directory removed by the destructor.
class nginx_proxy {
public:
    struct route {
        std::string prefix;             ///< location, e.g. "/short/"
        std::uint16_t upstream_port;    ///< on 127.0.0.1
        std::chrono::seconds read_timeout;  ///< proxy_read_timeout
    };
    /// Starts nginx and waits until it accepts connections; throws when it cannot.
    explicit nginx_proxy(std::vector<route> routes);
    ~nginx_proxy();
    nginx_proxy(const nginx_proxy&) = delete;
    nginx_proxy& operator=(const nginx_proxy&) = delete;

    std::uint16_t port() const noexcept { return port_; }
    /// ws://127.0.0.1:<port><path>
    std::string url(std::string_view path) const;
    /// nginx's error log so far, for failure messages.
    std::string error_log() const;

private:
    std::string dir_;
    std::uint16_t port_ = 0;
    std::optional<vigil::test::child_process> process_;
};

/// A vigil-fault-peer process (optionally inside a namespace); see fault_peer.cpp.
class peer_process {
public:
    explicit peer_process(std::vector<std::string> argv, std::string name);
    ~peer_process();
    peer_process(const peer_process&) = delete;
    peer_process& operator=(const peer_process&) = delete;

    vigil::test::child_process& proc() { return proc_; }

    /// The first line, printed so far or within `timeout`, for which `pred` holds.
    std::optional<json> await(const std::function<bool(const json&)>& pred, milliseconds timeout);
    /// The first line named `event` with `key == value` (no key: any).
    std::optional<json> await(std::string_view event, milliseconds timeout, std::string_view key = {},
                              const json& value = nullptr);
    /// Every line so far named `event`.
    std::vector<json> all(std::string_view event);

    /// Sends a signal. SIGSTOP is remembered: the destructor continues the process first,
    /// so that it can be terminated normally.
    void signal(int sig);

    /// Name and transcript, for failure messages.
    std::string transcript();

private:
    vigil::test::child_process proc_;
    std::string name_;
    bool stopped_ = false;
};

/// Lets `d` pass while reading what the processes print (a deliberate outage, not a wait
/// for an event).
void pass_time(milliseconds d, std::vector<peer_process*> peers);

}  // namespace vigil::faults
