// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The messages a server puts on its fan-out, and what a receiving node keeps to find the ones
// it missed. Sans-io: no sockets, no clock.

#include <vigil/message_type.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace vigil::detail {

/// One broadcast as it travels between nodes: "V1 NODE SEQ t|b CHANNEL_LENGTH\n", then the
/// channel and the payload, byte for byte (binary-safe; no escaping).
struct fanout_envelope {
    std::string_view node;  ///< the publishing server's node id
    std::uint64_t seq = 0;  ///< that node's count of its publishes, from 1
    message_type type = message_type::text;
    std::string_view channel;
    std::string_view data;
};

/// The bytes of `e`. `e.node` must be 1..64 bytes without space or newline.
std::string encode_envelope(const fanout_envelope& e);

/// `bytes` read back (the views point into `bytes`), or nullopt with `*why` saying what is
/// wrong and where.
std::optional<fanout_envelope> decode_envelope(std::string_view bytes, std::string* why);

/// A receiving node's record of each publishing node's last sequence number, which tells
/// missed messages (a jump) and repeated ones (not newer). Holds at most `max_nodes` nodes;
/// beyond, the one heard from least recently is forgotten (a node restarted under a new id
/// leaves its old record behind).
class origin_tracker {
public:
    /// What a message's sequence number says.
    struct verdict {
        enum class kind { in_order, gap, repeated } what = kind::in_order;
        std::uint64_t missed = 0;  ///< for gap: how many came before it unseen
    };

    explicit origin_tracker(std::size_t max_nodes = 1024) : max_nodes_(max_nodes) {}

    /// Records `seq` from `node`. The first message heard from a node is in order whatever
    /// its number (this node may have started after it).
    verdict observe(std::string_view node, std::uint64_t seq);

    std::size_t nodes() const noexcept { return last_.size(); }

private:
    struct record {
        std::uint64_t seq = 0;
        std::uint64_t heard = 0;  ///< when, in observe() calls
    };
    void forget_oldest();

    std::size_t max_nodes_;
    std::uint64_t calls_ = 0;
    std::unordered_map<std::string, record> last_;
};

}  // namespace vigil::detail
