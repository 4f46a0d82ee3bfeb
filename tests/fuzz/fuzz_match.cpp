// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// message_match and message_heartbeat on arbitrary input. The matchers see every text
// message a peer sends, so matches() must survive anything (noexcept: a throw would
// terminate the process) and must agree with what heartbeat.hpp promises: a JSON object
// whose member equals the value matches, however the sender spelled it. The heartbeat
// factories must produce pings and replies that their own matchers recognise.
//
// Input layout (FuzzedDataProvider strings: a backslash followed by any other character
// ends a string, a doubled backslash is one backslash):
//   field \ ping-value \ pong-value \ message (the rest)
// The field doubles as a command-line spec for parse_field_spec ("type=pong").

#include "check.hpp"

#include <vigil/heartbeat.hpp>

#include <fuzzer/FuzzedDataProvider.h>
#include <nlohmann/json.hpp>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/allocator_interface.h>
#define VIGIL_FUZZ_COUNT_ALLOCATIONS 1
#endif
#endif

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace {

using json = nlohmann::json;
using vigil::fuzz::escaped;
using vigil::message_match;

// Counts heap allocations while armed (through the sanitizer's malloc hook, which sees
// operator new too).
std::size_t allocations = 0;
bool counting = false;

#ifdef VIGIL_FUZZ_COUNT_ALLOCATIONS
void on_malloc(const volatile void*, std::size_t)
{
    if (counting)
        ++allocations;
}
void on_free(const volatile void*) {}
#endif

struct allocation_count {
    allocation_count()
    {
        allocations = 0;
        counting = true;
    }
    ~allocation_count() { counting = false; }
    std::size_t value() const { return allocations; }
};

// Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF): what nlohmann accepts.
bool valid_utf8(std::string_view s)
{
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t n = 0;
        std::uint32_t cp = 0;
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= s.size())
            return false;
        for (std::size_t k = 1; k <= n; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

// What heartbeat.hpp documents, written without the library's shortcuts: parse the whole
// message, look the member up (a plain name directly, a '/' field as a JSON pointer), and
// compare a string by value, a number/bool/null by its JSON text.
bool reference_json_field(const std::string& field, const std::string& value, std::string_view data)
{
    // A raw NUL is never valid JSON, but nlohmann stops reading at one as if the input ended:
    // "{...}\0junk" would pass for an object.
    if (data.find('\0') != std::string_view::npos)
        return false;
    const json doc = json::parse(data.begin(), data.end(), nullptr, false);
    if (doc.is_discarded() || !doc.is_object())
        return false;
    const json* member = nullptr;
    if (!field.empty() && field.front() == '/') {
        try {
            const json::json_pointer ptr(field);
            if (!doc.contains(ptr))
                return false;
            member = &doc.at(ptr);
        } catch (const json::exception&) {
            return false;
        }
    } else {
        const auto it = doc.find(field);
        if (it == doc.end())
            return false;
        member = &*it;
    }
    if (member->is_string())
        return member->get_ref<const std::string&>() == value;
    if (member->is_object() || member->is_array())
        return false;
    return member->dump() == value;
}

// A value the matcher may rule out without parsing, by not finding it in the message. Any
// character of a JSON string may be written as \uXXXX, so that is only sound for a message
// without backslashes; and a number has many spellings (1e2, 100.0), so not for values
// made of number characters. These are the messages heartbeat.hpp promises are rejected
// without allocating.
bool cheap_to_reject(const std::string& value, std::string_view data)
{
    bool printable_ascii = true;
    bool number_like = true;
    for (char c : value) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\' || c == '/')
            printable_ascii = false;
        if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E'))
            number_like = false;
    }
    return printable_ascii && !number_like && !value.empty() && data.find(value) == std::string_view::npos
        && data.find('\\') == std::string_view::npos;
}

std::string ctx_of(const std::string& field, const std::string& ping, const std::string& pong,
                   std::string_view message)
{
    return "field=\"" + escaped(field) + "\" ping=\"" + escaped(ping) + "\" pong=\"" + escaped(pong) + "\" message=\""
        + escaped(message) + "\"";
}

bool one_line(const std::string& s)
{
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f)
            return false;
    }
    return true;
}

// A json_field matcher against the reference, and its allocation promise.
void check_json_field(const message_match& m, const std::string& field, const std::string& value,
                      std::string_view message, const std::string& ctx)
{
    FUZZ_CHECK(static_cast<bool>(m), ctx);
    const bool expected = reference_json_field(field, value, message);
    bool got = false;
    std::size_t allocated = 0;
    {
        allocation_count count;
        got = m.matches(message);
        allocated = count.value();
    }
    FUZZ_CHECK(got == expected, ctx + " json_field(field, ping).matches(message) = " + std::to_string(got)
                                    + ", documented: " + std::to_string(expected));
#ifdef VIGIL_FUZZ_COUNT_ALLOCATIONS
    if (message.size() < 2 || cheap_to_reject(value, message))
        FUZZ_CHECK(allocated == 0, ctx + " rejecting the message allocated " + std::to_string(allocated) + " times");
#endif
    const auto text = m.describe();
    FUZZ_CHECK(one_line(text), ctx + " describe()=\"" + escaped(text) + "\"");
}

// The matchers built from the input, on the message part.
void check_matchers(const std::string& field, const std::string& value, std::string_view message,
                    const std::string& ctx)
{
    const message_match none;
    FUZZ_CHECK(!none && !none.matches(message), ctx);

    const auto exact = message_match::exact(value);
    {
        allocation_count count;
        FUZZ_CHECK(exact.matches(message) == (message == value), ctx);
        FUZZ_CHECK(count.value() == 0, ctx + " exact matching allocated");
    }
    FUZZ_CHECK(one_line(exact.describe()), ctx + " describe()=\"" + escaped(exact.describe()) + "\"");

    check_json_field(message_match::json_field(field, value), field, value, message, ctx);

    // The field part read as a command-line spec: "name=value".
    const auto spec = message_match::parse_field_spec(field);
    const auto eq = field.find('=');
    FUZZ_CHECK(spec.has_value() == (eq != std::string::npos && eq != 0), ctx + " parse_field_spec(field)");
    if (spec)
        check_json_field(*spec, field.substr(0, eq), field.substr(eq + 1), message, ctx + " [as a spec]");
}

// A plain member name with a value, written by a JSON library in several styles: the
// matcher must find it in each. (Undefined for names starting with '/': those are pointers.)
void check_plain_field(const std::string& field, const std::string& value, const std::string& ctx)
{
    if (!field.empty() && field.front() == '/')
        return;
    if (!valid_utf8(field) || !valid_utf8(value))
        return;  // no JSON text can hold them
    const auto m = message_match::json_field(field, value);
    json doc = json::object();
    doc[field] = value;
    const std::string texts[] = {
        doc.dump(),
        doc.dump(-1, ' ', true),  // non-ASCII as \u escapes
        doc.dump(2),              // pretty
    };
    for (const auto& text : texts)
        FUZZ_CHECK(m.matches(text), ctx + " json_field(field, ping) does not match \"" + escaped(text) + "\"");

    // Among other members.
    if (field != "a" && field != "z") {
        json wider = doc;
        wider["a"] = json::array({1, "x", json::object({{"k", value}})});
        wider["z"] = nullptr;
        FUZZ_CHECK(m.matches(wider.dump()), ctx + " json_field(field, ping) does not match \"" + escaped(wider.dump()) + "\"");
    }

    // Every ASCII character of the value written as \u00XX, as any encoder may.
    static constexpr char hex[] = "0123456789abcdef";
    std::string spelled = json(field).dump() + ":\"";
    for (char c : value) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x80) {
            spelled += "\\u00";
            spelled += hex[u >> 4];
            spelled += hex[u & 0xf];
        } else {
            spelled += c;
        }
    }
    spelled = "{" + spelled + "\"}";
    FUZZ_CHECK(m.matches(spelled), ctx + " json_field(field, ping) does not match \"" + escaped(spelled) + "\"");

    // A number/bool/null value matches that member written as JSON.
    const json scalar = json::parse(value, nullptr, false);
    if (!scalar.is_discarded() && scalar.is_primitive() && !scalar.is_string() && scalar.dump() == value) {
        json numeric = json::object();
        numeric[field] = scalar;
        FUZZ_CHECK(m.matches(numeric.dump()), ctx + " json_field(field, ping) does not match \"" + escaped(numeric.dump()) + "\"");
    }
}

// The heartbeat factories: our ping is what the peer's matcher of the same heartbeat
// answers, our reply is what our pong matcher takes, and (when the two values differ) an
// echo of our ping is not taken for a pong.
void check_heartbeats(const std::string& field, const std::string& ping, const std::string& pong,
                      std::string_view message, const std::string& ctx)
{
    const bool distinct = ping != pong;
    {
        const auto hb = vigil::message_heartbeat::text(ping, pong);
        FUZZ_CHECK(hb.make_ping() == ping, ctx);
        FUZZ_CHECK(hb.answer(ping) == std::optional<std::string>(pong), ctx + " text heartbeat");
        FUZZ_CHECK(hb.is_pong(pong), ctx + " text heartbeat");
        if (distinct)
            FUZZ_CHECK(!hb.is_pong(ping) && !hb.answer(pong), ctx + " text heartbeat");
        FUZZ_CHECK(hb.is_pong(message) == (message == pong), ctx);
    }

    std::optional<vigil::message_heartbeat> made;
    try {
        made = vigil::message_heartbeat::json(field, ping, pong);
    } catch (const std::invalid_argument& e) {
        // Documented: JSON text is UTF-8, and invalid input is refused with invalid_argument.
        FUZZ_CHECK(!(valid_utf8(field) && valid_utf8(ping) && valid_utf8(pong)),
                   ctx + " message_heartbeat::json threw " + e.what());
        return;
    }
    const auto& hb = *made;
    const std::string hb_ctx = ctx + " json heartbeat: ping=\"" + escaped(hb.ping) + "\" reply=\"" + escaped(hb.reply)
        + "\" pong matcher: " + escaped(hb.pong.describe()) + ", peer_ping matcher: " + escaped(hb.peer_ping.describe());

    const json ping_doc = json::parse(hb.ping, nullptr, false);
    const json reply_doc = json::parse(hb.reply, nullptr, false);
    FUZZ_CHECK(ping_doc.is_object() && ping_doc.size() == 1 && ping_doc.contains(field) && ping_doc[field] == ping, hb_ctx);
    FUZZ_CHECK(reply_doc.is_object() && reply_doc.size() == 1 && reply_doc.contains(field) && reply_doc[field] == pong,
               hb_ctx);

    FUZZ_CHECK(hb.answer(hb.ping) == std::optional<std::string>(hb.reply),
               hb_ctx + ": the peer's copy of this heartbeat does not answer our ping");
    FUZZ_CHECK(hb.is_pong(hb.reply), hb_ctx + ": the reply to our ping is not recognised as a pong");
    if (distinct) {
        FUZZ_CHECK(!hb.is_pong(hb.ping), hb_ctx + ": an echo of our ping is taken for a pong");
        FUZZ_CHECK(!hb.answer(hb.reply), hb_ctx + ": a pong is answered as if it were a ping");
    }

    // Through the type-erased holder a session keeps, copied as session_config is.
    const vigil::any_heartbeat held(hb);
    vigil::any_heartbeat copy = held;
    copy = held;
    FUZZ_CHECK(copy.make_ping() == hb.ping, hb_ctx);
    FUZZ_CHECK(copy.is_pong(message) == hb.is_pong(message), hb_ctx);
    FUZZ_CHECK(copy.answer(message) == hb.answer(message), hb_ctx);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
#ifdef VIGIL_FUZZ_COUNT_ALLOCATIONS
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
#endif
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    FuzzedDataProvider in(data, size);
    const std::string field = in.ConsumeRandomLengthString(256);
    const std::string ping = in.ConsumeRandomLengthString(256);
    const std::string pong = in.ConsumeRandomLengthString(256);
    const std::string message = in.ConsumeRemainingBytesAsString();
    const std::string ctx = ctx_of(field, ping, pong, message);

    check_matchers(field, ping, message, ctx);
    check_plain_field(field, ping, ctx);
    check_heartbeats(field, ping, pong, message, ctx);
    return 0;
}
