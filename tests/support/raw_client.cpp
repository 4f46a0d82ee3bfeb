// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <support/raw_client.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <variant>

namespace vigil::test {

namespace {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Larger frames are a broken server (or a broken parser here): refuse rather than allocate.
constexpr std::uint64_t max_frame_payload = 64u * 1024 * 1024;

bool iequals(std::string_view a, std::string_view b)
{
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

std::string_view trim(std::string_view s)
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

}  // namespace

std::uint16_t raw_frame::close_code() const
{
    if (op != opcode::close)
        return 0;
    if (payload.size() < 2)
        return 1005;
    return static_cast<std::uint16_t>((static_cast<unsigned char>(payload[0]) << 8) |
                                      static_cast<unsigned char>(payload[1]));
}

std::string raw_frame::close_reason() const
{
    if (op != opcode::close || payload.size() <= 2)
        return {};
    return payload.substr(2);
}

std::string raw_http_response::header(std::string_view name) const
{
    for (const auto& [n, v] : headers)
        if (iequals(n, name))
            return v;
    return {};
}

bool raw_http_response::has_header(std::string_view name) const
{
    for (const auto& h : headers)
        if (iequals(h.first, name))
            return true;
    return false;
}

raw_client::raw_client(asio::any_io_executor ex) : sock_(std::move(ex)) {}

raw_client::~raw_client() = default;

asio::awaitable<error_code> raw_client::connect(std::uint16_t port, int receive_buffer, milliseconds timeout)
{
    co_return co_await open_and_connect({}, port, receive_buffer, timeout);
}

asio::awaitable<error_code> raw_client::connect_from(std::string local_address, std::uint16_t port,
                                                     milliseconds timeout)
{
    co_return co_await open_and_connect(std::move(local_address), port, 0, timeout);
}

asio::awaitable<error_code> raw_client::open_and_connect(std::string local_address, std::uint16_t port,
                                                         int receive_buffer, milliseconds timeout)
{
    const tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), port);
    error_code ec;
    sock_.open(ep.protocol(), ec);
    if (ec)
        co_return ec;
    if (receive_buffer > 0)
        sock_.set_option(asio::socket_base::receive_buffer_size(receive_buffer), ec);
    if (ec)
        co_return ec;
    if (!local_address.empty()) {
        const auto local = asio::ip::make_address(local_address, ec);
        if (!ec)
            sock_.bind(tcp::endpoint(local, 0), ec);
        if (ec)
            co_return ec;
    }
    asio::steady_timer timer(co_await asio::this_coro::executor, timeout);
    auto r = co_await (sock_.async_connect(ep, use_tuple) || timer.async_wait(use_tuple));
    if (r.index() == 1)
        co_return asio::error::timed_out;
    auto [cec] = std::get<0>(r);
    if (!cec)
        sock_.set_option(tcp::no_delay(true), ec);
    co_return cec;
}

asio::awaitable<error_code> raw_client::write(std::string bytes, milliseconds timeout)
{
    asio::steady_timer timer(co_await asio::this_coro::executor, timeout);
    auto r = co_await (asio::async_write(sock_, asio::buffer(bytes), use_tuple) || timer.async_wait(use_tuple));
    if (r.index() == 1)
        co_return asio::error::timed_out;
    auto [ec, n] = std::get<0>(r);
    (void)n;
    co_return ec;
}

asio::awaitable<error_code> raw_client::fill(steady::time_point deadline)
{
    std::array<char, 16384> chunk;
    asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
    auto r = co_await (sock_.async_read_some(asio::buffer(chunk), use_tuple) || timer.async_wait(use_tuple));
    if (r.index() == 1)
        co_return asio::error::timed_out;
    auto [ec, n] = std::get<0>(r);
    in_.append(chunk.data(), n);
    co_return ec;
}

asio::awaitable<error_code> raw_client::read_some(milliseconds timeout)
{
    co_return co_await fill(steady::now() + timeout);
}

asio::awaitable<error_code> raw_client::read_http(raw_http_response& out, milliseconds timeout)
{
    const auto deadline = steady::now() + timeout;
    std::size_t end = std::string::npos;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
        if (auto ec = co_await fill(deadline))
            co_return ec;
    }
    const std::string head = in_.substr(0, end);
    in_.erase(0, end + 4);

    out = raw_http_response{};
    std::string_view rest(head);
    auto line_end = rest.find("\r\n");
    out.status_line = std::string(rest.substr(0, line_end));
    rest = line_end == std::string_view::npos ? std::string_view() : rest.substr(line_end + 2);
    // "HTTP/1.1 503 Service Unavailable"
    const auto sp = out.status_line.find(' ');
    if (out.status_line.rfind("HTTP/", 0) != 0 || sp == std::string::npos)
        co_return asio::error::invalid_argument;
    unsigned status = 0;
    const char* first = out.status_line.data() + sp + 1;
    const char* last = out.status_line.data() + out.status_line.size();
    auto [ptr, perr] = std::from_chars(first, last, status);
    if (perr != std::errc() || ptr == first)
        co_return asio::error::invalid_argument;
    out.status = status;
    while (!rest.empty()) {
        line_end = rest.find("\r\n");
        auto line = rest.substr(0, line_end);
        rest = line_end == std::string_view::npos ? std::string_view() : rest.substr(line_end + 2);
        const auto colon = line.find(':');
        if (colon == std::string_view::npos)
            continue;
        out.headers.emplace_back(std::string(trim(line.substr(0, colon))), std::string(trim(line.substr(colon + 1))));
    }
    const auto length_text = out.header("Content-Length");
    std::size_t length = 0;
    if (!length_text.empty()) {
        auto [p, e] = std::from_chars(length_text.data(), length_text.data() + length_text.size(), length);
        (void)p;
        if (e != std::errc() || length > max_frame_payload)
            co_return asio::error::invalid_argument;
    }
    while (in_.size() < length) {
        if (auto ec = co_await fill(deadline))
            co_return ec;
    }
    out.body = in_.substr(0, length);
    in_.erase(0, length);
    co_return error_code{};
}

asio::awaitable<error_code> raw_client::upgrade(std::string target, raw_http_response* out, milliseconds timeout)
{
    const auto deadline = steady::now() + timeout;
    if (auto ec = co_await write(upgrade_request(target), timeout))
        co_return ec;
    raw_http_response res;
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
    auto ec = co_await read_http(res, std::max(left, milliseconds(1)));
    if (out)
        *out = res;
    if (ec)
        co_return ec;
    if (res.status != 101)
        co_return make_http_status_error(res.status);
    co_return error_code{};
}

asio::awaitable<error_code> raw_client::read_frame(raw_frame& out, milliseconds timeout)
{
    const auto deadline = steady::now() + timeout;
    for (;;) {
        // Header: 2 bytes, then 2 or 8 bytes of extended length, then 4 of mask key.
        if (in_.size() >= 2) {
            const auto b0 = static_cast<unsigned char>(in_[0]);
            const auto b1 = static_cast<unsigned char>(in_[1]);
            const bool masked = (b1 & 0x80) != 0;
            std::uint64_t len = b1 & 0x7f;
            std::size_t header = 2;
            if (len == 126)
                header += 2;
            else if (len == 127)
                header += 8;
            if (masked)
                header += 4;
            if (in_.size() >= header) {
                if (len == 126) {
                    len = (static_cast<std::uint64_t>(static_cast<unsigned char>(in_[2])) << 8) |
                          static_cast<unsigned char>(in_[3]);
                } else if (len == 127) {
                    len = 0;
                    for (int i = 0; i < 8; ++i)
                        len = (len << 8) | static_cast<unsigned char>(in_[2 + i]);
                }
                if (len > max_frame_payload)
                    co_return asio::error::message_size;
                if (in_.size() >= header + len) {
                    out = raw_frame{};
                    out.fin = (b0 & 0x80) != 0;
                    out.rsv = static_cast<std::uint8_t>((b0 >> 4) & 0x7);
                    out.op = static_cast<std::uint8_t>(b0 & 0x0f);
                    out.masked = masked;
                    out.payload = in_.substr(header, len);
                    if (masked) {
                        const std::size_t key_at = header - 4;
                        for (std::size_t i = 0; i < out.payload.size(); ++i)
                            out.payload[i] = static_cast<char>(out.payload[i] ^ in_[key_at + (i % 4)]);
                    }
                    in_.erase(0, header + len);
                    co_return error_code{};
                }
            }
        }
        if (auto ec = co_await fill(deadline))
            co_return ec;
    }
}

asio::awaitable<error_code> raw_client::wait_closed(milliseconds timeout)
{
    const auto deadline = steady::now() + timeout;
    for (;;) {
        if (auto ec = co_await fill(deadline))
            co_return ec;
        in_.clear();
    }
}

void raw_client::abort()
{
    error_code ec;
    sock_.set_option(asio::socket_base::linger(true, 0), ec);
    sock_.close(ec);
}

std::uint16_t raw_client::local_port() const
{
    error_code ec;
    return sock_.local_endpoint(ec).port();
}

std::string raw_client::local_name() const
{
    error_code ec;
    const auto ep = sock_.local_endpoint(ec);
    return (ec ? std::string("127.0.0.1") : ep.address().to_string()) + ":" + std::to_string(ep.port());
}

std::string raw_client::upgrade_request(std::string_view target, std::string_view extra)
{
    std::string req = "GET ";
    req += target;
    req += " HTTP/1.1\r\n"
           "Host: 127.0.0.1\r\n"
           "Upgrade: websocket\r\n"
           "Connection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n";
    if (!extra.empty()) {
        req += extra;
        req += "\r\n";
    }
    req += "\r\n";
    return req;
}

std::string raw_client::frame(std::uint8_t op, std::string_view payload, frame_options o)
{
    std::string f;
    f += static_cast<char>((o.fin ? 0x80 : 0x00) | ((o.rsv & 0x7) << 4) | (op & 0x0f));
    const unsigned char mask_bit = o.mask ? 0x80 : 0x00;
    const std::uint64_t len = payload.size();
    if (len < 126) {
        f += static_cast<char>(mask_bit | len);
    } else if (len <= 0xffff) {
        f += static_cast<char>(mask_bit | 126);
        f += static_cast<char>((len >> 8) & 0xff);
        f += static_cast<char>(len & 0xff);
    } else {
        f += static_cast<char>(mask_bit | 127);
        for (int i = 7; i >= 0; --i)
            f += static_cast<char>((len >> (8 * i)) & 0xff);
    }
    if (o.mask) {
        for (auto k : o.key)
            f += static_cast<char>(k);
        for (std::size_t i = 0; i < payload.size(); ++i)
            f += static_cast<char>(payload[i] ^ static_cast<char>(o.key[i % 4]));
    } else {
        f.append(payload);
    }
    return f;
}

std::string raw_client::close_frame(std::uint16_t code, std::string_view reason)
{
    std::string payload;
    payload += static_cast<char>((code >> 8) & 0xff);
    payload += static_cast<char>(code & 0xff);
    payload += reason;
    return frame(opcode::close, payload);
}

}  // namespace vigil::test
