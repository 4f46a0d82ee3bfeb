// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The server's side of opening a connection: adopting an accepted socket, TLS within
// tls_handshake_timeout, then the upgrade request within handshake_timeout (one deadline
// over all of it, so that a client dribbling its request is dropped), with HTTP answers for
// what cannot be accepted (400, 431, 503).

#include "session_core.hpp"
#include "with_deadline.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <algorithm>
#include <climits>
#include <string_view>

namespace vigil::detail {

namespace http = beast::http;

namespace {

std::string ms_text(std::chrono::milliseconds d)
{
    return std::to_string(d.count()) + " ms";
}

bool is_parse_error(const error_code& ec)
{
    return ec.category() == http::make_error_code(http::error::bad_method).category() &&
           ec != http::error::end_of_stream && ec != http::error::partial_message;
}

}  // namespace

accept_result session_core::accept_failed(accept_result& result, error_code ec)
{
    if (conn_.end.decided() == end_reason::kind::cancelled)
        ec = asio::error::operation_aborted;
    conn_.end.record(end_reason::kind::failure, ec, result.detail);
    end_connection();
    result.ec = conn_.end.code();
    return result;
}

asio::awaitable<error_code> session_core::refuse_upgrade(const accept_params& params, unsigned status, std::string body,
                                                         std::string retry_after)
{
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::server, params.server_name);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.set(http::field::connection, "close");
    if (!retry_after.empty())
        res.set(http::field::retry_after, retry_after);
    res.body() = std::move(body) + "\n";
    res.prepare_payload();
    auto [ec, n] = co_await http::async_write(ws_->next_layer(), res, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

asio::awaitable<error_code> session_core::read_upgrade(accept_params& params, accept_result& result)
{
    http::request_parser<http::empty_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(params.max_request_header, UINT32_MAX)));
    parser.body_limit(0);  // an upgrade request has no body
    // A buffer of its own, from the thread's recycled memory: the next handshake reuses it,
    // so that thousands of handshakes leave no holes between their connections' memory.
    beast::basic_flat_buffer<asio::recycling_allocator<char>> request;
    auto [ec, n] = co_await http::async_read(ws_->next_layer(), request, parser, asio::as_tuple(asio::use_awaitable));
    if (ec == http::error::header_limit) {
        result.detail = "upgrade request header larger than " + std::to_string(params.max_request_header) +
                        " bytes (max_request_header)";
        co_await refuse_upgrade(params, 431, "request header too large", {});
        co_return make_http_status_error(431);
    }
    if (ec && is_parse_error(ec)) {
        // Garbage instead of HTTP: say what was wrong, the way a web server would.
        result.detail = "malformed upgrade request: " + ec.message();
        co_await refuse_upgrade(params, 400, "malformed HTTP request: " + ec.message(), {});
        co_return make_http_status_error(400);
    }
    if (ec) {
        result.detail = with_context("reading the upgrade request", ec);
        co_return ec;
    }
    auto& req = parser.get();
    result.target = std::string(req.target());
    if (params.verdict == accept_params::answer::refuse) {
        const auto secs = (params.retry_after.count() + 999) / 1000;
        result.detail = "at max_connections: answered 503 with Retry-After " + std::to_string(secs);
        co_await refuse_upgrade(params, 503, "too many connections, retry later", std::to_string(secs));
        co_return make_http_status_error(503);
    }
    if (!websocket::is_upgrade(req)) {
        result.detail = "not a WebSocket upgrade request: " + std::string(req.method_string()) + " " + result.target;
        co_await refuse_upgrade(params, 400, "this endpoint speaks WebSocket only", {});
        co_return make_http_status_error(400);
    }
    // Beast checks the rest (version, key) and answers 400 or 426 itself.
    // What the client sent behind its request (its first frames, in the same write) is
    // in `request` already: the websocket stream reads it first.
    const auto behind = request.data();
    ws_->next_layer().unread(std::string_view(static_cast<const char*>(behind.data()), behind.size()));
    auto [aec] = co_await ws_->async_accept(req, asio::as_tuple(asio::use_awaitable));
    if (aec)
        result.detail = with_context("WebSocket upgrade refused", aec);
    co_return aec;
}

asio::awaitable<accept_result> session_core::accept_op(asio::ip::tcp::socket sock, accept_params params)
{
    co_await enter_operation();
    accept_result result;
    if (phase_ != phase::idle) {
        result.ec = error::already_running;
        co_return result;
    }
    begin_connection();
    ws_.reset();
    ws_.emplace(std::move(sock), params.tls);
    set_no_delay();
    if (params.tls) {
        auto ec = co_await with_deadline(tls_handshake(asio::ssl::stream_base::server), cfg_->tls_handshake_timeout,
                                         error::tls_handshake_timeout, [this] { close_socket(); });
        if (ec) {
            result.detail =
                ec == error::tls_handshake_timeout
                    ? "no TLS handshake within " + ms_text(cfg_->tls_handshake_timeout) + " (tls_handshake_timeout)"
                    : with_context("TLS handshake", ec);
            co_return accept_failed(result, ec);
        }
    }
    prepare_stream(websocket::stream_base::decorator(
        [name = params.server_name](websocket::response_type& res) { res.set(http::field::server, name); }));
    auto ec = co_await with_deadline(read_upgrade(params, result), cfg_->handshake_timeout, error::handshake_timeout,
                                     [this] { close_socket(); });
    if (ec == error::handshake_timeout)
        result.detail =
            "no complete upgrade request within " + ms_text(cfg_->handshake_timeout) + " (handshake_timeout)";
    if (ec)
        co_return accept_failed(result, ec);
    if (conn_.end.decided() != end_reason::kind::none || cancelled(co_await asio::this_coro::cancellation_state)) {
        result.detail = "cancelled";
        co_return accept_failed(result, asio::error::operation_aborted);
    }
    if (params.receive_queue_limit > 0 && !inbox_)
        inbox_ = std::make_unique<inbox>(strand_, params.receive_queue_limit);
    opened(clock_type::now());
    co_return result;
}

asio::awaitable<accept_result> session_access::accept(session& s, asio::ip::tcp::socket sock, accept_params params)
{
    auto& core = *s.core_;
    co_return co_await asio::co_spawn(core.strand(), core.accept_op(std::move(sock), std::move(params)),
                                      asio::use_awaitable);
}

}  // namespace vigil::detail
