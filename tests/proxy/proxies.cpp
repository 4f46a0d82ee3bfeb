// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "proxies.hpp"

#include <support/ports.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace vigil::proxy_test {

using vigil::test::accepts;

namespace fs = std::filesystem;

namespace {

std::string make_temp_dir()
{
    const char* tmp = std::getenv("TMPDIR");
    auto templ = (fs::path(tmp && *tmp ? tmp : "/tmp") / "vigil-proxy-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr)
        throw std::runtime_error("mkdtemp " + templ + ": " + std::strerror(errno));
    return templ;
}

std::vector<std::string> tinyproxy_argv(const std::string& dir, std::uint16_t port, const credentials& auth)
{
    const auto conf = fs::path(dir) / "tinyproxy.conf";
    std::ofstream out(conf);
    // In the foreground (-d), logging to stdout; no User line: it runs as whoever runs the
    // tests. No ConnectPort line: CONNECT to any port.
    out << "Port " << port << "\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nLogLevel Connect\n";
    if (!auth.user.empty())
        out << "BasicAuth " << auth.user << " " << auth.password << "\n";
    return {*find_tool("tinyproxy"), "-d", "-c", conf.string()};
}

std::vector<std::string> microsocks_argv(std::uint16_t port, const credentials& auth)
{
    std::vector<std::string> argv{*find_tool("microsocks"), "-i", "127.0.0.1", "-p", std::to_string(port)};
    if (!auth.user.empty()) {
        argv.insert(argv.end(), {"-u", auth.user, "-P", auth.password});
    }
    return argv;
}

}  // namespace

std::optional<std::string> find_tool(std::string_view name)
{
    if (auto p = vigil::test::find_in_path(name))
        return p;
    for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin"}) {
        auto p = std::string(dir) + "/" + std::string(name);
        if (::access(p.c_str(), X_OK) == 0)
            return p;
    }
    return std::nullopt;
}

std::optional<std::string> tinyproxy_unavailable()
{
    if (!find_tool("tinyproxy"))
        return "no 'tinyproxy' command (Debian package tinyproxy)";
    return std::nullopt;
}

std::optional<std::string> microsocks_unavailable()
{
    if (!find_tool("microsocks"))
        return "no 'microsocks' command (Debian package microsocks)";
    return std::nullopt;
}

proxy_process::proxy_process(kind k, credentials auth) : dir_(make_temp_dir())
{
    std::string last;
    // Neither proxy can pick its own port and say which; a start that loses the race for
    // the free port is retried with another.
    for (int attempt = 0; attempt < 5; ++attempt) {
        port_ = free_port();
        process_.reset();
        process_.emplace(k == kind::tinyproxy ? tinyproxy_argv(dir_, port_, auth) : microsocks_argv(port_, auth));
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (std::chrono::steady_clock::now() < deadline) {
            if (accepts(port_))
                return;
            if (!process_->running())
                break;
            ::poll(nullptr, 0, 20);
        }
        last = process_->transcript();
    }
    process_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
    throw std::runtime_error(std::string(k == kind::tinyproxy ? "tinyproxy" : "microsocks")
                             + " did not start: " + last);
}

proxy_process::~proxy_process()
{
    process_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
}

std::string proxy_process::url(std::string_view scheme, const credentials& as) const
{
    std::string u = std::string(scheme) + "://";
    if (!as.user.empty())
        u += as.user + ":" + as.password + "@";
    return u + "127.0.0.1:" + std::to_string(port_);
}

std::string proxy_process::log()
{
    return process_ ? process_->transcript() : std::string();
}

}  // namespace vigil::proxy_test
