// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <string_view>

namespace vigil {

/// Whose fault a liveness verdict was: the network path, the peer's process, or our own
/// event loop. Every connection ended by `pong_timeout`, `idle_timeout`, `write_timeout` or
/// `close_timeout` carries one (`disconnect_info::diagnosis`); so does the early warning
/// `session_events::on_suspect`. It is read from the kernel's own view of the TCP connection
/// at the moment of the verdict (`TCP_INFO`: segments we sent that the peer's kernel has
/// not acknowledged, and retransmissions of them) and from how late our own timers ran.
enum class diagnosis {
    /// Not a liveness verdict: the peer closed, the connection was reset, the application
    /// closed it, a connect failed, and so on. The reason says what happened.
    none,
    /// What we sent (our ping, or data) is not being acknowledged at the TCP level: the
    /// kernel retransmits it and hears nothing. The path is dead: a NAT or load balancer
    /// forgot the flow, a link or route went down, the peer's host is gone.
    network,
    /// The peer's kernel acknowledges everything we send, but its application sends nothing
    /// back: the peer process is hung, stopped or overloaded.
    peer_unresponsive,
    /// Our own event loop ran later than `session_config::stall_threshold` at the wake-up
    /// that found the deadline passed, and nothing was waiting unread: our lateness may be
    /// part of why the peer looked silent. Fix the handler that blocks the loop.
    local_stall,
    /// The platform gives no view of the TCP connection: every platform but Linux, and TLS
    /// or plain transports whose socket is not TCP.
    unknown,
};

/// The diagnosis as a short lowercase name: "none", "network", "peer_unresponsive",
/// "local_stall", "unknown" (the names vigil-probe and vigil-serve print).
std::string_view diagnosis_name(diagnosis d) noexcept;

}  // namespace vigil
