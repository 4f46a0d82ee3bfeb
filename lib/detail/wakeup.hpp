// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A one-waiter event for code that shares a strand: a waiter parks its completion handler
// here and whoever has news completes it. Unlike the usual "timer at max, cancel() to wake"
// trick, notify() resumes the waiter inline (we are already on its strand), which saves a
// trip through the scheduler; notify_later() posts, for teardown paths where resuming
// someone else's coroutine in the middle would re-enter it.
//
// It refers to its owner's executor instead of holding a copy: every connection holds
// several of these, and a type-erased executor is 56 bytes.

#include <vigil/error.hpp>

#include "parked_handler.hpp"

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>

#include <utility>

namespace vigil::detail {

template <class Executor>
class wakeup {
public:
    /// Called instead of completing when the waiter is cancelled (see async_wait).
    using cancel_hook = void (*)(void* arg);

    /// `ex` must outlive the wakeup (it is its owner's).
    explicit wakeup(const Executor& ex) : ex_(&ex) {}

    /// Completes with the code given to notify(), or with operation_aborted when cancelled
    /// through its slot (any cancellation type). With a `hook`, a cancellation calls
    /// `hook(arg)` instead (from inside the emitter: the hook must not resume anyone
    /// inline) and the waiter completes only when notified. At most one waiter.
    template <class CompletionToken>
    auto async_wait(CompletionToken&& token, cancel_hook hook = nullptr, void* arg = nullptr)
    {
        return boost::asio::async_initiate<CompletionToken, void(error_code)>(
            [this, hook, arg](auto handler) {
                slot_ = waiter_.park(std::move(handler));
                if (!slot_.is_connected())
                    return;
                if (hook)
                    slot_.assign([hook, arg](boost::asio::cancellation_type_t) { hook(arg); });
                else
                    slot_.assign([this](boost::asio::cancellation_type_t) {
                        finish(boost::asio::error::operation_aborted, false);
                    });
            },
            token);
    }

    /// Completes the waiter, if any, inline.
    void notify(error_code ec = {}) { finish(ec, true); }

    /// Completes the waiter, if any, through the executor.
    void notify_later(error_code ec = {}) { finish(ec, false); }

    bool waiting() const noexcept { return !waiter_.empty(); }

private:
    void finish(error_code ec, bool inline_ok)
    {
        if (waiter_.empty())
            return;
        if (slot_.is_connected())
            slot_.clear();
        slot_ = {};
        waiter_.complete(*ex_, ec, inline_ok);
    }

    const Executor* ex_;
    parked_handler<Executor> waiter_;
    boost::asio::cancellation_slot slot_;
};

}  // namespace vigil::detail
