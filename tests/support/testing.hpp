// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Small helpers the integration test files share: naming error codes in failure messages,
// elapsed times, and bounded waits on a test's own io_context. Header-only, for test files
// (it includes doctest).

#include <vigil/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <string>

namespace vigil::test {

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

/// Lets the calling coroutine's io_context run for `d`.
inline boost::asio::awaitable<void> pause(std::chrono::milliseconds d)
{
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, d);
    co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
}

}  // namespace vigil::test

// doctest would print both sides of `ec == error::x` as numbers; this names them.
#define CHECK_CODE(ec, expected)                                                                  \
    CHECK_MESSAGE((ec) == (expected), "got " << ::vigil::test::describe(ec) << ", want "          \
                                             << ::vigil::test::describe(::vigil::error_code(expected)))
