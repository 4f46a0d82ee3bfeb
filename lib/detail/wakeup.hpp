// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A one-waiter event for coroutines that share a strand: the writer sleeps on it while its
// queue is empty and send() wakes it. Unlike the usual "timer at max, cancel() to wake"
// trick, notify() resumes the waiter inline (we are already on its strand), which saves one
// trip through the scheduler per message: on small messages that trip is a measurable part
// of the cost of a send.
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
    /// `ex` must outlive the wakeup (it is its owner's).
    explicit wakeup(const Executor& ex) : ex_(&ex) {}

    /// Completes with an empty code on notify(), with operation_aborted when the operation
    /// is cancelled through its slot (any cancellation type). At most one waiter.
    template <class CompletionToken>
    auto async_wait(CompletionToken&& token)
    {
        return boost::asio::async_initiate<CompletionToken, void(error_code)>(
            [this](auto handler) {
                waiter_.emplace(std::move(handler));
                // any_completion_handler takes over the handler's slot with a cancellation
                // state of its own; listen on that state's slot, not the original one.
                slot_ = waiter_->get_cancellation_slot();
                if (slot_.is_connected())
                    slot_.assign([this](boost::asio::cancellation_type_t) {
                        finish(boost::asio::error::operation_aborted, false);
                    });
            },
            token);
    }

    /// Resumes the waiter, if any, inline.
    void notify() { finish(error_code{}, true); }

    /// Resumes the waiter, if any, through the executor: for teardown paths, where resuming
    /// someone else's coroutine in the middle would re-enter it.
    void notify_later() { finish(error_code{}, false); }

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
            boost::asio::post(*ex_, boost::asio::append(std::move(h), ec));  // from a cancellation slot: never inline
    }

    using handler_type = boost::asio::any_completion_handler<void(error_code)>;
    const Executor* ex_;
    std::optional<handler_type> waiter_;
    boost::asio::cancellation_slot slot_;
};

}  // namespace vigil::detail
