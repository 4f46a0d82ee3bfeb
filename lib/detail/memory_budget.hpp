// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A server's memory budget: what its connections hold for incoming messages in progress,
// received messages waiting for handlers, and messages waiting to be written, against one
// limit (server_config::memory_budget). No clock and no socket of its own: the reader asks
// it before a message may grow, the server's budget watch asks it who must go, and unit
// tests step it with a fake clock (tests/unit/test_memory_budget.cpp). Lock-free: the
// connections that charge it run on strands of their own, on any thread.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace vigil::detail {

/// The three things a connection holds memory for.
enum class holding_part {
    message,  ///< the incoming message in progress (its read buffer)
    received,  ///< received messages waiting for the handler
    sending,  ///< messages waiting to be written (bytes this connection owns)
};

class memory_budget;

/// One connection's share. Changed only from its connection's strand; read by anyone.
class budget_account {
public:
    /// Shares `budget`: a connection may outlive its server.
    explicit budget_account(std::shared_ptr<memory_budget> budget) noexcept : budget_(std::move(budget)) {}
    ~budget_account();
    budget_account(const budget_account&) = delete;
    budget_account& operator=(const budget_account&) = delete;

    std::size_t held(holding_part p) const noexcept { return part(p).load(std::memory_order_relaxed); }
    std::size_t total() const noexcept;
    /// The part holding the most (what the connection is ended for when it must go).
    holding_part largest() const noexcept;

    /// The message in progress may grow to `bytes` (its buffer's capacity): true when the
    /// budget has room, and then it is charged. Denied: nothing changes (the caller then
    /// holds back and tells the budget with `press`).
    bool grow_message(std::size_t bytes) noexcept;
    /// See `memory_budget::press`.
    bool press(std::chrono::steady_clock::time_point now) noexcept;
    /// Sets a part to what it holds now, whatever the budget says (what was read, queued or
    /// written is a fact; only growth is asked for).
    void set(holding_part p, std::size_t bytes) noexcept;
    void add(holding_part p, std::size_t bytes) noexcept { set(p, held(p) + bytes); }
    void remove(holding_part p, std::size_t bytes) noexcept { set(p, held(p) - std::min(bytes, held(p))); }
    /// Whether this connection must hold back: the budget is over the line that applies to
    /// it (see `memory_budget`). Reading is paused meanwhile.
    bool must_hold_back() const noexcept;

    /// Chosen to be ended; never chosen twice.
    bool evicted() const noexcept { return evicted_.load(std::memory_order_relaxed); }
    void mark_evicted() noexcept { evicted_.store(true, std::memory_order_relaxed); }

private:
    std::atomic<std::size_t>& part(holding_part p) noexcept { return parts_[static_cast<int>(p)]; }
    const std::atomic<std::size_t>& part(holding_part p) const noexcept { return parts_[static_cast<int>(p)]; }

    std::shared_ptr<memory_budget> budget_;
    std::atomic<std::size_t> parts_[3] = {};
    std::atomic<bool> evicted_{false};
};

/// Where connections tell that the budget is short (the server, which ends its heaviest
/// holders if that lasts). Called from any connection's strand.
struct budget_watch {
    virtual void pressed() noexcept = 0;

protected:
    ~budget_watch() = default;
};

/// A connection as the budget watch sees it when choosing whom to end.
struct holder {
    std::uint64_t id = 0;
    std::size_t bytes = 0;
};

class memory_budget {
public:
    using time_point = std::chrono::steady_clock::time_point;
    using duration = std::chrono::steady_clock::duration;

    /// A connection holding at most this much is light: it may use the whole budget, while
    /// heavier ones stop at three quarters of it. So the last quarter stays for ordinary
    /// messages while a few connections hold big ones.
    static constexpr std::size_t light_holding = 64 * 1024;

    /// `limit` bytes; zero: no limit (nothing is ever denied or ended). `grace`: how long
    /// the budget may stay under pressure before its heaviest holders are ended.
    memory_budget(std::size_t limit, duration grace) noexcept : limit_(limit), grace_(grace) {}

    std::size_t limit() const noexcept { return limit_; }
    /// What heavy connections may fill: three quarters of the limit.
    std::size_t heavy_line() const noexcept { return limit_ - limit_ / 4; }
    std::size_t total() const noexcept { return total_.load(std::memory_order_relaxed); }
    std::size_t peak() const noexcept { return peak_.load(std::memory_order_relaxed); }

    /// A growth was denied at `now`: under pressure since then, unless it already was.
    /// Returns true when the pressure starts now (the watch should look).
    bool press(time_point now) noexcept;
    /// Whether the budget is under pressure, and since when.
    bool pressed() const noexcept { return since_.load(std::memory_order_relaxed) != 0; }
    /// When the pressure, if it lasts, makes the heaviest holders go (`time_point::max()`
    /// without pressure).
    time_point due() const noexcept;
    /// The watch looks at `now`: the pressure ends once the total is back under the heavy
    /// line and nobody was denied since the last look (connections held back press again
    /// each time they look); if it lasted `grace`, returns true (end the heaviest: `choose`)
    /// and the next round counts from `now`.
    bool verdict(time_point now) noexcept;
    /// Whom to end among `holders` (the heaviest first, those already ended left out) so that
    /// what the others hold fits in half the limit; at least one when any holds something.
    std::vector<std::uint64_t> choose(std::vector<holder> holders) const;

private:
    friend class budget_account;
    void change(std::size_t from, std::size_t to) noexcept;
    bool try_grow(std::size_t from, std::size_t to, std::size_t line) noexcept;

    std::size_t limit_;
    duration grace_;
    std::atomic<std::size_t> total_{0};
    std::atomic<std::size_t> peak_{0};
    std::atomic<duration::rep> since_{0};  // time_since_epoch of the pressure's start; 0: none
    std::atomic<bool> denied_{false};  // a growth was denied since the last verdict
};

}  // namespace vigil::detail
