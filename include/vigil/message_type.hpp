// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

namespace vigil {

/// Kind of a data message: UTF-8 text or binary (RFC 6455 opcodes 1 and 2).
enum class message_type { text, binary };

}  // namespace vigil
