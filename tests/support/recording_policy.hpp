// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A backoff policy for the unit tests of the reconnect machines (the supervisor's, the Redis
// link's). Header-only; no Asio.

#include <vigil/backoff.hpp>

#include <chrono>
#include <vector>

namespace vigil::test {

/// A policy that says what it was asked: delays of 1 s, 2 s, 3 s ... per call since reset.
struct recording_policy {
    std::vector<retry_context>* asked;
    int* resets;
    int calls = 0;
    std::chrono::milliseconds next_delay(const retry_context& c)
    {
        asked->push_back(c);
        return std::chrono::milliseconds(1000 * ++calls);
    }
    void reset()
    {
        ++*resets;
        calls = 0;
    }
};

}  // namespace vigil::test
