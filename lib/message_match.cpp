// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/heartbeat.hpp>

#include "detail/printable.hpp"

#include <nlohmann/json.hpp>

#include <stdexcept>

namespace vigil {

message_match message_match::exact(std::string text)
{
    message_match m;
    m.kind_ = kind::exact;
    m.text_ = std::move(text);
    return m;
}

message_match message_match::json_field(std::string field, std::string value)
{
    message_match m;
    m.kind_ = kind::json_field;
    // A plain member name becomes a one-step JSON pointer, escaped as RFC 6901 says.
    if (field.empty() || field.front() != '/') {
        std::string pointer = "/";
        for (char c : field) {
            if (c == '~')
                pointer += "~0";
            else if (c == '/')
                pointer += "~1";
            else
                pointer += c;
        }
        field = std::move(pointer);
    }
    m.text_ = std::move(field);
    m.value_ = std::move(value);
    // A string member holds the value verbatim unless the message has escapes (matches()
    // parses those). A number does not: 100.0 may be written 1e2. Only a value that cannot
    // be a number is looked for verbatim.
    m.prefilter_ = false;
    for (char c : m.value_)
        if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E'))
            m.prefilter_ = true;
    return m;
}

std::optional<message_match> message_match::parse_field_spec(std::string_view spec)
{
    const auto eq = spec.find('=');
    if (eq == std::string_view::npos || eq == 0)
        return std::nullopt;
    return json_field(std::string(spec.substr(0, eq)), std::string(spec.substr(eq + 1)));
}

bool message_match::matches(std::string_view data) const noexcept
{
    switch (kind_) {
    case kind::none:
        return false;
    case kind::exact:
        return data == text_;
    case kind::json_field:
        break;
    }
    // Every text message of a busy feed passes through here: only parse the ones that can
    // match at all, and never let malformed input out as an exception. A message without
    // escapes must hold the value verbatim; one with escapes ("p\u006fng") is parsed. NUL is
    // never valid JSON, but the parser would stop at it and accept the prefix.
    if (data.size() < 2 || data.find('\0') != std::string_view::npos)
        return false;
    if (prefilter_ && data.find(value_) == std::string_view::npos && data.find('\\') == std::string_view::npos)
        return false;
    try {
        auto doc = nlohmann::json::parse(data.begin(), data.end(), nullptr, false);
        if (doc.is_discarded() || !doc.is_object())
            return false;
        nlohmann::json::json_pointer ptr(text_);
        if (!doc.contains(ptr))
            return false;
        const auto& v = doc.at(ptr);
        if (v.is_string())
            return v.get_ref<const std::string&>() == value_;
        if (v.is_object() || v.is_array())
            return false;
        return v.dump() == value_;
    } catch (...) {
        // An invalid pointer (json_field("/a~2")), allocation failure: no match.
        return false;
    }
}

std::string message_match::describe() const
{
    switch (kind_) {
    case kind::none:
        return "nothing";
    case kind::exact:
        return "exact \"" + detail::printable(text_, 64, false) + "\"";
    case kind::json_field:
        return "json " + detail::printable(text_, 64, false) + " == \"" + detail::printable(value_, 64, false) + "\"";
    }
    return {};
}

message_heartbeat message_heartbeat::json(std::string field, std::string ping_value, std::string pong_value)
{
    auto object = [&field](const std::string& value) { return nlohmann::json{{field, value}}.dump(); };
    message_heartbeat hb;
    try {
        hb.ping = object(ping_value);
        hb.reply = object(pong_value);
    } catch (const nlohmann::json::type_error&) {
        // JSON text is UTF-8; say so in our own terms rather than let the parser's type out.
        throw std::invalid_argument("message_heartbeat::json: the field or a value is not valid UTF-8");
    }
    // The pings are {"<field>": ...} for any field, '/' included: match that member by name.
    std::string pointer = "/";
    for (char c : field)
        pointer += c == '~' ? std::string("~0") : c == '/' ? std::string("~1") : std::string(1, c);
    hb.pong = message_match::json_field(pointer, std::move(pong_value));
    hb.peer_ping = message_match::json_field(std::move(pointer), std::move(ping_value));
    return hb;
}

message_heartbeat message_heartbeat::text(std::string ping, std::string pong)
{
    message_heartbeat hb;
    hb.pong = message_match::exact(pong);
    hb.peer_ping = message_match::exact(ping);
    hb.ping = std::move(ping);
    hb.reply = std::move(pong);
    return hb;
}

}  // namespace vigil
