// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include "faults.hpp"

#include "support/nginx_conf.hpp"

#include <support/ports.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace vigil::faults {

using vigil::test::accepts;
using vigil::test::free_port;

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

bool process_alive(long pid)
{
    return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
}

// The pid in "<prefix><pid>-..." or "<prefix><pid><letter>...", or -1.
long pid_after(std::string_view name, std::string_view prefix)
{
    if (name.substr(0, prefix.size()) != prefix)
        return -1;
    name.remove_prefix(prefix.size());
    long pid = 0;
    std::size_t digits = 0;
    while (digits < name.size() && name[digits] >= '0' && name[digits] <= '9') {
        pid = pid * 10 + (name[digits] - '0');
        ++digits;
    }
    return digits == 0 ? -1 : pid;
}

std::vector<std::string> lines_of(const std::string& text)
{
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (!line.empty())
            lines.push_back(line);
    return lines;
}

// What a command printed on stdout (the child reader keeps non-JSON lines apart).
std::string plain_stdout(vigil::test::child_process& p)
{
    std::string text;
    for (const auto& e : p.events())
        text += e.dump() + '\n';
    for (const auto& l : p.bad_lines())
        text += l + '\n';
    return text;
}

fs::path temp_root()
{
    const char* t = std::getenv("TMPDIR");
    return (t != nullptr && *t != '\0') ? fs::path(t) : fs::path("/tmp");
}

std::string temp_prefix()
{
    return "vigil-faults-";
}

std::string ns_prefix()
{
    return "vigil-";
}


std::string read_file(const fs::path& p)
{
    std::ifstream in(p);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

}  // namespace

std::optional<std::string> find_tool(std::string_view name)
{
    if (name.find('/') != std::string_view::npos)
        return std::string(name);
    if (auto p = vigil::test::find_in_path(name))
        return p;
    for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
        std::string candidate = std::string(dir) + "/" + std::string(name);
        if (::access(candidate.c_str(), X_OK) == 0)
            return candidate;
    }
    return std::nullopt;
}

command_result run_command(std::vector<std::string> argv, milliseconds timeout)
{
    command_result r;
    auto path = find_tool(argv.at(0));
    if (!path) {
        r.output = argv[0] + ": not found";
        return r;
    }
    argv[0] = *path;
    try {
        vigil::test::child_process p(argv);
        auto status = p.wait_exit(timeout);
        if (!status) {
            p.terminate();
            r.output = "timed out after " + std::to_string(timeout.count()) + " ms\n";
        }
        r.status = status.value_or(-1);
        r.output += plain_stdout(p) + p.stderr_text();
        while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == ' '))
            r.output.pop_back();
    } catch (const std::exception& e) {
        r.output = e.what();
    }
    return r;
}

void must_run(std::vector<std::string> argv)
{
    std::string line;
    for (const auto& a : argv)
        line += (line.empty() ? "" : " ") + a;
    auto r = run_command(std::move(argv));
    if (r.status != 0)
        throw std::runtime_error("'" + line + "' failed (status " + std::to_string(r.status) + "): " + r.output);
}

double mono_ms()
{
    auto now = clock_type::now().time_since_epoch();
    return static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(now).count()) / 1e3;
}

std::string fault_peer_path()
{
    const char* p = std::getenv("VIGIL_FAULT_PEER");
    if (p == nullptr || *p == '\0')
        throw std::runtime_error("VIGIL_FAULT_PEER is not set: run the fault tests through meson test");
    return p;
}

// ---- net_pair ----------------------------------------------------------------------------

net_pair::net_pair()
{
    static int sequence = 0;
    const auto pid = std::to_string(::getpid());
    const auto k = std::to_string(++sequence);
    server_ns_ = ns_prefix() + pid + "-" + k + "-s";
    client_ns_ = ns_prefix() + pid + "-" + k + "-c";
    // Interface names have at most 15 characters.
    server_dev_ = "vf" + pid + "s" + k;
    client_dev_ = "vf" + pid + "c" + k;
    try {
        must_run({"ip", "netns", "add", server_ns_});
        made_.push_back(server_ns_);
        must_run({"ip", "netns", "add", client_ns_});
        made_.push_back(client_ns_);
        must_run({"ip", "link", "add", server_dev_, "type", "veth", "peer", "name", client_dev_});
        must_run({"ip", "link", "set", server_dev_, "netns", server_ns_});
        must_run({"ip", "link", "set", client_dev_, "netns", client_ns_});
        must_run({"ip", "-n", server_ns_, "addr", "add", std::string(server_addr) + "/24", "dev", server_dev_});
        must_run({"ip", "-n", client_ns_, "addr", "add", std::string(client_addr) + "/24", "dev", client_dev_});
        for (auto s : {side::server, side::client}) {
            must_run({"ip", "-n", ns(s), "link", "set", "lo", "up"});
            must_run({"ip", "-n", ns(s), "link", "set", dev(s), "up"});
        }
    } catch (...) {
        // Still in the root namespace if moving it failed; deleting one end deletes both.
        run_command({"ip", "link", "del", server_dev_});
        for (const auto& n : made_)
            run_command({"ip", "netns", "del", n});
        throw;
    }
}

net_pair::~net_pair()
{
    for (const auto& n : made_) {
        // A process left inside would keep the namespace (and its addresses) alive unnamed.
        auto pids = run_command({"ip", "netns", "pids", n});
        for (const auto& line : lines_of(pids.output)) {
            long pid = pid_after(line, "");
            if (pid > 0)
                ::kill(static_cast<pid_t>(pid), SIGKILL);
        }
        auto r = run_command({"ip", "netns", "del", n});
        if (r.status != 0)
            std::cerr << "vigil-faults: could not delete network namespace " << n << ": " << r.output << '\n';
    }
}

std::vector<std::string> net_pair::exec_in(side s, std::vector<std::string> argv) const
{
    std::vector<std::string> full = {find_tool("ip").value_or("ip"), "netns", "exec", ns(s)};
    full.insert(full.end(), std::make_move_iterator(argv.begin()), std::make_move_iterator(argv.end()));
    return full;
}

void net_pair::iptables(side s, const char* op)
{
    auto tool = find_tool("iptables").value_or("iptables");
    for (const char* chain : {"INPUT", "OUTPUT"})
        must_run(exec_in(s, {tool, "-w", "5", op, chain, "-j", "DROP"}));
}

void net_pair::drop_all(side s)
{
    iptables(s, "-I");
}

void net_pair::restore(side s)
{
    iptables(s, "-D");
}

void net_pair::link_down(side s)
{
    must_run({"ip", "-n", ns(s), "link", "set", dev(s), "down"});
}

void net_pair::link_up(side s)
{
    must_run({"ip", "-n", ns(s), "link", "set", dev(s), "up"});
}

// ---- leftovers and prerequisites ---------------------------------------------------------

void remove_stale()
{
    // Temporary directories (nginx's) of runs that are gone.
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(temp_root(), ec)) {
        auto name = entry.path().filename().string();
        long pid = pid_after(name, temp_prefix());
        if (pid > 0 && !process_alive(pid))
            fs::remove_all(entry.path(), ec);
    }

    if (::geteuid() != 0 || !find_tool("ip"))
        return;
    auto list = run_command({"ip", "netns", "list"});
    for (const auto& line : lines_of(list.output)) {
        auto name = line.substr(0, line.find(' '));
        long pid = pid_after(name, ns_prefix());
        if (pid <= 0 || process_alive(pid))
            continue;
        auto pids = run_command({"ip", "netns", "pids", name});
        for (const auto& p : lines_of(pids.output))
            if (long stray = pid_after(p, ""); stray > 0)
                ::kill(static_cast<pid_t>(stray), SIGKILL);
        run_command({"ip", "netns", "del", name});
    }
    // A veth pair made but never moved into its namespaces.
    auto links = run_command({"ip", "-o", "link", "show", "type", "veth"});
    for (const auto& line : lines_of(links.output)) {
        // "12: vf1234s1@vf1234c1: <...>"
        auto colon = line.find(": ");
        if (colon == std::string::npos)
            continue;
        auto name = line.substr(colon + 2);
        name = name.substr(0, name.find_first_of("@:"));
        long pid = pid_after(name, "vf");
        if (pid > 0 && !process_alive(pid))
            run_command({"ip", "link", "del", name});
    }
}

std::optional<std::string> netns_unavailable()
{
    if (::geteuid() != 0)
        return "not running as root: creating network namespaces, veth links and iptables rules needs "
               "CAP_NET_ADMIN (CI runs the tests as root)";
    if (!find_tool("ip"))
        return "no 'ip' command (Debian package iproute2)";
    if (!find_tool("iptables"))
        return "no 'iptables' command (Debian package iptables)";
    try {
        net_pair probe;
        probe.drop_all(net_pair::side::server);
        probe.restore(net_pair::side::server);
    } catch (const std::exception& e) {
        return std::string("cannot make a test network here: ") + e.what();
    }
    return std::nullopt;
}

std::optional<std::string> nginx_unavailable()
{
    if (!find_tool("nginx"))
        return "no 'nginx' command (Debian package nginx)";
    auto r = run_command({"nginx", "-v"});
    if (r.status != 0)
        return "'nginx -v' failed: " + r.output;
    return std::nullopt;
}

// ---- nginx -------------------------------------------------------------------------------

nginx_proxy::nginx_proxy(std::vector<route> routes)
{
    auto nginx = find_tool("nginx");
    if (!nginx)
        throw std::runtime_error("nginx not found");
    auto templ = (temp_root() / (temp_prefix() + std::to_string(::getpid()) + "-XXXXXX")).string();
    if (::mkdtemp(templ.data()) == nullptr)
        throw std::runtime_error("mkdtemp " + templ + ": " + std::strerror(errno));
    dir_ = templ;
    // nginx run as root hands its temp paths to "nobody".
    fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
    fs::create_directories(fs::path(dir_) / "tmp");

    std::string last_error;
    for (int attempt = 0; attempt < 5; ++attempt) {
        port_ = free_port();
        std::ostringstream conf;
        conf << vigil::test::nginx_conf_head(dir_, 256);
        conf << "    server {\n"
             << "        listen 127.0.0.1:" << port_ << ";\n";
        for (const auto& r : routes) {
            conf << "        location " << r.prefix << " {\n"
                 << "            proxy_pass http://127.0.0.1:" << r.upstream_port << ";\n"
                 << "            proxy_http_version 1.1;\n"
                 << "            proxy_set_header Upgrade $http_upgrade;\n"
                 << "            proxy_set_header Connection $connection_upgrade;\n"
                 << "            proxy_read_timeout " << r.read_timeout.count() << "s;\n"
                 << "        }\n";
        }
        conf << "    }\n}\n";
        std::ofstream(fs::path(dir_) / "nginx.conf") << conf.str();

        process_.reset();
        process_.emplace(std::vector<std::string>{fault_peer_path(), "exec", *nginx, "-p", dir_ + "/", "-e",
                                                  dir_ + "/error.log", "-c", dir_ + "/nginx.conf"});
        const auto deadline = clock_type::now() + std::chrono::seconds(5);
        while (clock_type::now() < deadline) {
            if (accepts(port_))
                return;
            if (!process_->running())
                break;
            ::poll(nullptr, 0, 20);
        }
        last_error = process_->transcript() + "\nerror.log:\n" + error_log();
        if (last_error.find("Address already in use") == std::string::npos)
            break;
    }
    process_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
    throw std::runtime_error("nginx did not start: " + last_error);
}

nginx_proxy::~nginx_proxy()
{
    process_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
}

std::string nginx_proxy::url(std::string_view path) const
{
    return "ws://127.0.0.1:" + std::to_string(port_) + std::string(path);
}

std::string nginx_proxy::error_log() const
{
    return read_file(fs::path(dir_) / "error.log");
}

// ---- peer processes ----------------------------------------------------------------------

peer_process::peer_process(std::vector<std::string> argv, std::string name)
    : proc_(std::move(argv)), name_(std::move(name))
{
}

peer_process::~peer_process()
{
    if (stopped_)
        proc_.signal(SIGCONT);
}

std::optional<json> peer_process::await(const std::function<bool(const json&)>& pred, milliseconds timeout)
{
    const auto deadline = clock_type::now() + timeout;
    std::size_t seen = 0;
    for (;;) {
        const auto& events = proc_.events();
        for (; seen < events.size(); ++seen)
            if (pred(events[seen]))
                return events[seen];
        auto left = std::chrono::duration_cast<milliseconds>(deadline - clock_type::now());
        if (left.count() <= 0)
            return std::nullopt;
        if (!proc_.running()) {
            proc_.pump();
            if (seen == proc_.events().size())
                return std::nullopt;  // it exited and printed nothing more
            continue;
        }
        proc_.pump(std::min(left, milliseconds(20)));
    }
}

std::optional<json> peer_process::await(std::string_view event, milliseconds timeout, std::string_view key,
                                        const json& value)
{
    return await(
        [&](const json& e) {
            return e.value("event", "") == event && (key.empty() || (e.contains(key) && e[std::string(key)] == value));
        },
        timeout);
}

std::vector<json> peer_process::all(std::string_view event)
{
    proc_.pump();
    std::vector<json> out;
    for (const auto& e : proc_.events())
        if (e.value("event", "") == event)
            out.push_back(e);
    return out;
}

void peer_process::signal(int sig)
{
    if (sig == SIGSTOP)
        stopped_ = true;
    else if (sig == SIGCONT)
        stopped_ = false;
    proc_.signal(sig);
}

std::string peer_process::transcript()
{
    return "---- " + name_ + " ----\n" + proc_.transcript();
}

void pass_time(milliseconds d, std::vector<peer_process*> peers)
{
    const auto deadline = clock_type::now() + d;
    while (clock_type::now() < deadline) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - clock_type::now());
        ::poll(nullptr, 0, static_cast<int>(std::clamp(left.count(), milliseconds::rep(0), milliseconds::rep(10))));
        for (auto* p : peers)
            p->proc().pump();
    }
}

}  // namespace vigil::faults
