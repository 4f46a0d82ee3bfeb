// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The hostile suite's own main: doctest, and exit status 77 (which meson counts as SKIP)
// when every case that started had to skip (no vigil-serve, no /proc), after each said why
// on stderr: a suite that could not run must never look like a pass.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "hostile.hpp"

#include <csignal>
#include <iostream>

int main(int argc, char** argv)
{
    // A peer that resets a connection must not kill the test with SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    // 1,000 connections at once need as many descriptors here and in vigil-serve (which
    // inherits the limit).
    vigil::hostile::raise_fd_limit();
    doctest::Context ctx;
    ctx.applyCommandLine(argc, argv);
    const int status = ctx.run();
    if (ctx.shouldExit())
        return status;
    const auto started = vigil::hostile::cases_started();
    const auto skipped = vigil::hostile::cases_skipped();
    if (status == 0 && started > 0 && skipped == started) {
        std::cerr << "vigil-hostile: every case skipped (" << skipped << ")\n";
        return 77;
    }
    return status;
}
