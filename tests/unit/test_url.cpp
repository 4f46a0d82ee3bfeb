// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/url.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace {

using vigil::endpoint;
using vigil::error;

// Bad input is reported, never thrown: the signature promises as much as the tests do.
static_assert(std::is_invocable_r_v<vigil::error_code, decltype(&vigil::parse_url), std::string_view,
    endpoint&, std::string*>);
static_assert(!std::is_invocable_v<decltype(&vigil::parse_url), std::string_view, const endpoint&,
    std::string*>);

}  // namespace

TEST_CASE("good URLs are split into what each connection step needs")
{
    struct row {
        std::string_view url;
        bool tls;
        std::string_view host;
        std::uint16_t port;
        std::string_view target;
        std::string_view host_header;
        bool host_is_ip;
    };
    const row rows[] = {
        {"ws://example.com", false, "example.com", 80, "/", "example.com", false},
        {"wss://example.com", true, "example.com", 443, "/", "example.com", false},
        {"ws://example.com/", false, "example.com", 80, "/", "example.com", false},
        {"WSS://Feed.Example.COM:8443/a/b?x=1&y=2#frag", true, "Feed.Example.COM", 8443, "/a/b?x=1&y=2",
            "Feed.Example.COM:8443", false},
        {"wS://localhost:9000/stream", false, "localhost", 9000, "/stream", "localhost:9000", false},
        {"ws://127.0.0.1:9000/feed", false, "127.0.0.1", 9000, "/feed", "127.0.0.1:9000", true},
        {"wss://10.0.0.1", true, "10.0.0.1", 443, "/", "10.0.0.1", true},
        {"ws://[::1]:8080/", false, "::1", 8080, "/", "[::1]:8080", true},
        {"wss://[2001:db8::1]/x", true, "2001:db8::1", 443, "/x", "[2001:db8::1]", true},
        {"ws://[::ffff:127.0.0.1]", false, "::ffff:127.0.0.1", 80, "/", "[::ffff:127.0.0.1]", true},
        {"ws://h:80/", false, "h", 80, "/", "h", false},
        {"wss://h:443/", true, "h", 443, "/", "h", false},
        {"wss://h:80/", true, "h", 80, "/", "h:80", false},
        {"ws://h:0080/", false, "h", 80, "/", "h", false},
        {"ws://h:1", false, "h", 1, "/", "h:1", false},
        {"ws://h:65535", false, "h", 65535, "/", "h:65535", false},
        {"ws://h?x", false, "h", 80, "/?x", "h", false},
        {"ws://h/?", false, "h", 80, "/?", "h", false},
        {"ws://h#top", false, "h", 80, "/", "h", false},
        {"ws://h/p%20q?a=%2F&b", false, "h", 80, "/p%20q?a=%2F&b", "h", false},
        {"ws://h//double/slash/", false, "h", 80, "//double/slash/", "h", false},
        {"ws://ex%61mple.com/", false, "example.com", 80, "/", "example.com", false},
        {"ws://my_host.internal./", false, "my_host.internal.", 80, "/", "my_host.internal.", false},
    };
    for (const auto& r : rows) {
        CAPTURE(r.url);
        endpoint ep;
        std::string detail;
        const auto ec = vigil::parse_url(r.url, ep, &detail);
        REQUIRE_FALSE(ec);
        CHECK(detail.empty());
        CHECK(ep.tls == r.tls);
        CHECK(ep.host == r.host);
        CHECK(ep.port == r.port);
        CHECK(ep.target == r.target);
        CHECK(ep.host_header == r.host_header);
        CHECK(ep.host_is_ip == r.host_is_ip);
    }
}

TEST_CASE("bad URLs are errors that name the bad part")
{
    struct row {
        std::string_view url;
        error expected;
        std::string_view in_detail;
    };
    using namespace std::string_view_literals;
    const row rows[] = {
        {"http://x", error::unsupported_scheme, R"(unsupported scheme "http" in "http://x" (use ws:// or wss://))"},
        {"https://example.com/feed", error::unsupported_scheme, R"(unsupported scheme "https")"},
        {"ftp://example.com", error::unsupported_scheme, R"(unsupported scheme "ftp")"},
        {"wsss://example.com", error::unsupported_scheme, R"(unsupported scheme "wsss")"},
        {"", error::invalid_url, "empty URL"},
        {"garbage", error::invalid_url, "has no scheme"},
        {"://x", error::invalid_url, "has no scheme"},
        {"1ws://x", error::invalid_url, "has no scheme"},
        {"localhost:8080", error::invalid_url, "is not a ws:// or wss:// URL"},
        {"ws://", error::invalid_host, "empty host"},
        {"ws:///path", error::invalid_host, "empty host"},
        {"ws://:8080/", error::invalid_host, "empty host"},
        {"ws:example.com", error::invalid_host, "has no host"},
        {"wss:/example.com", error::invalid_host, "has no host"},
        {"ws://[::1/", error::invalid_host, "no closing ']'"},
        {"ws://[zz::1]/", error::invalid_host, R"(IPv6 literal "[zz::1]")"},
        {"ws://[::1]x/", error::invalid_host, R"(unexpected "x")"},
        {"ws://::1/", error::invalid_host, "IPv6 addresses go in brackets"},
        {"ws://[v1.fe]/", error::invalid_host, "IPvFuture"},
        {"ws://ho^st/", error::invalid_host, R"(host "ho^st")"},
        {"ws://ex%2Fample.com/", error::invalid_host, R"(host "ex/ample.com")"},
        {"ws://h:0", error::invalid_port, R"(port "0" in "ws://h:0" is not in 1..65535)"},
        {"ws://h:65536/", error::invalid_port, R"(port "65536")"},
        {"ws://h:99999999999999999999/", error::invalid_port, "is not in 1..65535"},
        {"ws://h:abc/", error::invalid_port, R"(port "abc" in "ws://h:abc/" is not a number)"},
        {"ws://h:8o/", error::invalid_port, R"(port "8o")"},
        {"ws://h:-1/", error::invalid_port, R"(port "-1")"},
        {"ws://h:/", error::invalid_port, "empty port"},
        {"ws://[::1]:x/", error::invalid_port, R"(port "x")"},
        // Boost.URL 1.81 takes these for a host or port followed by a rootless path.
        {"ws://[::1]:8443x/a", error::invalid_port, R"(port "8443x")"},
        {"ws://h:8443x", error::invalid_port, R"(port "8443x")"},
        {"ws://h/pa^th", error::invalid_url, R"(URL "ws://h/pa^th" is not valid)"},
        {"ws://h/a b", error::invalid_url, "at offset 8"},
        {" ws://h/", error::invalid_url, "at offset 0"},
        {"ws://h/\r\nX-Injected: 1", error::invalid_url, R"("ws://h/\x0d\x0aX-Injected: 1")"},
        {"ws://h\0evil/"sv, error::invalid_url, R"("ws://h\x00evil/")"},
        {"ws://h\x7f/", error::invalid_url, "at offset 6"},
        {"ws://h\xc3\xa9/", error::invalid_url, "non-ASCII"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.url);
        endpoint ep;
        ep.host = "unchanged";
        std::string detail;
        const auto ec = vigil::parse_url(r.url, ep, &detail);
        CHECK(ec == r.expected);
        CHECK(vigil::is_permanent(ec));
        CAPTURE(detail);
        CHECK(detail.find(r.in_detail) != std::string::npos);
        CHECK(ep.host == "unchanged");
        // Without a detail pointer the verdict is the same.
        CHECK(vigil::parse_url(r.url, ep) == r.expected);
    }
}

TEST_CASE("user info is refused and never echoed")
{
    for (std::string_view url : {"ws://alice:s3cret@example.com/", "wss://s3cret@example.com", "ws://@example.com/",
             "ws://alice:s3cret@exa^mple.com/", "http://alice:s3cret@example.com/"}) {
        CAPTURE(url);
        endpoint ep;
        std::string detail;
        const auto ec = vigil::parse_url(url, ep, &detail);
        CHECK(ec.failed());
        if (url.substr(0, 2) == "ws")
            CHECK(ec == error::invalid_url);
        CHECK_FALSE(detail.empty());
        CHECK(detail.find("s3cret") == std::string::npos);
    }
}

TEST_CASE("very long input is handled and the detail stays short")
{
    endpoint ep;
    std::string detail;

    const std::string long_host = "ws://" + std::string(300, 'a') + "/";
    CHECK(vigil::parse_url(long_host, ep, &detail) == error::invalid_host);
    CHECK(detail.size() < 400);

    const std::string garbage(1'000'000, '\x01');
    CHECK(vigil::parse_url(garbage, ep, &detail) == error::invalid_url);
    CHECK(detail.size() < 400);

    const std::string long_scheme = std::string(100'000, 'h') + "://x";
    CHECK(vigil::parse_url(long_scheme, ep, &detail) == error::unsupported_scheme);
    CHECK(detail.size() < 400);

    // A long path is legal; the target carries it whole.
    const std::string long_path = "ws://h/" + std::string(100'000, 'p');
    REQUIRE_FALSE(vigil::parse_url(long_path, ep, &detail));
    CHECK(ep.target.size() == 100'001);
}

TEST_CASE("every single-byte corruption of a URL is either parsed or a vigil error")
{
    const std::string good = "wss://[::1]:8443/a/b?q=1#f";
    int parsed = 0;
    int rejected = 0;
    for (std::size_t i = 0; i < good.size(); ++i) {
        for (int b = 0; b < 256; ++b) {
            std::string url = good;
            url[i] = static_cast<char>(b);
            endpoint ep;
            std::string detail;
            const auto ec = vigil::parse_url(url, ep, &detail);
            if (ec) {
                ++rejected;
                CHECK(ec.category() == vigil::error_category());
                CHECK(vigil::is_permanent(ec));
                CHECK_FALSE(detail.empty());
            } else {
                ++parsed;
                CHECK_FALSE(ep.host.empty());
                CHECK(ep.port != 0);
                CHECK(ep.target.front() == '/');
            }
        }
    }
    CHECK(parsed > 0);
    CHECK(rejected > 0);
}
