// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// An invariant that fails must stop the fuzzer with the input that broke it: print what
// went wrong and abort(), which libFuzzer reports as a crash and saves as crash-<sha1>.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace vigil::fuzz {

/// `s` on one line with non-printable bytes as \xNN, so the report can be read and pasted
/// into a test.
inline std::string escaped(std::string_view s)
{
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') {
            if (c == '"' || c == '\\') {
                out += '\\';
                out += c;
            } else {
                out += "\\x";
                out += hex[u >> 4];
                out += hex[u & 0xf];
            }
        } else {
            out += c;
        }
    }
    return out;
}

[[noreturn]] inline void fail(const char* file, int line, const char* what, const std::string& context)
{
    std::fprintf(stderr, "\n%s:%d: invariant violated: %s\n%s\n", file, line, what, context.c_str());
    std::abort();
}

}  // namespace vigil::fuzz

/// Aborts with `context` (a std::string expression, evaluated only on failure) when `cond`
/// is false.
#define FUZZ_CHECK(cond, context)                                          \
    do {                                                                   \
        if (!(cond))                                                       \
            ::vigil::fuzz::fail(__FILE__, __LINE__, #cond, (context));     \
    } while (false)
