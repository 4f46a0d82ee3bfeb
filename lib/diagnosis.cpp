// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/diagnosis.hpp>

namespace vigil {

std::string_view diagnosis_name(diagnosis d) noexcept
{
    switch (d) {
    case diagnosis::none:
        return "none";
    case diagnosis::network:
        return "network";
    case diagnosis::peer_unresponsive:
        return "peer_unresponsive";
    case diagnosis::local_stall:
        return "local_stall";
    case diagnosis::unknown:
        return "unknown";
    }
    return "unknown";
}

}  // namespace vigil
