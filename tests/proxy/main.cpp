// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The proxy suite's own main: `--group=http` (tinyproxy), `--group=socks` (microsocks) or
// `--group=local` (fake proxies and local addresses, which need nothing installed). A group
// that cannot run here is not run and the exit status is 77, which meson counts as SKIP,
// after saying why on stderr: a missing proxy must never look like a pass. Other arguments
// go to doctest.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "proxies.hpp"

#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr int exit_skip = 77;

std::optional<std::string> always_available()
{
    return std::nullopt;
}

struct group {
    const char* name;
    std::optional<std::string> (*unavailable)();
};

const group groups[] = {
    {"http", vigil::proxy_test::tinyproxy_unavailable},
    {"socks", vigil::proxy_test::microsocks_unavailable},
    {"local", always_available},
};

}  // namespace

int main(int argc, char** argv)
{
    std::string only;
    std::vector<char*> rest;
    for (int i = 0; i < argc; ++i) {
        if (std::strncmp(argv[i], "--group=", 8) == 0)
            only = argv[i] + 8;
        else
            rest.push_back(argv[i]);
    }
    doctest::Context ctx;
    ctx.applyCommandLine(static_cast<int>(rest.size()), rest.data());
    int runnable = 0;
    bool known = only.empty();
    for (const auto& g : groups) {
        if (!only.empty() && only != g.name)
            continue;
        known = true;
        if (auto why = g.unavailable()) {
            std::cerr << "\n*** vigil-proxy-tests: SKIPPED the '" << g.name << "' proxy tests: " << *why << " ***\n\n";
            ctx.addFilter("test-suite-exclude", g.name);
            continue;
        }
        ++runnable;
        if (!only.empty())
            ctx.addFilter("test-suite", g.name);
    }
    if (!known) {
        std::cerr << "vigil-proxy-tests: unknown group '" << only << "' (http, socks, local)\n";
        return 64;
    }
    if (runnable == 0)
        return exit_skip;
    return ctx.run();
}
