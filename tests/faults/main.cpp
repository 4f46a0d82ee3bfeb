// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The fault tests' own main: `--group=netns` (network namespaces, iptables; needs root) or
// `--group=nginx` (a real nginx in front of vigil). A group that cannot run here is not run
// and the exit status is 77, which meson counts as SKIP, after saying why on stderr: a
// missing tool must never look like a pass. Other arguments go to doctest.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "faults.hpp"

#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr int exit_skip = 77;

struct group {
    const char* name;
    std::optional<std::string> (*unavailable)();
};

const group groups[] = {
    {"netns", vigil::faults::netns_unavailable},
    {"diagnosis", vigil::faults::netns_unavailable},
    {"nginx", vigil::faults::nginx_unavailable},
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

    // Also run by hand: say what is missing before anything else.
    try {
        (void)vigil::faults::fault_peer_path();
    } catch (const std::exception& e) {
        std::cerr << "vigil-faults: " << e.what() << '\n';
        return 1;
    }
    vigil::faults::remove_stale();

    doctest::Context ctx;
    ctx.applyCommandLine(static_cast<int>(rest.size()), rest.data());
    int runnable = 0;
    bool known = only.empty();
    for (const auto& g : groups) {
        if (!only.empty() && only != g.name)
            continue;
        known = true;
        if (auto why = g.unavailable()) {
            std::cerr << "\n*** vigil-faults: SKIPPED the '" << g.name << "' fault tests: " << *why << " ***\n\n";
            ctx.addFilter("test-suite-exclude", g.name);
            continue;
        }
        ++runnable;
        if (!only.empty())
            ctx.addFilter("test-suite", g.name);
    }
    if (!known) {
        std::cerr << "vigil-faults: unknown group '" << only << "' (netns, diagnosis, nginx)\n";
        return 64;
    }
    if (runnable == 0)
        return exit_skip;

    return ctx.run();
}
