// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "detail/fanout_codec.hpp"

#include <algorithm>
#include <charconv>

namespace vigil::detail {

namespace {

constexpr std::string_view magic = "V1 ";
constexpr std::size_t max_node = 64;
constexpr std::size_t max_channel = 65535;

/// Takes the text up to `stop` from the front of `in` (and the `stop`), or nullopt.
std::optional<std::string_view> take_until(std::string_view& in, char stop, std::size_t max_len)
{
    auto at = in.find(stop);
    if (at == std::string_view::npos || at > max_len)
        return std::nullopt;
    auto token = in.substr(0, at);
    in.remove_prefix(at + 1);
    return token;
}

std::optional<std::uint64_t> number(std::string_view token)
{
    std::uint64_t v = 0;
    if (token.empty() || token.size() > 20)
        return std::nullopt;
    auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), v);
    if (ec != std::errc() || end != token.data() + token.size())
        return std::nullopt;
    return v;
}

}  // namespace

std::string encode_envelope(const fanout_envelope& e)
{
    std::string out;
    out.reserve(magic.size() + e.node.size() + 48 + e.channel.size() + e.data.size());
    out.append(magic).append(e.node).append(" ").append(std::to_string(e.seq));
    out.append(e.type == message_type::binary ? " b " : " t ");
    out.append(std::to_string(e.channel.size())).append("\n");
    out.append(e.channel).append(e.data);
    return out;
}

std::optional<fanout_envelope> decode_envelope(std::string_view bytes, std::string* why)
{
    auto fail = [why](std::string what) -> std::optional<fanout_envelope> {
        if (why)
            *why = "fan-out message: " + std::move(what);
        return std::nullopt;
    };
    if (bytes.substr(0, magic.size()) != magic)
        return fail("does not start with \"V1 \" (not from a vigil server of this version)");
    auto in = bytes.substr(magic.size());
    fanout_envelope e;
    auto node = take_until(in, ' ', max_node);
    if (!node || node->empty() || node->find('\n') != std::string_view::npos)
        return fail("no node id of 1..64 bytes after \"V1 \"");
    e.node = *node;
    auto seq = take_until(in, ' ', 20);
    auto seq_value = seq ? number(*seq) : std::nullopt;
    if (!seq_value || *seq_value == 0)
        return fail("no sequence number (1 or more) after the node id");
    e.seq = *seq_value;
    auto type = take_until(in, ' ', 1);
    if (!type || (*type != "t" && *type != "b"))
        return fail("the type after the sequence number is neither t nor b");
    e.type = *type == "b" ? message_type::binary : message_type::text;
    auto length = take_until(in, '\n', 5);
    auto channel_length = length ? number(*length) : std::nullopt;
    if (!channel_length || *channel_length > max_channel)
        return fail("no channel length (0..65535) before the newline");
    if (*channel_length > in.size())
        return fail("the channel length " + std::to_string(*channel_length) + " exceeds the " +
                    std::to_string(in.size()) + " bytes left");
    e.channel = in.substr(0, *channel_length);
    e.data = in.substr(*channel_length);
    return e;
}

origin_tracker::verdict origin_tracker::observe(std::string_view node, std::uint64_t seq)
{
    ++calls_;
    auto it = last_.find(std::string(node));
    if (it == last_.end()) {
        if (last_.size() >= max_nodes_)
            forget_oldest();
        last_.emplace(std::string(node), record{seq, calls_});
        return {};
    }
    auto& r = it->second;
    r.heard = calls_;
    if (seq <= r.seq)
        return {verdict::kind::repeated, 0};
    const auto missed = seq - r.seq - 1;
    r.seq = seq;
    if (missed == 0)
        return {};
    return {verdict::kind::gap, missed};
}

void origin_tracker::forget_oldest()
{
    auto oldest = std::min_element(last_.begin(), last_.end(),
                                   [](const auto& a, const auto& b) { return a.second.heard < b.second.heard; });
    if (oldest != last_.end())
        last_.erase(oldest);
}

}  // namespace vigil::detail
