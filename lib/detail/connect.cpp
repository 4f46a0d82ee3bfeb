// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The client's side of opening a connection: the URL, DNS and TCP (and a proxy's tunnel)
// within connect_timeout, TLS with certificate and host name verification within
// tls_handshake_timeout, and the upgrade within handshake_timeout. Each step's failure says
// what and where.

#include "printable.hpp"
#include "proxy_tunnel.hpp"
#include "session_core.hpp"
#include "subprotocols.hpp"
#include "with_deadline.hpp"

#include <vigil/url.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>

namespace vigil::detail {

/// A DNS lookup in progress. getaddrinfo runs on Asio's resolver thread and cannot be
/// interrupted: cancel() only takes effect once it returns, which with a dead DNS server can
/// be many seconds. So the lookup reports into this shared state and the connect waits on a
/// timer that the deadline (or the caller) can cancel at once; a lookup given up on finishes
/// in the background.
struct session_core::lookup {
    enum class state { pending, finished };
    explicit lookup(const asio::any_io_executor& ex) : done(ex, time_point::max()) {}
    asio::steady_timer done;
    state status = state::pending;
    error_code ec;
    asio::ip::tcp::resolver::results_type results;
};

namespace {

std::string ms_text(std::chrono::milliseconds d)
{
    return std::to_string(d.count()) + " ms";
}

// After the tunnel the failures are the server's, but where the bytes went is worth saying.
std::string through(const std::optional<proxy_endpoint>& proxy)
{
    return proxy ? " (through proxy " + proxy->where() + ")" : std::string();
}

// The server's Sec-WebSocket-Protocol answer against what was offered (RFC 6455 4.1: the
// client fails a connection whose server chose a protocol it did not offer).
error_code agree_subprotocol(const session_config& cfg, const websocket::response_type& res, std::string& chosen,
                             std::string& why)
{
    std::vector<std::string> answered;
    for (const auto& field : res) {
        if (field.name() == beast::http::field::sec_websocket_protocol)
            answered.emplace_back(field.value());
    }
    const auto& offered = cfg.subprotocols;
    const std::string offered_text = offered.empty() ? "none" : join_subprotocols(offered);
    if (answered.size() > 1) {
        why = "the server answered " + std::to_string(answered.size()) + " Sec-WebSocket-Protocol headers (offered: " +
              offered_text + ")";
        return error::subprotocol_mismatch;
    }
    if (answered.empty()) {
        if (offered.empty() || !cfg.subprotocol_required)
            return {};
        why = "the server chose no subprotocol (offered: " + offered_text + "; subprotocol_required)";
        return error::subprotocol_mismatch;
    }
    if (std::find(offered.begin(), offered.end(), answered.front()) == offered.end()) {
        why = "the server answered subprotocol \"" + printable(answered.front(), 64, true) + "\", which was not offered (offered: " +
              offered_text + ")";
        return error::subprotocol_mismatch;
    }
    chosen = answered.front();
    return {};
}

}  // namespace

asio::awaitable<error_code> session_core::resolve(const std::string& host, std::uint16_t port,
                                                  asio::ip::tcp::resolver::results_type& out)
{
    auto state = std::make_shared<lookup>(strand_);
    client_->dns = state;
    client_->resolver->async_resolve(host, std::to_string(port),
                                     [state](error_code ec, asio::ip::tcp::resolver::results_type results) {
                                         state->ec = ec;
                                         state->results = std::move(results);
                                         state->status = lookup::state::finished;
                                         state->done.cancel();
                                     });
    co_await state->done.async_wait(asio::as_tuple(asio::use_awaitable));
    client_->dns.reset();
    if (state->status != lookup::state::finished)
        co_return asio::error::operation_aborted;
    if (state->ec) {
        record().detail = with_context("resolving \"" + host + "\"", state->ec);
        co_return state->ec;
    }
    out = std::move(state->results);
    co_return error_code{};
}

// A fresh socket for `remote`, bound to local_address when one is set.
error_code session_core::open_bound(const asio::ip::tcp::endpoint& remote)
{
    auto& sock = ws_->next_layer().socket();
    error_code ec;
    sock.close(ec);
    sock.open(remote.protocol(), ec);
    if (ec) {
        record().detail = with_context("opening a socket", ec);
        return ec;
    }
    if (cfg_->local_address.empty())
        return {};
    sock.bind({asio::ip::make_address(cfg_->local_address, ec), 0}, ec);
    if (!ec)
        return {};
    record().detail = with_context("binding to local_address " + cfg_->local_address, ec);
    // Not an address of this host: the same config fails the same way on every attempt.
    // Others (no ephemeral port left) pass.
    if (ec == boost::system::errc::address_not_available || ec == boost::system::errc::address_family_not_supported)
        return error::local_address_unusable;
    return ec;
}

// Each address in turn, as asio::async_connect would, but on a socket opened and bound here:
// Asio's range connect reopens the socket for every address and would drop the bind.
asio::awaitable<error_code> session_core::connect_each(const asio::ip::tcp::resolver::results_type& results,
                                                       const std::string& where)
{
    std::optional<asio::ip::address> local;
    if (!cfg_->local_address.empty()) {
        error_code ignored;  // validate() checked it
        local = asio::ip::make_address(cfg_->local_address, ignored);
    }
    error_code last = asio::error::host_not_found;
    std::string last_address;
    std::size_t tried = 0;
    for (const auto& entry : results) {
        const auto remote = entry.endpoint();
        if (local && local->is_v4() != remote.address().is_v4())
            continue;  // cannot connect from an address of the other family
        ++tried;
        if (auto ec = open_bound(remote))
            co_return ec;
        auto [ec] = co_await ws_->next_layer().socket().async_connect(remote, asio::as_tuple(asio::use_awaitable));
        if (!ec || ec == asio::error::operation_aborted)
            co_return ec;
        last = ec;
        last_address = remote.address().to_string();
    }
    if (tried == 0 && local) {
        record().detail = "local_address " + cfg_->local_address + " is IPv" + (local->is_v4() ? "4" : "6")
            + ", and none of the " + std::to_string(results.size()) + " addresses of " + where + " is";
        co_return error::local_address_unusable;
    }
    const std::string which =
        tried > 1 ? " (" + std::to_string(tried) + " addresses, the last " + last_address + ")" : std::string();
    record().detail = with_context("connecting to " + where + which, last);
    co_return last;
}

// DNS, TCP and, through a proxy, the tunnel: everything connect_timeout bounds.
asio::awaitable<error_code> session_core::reach(const endpoint& ep)
{
    using step = client_side::step;
    auto& at = client_->at;
    asio::ip::tcp::resolver::results_type results;
    at = step::resolving_target;
    if (!client_->proxy) {
        if (auto ec = co_await resolve(ep.host, ep.port, results))
            co_return ec;
        at = step::connecting;
        co_return co_await connect_each(results, ep.host + " port " + std::to_string(ep.port));
    }
    const auto& p = *client_->proxy;
    std::string target = ep.host;
    if (p.scheme == proxy_scheme::socks5 && !ep.host_is_ip) {
        // socks5:// resolves here (curl's meaning); socks5h:// leaves the name to the proxy.
        if (auto ec = co_await resolve(ep.host, ep.port, results))
            co_return ec;
        target = results.begin()->endpoint().address().to_string();
    }
    at = step::resolving_proxy;
    if (auto ec = co_await resolve(p.host, p.port, results))
        co_return ec;
    at = step::connecting;
    if (auto ec = co_await connect_each(results, "proxy " + p.where()))
        co_return ec;
    at = step::tunnel;
    std::string detail;
    auto ec = co_await open_tunnel(ws_->next_layer().socket(), p, target, ep.port, cfg_->user_agent, detail);
    if (ec)
        record().detail = std::move(detail);
    co_return ec;
}

std::string session_core::explain_connect_timeout(const endpoint& ep) const
{
    const std::string within = " within " + ms_text(cfg_->connect_timeout) + " (connect_timeout)";
    if (!client_->proxy)
        return "no connection to " + ep.host + " port " + std::to_string(ep.port) + within;
    const auto& p = *client_->proxy;
    using step = client_side::step;
    std::string stuck;
    switch (client_->at) {
    case step::resolving_target: stuck = "still resolving \"" + ep.host + "\""; break;
    case step::resolving_proxy: stuck = "still resolving the proxy's name"; break;
    case step::connecting: stuck = "still connecting to the proxy"; break;
    case step::tunnel:
        stuck = p.scheme == proxy_scheme::http ? "the proxy did not answer CONNECT"
                                               : "the SOCKS5 negotiation did not finish";
        break;
    }
    return "no tunnel to " + ep.host + " port " + std::to_string(ep.port) + " through proxy " + p.where() + within
        + ": " + stuck;
}

error_code session_core::choose_route(const endpoint& ep, std::string& detail)
{
    client_->proxy.reset();
    const auto& want = cfg_->proxy;
    const auto env = want.from_environment ? process_environment() : env_lookup();
    const auto choice = choose_proxy(want, ep.tls, ep.host, env);
    if (choice.url.empty())
        return {};
    proxy_endpoint p;
    std::string why;
    if (parse_proxy_url(choice.url, p, &why)) {
        detail = choice.source + (choice.source == "proxy.url" ? ": " : " (from the environment): ") + why;
        return error::invalid_config;
    }
    client_->proxy = std::move(p);
    return {};
}

void session_core::abort_connect() noexcept
{
    if (client_ && client_->resolver)
        client_->resolver->cancel();
    if (client_ && client_->dns)
        client_->dns->done.cancel();
    close_socket();
}

asio::awaitable<error_code> session_core::tls_handshake(asio::ssl::stream_base::handshake_type role)
{
    auto [ec] = co_await ws_->next_layer().tls()->async_handshake(role, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

asio::awaitable<error_code> session_core::upgrade(websocket::response_type& res, const endpoint& ep)
{
    auto [ec] = co_await ws_->async_handshake(res, ep.host_header, ep.target, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

error_code session_core::setup_tls_context(std::string& detail)
{
    auto& tls_ctx = client_->tls_ctx;
    if (cfg_->tls.context) {
        tls_ctx = cfg_->tls.context;
        return {};
    }
    if (tls_ctx)
        return {};
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    error_code ec;
    if (cfg_->tls.insecure_skip_verify) {
        ctx->set_verify_mode(asio::ssl::verify_none, ec);
    } else {
        ctx->set_verify_mode(asio::ssl::verify_peer, ec);
        if (!ec && !cfg_->tls.ca_file.empty())
            ctx->load_verify_file(cfg_->tls.ca_file, ec);
        else if (!ec)
            ctx->set_default_verify_paths(ec);
    }
    if (ec) {
        detail = with_context(cfg_->tls.ca_file.empty() ? std::string("tls: loading the system CA store")
                                                        : "tls.ca_file: cannot load \"" + cfg_->tls.ca_file + "\"",
                              ec);
        return error::invalid_config;
    }
    tls_ctx = std::move(ctx);
    return {};
}

error_code session_core::fail_connect(error_code ec, std::string detail)
{
    // cancel() during the attempt: whatever the step reported, the caller cancelled.
    if (conn_.end.decided() == end_reason::kind::cancelled)
        ec = asio::error::operation_aborted;
    conn_.end.record(end_reason::kind::failure, ec, std::move(detail));
    end_connection();
    return conn_.end.code();
}

void session_core::set_no_delay() noexcept
{
    // Small frames (pings, pongs, chat messages) must not wait for Nagle's algorithm.
    error_code ignored;
    ws_->next_layer().socket().set_option(asio::ip::tcp::no_delay(true), ignored);
}

void session_core::prepare_stream(websocket::stream_base::decorator decorator)
{
    // Beast's own timer and keep-alive pings stay off: every wait has a deadline of ours
    // (the handshake's, then the watchdog's), and two timers for one rule would race.
    ws_->set_option(
        websocket::stream_base::timeout{websocket::stream_base::none(), websocket::stream_base::none(), false});
    ws_->set_option(std::move(decorator));
    ws_->read_message_max(cfg_->max_message_size);
    ws_->control_callback([this](websocket::frame_type kind, beast::string_view payload) {
        // Beast reports a close frame before it answers it: a code forbidden on the wire
        // that it let through is answered 1002 (protocol error) instead of echoed.
        if (kind == websocket::frame_type::close && !close_code_allowed(ws_->reason().code))
            ws_->next_layer().answer_close_with(static_cast<std::uint16_t>(websocket::close_code::protocol_error));
        on_control_frame(kind, payload);
    });
}

std::string session_core::explain_tls_failure(const error_code& ec, const endpoint& ep)
{
    if (ec == error::tls_handshake_timeout)
        return "no TLS handshake with " + ep.host + through(client_->proxy) + " within " +
               ms_text(cfg_->tls_handshake_timeout) + " (tls_handshake_timeout)";
    std::string why = with_context("TLS handshake with " + ep.host + through(client_->proxy), ec);
    const long verify = SSL_get_verify_result(ws_->next_layer().tls()->native_handle());
    if (verify != X509_V_OK)
        why += std::string(" (certificate: ") + X509_verify_cert_error_string(verify) + ")";
    return why;
}

std::string session_core::explain_upgrade_failure(error_code& ec, const websocket::response_type& res,
                                                  const endpoint& ep)
{
    if (ec == websocket::error::upgrade_declined) {
        record().http_status = res.result_int();
        ec = make_http_status_error(record().http_status);
        if (auto it = res.find(beast::http::field::retry_after); it != res.end()) {
            if (auto delay = parse_retry_after(it->value()))
                record().retry_after = *delay;
        }
        return "upgrade rejected by " + ep.host + through(client_->proxy) + ": HTTP " +
               std::to_string(record().http_status) + " " + std::string(res.reason());
    }
    if (ec == error::handshake_timeout)
        return "no answer to the upgrade request within " + ms_text(cfg_->handshake_timeout) + " (handshake_timeout)";
    return with_context("WebSocket handshake with " + ep.host + through(client_->proxy), ec);
}

namespace {

// Sets SNI and the name (or address) the certificate must carry.
void verify_host(SSL* ssl, const endpoint& ep, bool skip_verify)
{
    if (!ep.host_is_ip)
        SSL_set_tlsext_host_name(ssl, ep.host.c_str());  // no SNI for IP literals (RFC 6066)
    if (skip_verify)
        return;
    if (ep.host_is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ep.host.c_str());
    else
        SSL_set1_host(ssl, ep.host.c_str());
}

}  // namespace

asio::awaitable<error_code> session_core::connect_op(std::string url)
{
    co_await enter_operation();
    if (phase_ != phase::idle)
        co_return error::already_running;
    if (auto stale = std::exchange(conn_.end.exception, nullptr))
        std::rethrow_exception(stale);  // on_disconnected threw after a cancel(); see end_connection()
    begin_connection();
    endpoint ep;
    if (auto ec = prepare_connect(url, ep))
        co_return ec;
    if (auto ec = co_await open_transport(ep))
        co_return ec;
    if (auto ec = co_await open_websocket(ep))
        co_return ec;
    opened(clock_type::now());
    emit(&session_events::on_connected);
    if (auto e = std::exchange(conn_.end.exception, nullptr)) {
        end_connection();  // recorded as handler_exception by emit()
        std::rethrow_exception(e);
    }
    co_return error_code{};
}

error_code session_core::prepare_connect(const std::string& url, endpoint& ep)
{
    if (!client_)
        client_ = std::make_unique<client_side>();
    subprotocol_.clear();  // the last connection's, until this one agrees on its own
    std::string detail;
    if (auto ec = parse_url(url, ep, &detail))
        return fail_connect(ec, std::move(detail));
    if (auto ec = validate(*cfg_, &detail))
        return fail_connect(ec, std::move(detail));
    if (auto ec = choose_route(ep, detail))
        return fail_connect(ec, std::move(detail));
    if (ep.tls) {
        if (auto ec = setup_tls_context(detail))
            return fail_connect(ec, std::move(detail));
    }
    ws_.reset();
    ws_.emplace(strand_, ep.tls ? client_->tls_ctx.get() : nullptr);
    if (!client_->resolver)
        client_->resolver = std::make_unique<asio::ip::tcp::resolver>(strand_);
    return {};
}

asio::awaitable<error_code> session_core::open_transport(const endpoint& ep)
{
    // DNS + TCP (+ the proxy's tunnel) within connect_timeout.
    auto ec = co_await with_deadline(reach(ep), cfg_->connect_timeout, error::connect_timeout,
                                     [this] { abort_connect(); });
    if (ec == error::connect_timeout)
        record().detail = explain_connect_timeout(ep);
    if (ec)
        co_return fail_connect(ec, record().detail);
    set_no_delay();
    if (!ep.tls)
        co_return error_code{};
    // TLS, verifying the certificate against the URL's host, within tls_handshake_timeout.
    verify_host(ws_->next_layer().tls()->native_handle(), ep, cfg_->tls.insecure_skip_verify);
    ec = co_await with_deadline(tls_handshake(asio::ssl::stream_base::client), cfg_->tls_handshake_timeout,
                                error::tls_handshake_timeout, [this] { close_socket(); });
    if (ec)
        co_return fail_connect(ec, explain_tls_failure(ec, ep));
    co_return error_code{};
}

asio::awaitable<error_code> session_core::open_websocket(const endpoint& ep)
{
    // The upgrade, within handshake_timeout.
    prepare_stream(websocket::stream_base::decorator([cfg = cfg_, extra = client_->headers](websocket::request_type& req) {
        req.set(beast::http::field::user_agent, cfg->user_agent);
        for (const auto& [name, value] : extra ? *extra : cfg->headers)
            req.set(name, value);
        if (!cfg->subprotocols.empty())
            req.set(beast::http::field::sec_websocket_protocol, join_subprotocols(cfg->subprotocols));
    }));
    apply_deflate(beast::role_type::client);
    websocket::response_type res;
    auto ec = co_await with_deadline(upgrade(res, ep), cfg_->handshake_timeout, error::handshake_timeout,
                                     [this] { close_socket(); });
    if (ec) {
        auto why = explain_upgrade_failure(ec, res, ep);
        co_return fail_connect(ec, std::move(why));
    }
    note_deflate(res);
    // cancel() came while the handshake finished, or the caller's cancellation did.
    if (conn_.end.decided() != end_reason::kind::none || cancelled(co_await asio::this_coro::cancellation_state))
        co_return fail_connect(asio::error::operation_aborted, "cancelled");
    std::string why;
    if (auto sec = agree_subprotocol(*cfg_, res, subprotocol_, why))
        co_return fail_connect(sec, ep.host + through(client_->proxy) + ": " + why);
    co_return error_code{};
}

}  // namespace vigil::detail
