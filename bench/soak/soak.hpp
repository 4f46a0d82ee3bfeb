// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Shared by the three roles of vigil-soak (soak.cpp): the orchestrator with its relay and
// fault injector, the server it kills and restarts, and the supervised clients.

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace soak {

/// One soak run's knobs, passed from the orchestrator to its children on their command lines.
struct settings {
    std::chrono::milliseconds ping{1000};
    std::chrono::milliseconds pong{500};
};

/// VmRSS of this process, in KiB.
long rss_kb();
/// Bytes the allocator has handed out and not had back (mallinfo2), in KiB: a leak grows it,
/// fragmentation only grows the RSS.
long heap_kb();
/// Open file descriptors of this process (entries of /proc/self/fd).
int count_fds();
/// Prints one JSON line on stdout with "event" and "t" (seconds since the process started).
void emit(const char* event, nlohmann::json fields = nlohmann::json::object());
/// Raises the soft RLIMIT_NOFILE to the hard limit.
void raise_fd_limit();

/// `vigil-soak server --port P --log FILE [--ping-ms N --pong-ms N]`
int server_main(const std::vector<std::string>& args);
/// `vigil-soak clients --url ws://H:P --clients N --report FILE [--rate-ms N --ping-ms N --pong-ms N]`
int clients_main(const std::vector<std::string>& args);
/// `vigil-soak run [--duration S] [--clients N] [--dir D] ...`
int run_main(const std::vector<std::string>& args, const std::string& self_exe);

/// The numbered message a client sends: "<client> <seq> <padding>".
std::string make_message(std::uint32_t client, std::uint64_t seq, std::size_t padding);

/// "--name value" pairs; throws std::invalid_argument on anything else.
struct arg_list {
    explicit arg_list(const std::vector<std::string>& args);
    std::string get(const std::string& name, const std::string& fallback) const;
    long get_int(const std::string& name, long fallback) const;
    double get_double(const std::string& name, double fallback) const;
    bool has(const std::string& name) const;

    std::vector<std::pair<std::string, std::string>> pairs;
};

}  // namespace soak
