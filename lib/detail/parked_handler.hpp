// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// One parked completion handler of signature void(error_code), for `wakeup`. A coroutine's
// handler is a pointer or two, so it is kept inline (16 bytes, pointer-aligned); anything larger goes to the heap.
//
// Why not any_completion_handler: it allocates a block for the handler and gives it a
// cancellation state of its own, whose signal allocates again when the waiter listens for
// cancellation. Every connection parks two or three of these for as long as it lives (the
// heartbeat's and the watchdog's waits, a handler's receive()), so that was about 100 bytes
// per parked wait. Here the waiter's own cancellation slot is used as it is.

#include <vigil/error.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace vigil::detail {

template <class Executor>
class parked_handler {
public:
    parked_handler() = default;
    parked_handler(const parked_handler&) = delete;
    parked_handler& operator=(const parked_handler&) = delete;
    /// Destroys a handler still parked, without running it (as destroying an io_context
    /// destroys the handlers it never ran).
    ~parked_handler() { reset(); }

    bool empty() const noexcept { return ops_ == nullptr; }

    /// Parks `h` (there must be none parked) and returns its cancellation slot.
    template <class Handler>
    boost::asio::cancellation_slot park(Handler&& h)
    {
        using H = std::decay_t<Handler>;
        auto slot = boost::asio::get_associated_cancellation_slot(h);
        if constexpr (fits_inline<H>)
            ::new (static_cast<void*>(storage_)) H(std::forward<Handler>(h));
        else
            heap_ = new H(std::forward<Handler>(h));
        ops_ = &ops_for<H>;
        return slot;
    }

    /// Unparks the handler and runs it with `ec` through `ex`: inline when `inline_ok`
    /// (dispatch), else later (post).
    void complete(const Executor& ex, error_code ec, bool inline_ok)
    {
        std::exchange(ops_, nullptr)->complete(*this, ex, ec, inline_ok);
    }

    /// Destroys the parked handler, if any, without running it.
    void reset() noexcept
    {
        if (auto* ops = std::exchange(ops_, nullptr))
            ops->destroy(*this);
    }

private:
    static constexpr std::size_t inline_size = 2 * sizeof(void*);

    struct ops {
        void (*complete)(parked_handler&, const Executor&, error_code, bool);
        void (*destroy)(parked_handler&) noexcept;
    };

    template <class H>
    static constexpr bool fits_inline =
        sizeof(H) <= inline_size && alignof(H) <= alignof(void*) && std::is_nothrow_move_constructible_v<H>;

    template <class H>
    H& get() noexcept
    {
        if constexpr (fits_inline<H>)
            return *std::launder(reinterpret_cast<H*>(storage_));
        else
            return *static_cast<H*>(heap_);
    }

    template <class H>
    static void destroy_parked(parked_handler& self) noexcept
    {
        if constexpr (fits_inline<H>)
            self.get<H>().~H();
        else
            delete &self.get<H>();
    }

    template <class H>
    static void complete_parked(parked_handler& self, const Executor& ex, error_code ec, bool inline_ok)
    {
        // Moved out first: running it may park a handler here again.
        H h(std::move(self.get<H>()));
        destroy_parked<H>(self);
        if (inline_ok)
            boost::asio::dispatch(ex, boost::asio::append(std::move(h), ec));
        else
            boost::asio::post(ex, boost::asio::append(std::move(h), ec));
    }

    template <class H>
    static constexpr ops ops_for{&complete_parked<H>, &destroy_parked<H>};

    const ops* ops_ = nullptr;
    union {
        alignas(void*) unsigned char storage_[inline_size];
        void* heap_;
    };
};

}  // namespace vigil::detail
