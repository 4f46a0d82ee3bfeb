// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The messages servers put on a fan-out (lib/detail/fanout_codec): written and read back,
// every malformed form refused with a message that says what is wrong, and the per-node
// sequence numbers that reveal missed and repeated broadcasts.

#include "detail/fanout_codec.hpp"

#include <doctest/doctest.h>

#include <string>

namespace {

using vigil::message_type;
using vigil::detail::decode_envelope;
using vigil::detail::encode_envelope;
using vigil::detail::fanout_envelope;
using vigil::detail::origin_tracker;
using kind = origin_tracker::verdict::kind;

TEST_CASE("fan-out envelope: written and read back, binary-safe")
{
    const std::string payload("a\0b\n V1 x 3 t 2\n", 16);
    const std::string channel("room 1\n", 7);
    auto bytes = encode_envelope({"0123456789abcdef", 42, message_type::binary, channel, payload});
    std::string why;
    auto e = decode_envelope(bytes, &why);
    REQUIRE_MESSAGE(e, why);
    CHECK(e->node == "0123456789abcdef");
    CHECK(e->seq == 42);
    CHECK(e->type == message_type::binary);
    CHECK(e->channel == channel);
    CHECK(e->data == payload);

    auto empty = decode_envelope(encode_envelope({"n", 1, message_type::text, "c", ""}), &why);
    REQUIRE(empty);
    CHECK(empty->type == message_type::text);
    CHECK(empty->data.empty());
}

TEST_CASE("fan-out envelope: what is refused, and the message says what is wrong")
{
    struct row {
        std::string bytes;
        std::string expect;
    };
    const row rows[] = {
        {"", "does not start with \"V1 \""},
        {"hello", "does not start with \"V1 \""},
        {"V2 n 1 t 1\nch", "does not start with \"V1 \""},
        {"V1  1 t 1\nc", "no node id"},
        {"V1 " + std::string(65, 'n') + " 1 t 1\nc", "no node id"},
        {"V1 n 0 t 1\nc", "no sequence number"},
        {"V1 n x t 1\nc", "no sequence number"},
        {"V1 n 99999999999999999999999 t 1\nc", "no sequence number"},
        {"V1 n 1 q 1\nc", "neither t nor b"},
        {"V1 n 1 t\nc", "neither t nor b"},
        {"V1 n 1 t 70000\nc", "no channel length"},
        {"V1 n 1 t -1\nc", "no channel length"},
        {"V1 n 1 t 1", "no channel length"},
        {"V1 n 1 t 5\nab", "the channel length 5 exceeds the 2 bytes left"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.bytes);
        std::string why;
        CHECK_FALSE(decode_envelope(r.bytes, &why));
        CHECK(why.rfind("fan-out message: ", 0) == 0);
        CHECK(why.find(r.expect) != std::string::npos);
    }
}

TEST_CASE("origin tracker: in order, a gap counts what was missed, repeats are refused")
{
    origin_tracker t;
    // The first message of a node is in order whatever its number: we may have started later.
    CHECK(t.observe("a", 7).what == kind::in_order);
    CHECK(t.observe("a", 8).what == kind::in_order);
    auto gap = t.observe("a", 12);
    CHECK(gap.what == kind::gap);
    CHECK(gap.missed == 3);
    CHECK(t.observe("a", 12).what == kind::repeated);
    CHECK(t.observe("a", 9).what == kind::repeated);
    CHECK(t.observe("a", 13).what == kind::in_order);
    // Each node on its own.
    CHECK(t.observe("b", 1).what == kind::in_order);
    CHECK(t.observe("b", 3).missed == 1);
    CHECK(t.nodes() == 2);
}

TEST_CASE("origin tracker: bounded; the node heard from least recently is forgotten")
{
    origin_tracker t(2);
    t.observe("a", 1);
    t.observe("b", 1);
    t.observe("a", 2);  // b is now the oldest
    t.observe("c", 1);
    CHECK(t.nodes() == 2);
    // a is remembered (its 3 is in order, 5 shows a gap); b is new again (no gap reported).
    CHECK(t.observe("a", 3).what == kind::in_order);
    CHECK(t.observe("b", 9).what == kind::in_order);
}

}  // namespace
