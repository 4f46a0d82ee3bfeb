// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Ports on 127.0.0.1 for third-party servers started by the tests (nginx, tinyproxy,
// microsocks), which cannot pick a port themselves and say which. No Asio here.

#include <cstdint>

namespace vigil::test {

/// A port on 127.0.0.1 that nobody listens on right now (the system's pick, released again):
/// a server started on it may lose the race for it, so a start is retried. Throws
/// std::runtime_error when no socket can be bound.
std::uint16_t free_port();

/// Whether something accepts TCP connections on 127.0.0.1:`port` now.
bool accepts(std::uint16_t port);

}  // namespace vigil::test
