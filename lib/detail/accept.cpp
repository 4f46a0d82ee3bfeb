// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The server's side of opening a connection: adopting an accepted socket, TLS within
// tls_handshake_timeout, then the upgrade request within handshake_timeout (one deadline
// over all of it, so that a client dribbling its request is dropped), with HTTP answers for
// what cannot be accepted (400, 405, 426, 431, 503), each saying why. Beast's accept only
// ever sees a request checked here: it would take a Sec-WebSocket-Key that is not the
// base64 of 16 bytes, and answer what it refuses without our reasons.

#include "printable.hpp"
#include "session_core.hpp"
#include "subprotocols.hpp"
#include "with_deadline.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <climits>
#include <optional>
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

// RFC 6455 4.1: the key is 16 random bytes in base64, which is 22 characters and "==".
bool is_websocket_key(std::string_view key)
{
    const auto base64 = [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
    };
    return key.size() == 24 && key.substr(22) == "==" && std::all_of(key.begin(), key.begin() + 22, base64);
}

std::string quoted(std::string_view s)
{
    return "\"" + printable(s, 64, true) + "\"";
}

// Why an upgrade request cannot be accepted, as the HTTP answer says it.
struct refusal {
    unsigned status = 0;
    std::string body{};  // to the client
    std::string detail{};  // to on_rejected
    std::string retry_after{};  // seconds, for a 503
    std::vector<std::pair<std::string, std::string>> headers{};  // an admission check's own
};

std::optional<refusal> check_upgrade(const http::request<http::empty_body>& req, const std::string& target)
{
    if (req.method() != http::verb::get)
        return refusal{405, "a WebSocket upgrade is a GET request",
                       "method " + quoted(req.method_string()) + " not allowed for an upgrade (405, Allow: GET)"};
    if (req.version() != 11)
        return refusal{400, "a WebSocket upgrade needs HTTP/1.1",
                       "HTTP/" + std::to_string(req.version() / 10) + "." + std::to_string(req.version() % 10) +
                           " request: a WebSocket upgrade needs HTTP/1.1"};
    if (!http::token_list{req[http::field::connection]}.exists("upgrade") ||
        !http::token_list{req[http::field::upgrade]}.exists("websocket"))
        return refusal{400, "this endpoint speaks WebSocket only",
                       "not a WebSocket upgrade request (no Connection: Upgrade and Upgrade: websocket): GET " +
                           quoted(target)};
    if (req.count(http::field::host) == 0)
        return refusal{400, "no Host header", "no Host header in the upgrade request"};
    if (req[http::field::sec_websocket_version] != "13")
        return refusal{426, "this server speaks WebSocket version 13",
                       (req.count(http::field::sec_websocket_version) == 0
                            ? std::string("no Sec-WebSocket-Version header")
                            : "Sec-WebSocket-Version " + quoted(req[http::field::sec_websocket_version])) +
                           " (426 with Sec-WebSocket-Version: 13)"};
    if (req.count(http::field::sec_websocket_key) != 1)
        return refusal{400, "a WebSocket upgrade needs one Sec-WebSocket-Key",
                       req.count(http::field::sec_websocket_key) == 0 ? "no Sec-WebSocket-Key header"
                                                                      : "more than one Sec-WebSocket-Key header"};
    if (!is_websocket_key(req[http::field::sec_websocket_key]))
        return refusal{400, "Sec-WebSocket-Key must be the base64 of 16 bytes",
                       "Sec-WebSocket-Key " + quoted(req[http::field::sec_websocket_key]) +
                           " is not the base64 of 16 bytes"};
    return std::nullopt;
}

// The client's certificate in PEM, when it presented one.
std::string peer_certificate_pem(SSL* ssl)
{
    std::string pem;
    X509* cert = ssl ? SSL_get1_peer_certificate(ssl) : nullptr;
    if (!cert)
        return pem;
    if (BIO* bio = BIO_new(BIO_s_mem())) {
        if (PEM_write_bio_X509(bio, cert) == 1) {
            char* data = nullptr;
            const long n = BIO_get_mem_data(bio, &data);
            if (n > 0)
                pem.assign(data, static_cast<std::size_t>(n));
        }
        BIO_free(bio);
    }
    X509_free(cert);
    return pem;
}

upgrade_request request_view(const http::request<http::empty_body>& req, const std::string& remote)
{
    upgrade_request view;
    view.target = std::string(req.target());
    view.remote = remote;
    for (const auto& field : req) {
        view.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
        if (field.name() == http::field::sec_websocket_protocol)
            split_subprotocols(field.value(), view.subprotocols);
    }
    return view;
}

std::string offered_text(const std::vector<std::string>& offered)
{
    return offered.empty() ? std::string("none") : join_subprotocols(offered);
}

// What an admission check answered, checked: a refusal it cannot send or a subprotocol the
// client did not offer is the check's bug, answered 500 and reported as such.
std::optional<refusal> judge_decision(upgrade_decision& d, const upgrade_request& view, accept_result& result)
{
    if (d.what == upgrade_decision::verdict::accept) {
        if (!d.subprotocol.empty() &&
            std::find(view.subprotocols.begin(), view.subprotocols.end(), d.subprotocol) == view.subprotocols.end())
            return refusal{500, "internal error",
                           "check_upgrade chose subprotocol " + quoted(d.subprotocol) +
                               ", which the client did not offer (offered: " + offered_text(view.subprotocols) +
                               "); answered 500"};
        result.subprotocol = std::move(d.subprotocol);
        result.user_data = std::move(d.user_data);
        return std::nullopt;
    }
    if (d.status < 400 || d.status > 599)
        return refusal{500, "internal error",
                       "check_upgrade refused with status " + std::to_string(d.status) +
                           ": only 4xx and 5xx statuses refuse an upgrade; answered 500"};
    for (const auto& [name, value] : d.headers) {
        if (!is_http_token(name) || value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
            return refusal{500, "internal error",
                           "check_upgrade refused with header " + quoted(name) +
                               " that is not a valid HTTP header (name a token, value without CR, LF or NUL)" +
                               "; answered 500"};
    }
    return refusal{d.status, std::move(d.body),
                   "check_upgrade refused with " + std::to_string(d.status) + ": " + printable(d.reason, 256, false),
                   {}, std::move(d.headers)};
}

// The server's admission check and its subprotocol choice, for a request vigil accepts.
asio::awaitable<std::optional<refusal>> admit(const accept_params& params, const http::request<http::empty_body>& req,
                                             accept_result& result, SSL* tls)
{
    const bool choose = params.subprotocols && !params.subprotocols->empty();
    if (!params.check && !choose)
        co_return std::nullopt;  // neither: nothing to look at
    auto view = request_view(req, params.remote);
    upgrade_decision d;
    if (params.check) {
        view.peer_certificate = peer_certificate_pem(tls);
        result.at = accept_result::step::checking;
        std::optional<std::string> threw;
        try {
            d = co_await (*params.check)(view);
        } catch (const std::exception& e) {
            threw = e.what();
        } catch (...) {
            threw = "an exception that is not a std::exception";
        }
        if (threw)
            co_return refusal{500, "internal error", "check_upgrade threw: " + printable(*threw, 256, false)};
        result.at = accept_result::step::answering;
        if (auto no = judge_decision(d, view, result))
            co_return no;
    }
    if (result.subprotocol.empty() && choose)
        result.subprotocol = choose_subprotocol(view.subprotocols, *params.subprotocols);
    co_return std::nullopt;
}

}  // namespace

static std::string explain_accept_timeout(accept_result::step at, std::chrono::milliseconds limit)
{
    switch (at) {
    case accept_result::step::checking:
        return "the upgrade check (server_config::check_upgrade) did not decide within " + ms_text(limit) +
               " (handshake_timeout): closed unanswered";
    case accept_result::step::answering:
        return "the upgrade was not answered within " + ms_text(limit) + " (handshake_timeout)";
    case accept_result::step::reading:
        break;
    }
    return "no complete upgrade request within " + ms_text(limit) + " (handshake_timeout)";
}

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
                                                         std::string retry_after,
                                                         const std::vector<std::pair<std::string, std::string>>& extra)
{
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::server, params.server_name);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    for (const auto& [name, value] : extra)
        res.set(name, value);  // before Connection and Content-Length, which stay ours
    res.set(http::field::connection, "close");
    if (!retry_after.empty())
        res.set(http::field::retry_after, retry_after);
    // The headers these statuses must carry (RFC 9110 15.5.6, RFC 6455 4.4).
    if (status == 405)
        res.set(http::field::allow, "GET");
    if (status == 426) {
        res.set(http::field::upgrade, "websocket");
        res.set(http::field::sec_websocket_version, "13");
    }
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
    auto& req = parser.get();
    std::optional<refusal> no;
    if (ec == http::error::header_limit) {
        no = refusal{431, "request header too large",
                     "upgrade request header larger than " + std::to_string(params.max_request_header) +
                         " bytes (max_request_header)"};
    } else if (ec == http::error::body_limit) {
        // A request with a body (a POST with its form), refused once its header was read:
        // the header says what to answer.
        no = check_upgrade(req, std::string(req.target()));
        if (!no)
            no = refusal{400, "an upgrade request has no body", "upgrade request with a body"};
    } else if (ec && is_parse_error(ec)) {
        // Garbage instead of HTTP: say what was wrong, the way a web server would.
        no = refusal{400, "malformed HTTP request: " + ec.message(), "malformed upgrade request: " + ec.message()};
    } else if (ec) {
        result.detail = with_context("reading the upgrade request", ec);
        co_return ec;
    } else {
        result.target = std::string(req.target());
        if (params.verdict == accept_params::answer::refuse) {
            const auto secs = std::to_string((params.retry_after.count() + 999) / 1000);
            const auto status = params.refuse_status;
            no = refusal{status,
                         status == 429 ? "too many new connections, retry later" : "too many connections, retry later",
                         params.refuse_reason + ": answered " + std::to_string(status) + " with Retry-After " + secs,
                         secs};
        } else {
            no = check_upgrade(req, result.target);
            if (!no)
                no = co_await admit(params, req, result,
                                   ws_->next_layer().tls() ? ws_->next_layer().tls()->native_handle() : nullptr);
        }
    }
    if (no) {
        result.detail = std::move(no->detail);
        co_await refuse_upgrade(params, no->status, std::move(no->body), std::move(no->retry_after), no->headers);
        co_return make_http_status_error(no->status);
    }
    if (!result.subprotocol.empty())
        ws_->set_option(websocket::stream_base::decorator(
            [name = params.server_name, chosen = result.subprotocol](websocket::response_type& res) {
                res.set(http::field::server, name);
                res.set(http::field::sec_websocket_protocol, chosen);
            }));
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
    prepare_stream(websocket::stream_base::decorator([this, name = params.server_name](websocket::response_type& res) {
        res.set(http::field::server, name);
        note_deflate(res);
    }));
    apply_deflate(beast::role_type::server);
    auto ec = co_await with_deadline(read_upgrade(params, result), cfg_->handshake_timeout, error::handshake_timeout,
                                     [this] { close_socket(); });
    if (ec == error::handshake_timeout)
        result.detail = explain_accept_timeout(result.at, cfg_->handshake_timeout);
    if (ec)
        co_return accept_failed(result, ec);
    if (conn_.end.decided() != end_reason::kind::none || cancelled(co_await asio::this_coro::cancellation_state)) {
        result.detail = "cancelled";
        co_return accept_failed(result, asio::error::operation_aborted);
    }
    subprotocol_ = std::move(result.subprotocol);
    if (params.budget && !budget_) {
        budget_ = std::make_unique<budget_account>(params.budget);
        budget_watch_ = params.watch;
    }
    if (params.receive_queue_limit > 0 && !inbox_)
        inbox_ = std::make_unique<inbox>(strand_, params.receive_queue_limit, params.receive_queue_bytes, budget_.get());
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
