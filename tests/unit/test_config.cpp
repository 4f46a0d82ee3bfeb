// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/config.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <type_traits>

namespace {

using namespace std::chrono_literals;
using vigil::session_config;

// Durations are whole milliseconds: finer units must not truncate silently into a config.
static_assert(std::is_assignable_v<std::chrono::milliseconds&, std::chrono::seconds>);
static_assert(!std::is_assignable_v<std::chrono::milliseconds&, std::chrono::microseconds>);
static_assert(!std::is_assignable_v<std::chrono::milliseconds&, int>);

// A file that exists for the duration of one test.
class temp_file {
public:
    explicit temp_file(const std::string& content)
    {
        std::random_device rd;
        path_ = std::filesystem::temp_directory_path() / ("vigil-unit-" + std::to_string(rd()) + ".pem");
        std::ofstream(path_) << content;
    }
    ~temp_file()
    {
        std::error_code ec;
        std::filesystem::remove(path_, ec);
    }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;

    std::string path() const { return path_.string(); }

private:
    std::filesystem::path path_;
};

std::string detail_of(const session_config& cfg)
{
    std::string detail;
    const auto ec = vigil::validate(cfg, &detail);
    CHECK(ec == vigil::error::invalid_config);
    CHECK(ec == vigil::condition::permanent);
    return detail;
}

}  // namespace

TEST_CASE("the defaults are valid")
{
    std::string detail = "untouched";
    CHECK_FALSE(vigil::validate(session_config{}, &detail));
    CHECK(detail == "untouched");
    CHECK_FALSE(vigil::validate(session_config{}));
}

TEST_CASE("the documented example message")
{
    session_config cfg;
    cfg.ping_interval = 20s;
    cfg.pong_timeout = 20s;
    CHECK(detail_of(cfg) == "pong_timeout (20000 ms) must be shorter than ping_interval (20000 ms)");
}

TEST_CASE("each rule names its field")
{
    struct rule {
        const char* what;
        std::function<void(session_config&)> breaks;
        const char* message;
    };
    const rule rules[] = {
        {"negative ping_interval", [](auto& c) { c.ping_interval = -1ms; },
            "ping_interval (-1 ms) must not be negative (0 disables the heartbeat)"},
        {"zero pong_timeout", [](auto& c) { c.pong_timeout = 0ms; }, "pong_timeout (0 ms) must be positive"},
        {"negative pong_timeout", [](auto& c) { c.pong_timeout = -5ms; }, "pong_timeout (-5 ms) must be positive"},
        {"pong_timeout longer than ping_interval",
            [](auto& c) {
                c.ping_interval = 100ms;
                c.pong_timeout = 150ms;
            },
            "pong_timeout (150 ms) must be shorter than ping_interval (100 ms)"},
        {"negative idle_timeout", [](auto& c) { c.idle_timeout = -1s; },
            "idle_timeout (-1000 ms) must not be negative (0 disables it)"},
        {"idle_timeout equal to ping_interval",
            [](auto& c) {
                c.ping_interval = 500ms;
                c.pong_timeout = 100ms;
                c.idle_timeout = 500ms;
            },
            "ping_interval (500 ms) must be shorter than idle_timeout (500 ms)"},
        {"idle_timeout shorter than ping_interval", [](auto& c) { c.idle_timeout = 5s; },
            "ping_interval (20000 ms) must be shorter than idle_timeout (5000 ms)"},
        {"zero connect_timeout", [](auto& c) { c.connect_timeout = 0ms; }, "connect_timeout (0 ms) must be positive"},
        {"negative connect_timeout", [](auto& c) { c.connect_timeout = -1ms; },
            "connect_timeout (-1 ms) must be positive"},
        {"zero tls_handshake_timeout", [](auto& c) { c.tls_handshake_timeout = 0ms; },
            "tls_handshake_timeout (0 ms) must be positive"},
        {"zero handshake_timeout", [](auto& c) { c.handshake_timeout = 0ms; },
            "handshake_timeout (0 ms) must be positive"},
        {"negative write_timeout", [](auto& c) { c.write_timeout = -2ms; },
            "write_timeout (-2 ms) must not be negative (0 disables it)"},
        {"zero close_timeout", [](auto& c) { c.close_timeout = 0ms; }, "close_timeout (0 ms) must be positive"},
        {"zero send_queue_limit", [](auto& c) { c.send_queue_limit = 0; }, "send_queue_limit (0) must be positive"},
        {"zero max_message_size", [](auto& c) { c.max_message_size = 0; }, "max_message_size (0) must be positive"},
        {"ping mode out of range", [](auto& c) { c.ping = static_cast<vigil::ping_mode>(7); },
            "ping (7) is not a ping_mode"},
        {"user_agent with a line break", [](auto& c) { c.user_agent = "vigil\r\nX-Evil: 1"; },
            "user_agent contains CR, LF or NUL"},
    };
    for (const auto& r : rules) {
        CAPTURE(r.what);
        session_config cfg;
        r.breaks(cfg);
        CHECK(detail_of(cfg) == r.message);
        // Without a detail pointer the verdict is the same.
        CHECK(vigil::validate(cfg) == vigil::error::invalid_config);
    }
}

TEST_CASE("values at the edge of each rule are accepted")
{
    session_config cfg;
    SUBCASE("pong_timeout just below ping_interval")
    {
        cfg.ping_interval = 100ms;
        cfg.pong_timeout = 99ms;
    }
    SUBCASE("ping_interval just below idle_timeout")
    {
        cfg.ping_interval = 100ms;
        cfg.pong_timeout = 50ms;
        cfg.idle_timeout = 101ms;
    }
    SUBCASE("heartbeat off ignores pong_timeout and idle_timeout ordering")
    {
        cfg.ping_interval = 0ms;
        cfg.pong_timeout = 0ms;
        cfg.idle_timeout = 1ms;
    }
    SUBCASE("write_timeout off")
    {
        cfg.write_timeout = 0ms;
    }
    SUBCASE("smallest positive values")
    {
        cfg.ping_interval = 2ms;
        cfg.pong_timeout = 1ms;
        cfg.connect_timeout = 1ms;
        cfg.tls_handshake_timeout = 1ms;
        cfg.handshake_timeout = 1ms;
        cfg.close_timeout = 1ms;
        cfg.send_queue_limit = 1;
        cfg.max_message_size = 1;
    }
    SUBCASE("fixed ping mode")
    {
        cfg.ping = vigil::ping_mode::fixed;
    }
    std::string detail;
    CHECK_FALSE(vigil::validate(cfg, &detail));
    CHECK(detail.empty());
}

TEST_CASE("headers cannot inject anything into the upgrade request")
{
    session_config cfg;
    cfg.headers = {{"Authorization", "Bearer s3cret"}, {"Sec-WebSocket-Protocol", "chat, superchat"}};
    REQUIRE_FALSE(vigil::validate(cfg));

    SUBCASE("empty name")
    {
        cfg.headers.emplace_back("", "x");
        CHECK(detail_of(cfg) == "headers[2] has an empty name");
    }
    SUBCASE("name with a space")
    {
        cfg.headers.emplace_back("X Bad", "x");
        CHECK(detail_of(cfg).find("headers[2] name \"X Bad\" is not a valid HTTP header name") == 0);
    }
    SUBCASE("name with a colon")
    {
        cfg.headers.emplace_back("Host:", "evil.example");
        CHECK(detail_of(cfg).find("headers[2] name \"Host:\"") == 0);
    }
    SUBCASE("name with CR LF, shown escaped")
    {
        cfg.headers.emplace_back("X\r\nEvil", "x");
        CHECK(detail_of(cfg).find("headers[2] name \"X\\x0d\\x0aEvil\"") == 0);
    }
    SUBCASE("value with CR LF")
    {
        cfg.headers.insert(cfg.headers.begin(), {"X-Token", "t0ps3cret\r\nX-Evil: 1"});
        const auto detail = detail_of(cfg);
        CHECK(detail == "headers[0] (\"X-Token\") value contains CR, LF or NUL");
        // The value may be a credential: it never appears in the message.
        CHECK(detail.find("t0ps3cret") == std::string::npos);
    }
    SUBCASE("value with a lone LF")
    {
        cfg.headers.emplace_back("X-A", "a\nb");
        CHECK(detail_of(cfg) == "headers[2] (\"X-A\") value contains CR, LF or NUL");
    }
    SUBCASE("value with NUL")
    {
        cfg.headers.emplace_back("X-A", std::string("a\0b", 3));
        CHECK(detail_of(cfg) == "headers[2] (\"X-A\") value contains CR, LF or NUL");
    }
}

TEST_CASE("tls.ca_file must be a readable file")
{
    session_config cfg;
    SUBCASE("missing file")
    {
        cfg.tls.ca_file = "/nonexistent/vigil/ca.pem";
        const auto detail = detail_of(cfg);
        CHECK(detail.find("tls.ca_file \"/nonexistent/vigil/ca.pem\"") == 0);
    }
    SUBCASE("a directory")
    {
        cfg.tls.ca_file = std::filesystem::temp_directory_path().string();
        CHECK(detail_of(cfg).find("is not a regular file") != std::string::npos);
    }
    SUBCASE("an existing file")
    {
        const temp_file file("-----BEGIN CERTIFICATE-----\n");
        cfg.tls.ca_file = file.path();
        CHECK_FALSE(vigil::validate(cfg));
    }
}

TEST_CASE("the first broken rule is reported")
{
    session_config cfg;
    cfg.ping_interval = -1ms;
    cfg.close_timeout = 0ms;
    cfg.send_queue_limit = 0;
    CHECK(detail_of(cfg).find("ping_interval") == 0);
}
