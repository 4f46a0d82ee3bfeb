// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Small helpers the integration test files share: the timing tolerance, naming error codes
// in failure messages, elapsed times, and bounded waits on a test's own io_context.
// Header-only, for test files (it includes doctest).
//
// How the cases wait: for counted events ("3 pongs seen", "the peer counted 4 pings", "the
// end marker came back"), each wait with a bound that only says when to give up
// (`eventually`, `wait_until`), never a sleep that hopes things have happened meanwhile. A
// check that something did not happen holds over a window that other events define ("while
// 60 messages streamed in, no ping was sent"). Sleeps that remain are the scenario itself (a
// publisher's pace, a wait that must be under way) and say so.

#include <vigil/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace vigil::test {

/// Slack on the upper bound of every timing assertion of the integration suites: the
/// scheduling noise of a loaded 2-core CI machine running the TSan and ASan builds (a timer
/// that fires late, a thread waiting for a core, a sanitizer slowing every handler). The TSan
/// build on 2 cores, with two busy loops competing for them, overshot a bound by 51 ms at
/// most (most by 10 to 20 ms: the timekeeper's 10 ms grid); this is three times that. The
/// bounds under test (ping_interval + pong_timeout, a handshake or close deadline, a retry
/// delay, "at once") are still far tighter than what a broken deadline shows, which is
/// "never": a session that hangs runs into the case's own bounded wait, seconds later.
inline constexpr std::chrono::milliseconds tolerance{150};

/// "pong_timeout (vigil:10)": the name and the raw code.
inline std::string describe(const error_code& ec)
{
    return vigil::error_name(ec) + " (" + ec.to_string() + ")";
}

inline std::chrono::milliseconds ms_between(std::chrono::steady_clock::time_point from,
                                            std::chrono::steady_clock::time_point to)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(to - from);
}

inline std::chrono::milliseconds ms_since(std::chrono::steady_clock::time_point t)
{
    return ms_between(t, std::chrono::steady_clock::now());
}

/// The most of `times` (any order) within any window [t, t + w): what a server counting
/// events per sliding window would see.
inline std::size_t most_in_window(std::vector<std::chrono::steady_clock::time_point> times,
                                  std::chrono::steady_clock::duration w)
{
    std::sort(times.begin(), times.end());
    std::size_t most = 0;
    std::size_t lo = 0;
    for (std::size_t hi = 0; hi < times.size(); ++hi) {
        while (times[hi] - times[lo] >= w)
            ++lo;
        most = std::max(most, hi - lo + 1);
    }
    return most;
}

/// Waits on the calling coroutine's io_context until `pred` holds, polling every
/// millisecond, at most `bound`. Returns whether it held: for state that the test's own
/// handlers change.
inline boost::asio::awaitable<bool> eventually(std::function<bool()> pred, std::chrono::milliseconds bound)
{
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
    const auto deadline = std::chrono::steady_clock::now() + bound;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline)
            co_return false;
        timer.expires_after(std::chrono::milliseconds(1));
        co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    co_return true;
}

/// Lets the calling coroutine's io_context run for `d`. Only where the passing of time is
/// itself the scenario; to let something happen, wait for it with `eventually`.
inline boost::asio::awaitable<void> pause(std::chrono::milliseconds d)
{
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, d);
    co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
}

}  // namespace vigil::test

// doctest prints what it cannot stream as {?}: a failed timing check shows its milliseconds
// instead ("CHECK( 412.3 ms <= 380.0 ms )").
namespace doctest {
template <class Rep, class Period>
struct StringMaker<std::chrono::duration<Rep, Period>> {
    static String convert(const std::chrono::duration<Rep, Period>& d)
    {
        char text[48];
        std::snprintf(text, sizeof text, "%.1f ms", std::chrono::duration<double, std::milli>(d).count());
        return text;
    }
};
}  // namespace doctest

// doctest would print both sides of `ec == error::x` as numbers; this names them.
#define CHECK_CODE(ec, expected)                                                                  \
    CHECK_MESSAGE((ec) == (expected), "got " << ::vigil::test::describe(ec) << ", want "          \
                                             << ::vigil::test::describe(::vigil::error_code(expected)))
