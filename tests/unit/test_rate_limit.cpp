// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The sliding-window rule behind rate_limiter (lib/detail/window_limit.hpp), stepped with a
// fake clock, and the shared limiter used from several threads at once.

#include "detail/window_limit.hpp"

#include <vigil/rate_limit.hpp>

#include <support/testing.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using time_point = std::chrono::steady_clock::time_point;
using vigil::test::most_in_window;

const time_point t0 = time_point(std::chrono::hours(10));

}  // namespace

TEST_SUITE("rate_limit")
{
    TEST_CASE("a full window pushes the next reservation to when its oldest leaves")
    {
        vigil::detail::window_limit w(3, 1000ms);
        CHECK(w.reserve(t0) == t0);
        CHECK(w.reserve(t0) == t0);
        CHECK(w.reserve(t0 + 100ms) == t0 + 100ms);
        CHECK(w.reserve(t0 + 200ms) == t0 + 1000ms);  // the first two left at t0 + 1 s
        CHECK(w.reserve(t0 + 200ms) == t0 + 1000ms);
        CHECK(w.reserve(t0 + 200ms) == t0 + 1100ms);
        // Asked late, it is not held back.
        CHECK(w.reserve(t0 + 5s) == t0 + 5s);
        w.clear();
        CHECK(w.reserve(t0 + 5s) == t0 + 5s);
        CHECK(w.reserve(t0 + 5s) == t0 + 5s);
    }

    TEST_CASE("zero means no limit")
    {
        vigil::detail::window_limit w(0, 1000ms);
        for (int i = 0; i < 100; ++i)
            CHECK(w.reserve(t0) == t0);
    }

    TEST_CASE("any window holds at most the count, however the asks come, and order is kept")
    {
        std::mt19937_64 rng(42);
        for (std::size_t count : {1u, 2u, 5u, 300u}) {
            CAPTURE(count);
            vigil::detail::window_limit w(count, 700ms);
            std::vector<time_point> granted;
            auto now = t0;
            for (int i = 0; i < 2000; ++i) {
                now += milliseconds(std::uniform_int_distribution<int>(0, 40)(rng));
                const auto at = w.reserve(now);
                CHECK(at >= now);
                if (!granted.empty())
                    CHECK(at >= granted.back());
                granted.push_back(at);
            }
            CHECK(most_in_window(granted, 700ms) <= count);
            // And not needlessly slow: asks that come faster than the limit fill the window.
            if (count <= 5)
                CHECK(most_in_window(granted, 700ms) == count);
        }
    }

    TEST_CASE("a limiter shared by threads keeps the window across all of them")
    {
        vigil::rate_limiter limiter({.connects = 10, .connect_window = 500ms});
        std::mutex m;
        std::vector<time_point> granted;
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t) {
            threads.emplace_back([&] {
                for (int i = 0; i < 50; ++i) {
                    const auto at = limiter.reserve_connect(t0 + milliseconds(i));
                    std::lock_guard lock(m);
                    granted.push_back(at);
                }
            });
        }
        for (auto& t : threads)
            t.join();
        CHECK(granted.size() == 200);
        CHECK(limiter.connects_reserved() == 200);
        CHECK(most_in_window(granted, 500ms) == 10);
        // 200 connects at 10 per 500 ms: the last waits 19 windows.
        CHECK(*std::max_element(granted.begin(), granted.end()) >= t0 + 19 * 500ms);
    }

    TEST_CASE("beginnings are counted when they happen: late turns cannot crowd a window")
    {
        vigil::rate_limiter limiter({.connects = 2, .connect_window = 1000ms});
        // Four turns: two now, two a window later.
        CHECK(limiter.reserve_connect(t0) == t0);
        CHECK(limiter.reserve_connect(t0) == t0);
        CHECK(limiter.reserve_connect(t0) == t0 + 1000ms);
        CHECK(limiter.reserve_connect(t0) == t0 + 1000ms);
        // A busy loop starts the first two late, 300 ms after their turn.
        CHECK(limiter.begin_connect(t0 + 300ms) == t0 + 300ms);
        CHECK(limiter.begin_connect(t0 + 300ms) == t0 + 300ms);
        // The next two come on time, but the window of real beginnings is full until
        // t0 + 1.3 s: ask again then, nothing counted meanwhile.
        CHECK(limiter.begin_connect(t0 + 1000ms) == t0 + 1300ms);
        CHECK(limiter.begin_connect(t0 + 1000ms) == t0 + 1300ms);
        CHECK(limiter.begin_connect(t0 + 1300ms) == t0 + 1300ms);
        CHECK(limiter.begin_connect(t0 + 1300ms) == t0 + 1300ms);
        CHECK(limiter.begin_connect(t0 + 1301ms) == t0 + 2300ms);
        CHECK(limiter.connects_reserved() == 4);
    }

    TEST_CASE("without a connect limit, turns and beginnings are at once")
    {
        vigil::rate_limiter limiter({});
        for (int i = 0; i < 10; ++i) {
            CHECK(limiter.reserve_connect(t0) == t0);
            CHECK(limiter.begin_connect(t0) == t0);
        }
    }

    TEST_CASE("limits are checked: a window must be positive where its count is set")
    {
        std::string detail;
        CHECK_FALSE(vigil::validate(vigil::rate_limits{}, &detail));
        CHECK(vigil::validate(vigil::rate_limits{.connects = 5, .connect_window = 0ms}, &detail) ==
              vigil::error_code(vigil::error::invalid_config));
        CHECK(detail.find("connect_window") != std::string::npos);
        CHECK(vigil::validate(vigil::rate_limits{.messages = 5, .message_window = -1ms}, &detail) ==
              vigil::error_code(vigil::error::invalid_config));
        CHECK(detail.find("message_window") != std::string::npos);
    }
}
