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

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <optional>
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
                waiter_.emplace(std::move(handler));
                // any_completion_handler takes over the handler's slot with a cancellation
                // state of its own; listen on that state's slot, not the original one.
                slot_ = waiter_->get_cancellation_slot();
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

    bool waiting() const noexcept { return waiter_.has_value(); }

private:
    void finish(error_code ec, bool inline_ok)
    {
        if (!waiter_)
            return;
        // Move the handler out before running it: it may wait again.
        if (slot_.is_connected())
            slot_.clear();
        slot_ = {};
        handler_type h(std::move(*waiter_));
        waiter_.reset();
        if (inline_ok)
            boost::asio::dispatch(*ex_, boost::asio::append(std::move(h), ec));
        else
            boost::asio::post(*ex_, boost::asio::append(std::move(h), ec));
    }

    using handler_type = boost::asio::any_completion_handler<void(error_code)>;
    const Executor* ex_;
    std::optional<handler_type> waiter_;
    boost::asio::cancellation_slot slot_;
};

}  // namespace vigil::detail
