// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// One Asio timer for all the sessions of an io_context that one thread runs (concurrency
// hint 1, where sessions run on the context's executor without strands; see
// detail::serialized()).
//
// Why: a session's timekeeper expires twice per heartbeat (the ping is due, then its pong
// deadline). With a steady_timer each, every expiry is a push and a pop on Asio's timer
// heap (log n steps through cold memory with 10,000 connections), an operation allocated
// and queued through the scheduler, and a handler invocation. The deadlines are on a 10 ms
// grid already (timekeeper.ipp), so the sessions due in one grid slot can share one
// expiry: here a slot is a map node holding an intrusive list of sessions, and the one
// timer waits for the earliest slot. Scheduling or cancelling a session is a list
// operation, and a slot that fires calls its sessions' handlers one after the other.
//
// Sessions on a strand (a multi-threaded io_context, or a strand given by the caller) keep
// a steady_timer of their own: handing expiries from a shared timer to each session's
// strand would cost what it saves.

#include <vigil/error.hpp>

#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <map>

namespace vigil::detail {

/// A session's place in the wheel. Not linked unless `linked`.
struct wheel_entry {
    using time_point = std::chrono::steady_clock::time_point;

    /// Called once when `when` has come; the entry is unlinked by then and may be
    /// scheduled again from inside.
    void (*fire)(void* arg) = nullptr;
    void* arg = nullptr;

    time_point when{};  // while linked: the slot it is in
    wheel_entry* prev = nullptr;
    wheel_entry* next = nullptr;
    bool linked = false;
};

/// The io_context's wheel, an Asio service: `boost::asio::use_service<timer_wheel>(ctx)`.
/// **Thread safety:** none; only the one thread that runs the io_context may use it.
class timer_wheel : public boost::asio::execution_context::service {
public:
    using time_point = std::chrono::steady_clock::time_point;
    static inline boost::asio::execution_context::id id;

    explicit timer_wheel(boost::asio::io_context& ctx) : service(ctx), timer_(ctx) {}

    /// Links `e` (not linked) into the slot of `when`, a time on the timekeeper's grid.
    void schedule(wheel_entry& e, time_point when)
    {
        auto& head = slots_[when];
        e.when = when;
        e.prev = nullptr;
        e.next = head;
        if (head)
            head->prev = &e;
        head = &e;
        e.linked = true;
        arm();
    }

    /// Unlinks `e` if it is linked. The timer keeps its wait while other entries are
    /// linked (waking once for nothing is cheaper than re-arming for every cancellation),
    /// and drops it with the last one: a pending wait is work that keeps the io_context's
    /// run() from returning, as a session's own timer would once cancelled.
    void cancel(wheel_entry& e) noexcept
    {
        if (!e.linked)
            return;
        if (e.next)
            e.next->prev = e.prev;
        if (e.prev) {
            e.prev->next = e.next;
        } else {
            auto it = slots_.find(e.when);
            if (e.next)
                it->second = e.next;
            else
                slots_.erase(it);
        }
        e.prev = e.next = nullptr;
        e.linked = false;
        if (slots_.empty() && waits_ > 0) {
            timer_.cancel();
            armed_ = time_point::max();  // the wait pending is dead: the next schedule() arms anew
        }
    }

private:
    struct tick {
        timer_wheel* self;
        void operator()(error_code ec) const { self->on_timer(ec); }
    };

    void shutdown() override
    {
        // The sessions are gone by now (their I/O objects die with the context); what is
        // left to drop is our own wait, which the context's shutdown destroys.
        slots_.clear();
    }

    void arm()
    {
        if (slots_.empty())
            return;
        const auto earliest = slots_.begin()->first;
        if (waits_ > 0 && armed_ <= earliest)
            return;
        timer_.expires_at(earliest);  // cancels the wait pending, if any
        armed_ = earliest;
        ++waits_;
        timer_.async_wait(tick{this});
    }

    void on_timer(error_code ec)
    {
        --waits_;
        if (waits_ == 0)
            armed_ = time_point::max();
        if (ec) {
            // Cancelled: re-armed sooner (a newer wait is pending), or emptied. Entries
            // linked since must not be left without a wait.
            if (waits_ == 0)
                arm();
            return;
        }
        const auto now = std::chrono::steady_clock::now();
        // One entry at a time, unlinked before its handler runs: a handler may schedule or
        // cancel any entry, its own included, and the map stays consistent throughout.
        while (!slots_.empty() && slots_.begin()->first <= now) {
            auto it = slots_.begin();
            wheel_entry* e = it->second;
            if (e->next) {
                e->next->prev = nullptr;
                it->second = e->next;
            } else {
                slots_.erase(it);
            }
            e->prev = e->next = nullptr;
            e->linked = false;
            e->fire(e->arg);
        }
        arm();
    }

    std::map<time_point, wheel_entry*> slots_;  // slot -> the head of its list
    boost::asio::steady_timer timer_;
    time_point armed_ = time_point::max();  // what the newest pending wait waits for
    unsigned waits_ = 0;                     // pending waits, all but the newest cancelled
};

}  // namespace vigil::detail
