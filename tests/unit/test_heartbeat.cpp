// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/config.hpp>
#include <vigil/heartbeat.hpp>

#include <doctest/doctest.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace {

using vigil::any_heartbeat;
using vigil::message_heartbeat;
using vigil::message_match;

// Counts its pings: the state a copy must not share.
struct counting_heartbeat {
    int sent = 0;
    // Built by appending: g++ 12 warns (-Wrestrict, a false positive) on `"literal" + to_string()`.
    static std::string text(const char* what, int n)
    {
        std::string s = what;
        s += ' ';
        s += std::to_string(n);
        return s;
    }
    std::string make_ping() { return text("ping", ++sent); }
    bool is_pong(std::string_view data) const { return data == text("pong", sent); }
    std::optional<std::string> answer(std::string_view) const { return std::nullopt; }
};
static_assert(vigil::heartbeat_policy<counting_heartbeat>);

struct no_answer {
    std::string make_ping() { return "p"; }
    bool is_pong(std::string_view) { return false; }
};
static_assert(!vigil::heartbeat_policy<no_answer>);

struct not_copyable : counting_heartbeat {
    not_copyable() = default;
    not_copyable(const not_copyable&) = delete;
};
static_assert(!vigil::heartbeat_policy<not_copyable>);

static_assert(vigil::heartbeat_policy<message_heartbeat>);
static_assert(noexcept(std::declval<const message_match&>().matches(std::string_view())));
static_assert(std::is_copy_constructible_v<any_heartbeat>);

}  // namespace

TEST_SUITE("heartbeat")
{

TEST_CASE("a default message_match matches nothing")
{
    const message_match m;
    CHECK_FALSE(static_cast<bool>(m));
    CHECK_FALSE(m.matches(""));
    CHECK_FALSE(m.matches(R"({"type":"pong"})"));
    CHECK(m.describe() == "nothing");
}

TEST_CASE("exact matches byte for byte")
{
    const auto m = message_match::exact("pong");
    CHECK(static_cast<bool>(m));
    CHECK(m.matches("pong"));
    CHECK_FALSE(m.matches("Pong"));
    CHECK_FALSE(m.matches("pong "));
    CHECK_FALSE(m.matches("pon"));
    CHECK_FALSE(m.matches(""));
    CHECK_FALSE(m.matches(std::string_view("pong\0", 5)));

    const auto empty = message_match::exact("");
    CHECK(static_cast<bool>(empty));
    CHECK(empty.matches(""));
    CHECK_FALSE(empty.matches(" "));

    const auto with_nul = message_match::exact(std::string("a\0b", 3));
    CHECK(with_nul.matches(std::string_view("a\0b", 3)));
    CHECK_FALSE(with_nul.matches("a"));
}

TEST_CASE("json_field matches a string member")
{
    const auto m = message_match::json_field("type", "pong");
    CHECK(static_cast<bool>(m));
    CHECK(m.matches(R"({"type":"pong"})"));
    CHECK(m.matches(R"(  { "type" : "pong" }  )"));
    CHECK(m.matches(R"({"id":7,"type":"pong","ts":1.5})"));
    CHECK(m.matches("{\n\t\"type\": \"pong\"\n}"));

    CHECK_FALSE(m.matches(R"({"type":"ping"})"));
    CHECK_FALSE(m.matches(R"({"type":"pong2"})"));
    CHECK_FALSE(m.matches(R"({"type":"Pong"})"));
    CHECK_FALSE(m.matches(R"({"type":" pong"})"));
    CHECK_FALSE(m.matches(R"({"kind":"pong"})"));
    CHECK_FALSE(m.matches(R"({"Type":"pong"})"));
    CHECK_FALSE(m.matches(R"({"meta":{"type":"pong"}})"));  // a plain name is a top-level member
    CHECK_FALSE(m.matches(R"({"type":["pong"]})"));
    CHECK_FALSE(m.matches(R"({"type":{"pong":1}})"));
    CHECK_FALSE(m.matches(R"({"type":{"type":"pong"}})"));
}

TEST_CASE("json_field never matches malformed or non-object JSON, and never throws")
{
    const auto m = message_match::json_field("type", "pong");
    const char* cases[] = {
        R"({"type":)",
        R"({"type":"pong")",
        R"({"type":"pong"}})",
        R"({"type":"pong"} trailing)",
        R"({"type":"pong",})",
        R"({type:"pong"})",
        R"({'type':'pong'})",
        R"([{"type":"pong"}])",
        R"("pong")",
        R"("{\"type\":\"pong\"}")",
        "pong",
        "null",
        "42",
        "true",
        "{}",
        "[]",
        "",
        "{",
        "}",
        "\xff\xfe{\"type\":\"pong\"}",
        R"({"type":"pong\x"})",  // invalid escape
        R"({"type":"pong\ud800"})",  // lone surrogate
    };
    for (const char* c : cases) {
        CAPTURE(c);
        CHECK_FALSE(m.matches(c));
    }
    // NUL inside the message.
    CHECK_FALSE(m.matches(std::string_view("{\"type\":\"pong\"}\0", 16)));
    CHECK_FALSE(m.matches(std::string_view("{\"type\":\"po\0ng\"}", 16)));
}

TEST_CASE("json_field compares numbers, bools and null by their JSON text")
{
    CHECK(message_match::json_field("seq", "42").matches(R"({"seq":42})"));
    CHECK(message_match::json_field("seq", "42").matches(R"({"seq":"42"})"));  // a string equal to the value
    CHECK_FALSE(message_match::json_field("seq", "42").matches(R"({"seq":43})"));
    CHECK_FALSE(message_match::json_field("seq", "42").matches(R"({"seq":420})"));
    CHECK(message_match::json_field("seq", "-7").matches(R"({"seq":-7})"));
    CHECK(message_match::json_field("x", "1.5").matches(R"({"x":1.5})"));
    CHECK(message_match::json_field("ok", "true").matches(R"({"ok":true})"));
    CHECK_FALSE(message_match::json_field("ok", "true").matches(R"({"ok":false})"));
    CHECK(message_match::json_field("ok", "false").matches(R"({"ok":false})"));
    CHECK(message_match::json_field("v", "null").matches(R"({"v":null})"));
    CHECK_FALSE(message_match::json_field("v", "null").matches(R"({"w":null})"));
    CHECK_FALSE(message_match::json_field("v", "null").matches(R"({})"));
}

TEST_CASE("json_field sees through JSON escapes, in the value and in the member name")
{
    // Any character may be written as \uXXXX: the decoded value is what counts.
    const auto pong = message_match::json_field("type", "pong");
    CHECK(pong.matches(R"({"type":"p\u006fng"})"));
    CHECK(pong.matches(R"({"type":"\u0070\u006f\u006e\u0067"})"));
    CHECK(pong.matches(R"({"t\u0079pe":"pong"})"));

    const auto quoted = message_match::json_field("type", "a\"b");
    CHECK(quoted.matches(R"({"type":"a\"b"})"));
    CHECK(quoted.matches(R"({"type":"a\u0022b"})"));
    CHECK_FALSE(quoted.matches(R"({"type":"a\\b"})"));

    const auto backslash = message_match::json_field("type", "a\\b");
    CHECK(backslash.matches(R"({"type":"a\\b"})"));

    const auto slash = message_match::json_field("path", "a/b");
    CHECK(slash.matches(R"({"path":"a/b"})"));
    CHECK(slash.matches(R"({"path":"a\/b"})"));

    const auto accented = message_match::json_field("word", "caf\xc3\xa9");  // café in UTF-8
    CHECK(accented.matches("{\"word\":\"caf\xc3\xa9\"}"));
    CHECK(accented.matches(R"({"word":"caf\u00e9"})"));
    CHECK(accented.matches(R"({"word":"caf\u00E9"})"));
    CHECK_FALSE(accented.matches(R"({"word":"cafe"})"));

    const auto newline = message_match::json_field("t", "a\nb");
    CHECK(newline.matches(R"({"t":"a\nb"})"));
    CHECK(newline.matches(R"({"t":"a\u000ab"})"));
}

TEST_CASE("json_field with a JSON pointer reaches nested members")
{
    const auto m = message_match::json_field("/meta/kind", "pong");
    CHECK(m.matches(R"({"meta":{"kind":"pong"}})"));
    CHECK(m.matches(R"({"a":1,"meta":{"x":[1,2],"kind":"pong"}})"));
    CHECK_FALSE(m.matches(R"({"meta":"pong"})"));
    CHECK_FALSE(m.matches(R"({"kind":"pong"})"));
    CHECK_FALSE(m.matches(R"({"meta":{"kind":"ping"}})"));
    CHECK_FALSE(m.matches(R"({"meta":[{"kind":"pong"}]})"));

    CHECK(message_match::json_field("/items/0", "pong").matches(R"({"items":["pong","x"]})"));
    CHECK_FALSE(message_match::json_field("/items/1", "pong").matches(R"({"items":["pong"]})"));
    // RFC 6901 escapes in a pointer: ~1 is '/', ~0 is '~'.
    CHECK(message_match::json_field("/a~1b", "x").matches(R"({"a/b":"x"})"));
    CHECK(message_match::json_field("/a~0b", "x").matches(R"({"a~b":"x"})"));
    // A plain name containing '/' or '~' is a member name, not a pointer.
    CHECK(message_match::json_field("a/b", "x").matches(R"({"a/b":"x"})"));
    CHECK_FALSE(message_match::json_field("a/b", "x").matches(R"({"a":{"b":"x"}})"));
    CHECK(message_match::json_field("a~b", "x").matches(R"({"a~b":"x"})"));
    // An invalid pointer matches nothing and does not throw.
    CHECK_FALSE(message_match::json_field("/a~2", "x").matches(R"({"a~2":"x"})"));
    CHECK_FALSE(message_match::json_field("/items/-", "x").matches(R"({"items":["x"]})"));
    CHECK_FALSE(message_match::json_field("/items/01", "x").matches(R"({"items":["y","x"]})"));
    // The empty name is a member called "".
    CHECK(message_match::json_field("", "x").matches(R"({"":"x"})"));
}

TEST_CASE("parse_field_spec: field=value, or nothing")
{
    const auto m = message_match::parse_field_spec("type=pong");
    REQUIRE(m.has_value());
    CHECK(static_cast<bool>(*m));
    CHECK(m->matches(R"({"type":"pong"})"));
    CHECK_FALSE(m->matches(R"({"type":"ping"})"));
    CHECK(m->describe() == message_match::json_field("type", "pong").describe());

    const auto nested = message_match::parse_field_spec("/meta/kind=pong");
    REQUIRE(nested.has_value());
    CHECK(nested->matches(R"({"meta":{"kind":"pong"}})"));

    // Only the first '=' splits.
    const auto eq = message_match::parse_field_spec("op=a=b");
    REQUIRE(eq.has_value());
    CHECK(eq->matches(R"({"op":"a=b"})"));

    const auto empty_value = message_match::parse_field_spec("type=");
    REQUIRE(empty_value.has_value());
    CHECK(empty_value->matches(R"({"type":""})"));
    CHECK_FALSE(empty_value->matches(R"({"type":"pong"})"));

    CHECK_FALSE(message_match::parse_field_spec("pong").has_value());
    CHECK_FALSE(message_match::parse_field_spec("").has_value());
    CHECK_FALSE(message_match::parse_field_spec("=pong").has_value());
}

TEST_CASE("describe names the kind and the expected value, printable")
{
    CHECK(message_match::exact("ping").describe() == "exact \"ping\"");
    CHECK(message_match::json_field("type", "pong").describe() == "json /type == \"pong\"");
    CHECK(message_match::json_field("/meta/kind", "pong").describe() == "json /meta/kind == \"pong\"");
    const auto odd = message_match::exact("a\r\nb\x01").describe();
    CAPTURE(odd);
    CHECK(odd.find('\r') == std::string::npos);
    CHECK(odd.find('\n') == std::string::npos);
    CHECK(odd.find('\x01') == std::string::npos);
    CHECK(odd.rfind("exact \"a", 0) == 0);
}

TEST_CASE("message_heartbeat::json: pings, pongs and answers of the same shape")
{
    const auto hb = message_heartbeat::json();
    CHECK(hb.ping == R"({"type":"ping"})");
    CHECK(hb.reply == R"({"type":"pong"})");
    CHECK(hb.make_ping() == R"({"type":"ping"})");
    CHECK(hb.is_pong(R"({"type":"pong"})"));
    CHECK(hb.is_pong(R"({ "type": "pong", "ts": 5 })"));
    CHECK_FALSE(hb.is_pong(R"({"type":"ping"})"));
    CHECK_FALSE(hb.is_pong(R"({"type":)"));
    REQUIRE(hb.answer(R"({"type":"ping"})").has_value());
    CHECK(*hb.answer(R"({"type":"ping"})") == R"({"type":"pong"})");
    CHECK(hb.answer(R"({"id":3,"type":"ping"})") == std::optional<std::string>(R"({"type":"pong"})"));
    CHECK_FALSE(hb.answer(R"({"type":"pong"})").has_value());
    CHECK_FALSE(hb.answer(R"({"type":)").has_value());
    CHECK_FALSE(hb.answer("ping").has_value());

    const auto custom = message_heartbeat::json("op", "hb", "hb_ack");
    CHECK(custom.ping == R"({"op":"hb"})");
    CHECK(custom.reply == R"({"op":"hb_ack"})");
    CHECK(custom.is_pong(R"({"op":"hb_ack"})"));
    CHECK(custom.answer(R"({"op":"hb"})") == std::optional<std::string>(R"({"op":"hb_ack"})"));

    // Values that need escaping make valid JSON that the matchers still recognise.
    const auto escaped = message_heartbeat::json("t\"y", "pi\"ng", "po\\ng");
    CHECK(escaped.ping == R"({"t\"y":"pi\"ng"})");
    CHECK(escaped.reply == R"({"t\"y":"po\\ng"})");
    CHECK(escaped.is_pong(escaped.reply));
    CHECK(escaped.answer(escaped.ping) == std::optional<std::string>(escaped.reply));
    CHECK_FALSE(escaped.is_pong(escaped.ping));
}

TEST_CASE("message_heartbeat::text: exact texts both ways")
{
    const auto hb = message_heartbeat::text("PING", "PONG");
    CHECK(hb.make_ping() == "PING");
    CHECK(hb.is_pong("PONG"));
    CHECK_FALSE(hb.is_pong("PING"));
    CHECK_FALSE(hb.is_pong("pong"));
    CHECK(hb.answer("PING") == std::optional<std::string>("PONG"));
    CHECK_FALSE(hb.answer("PONG").has_value());

    // Without a peer_ping matcher, nothing is answered.
    message_heartbeat quiet;
    quiet.ping = "p";
    quiet.pong = message_match::exact("q");
    CHECK_FALSE(quiet.answer("p").has_value());
    CHECK_FALSE(quiet.answer("").has_value());
}

TEST_CASE("any_heartbeat: copying copies the policy's state, and copies are independent")
{
    counting_heartbeat original;
    any_heartbeat a(original);
    CHECK(a.make_ping() == "ping 1");
    CHECK(a.make_ping() == "ping 2");
    CHECK(original.sent == 0);  // a holds its own copy

    any_heartbeat b(a);  // copy construction
    CHECK(b.is_pong("pong 2"));
    CHECK(b.make_ping() == "ping 3");
    CHECK(b.make_ping() == "ping 4");
    CHECK(a.make_ping() == "ping 3");  // untouched by b
    CHECK(a.is_pong("pong 3"));
    CHECK_FALSE(a.is_pong("pong 4"));

    any_heartbeat c(counting_heartbeat{});
    c = a;  // copy assignment
    CHECK(c.make_ping() == "ping 4");
    CHECK(a.make_ping() == "ping 4");
    CHECK(c.make_ping() == "ping 5");
    CHECK(a.is_pong("pong 4"));

    any_heartbeat self(counting_heartbeat{});
    self.make_ping();
    auto& alias = self;
    self = alias;  // self-assignment keeps the state
    CHECK(self.make_ping() == "ping 2");

    any_heartbeat moved(std::move(b));
    CHECK(moved.make_ping() == "ping 5");

    any_heartbeat from_message(message_heartbeat::json());
    CHECK(from_message.make_ping() == R"({"type":"ping"})");
    CHECK(from_message.is_pong(R"({"type":"pong"})"));
    CHECK(from_message.answer(R"({"type":"ping"})") == std::optional<std::string>(R"({"type":"pong"})"));
}

TEST_CASE("session_config copies carry independent heartbeats")
{
    vigil::session_config one;
    CHECK_FALSE(one.heartbeat.has_value());  // protocol pings by default
    CHECK_FALSE(one.deliver_heartbeat_messages);
    one.heartbeat = counting_heartbeat{};
    one.heartbeat->make_ping();
    vigil::session_config two = one;
    CHECK(two.heartbeat->make_ping() == "ping 2");
    CHECK(two.heartbeat->make_ping() == "ping 3");
    CHECK(one.heartbeat->make_ping() == "ping 2");
    CHECK_FALSE(vigil::validate(one));
    CHECK_FALSE(vigil::validate(two));
}

TEST_CASE("message_heartbeat::json refuses invalid UTF-8 with invalid_argument")
{
    CHECK_THROWS_AS(vigil::message_heartbeat::json("type", "p\xffng"), std::invalid_argument);
    CHECK_THROWS_AS(vigil::message_heartbeat::json("\xc3"), std::invalid_argument);
    CHECK_NOTHROW(vigil::message_heartbeat::json("type", "p\xc3\xa9ng"));
}

}  // TEST_SUITE
