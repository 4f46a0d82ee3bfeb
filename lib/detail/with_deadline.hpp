// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The one place where an operation is raced against a steady_timer (Boost 1.81 has no
// cancel_after). Beast's websocket handshake and Asio's resolver ignore per-operation
// cancellation, so cancelling the losing arm is not enough: when the timer wins (or the
// caller cancels) the `abort` action closes the socket or cancels the resolver, which makes
// the operation complete, which lets `||` finish.

#include "common.hpp"

#include <vigil/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <functional>
#include <variant>

namespace vigil::detail {

inline boost::asio::awaitable<error_code> deadline_op_arm(boost::asio::awaitable<error_code> op, bool* done)
{
    co_await enter_operation();
    error_code ec = co_await std::move(op);
    *done = true;
    co_return ec;
}

inline boost::asio::awaitable<error_code> deadline_timer_arm(std::chrono::steady_clock::duration limit,
                                                             error_code timeout_code, const bool* done,
                                                             const std::function<void()>* abort)
{
    co_await enter_operation();
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, limit);
    auto [ec] = co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    if (*done)
        co_return boost::asio::error::operation_aborted;  // lost the race; ignored by the caller
    (*abort)();
    co_return ec ? error_code(boost::asio::error::operation_aborted) : timeout_code;
}

/// Runs `op` with a time limit. Returns op's result, `timeout_code` if `limit` passed first,
/// or `operation_aborted` if the awaiting coroutine was cancelled, also before this was
/// called (then `op` never starts). In the last two cases `abort` has been called and `op`
/// has finished. Awaited, it runs in the caller's coroutine and keeps the caller's
/// cancellation state: resetting it here would forget a cancellation that came while the
/// caller was between two operations (connect_op between its stages), and the next stage
/// would then run to its own deadline. The caller must have turned throw-if-cancelled off.
inline boost::asio::awaitable<error_code> with_deadline(boost::asio::awaitable<error_code> op,
                                                        std::chrono::steady_clock::duration limit,
                                                        error_code timeout_code, std::function<void()> abort)
{
    using namespace boost::asio::experimental::awaitable_operators;
    if (cancelled(co_await boost::asio::this_coro::cancellation_state)) {
        abort();
        co_return boost::asio::error::operation_aborted;
    }
    bool done = false;
    auto result = co_await (deadline_op_arm(std::move(op), &done) ||
                            deadline_timer_arm(limit, timeout_code, &done, &abort));
    co_return result.index() == 0 ? std::get<0>(result) : std::get<1>(result);
}

}  // namespace vigil::detail
