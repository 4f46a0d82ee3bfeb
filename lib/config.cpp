// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/config.hpp>

#include "detail/printable.hpp"
#include "detail/subprotocols.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/beast/core/string.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string_view>

namespace vigil {

namespace beast = boost::beast;

namespace {

std::string ms(std::chrono::milliseconds d)
{
    return std::to_string(d.count()) + " ms";
}

// Carries the first broken rule out of validate(); later rules are not checked, so the
// message names exactly one field.
class checker {
public:
    explicit checker(std::string* detail) : detail_(detail) {}

    bool failed() const noexcept { return failed_; }

    void fail(std::string message)
    {
        if (failed_)
            return;
        failed_ = true;
        if (detail_)
            *detail_ = std::move(message);
    }

    void positive(const char* field, std::chrono::milliseconds d)
    {
        if (d <= std::chrono::milliseconds::zero())
            fail(std::string(field) + " (" + ms(d) + ") must be positive");
    }

    void not_negative(const char* field, std::chrono::milliseconds d, const char* zero_means)
    {
        if (d < std::chrono::milliseconds::zero())
            fail(std::string(field) + " (" + ms(d) + ") must not be negative (0 " + zero_means + ")");
    }

private:
    std::string* detail_;
    bool failed_ = false;
};

bool has_line_break_or_nul(std::string_view s) noexcept
{
    return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

std::string printable(std::string_view s)
{
    return detail::printable(s, 64, false);
}

bool is_subprotocol_header(std::string_view name) noexcept
{
    constexpr std::string_view want = "sec-websocket-protocol";
    return name.size() == want.size() && std::equal(name.begin(), name.end(), want.begin(), [](char a, char b) {
        return (a >= 'A' && a <= 'Z' ? static_cast<char>(a - 'A' + 'a') : a) == b;
    });
}

void check_headers(checker& check, const session_config& cfg)
{
    for (std::size_t i = 0; i < cfg.headers.size() && !check.failed(); ++i) {
        const auto& [name, value] = cfg.headers[i];
        const std::string where = "headers[" + std::to_string(i) + "]";
        if (name.empty()) {
            check.fail(where + " has an empty name");
            continue;
        }
        // RFC 9110 token characters only: anything else lets the caller smuggle a second
        // header or end the request early.
        if (!detail::is_http_token(name)) {
            check.fail(where + " name \"" + printable(name)
                + "\" is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)");
        }
        if (is_subprotocol_header(name))
            check.fail(where + " is Sec-WebSocket-Protocol: offer subprotocols with session_config::subprotocols, "
                "which checks the server's answer");
        // Values may be secrets (tokens), so the message names the header, never the value.
        if (has_line_break_or_nul(value))
            check.fail(where + " (\"" + name + "\") value contains CR, LF or NUL");
        // An extension offered behind the session's back would be accepted by the server,
        // and its frames (compressed, RSV1 set) then fail the connection as a protocol error.
        if (beast::iequals(name, "Sec-WebSocket-Extensions"))
            check.fail(where + " (\"" + name
                + "\") cannot be set through headers: use deflate (deflate.enabled = true) for compression");
    }
}

void check_window_bits(checker& check, const char* field, int bits)
{
    if (bits < 9 || bits > 15)
        check.fail(std::string("deflate.") + field + " (" + std::to_string(bits)
            + ") must be in [9, 15] (8 is not usable: zlib treats it as 9)");
}

void check_deflate(checker& check, const deflate_config& d)
{
    // Checked even when disabled: a setting that would fail once enabled fails now.
    check_window_bits(check, "client_max_window_bits", d.client_max_window_bits);
    check_window_bits(check, "server_max_window_bits", d.server_max_window_bits);
    if (d.level < 0 || d.level > 9)
        check.fail("deflate.level (" + std::to_string(d.level) + ") must be in [0, 9]");
}

void check_ca_file(checker& check, const std::string& path)
{
    if (path.empty())
        return;
    std::error_code fs_ec;
    if (!std::filesystem::is_regular_file(path, fs_ec)) {
        check.fail("tls.ca_file \"" + printable(path) + "\" is not a regular file"
            + (fs_ec ? " (" + fs_ec.message() + ")" : std::string()));
        return;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in)
        check.fail("tls.ca_file \"" + printable(path) + "\" cannot be opened for reading");
}

void check_network(checker& check, const session_config& cfg)
{
    if (!cfg.proxy.url.empty()) {
        proxy_endpoint ignored;
        std::string why;
        if (parse_proxy_url(cfg.proxy.url, ignored, &why))
            check.fail("proxy.url: " + why);
    }
    if (has_line_break_or_nul(cfg.proxy.no_proxy))
        check.fail("proxy.no_proxy contains CR, LF or NUL");
    if (!cfg.local_address.empty()) {
        boost::system::error_code ec;
        boost::asio::ip::make_address(cfg.local_address, ec);
        if (ec)
            check.fail("local_address \"" + printable(cfg.local_address)
                + "\" is not an IP address (an IPv4 or IPv6 literal such as 10.0.1.7 or fe80::1%eth0)");
    }
}

}  // namespace

error_code validate(const session_config& cfg, std::string* detail)
{
    checker check(detail);
    constexpr auto zero = std::chrono::milliseconds::zero();

    check.not_negative("ping_interval", cfg.ping_interval, "disables the heartbeat");
    const bool heartbeat = cfg.ping_interval > zero;
    if (heartbeat) {
        check.positive("pong_timeout", cfg.pong_timeout);
        // One ping must be judged before the next is due, or a second ping would restart
        // the wait and a dead peer could go unnoticed for longer than the stated bound.
        if (cfg.pong_timeout >= cfg.ping_interval)
            check.fail("pong_timeout (" + ms(cfg.pong_timeout) + ") must be shorter than ping_interval ("
                + ms(cfg.ping_interval) + ")");
    }
    // NaN fails both comparisons, so test for the valid range rather than the invalid one.
    if (!(cfg.ping_jitter >= 0.0 && cfg.ping_jitter <= 0.5))
        check.fail("ping_jitter (" + std::to_string(cfg.ping_jitter) + ") must be in [0, 0.5]");
    if (cfg.ping != ping_mode::idle && cfg.ping != ping_mode::fixed)
        check.fail("ping (" + std::to_string(static_cast<int>(cfg.ping)) + ") is not a ping_mode");

    check.not_negative("stall_threshold", cfg.stall_threshold, "means a quarter of pong_timeout");
    check.not_negative("idle_timeout", cfg.idle_timeout, "disables it");
    // A quiet but healthy feed gets pinged and answers; if the idle deadline came first it
    // would end connections the heartbeat was about to prove alive.
    if (heartbeat && cfg.idle_timeout > zero && cfg.ping_interval >= cfg.idle_timeout)
        check.fail("ping_interval (" + ms(cfg.ping_interval) + ") must be shorter than idle_timeout ("
            + ms(cfg.idle_timeout) + ")");

    check.positive("connect_timeout", cfg.connect_timeout);
    check.positive("tls_handshake_timeout", cfg.tls_handshake_timeout);
    check.positive("handshake_timeout", cfg.handshake_timeout);
    check.not_negative("write_timeout", cfg.write_timeout, "disables it");
    check.positive("close_timeout", cfg.close_timeout);

    if (cfg.send_queue_limit == 0)
        check.fail("send_queue_limit (0) must be positive");
    if (cfg.send_queue_overflow != overflow_policy::reject && cfg.send_queue_overflow != overflow_policy::disconnect)
        check.fail("send_queue_overflow (" + std::to_string(static_cast<int>(cfg.send_queue_overflow))
            + ") is not an overflow_policy");
    if (cfg.max_message_size == 0)
        check.fail("max_message_size (0) must be positive");
    check.not_negative("message_timeout", cfg.message_timeout, "disables it");
    // A smaller rate would stop reading for minutes after one ordinary read.
    if (cfg.max_receive_rate > 0 && cfg.max_receive_rate < 1024)
        check.fail("max_receive_rate (" + std::to_string(cfg.max_receive_rate)
            + ") must be 0 (no limit) or at least 1024 bytes per second");

    if (has_line_break_or_nul(cfg.user_agent))
        check.fail("user_agent contains CR, LF or NUL");
    check_headers(check, cfg);
    if (std::string why; !check.failed() && !detail::check_subprotocols(cfg.subprotocols, "subprotocols", why))
        check.fail(why);
    check_deflate(check, cfg.deflate);
    check_network(check, cfg);
    if (!check.failed())
        check_ca_file(check, cfg.tls.ca_file);

    if (check.failed())
        return error::invalid_config;
    return {};
}

}  // namespace vigil
