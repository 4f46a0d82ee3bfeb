// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The kernel's view of one TCP connection, as much of it as the liveness verdicts need to
// say whose fault a silence was (vigil::diagnosis). Reading it is the only part that
// touches the platform; what it means is decided by the liveness rules (liveness.hpp),
// which unit tests feed with made-up views.

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace vigil::detail {

struct tcp_view {
    /// Whether the kernel gave a view at all (Linux TCP_INFO); the rest is zero otherwise.
    enum class source { none, kernel };
    source from = source::none;
    /// Segments we sent that the peer's kernel has not acknowledged yet.
    std::uint32_t unacked = 0;
    /// How many times the oldest of them has been retransmitted after a timeout (an
    /// acknowledgement resets it).
    std::uint32_t retransmits = 0;
    /// Bytes in our send queue: not yet acknowledged, or not even sent (a host whose own
    /// packets are dropped on the way out never counts them as unacknowledged segments).
    std::uint32_t queued = 0;
    /// Since the last acknowledgement and the last data segment arrived.
    std::chrono::milliseconds since_ack{0};
    std::chrono::milliseconds since_data{0};
};

/// The kernel's view of TCP socket `fd` (a `source::none` view when it has none).
tcp_view read_tcp_view(int fd) noexcept;

/// Bytes that arrived on socket `fd` and wait in its receive buffer, unread (0 when the
/// platform cannot tell).
std::size_t unread_bytes(int fd) noexcept;

}  // namespace vigil::detail
