// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/config.hpp>
#include <vigil/server.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <limits>
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
        {"negative stall_threshold", [](auto& c) { c.stall_threshold = -5ms; },
            "stall_threshold (-5 ms) must not be negative (0 means a quarter of pong_timeout)"},
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
    cfg.headers = {{"Authorization", "Bearer s3cret"}, {"Cookie", "session=abc"}};
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

TEST_CASE("ping_jitter must be in [0, 0.5]")
{
    struct bad {
        const char* what;
        double value;
    };
    const bad cases[] = {
        {"NaN", std::numeric_limits<double>::quiet_NaN()},
        {"negative", -0.1},
        {"just above the range", 0.6},
        {"one", 1.0},
        {"infinity", std::numeric_limits<double>::infinity()},
        {"negative infinity", -std::numeric_limits<double>::infinity()},
    };
    for (const auto& c : cases) {
        CAPTURE(c.what);
        session_config cfg;
        cfg.ping_jitter = c.value;
        const auto detail = detail_of(cfg);
        CHECK(detail.find("ping_jitter") == 0);
        CHECK(detail.find("[0, 0.5]") != std::string::npos);
    }
    for (double ok : {0.0, 0.2, 0.5}) {
        CAPTURE(ok);
        session_config cfg;
        cfg.ping_jitter = ok;
        CHECK_FALSE(vigil::validate(cfg));
    }
    CHECK(session_config{}.ping_jitter == 0.0);
}

TEST_CASE("send_queue_overflow must be an overflow_policy")
{
    session_config cfg;
    CHECK(cfg.send_queue_overflow == vigil::overflow_policy::reject);  // the client default
    cfg.send_queue_overflow = static_cast<vigil::overflow_policy>(9);
    CHECK(detail_of(cfg) == "send_queue_overflow (9) is not an overflow_policy");
    cfg.send_queue_overflow = vigil::overflow_policy::disconnect;
    CHECK_FALSE(vigil::validate(cfg));
}

TEST_CASE("an application-level heartbeat is a valid config")
{
    session_config cfg;
    cfg.heartbeat = vigil::message_heartbeat::json();
    cfg.deliver_heartbeat_messages = true;
    CHECK_FALSE(vigil::validate(cfg));
    // Its timers follow the same rules as protocol pings.
    cfg.pong_timeout = cfg.ping_interval;
    CHECK(detail_of(cfg).find("pong_timeout") == 0);
}

TEST_CASE("server_session_defaults: the client defaults, jittered, slow consumers disconnected, limits for strangers")
{
    const auto d = vigil::server_session_defaults();
    CHECK(d.ping_jitter == doctest::Approx(0.2));
    CHECK(d.send_queue_overflow == vigil::overflow_policy::disconnect);
    const session_config client;
    CHECK(d.ping_interval == client.ping_interval);
    CHECK(d.pong_timeout == client.pong_timeout);
    CHECK(d.close_timeout == client.close_timeout);
    CHECK(d.handshake_timeout == client.handshake_timeout);
    CHECK(d.write_timeout == client.write_timeout);
    CHECK(d.send_queue_limit == client.send_queue_limit);
    // Smaller messages and bounded queues for strangers (test_memory_budget.cpp has the figures).
    CHECK(d.max_message_size < client.max_message_size);
    CHECK_FALSE(d.heartbeat.has_value());
    CHECK_FALSE(vigil::validate(d));

    const vigil::server_config s;
    CHECK(s.session.ping_jitter == doctest::Approx(0.2));
    CHECK(s.session.send_queue_overflow == vigil::overflow_policy::disconnect);
    CHECK(s.bind == "127.0.0.1");
    CHECK(s.port == 0);
    CHECK(s.max_connections == 10000);
    CHECK(s.retry_after == std::chrono::milliseconds(5000));
    // Off: behind a load balancer or a carrier NAT every client shares one address.
    CHECK(s.max_connections_per_address == 0);
    CHECK(s.connects_per_address == 0);
    CHECK(s.connect_window == std::chrono::milliseconds(10000));
    CHECK(s.receive_queue_limit == 256);
    CHECK(s.max_request_header == 8192);
    CHECK(s.server_name == "vigil");
}

namespace {

std::string server_detail_of(const vigil::server_config& cfg)
{
    std::string detail;
    const auto ec = vigil::validate(cfg, &detail);
    CHECK(ec == vigil::error::invalid_config);
    CHECK(ec == vigil::condition::permanent);
    CHECK_FALSE(detail.empty());
    // Without a detail pointer the verdict is the same.
    CHECK(vigil::validate(cfg) == vigil::error::invalid_config);
    return detail;
}

}  // namespace

TEST_CASE("validate(server_config)")
{
    vigil::server_config cfg;
    std::string untouched = "untouched";
    CHECK_FALSE(vigil::validate(cfg, &untouched));
    CHECK(untouched == "untouched");

    SUBCASE("max_connections 0")
    {
        cfg.max_connections = 0;
        CHECK(server_detail_of(cfg).find("max_connections") == 0);
    }
    SUBCASE("receive_queue_limit 0")
    {
        cfg.receive_queue_limit = 0;
        CHECK(server_detail_of(cfg).find("receive_queue_limit") == 0);
    }
    SUBCASE("max_request_header 0")
    {
        cfg.max_request_header = 0;
        CHECK(server_detail_of(cfg).find("max_request_header") == 0);
    }
    SUBCASE("negative retry_after")
    {
        cfg.retry_after = std::chrono::milliseconds(-1);
        CHECK(server_detail_of(cfg).find("retry_after") == 0);
    }
    SUBCASE("connects_per_address without a connect_window")
    {
        cfg.connects_per_address = 5;
        cfg.connect_window = std::chrono::milliseconds(0);
        const auto detail = server_detail_of(cfg);
        CHECK(detail.find("connect_window") == 0);
        CHECK(detail.find("connects_per_address") != std::string::npos);
    }
    SUBCASE("negative connect_window")
    {
        cfg.connect_window = std::chrono::milliseconds(-1);
        CHECK(server_detail_of(cfg).find("connect_window") == 0);
    }
    SUBCASE("server_name with a line break")
    {
        cfg.server_name = "vigil\r\nX-Evil: 1";
        CHECK(server_detail_of(cfg).find("server_name") == 0);
    }
    SUBCASE("empty bind address")
    {
        cfg.bind = "";
        CHECK(server_detail_of(cfg).find("bind") == 0);
    }
    SUBCASE("a bind address that is not an IP address")
    {
        cfg.bind = "not an address";
        CHECK(server_detail_of(cfg).find("bind") == 0);
    }
    SUBCASE("an invalid session is reported with its field")
    {
        cfg.session.pong_timeout = cfg.session.ping_interval;
        CHECK(server_detail_of(cfg).find("pong_timeout") != std::string::npos);
    }
    SUBCASE("a session ping_jitter out of range")
    {
        cfg.session.ping_jitter = 0.75;
        CHECK(server_detail_of(cfg).find("ping_jitter") != std::string::npos);
    }
    SUBCASE("tls.cert_file without tls.key_file")
    {
        const temp_file cert("-----BEGIN CERTIFICATE-----\n");
        cfg.tls.cert_file = cert.path();
        CHECK(server_detail_of(cfg).find("tls.key_file") != std::string::npos);
    }
    SUBCASE("tls.key_file without tls.cert_file")
    {
        const temp_file key("-----BEGIN PRIVATE KEY-----\n");
        cfg.tls.key_file = key.path();
        CHECK(server_detail_of(cfg).find("tls.cert_file") != std::string::npos);
    }
    SUBCASE("a certificate file that does not exist")
    {
        const temp_file key("-----BEGIN PRIVATE KEY-----\n");
        cfg.tls.cert_file = "/nonexistent/vigil/cert.pem";
        cfg.tls.key_file = key.path();
        const auto detail = server_detail_of(cfg);
        CHECK(detail.find("tls.cert_file") != std::string::npos);
        CHECK(detail.find("/nonexistent/vigil/cert.pem") != std::string::npos);
    }
    SUBCASE("a key file that does not exist")
    {
        const temp_file cert("-----BEGIN CERTIFICATE-----\n");
        cfg.tls.cert_file = cert.path();
        cfg.tls.key_file = "/nonexistent/vigil/key.pem";
        const auto detail = server_detail_of(cfg);
        CHECK(detail.find("tls.key_file") != std::string::npos);
        CHECK(detail.find("/nonexistent/vigil/key.pem") != std::string::npos);
    }
    SUBCASE("a directory as certificate file")
    {
        const temp_file key("-----BEGIN PRIVATE KEY-----\n");
        cfg.tls.cert_file = std::filesystem::temp_directory_path().string();
        cfg.tls.key_file = key.path();
        CHECK(server_detail_of(cfg).find("tls.cert_file") != std::string::npos);
    }
}

TEST_CASE("validate(server_config) accepts the edges")
{
    vigil::server_config cfg;
    SUBCASE("one connection, one queued message")
    {
        cfg.max_connections = 1;
        cfg.receive_queue_limit = 1;
    }
    SUBCASE("retry_after 0")
    {
        cfg.retry_after = std::chrono::milliseconds(0);
    }
    SUBCASE("limits per address, and a zero window where no rate is set")
    {
        cfg.max_connections_per_address = 1;
        cfg.connects_per_address = 1;
        cfg.connect_window = std::chrono::milliseconds(1);
        CHECK_FALSE(vigil::validate(cfg));
        cfg.connects_per_address = 0;
        cfg.connect_window = std::chrono::milliseconds(0);
    }
    SUBCASE("all interfaces, IPv4 and IPv6")
    {
        cfg.bind = "0.0.0.0";
        CHECK_FALSE(vigil::validate(cfg));
        cfg.bind = "::";
    }
    // Outlive the subcase: the checks after it validate the same config again.
    const temp_file cert("-----BEGIN CERTIFICATE-----\n");
    const temp_file key("-----BEGIN PRIVATE KEY-----\n");
    SUBCASE("both TLS files present")
    {
        cfg.tls.cert_file = cert.path();
        cfg.tls.key_file = key.path();
        std::string detail;
        CHECK_FALSE(vigil::validate(cfg, &detail));
        CHECK(detail.empty());
    }
    std::string detail;
    CHECK_FALSE(vigil::validate(cfg, &detail));
    CHECK(detail.empty());
}
