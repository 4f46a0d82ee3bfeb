// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A session's traffic and queue depths, counted on its strand and read by anyone (a server's
// or a supervisor's metrics() from any thread). One writer: each change is a relaxed load and
// store, not a locked read-modify-write, so counting costs the hot path two plain moves.

#include <vigil/metrics.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace vigil::detail {

class traffic_meter {
public:
    /// A data message of `bytes` was received whole.
    void received(std::size_t bytes) noexcept
    {
        bump(messages_in_, 1);
        bump(bytes_in_, bytes);
    }
    /// A data message of `bytes` was written whole.
    void sent(std::size_t bytes) noexcept
    {
        bump(messages_out_, 1);
        bump(bytes_out_, bytes);
    }
    /// A message of `bytes` entered, or left, the send queue.
    void queued(std::size_t bytes) noexcept
    {
        bump(send_messages_, 1);
        bump(send_bytes_, bytes);
    }
    void dequeued(std::size_t bytes) noexcept
    {
        drop(send_messages_, 1);
        drop(send_bytes_, bytes);
    }
    /// The number of received messages waiting for receive().
    void receive_waiting(std::size_t n) noexcept { receive_messages_.store(n, std::memory_order_relaxed); }

    traffic_counts traffic() const noexcept
    {
        return {get(messages_in_), get(bytes_in_), get(messages_out_), get(bytes_out_)};
    }
    queue_depths queues() const noexcept { return {get(send_messages_), get(send_bytes_), get(receive_messages_)}; }

private:
    using counter = std::atomic<std::uint64_t>;
    static void bump(counter& c, std::uint64_t n) noexcept
    {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    static void drop(counter& c, std::uint64_t n) noexcept
    {
        const auto v = c.load(std::memory_order_relaxed);
        c.store(v - (n < v ? n : v), std::memory_order_relaxed);
    }
    static std::uint64_t get(const counter& c) noexcept { return c.load(std::memory_order_relaxed); }

    counter messages_in_{0};
    counter bytes_in_{0};
    counter messages_out_{0};
    counter bytes_out_{0};
    counter send_messages_{0};
    counter send_bytes_{0};
    counter receive_messages_{0};
};

}  // namespace vigil::detail
