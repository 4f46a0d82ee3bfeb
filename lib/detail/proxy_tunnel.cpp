// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "proxy_tunnel.hpp"

#include "common.hpp"
#include "printable.hpp"
#include "proxy_codec.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>

namespace vigil::detail {

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

// Beast's parser found something that is not an HTTP response; running out of bytes
// (end_of_stream, partial_message) is the connection's fault, not the protocol's.
bool not_http(const error_code& ec) noexcept
{
    return ec.category() == http::make_error_code(http::error::bad_version).category()
        && ec != http::error::end_of_stream && ec != http::error::partial_message;
}

std::string explain_status(const proxy_endpoint& p, const std::string& what, unsigned status, std::string_view reason)
{
    std::string why = "proxy " + p.where() + " answered " + what + " with HTTP " + std::to_string(status) + " "
        + printable(reason, 80, false);
    if (status == 407 || status == 401)
        why += p.username.empty() ? " (the proxy URL has no credentials)" : " (the credentials were rejected)";
    return why;
}

asio::awaitable<error_code> http_tunnel(tcp::socket& s, const proxy_endpoint& p, std::string_view host,
                                        std::uint16_t port, std::string_view user_agent, std::string& detail)
{
    const auto request = http_connect_request(p, host, port, user_agent);
    const std::string what = "CONNECT " + authority_of(host, port);
    auto [wec, written] = co_await asio::async_write(s, asio::buffer(request), asio::as_tuple(asio::use_awaitable));
    if (wec) {
        detail = with_context("sending " + what + " to proxy " + p.where(), wec);
        co_return wec;
    }
    boost::beast::flat_buffer buffer;
    http::response_parser<http::empty_body> parser;
    parser.skip(true);  // a 2xx answer to CONNECT has no body, whatever its headers say
    auto [rec, read] = co_await http::async_read_header(s, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (rec && not_http(rec)) {
        detail = with_context("proxy " + p.where() + " answered " + what + " with something that is not HTTP", rec);
        co_return error::proxy_protocol_error;
    }
    if (rec) {
        detail = with_context("reading the answer of proxy " + p.where() + " to " + what, rec);
        co_return rec;
    }
    const auto& res = parser.get();
    if (auto ec = connect_status_error(res.result_int())) {
        detail = explain_status(p, what, res.result_int(), res.reason());
        co_return ec;
    }
    // The server speaks only after we do (TLS, the upgrade): anything here is not its.
    if (buffer.size() != 0) {
        detail = "proxy " + p.where() + " sent " + std::to_string(buffer.size()) + " bytes after its HTTP "
            + std::to_string(res.result_int()) + " answer to " + what + ", before the server could have spoken";
        co_return error::proxy_protocol_error;
    }
    co_return error_code{};
}

// One SOCKS5 round: `out` written, exactly `in.size()` bytes read back.
asio::awaitable<error_code> exchange(tcp::socket& s, const std::string& out, std::string& in, const char* step,
                                     const proxy_endpoint& p, std::string& detail)
{
    if (!out.empty()) {
        auto [ec, n] = co_await asio::async_write(s, asio::buffer(out), asio::as_tuple(asio::use_awaitable));
        if (ec) {
            detail = with_context(std::string("sending the SOCKS5 ") + step + " to proxy " + p.where(), ec);
            co_return ec;
        }
    }
    auto [ec, n] = co_await asio::async_read(s, asio::buffer(in), asio::as_tuple(asio::use_awaitable));
    if (ec)
        detail = with_context(std::string("reading the answer of proxy ") + p.where() + " to the SOCKS5 " + step, ec);
    co_return ec;
}

asio::awaitable<error_code> socks5_login(tcp::socket& s, const proxy_endpoint& p, std::string& detail)
{
    std::string reply(2, '\0');
    if (auto ec = co_await exchange(s, socks5_greeting(p), reply, "greeting", p, detail))
        co_return ec;
    std::string why;
    socks5_method method{};
    if (auto ec = socks5_check_method(reply, p, method, why)) {
        detail = "proxy " + p.where() + " " + why;
        co_return ec;
    }
    if (method == socks5_method::none)
        co_return error_code{};
    if (auto ec = co_await exchange(s, socks5_auth_request(p), reply, "username/password request", p, detail))
        co_return ec;
    if (auto ec = socks5_check_auth(reply, why)) {
        detail = "proxy " + p.where() + " " + why;
        co_return ec;
    }
    co_return error_code{};
}

asio::awaitable<error_code> socks5_tunnel(tcp::socket& s, const proxy_endpoint& p, std::string_view host,
                                          std::uint16_t port, std::string& detail)
{
    if (auto ec = co_await socks5_login(s, p, detail))
        co_return ec;
    const std::string target = " (target " + authority_of(host, port) + ")";
    std::string request;
    std::string why;
    if (auto ec = socks5_connect_request(host, port, request, why)) {
        detail = why + target;
        co_return ec;
    }
    std::string head(socks5_reply_head, '\0');
    if (auto ec = co_await exchange(s, request, head, "CONNECT", p, detail)) {
        detail += target;
        co_return ec;
    }
    std::size_t rest = 0;
    if (auto ec = socks5_check_reply_head(head, rest, why)) {
        detail = "proxy " + p.where() + " " + why + target;
        co_return ec;
    }
    std::string bound(rest, '\0');  // the proxy's own address and port: not needed
    if (auto ec = co_await exchange(s, std::string(), bound, "CONNECT", p, detail)) {
        detail += target;
        co_return ec;
    }
    co_return error_code{};
}

}  // namespace

asio::awaitable<error_code> open_tunnel(tcp::socket& s, const proxy_endpoint& p, std::string_view host,
                                        std::uint16_t port, std::string_view user_agent, std::string& detail)
{
    if (p.scheme == proxy_scheme::http)
        co_return co_await http_tunnel(s, p, host, port, user_agent, detail);
    co_return co_await socks5_tunnel(s, p, host, port, detail);
}

}  // namespace vigil::detail
