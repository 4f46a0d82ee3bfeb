// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <chrono>
#include <thread>

namespace vigil::test {

/// Polls `pred` until it returns true or `timeout` passes; returns the last answer.
///
/// Only for state that changes on another thread (a `peer`'s or `relay`'s counters). For
/// anything the test's own io_context drives, run that io_context with a bound instead
/// (`ioc.run_for`), which needs no polling.
template <class Predicate>
bool wait_until(Predicate pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll = std::chrono::milliseconds(2))
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline)
            return pred();
        std::this_thread::sleep_for(poll);
    }
    return true;
}

}  // namespace vigil::test
