// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The cluster suite's own main: it needs a real redis-server. Where none is in PATH nothing
// runs and the exit status is 77, which meson counts as SKIP, after saying why on stderr: a
// missing tool must never look like a pass.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "support/process.hpp"

#include <iostream>

int main(int argc, char** argv)
{
    if (!vigil::test::find_in_path("redis-server")) {
        std::cerr << "SKIP: redis-server is not in PATH (Debian: apt-get install redis-server)\n";
        return 77;
    }
    doctest::Context ctx(argc, argv);
    return ctx.run();
}
