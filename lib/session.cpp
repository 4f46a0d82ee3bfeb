// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The only translation unit that instantiates Beast's websocket templates: users and tests
// include <vigil/session.hpp>, which names no Beast type, and pay for Beast once, here.

#include <vigil/session.hpp>

#include "detail/serialized.hpp"
#include "detail/session_impl.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <exception>
#include <random>
#include <variant>

namespace vigil {

namespace {

// Any cancellation of a session operation means "stop and tear down".
auto enable_any_cancellation()
{
    return asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation(),
                                                     detail::any_cancellation_as_terminal{});
}

std::string with_context(std::string what, const error_code& ec)
{
    return std::move(what) + ": " + ec.message() + " [" + error_name(ec) + "]";
}

}  // namespace

session::impl::impl(asio::any_io_executor ex, std::shared_ptr<const session_config> cfg)
    : strand_(detail::serialized(std::move(ex))),
      cfg_(cfg ? std::move(cfg) : std::make_shared<const session_config>()),
      inbox_wake_(strand_),
      reader_resume_(strand_),
      tk_wake_(strand_)
{
    if (const auto* io = strand_.target<asio::io_context::executor_type>())
        wheel_ = &asio::use_service<detail::timer_wheel>(io->context());  // no strand: one thread
    else
        timer_ = std::make_unique<asio::steady_timer>(strand_);
    tk_entry_.fire = &impl::tk_fired;
    tk_entry_.arg = this;
    // Seeds differ per session without a system call each: one random_device per thread.
    thread_local std::minstd_rand seeder(std::random_device{}());
    rng_.seed(static_cast<std::minstd_rand::result_type>(seeder()));
}

void session::impl::start_connection()
{
    last_ = disconnect_info{};
    cancel_requested_ = close_requested_ = close_queued_ = closing_ = writing_ = wr_busy_ = false;
    ping_outstanding_ = paused_ = ended_ = overflowed_ = false;
    handler_error_ = nullptr;
    end_as_.reset();
    end_as_detail_.clear();
    ended_with_ = {};
    inbox_.clear();
    inflight_.reset();
    written_ = ping_covers_ = 0;
    heartbeat_ = cfg_->heartbeat;  // this connection's own copy: a stateful policy starts afresh
}

// ---------------------------------------------------------------------------------------
// connect

asio::awaitable<error_code> session::impl::resolve_and_connect(const endpoint& ep)
{
    // getaddrinfo runs on Asio's resolver thread and cannot be interrupted: cancel() only
    // takes effect once it returns, which with a dead DNS server can be many seconds. So
    // the lookup reports into a shared state and we wait on a timer that the deadline (or
    // the caller) can cancel at once; a lookup we gave up on finishes in the background.
    auto state = std::make_shared<lookup>(strand_);
    lookup_ = state;
    resolver_->async_resolve(ep.host, std::to_string(ep.port),
                             [state](error_code ec, asio::ip::tcp::resolver::results_type results) {
                                 state->ec = ec;
                                 state->results = std::move(results);
                                 state->finished = true;
                                 state->done.cancel();
                             });
    co_await state->done.async_wait(asio::as_tuple(asio::use_awaitable));
    lookup_.reset();
    if (!state->finished)
        co_return asio::error::operation_aborted;
    if (state->ec) {
        last_.detail = with_context("resolving \"" + ep.host + "\"", state->ec);
        co_return state->ec;
    }
    auto [cec, peer] = co_await asio::async_connect(ws_->next_layer().socket(), state->results,
                                                    asio::as_tuple(asio::use_awaitable));
    if (cec)
        last_.detail = with_context("connecting to " + ep.host + " port " + std::to_string(ep.port), cec);
    co_return cec;
}

asio::awaitable<error_code> session::impl::tls_handshake()
{
    auto [ec] = co_await ws_->next_layer().tls()->async_handshake(asio::ssl::stream_base::client,
                                                                   asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

asio::awaitable<error_code> session::impl::ws_handshake(websocket::response_type& res, const endpoint& ep)
{
    auto [ec] = co_await ws_->async_handshake(res, ep.host_header, ep.target, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

asio::awaitable<error_code> session::impl::close_frame(websocket::close_reason reason)
{
    auto [ec] = co_await ws_->async_close(reason, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

error_code session::impl::setup_tls_context(std::string& detail)
{
    if (cfg_->tls.context) {
        tls_ctx_ = cfg_->tls.context;
        return {};
    }
    if (tls_ctx_)
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
    tls_ctx_ = std::move(ctx);
    return {};
}

error_code session::impl::fail_connect(error_code ec, std::string detail)
{
    if (cancel_requested_)
        ec = asio::error::operation_aborted;
    end_connection(ec, std::move(detail));
    return ec;
}

asio::awaitable<error_code> session::impl::connect_op(std::string url)
{
    co_await enable_any_cancellation();
    co_await asio::this_coro::throw_if_cancelled(false);
    if (state_ != state::idle)
        co_return error::already_running;
    state_ = state::connecting;
    start_connection();

    endpoint ep;
    std::string detail;
    if (auto ec = parse_url(url, ep, &detail))
        co_return fail_connect(ec, std::move(detail));
    if (auto ec = validate(*cfg_, &detail))
        co_return fail_connect(ec, std::move(detail));
    if (ep.tls) {
        if (auto ec = setup_tls_context(detail))
            co_return fail_connect(ec, std::move(detail));
    }

    ws_.reset();
    ws_.emplace(strand_, ep.tls ? tls_ctx_.get() : nullptr);
    if (!resolver_)
        resolver_ = std::make_unique<asio::ip::tcp::resolver>(strand_);
    auto aborted = [this]() -> bool { return cancel_requested_; };

    // 1. DNS + TCP.
    auto ec = co_await detail::with_deadline(resolve_and_connect(ep), cfg_->connect_timeout, error::connect_timeout,
                                             [this] {
                                                 resolver_->cancel();
                                                 close_socket();
                                             });
    if (ec) {
        if (ec == error::connect_timeout)
            last_.detail = "no connection to " + ep.host + " port " + std::to_string(ep.port) + " within " +
                           std::to_string(cfg_->connect_timeout.count()) + " ms (connect_timeout)";
        co_return fail_connect(aborted() ? error_code(asio::error::operation_aborted) : ec, last_.detail);
    }
    {
        error_code ignored;
        ws_->next_layer().socket().set_option(asio::ip::tcp::no_delay(true), ignored);
    }

    // 2. TLS, verifying the certificate against the URL's host.
    if (ep.tls) {
        SSL* ssl = ws_->next_layer().tls()->native_handle();
        if (!ep.host_is_ip)
            SSL_set_tlsext_host_name(ssl, ep.host.c_str());  // no SNI for IP literals (RFC 6066)
        if (!cfg_->tls.insecure_skip_verify) {
            if (ep.host_is_ip)
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ep.host.c_str());
            else
                SSL_set1_host(ssl, ep.host.c_str());
        }
        ec = co_await detail::with_deadline(tls_handshake(), cfg_->tls_handshake_timeout, error::tls_handshake_timeout,
                                            [this] { close_socket(); });
        if (ec) {
            std::string why;
            if (ec == error::tls_handshake_timeout) {
                why = "no TLS handshake with " + ep.host + " within " +
                      std::to_string(cfg_->tls_handshake_timeout.count()) + " ms (tls_handshake_timeout)";
            } else {
                why = with_context("TLS handshake with " + ep.host, ec);
                const long verify = SSL_get_verify_result(ssl);
                if (verify != X509_V_OK)
                    why += std::string(" (certificate: ") + X509_verify_cert_error_string(verify) + ")";
            }
            co_return fail_connect(aborted() ? error_code(asio::error::operation_aborted) : ec, std::move(why));
        }
    }

    // 3. The upgrade. Our deadline bounds it; Beast's own timer is kept off until the
    // connection is open, so that the two cannot race.
    ws_->set_option(websocket::stream_base::timeout{websocket::stream_base::none(), websocket::stream_base::none(),
                                                    false});
    ws_->set_option(websocket::stream_base::decorator([this](websocket::request_type& req) {
        req.set(beast::http::field::user_agent, cfg_->user_agent);
        for (const auto& [name, value] : cfg_->headers)
            req.set(name, value);
    }));
    ws_->read_message_max(cfg_->max_message_size);
    ws_->control_callback(
        [this](websocket::frame_type kind, beast::string_view payload) { on_control_frame(kind, payload); });
    websocket::response_type res;
    ec = co_await detail::with_deadline(ws_handshake(res, ep), cfg_->handshake_timeout, error::handshake_timeout,
                                        [this] { close_socket(); });
    if (ec) {
        std::string why;
        if (ec == websocket::error::upgrade_declined) {
            last_.http_status = res.result_int();
            ec = make_http_status_error(last_.http_status);
            if (auto it = res.find(beast::http::field::retry_after); it != res.end()) {
                if (auto delay = parse_retry_after(it->value()))
                    last_.retry_after = *delay;
            }
            why = "upgrade rejected by " + ep.host + ": HTTP " + std::to_string(last_.http_status) + " " +
                  std::string(res.reason());
        } else if (ec == error::handshake_timeout) {
            why = "no answer to the upgrade request within " + std::to_string(cfg_->handshake_timeout.count()) +
                  " ms (handshake_timeout)";
        } else {
            why = with_context("WebSocket handshake with " + ep.host, ec);
        }
        co_return fail_connect(aborted() ? error_code(asio::error::operation_aborted) : ec, std::move(why));
    }
    if (aborted() || detail::cancelled(co_await asio::this_coro::cancellation_state))
        co_return fail_connect(asio::error::operation_aborted, "cancelled");

    // From now on Beast's handshake timer is a backstop for the close handshake the peer
    // starts (Beast answers it inside our pending read, then waits for the TCP teardown).
    // Our own close is timed by the timekeeper; Beast's timer runs twice as long so that the
    // two never race and close_timeout is reported as itself. Keep-alive is ours alone.
    ws_->set_option(websocket::stream_base::timeout{2 * cfg_->close_timeout, websocket::stream_base::none(), false});

    const auto now = clock_type::now();
    last_rx_ = last_data_ = ping_sent_ = now;
    rx_.clear();
    state_ = state::open;
    notify(events_.on_connected);
    if (handler_error_) {
        auto e = std::exchange(handler_error_, nullptr);
        end_connection(error::handler_exception, "on_connected threw");
        std::rethrow_exception(e);
    }
    co_return error_code{};
}

// ---------------------------------------------------------------------------------------
// run

}  // namespace vigil

#include "detail/accept.ipp"
#include "detail/reader.ipp"
#include "detail/timekeeper.ipp"
#include "detail/writer.ipp"

namespace vigil {

asio::awaitable<error_code> session::impl::run_op(bool own_coroutine)
{
    using namespace asio::experimental::awaitable_operators;
    // Awaited from our strand (as advised), run() costs no hop and no co_spawn frame that a
    // long-lived connection would hold for its whole life; from elsewhere, hop.
    if (!own_coroutine && (co_await asio::this_coro::executor) != strand_) {
        co_return co_await run_from_elsewhere();
    }
    // Awaited directly, this body runs in the caller's coroutine, whose cancellation state
    // is the caller's: its filter stays as it is, and its throw-if-cancelled setting is put
    // back before returning (a caller's loop must still throw at its next wait once
    // cancelled). Only a coroutine of our own lets every kind of cancellation in.
    if (own_coroutine)
        co_await enable_any_cancellation();
    const bool caller_throws = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    error_code ec;
    std::exception_ptr failure;  // end_run() rethrows what a handler threw
    if (state_ == state::running || state_ == state::closing) {
        ec = error::already_running;
    } else if (state_ != state::open) {
        ec = error::not_connected;
    } else {
        state_ = state::running;
        cause_.reset();
        co_await (reader() || timekeeper());
        // The rest in a plain function: this frame lives as long as the connection, and holds
        // whatever its body does.
        try {
            ec = end_run(detail::cancelled(co_await asio::this_coro::cancellation_state));
        } catch (...) {
            failure = std::current_exception();
        }
    }
    co_await asio::this_coro::throw_if_cancelled(caller_throws);
    if (failure)
        std::rethrow_exception(failure);
    co_return ec;
}

// The hop in a coroutine of its own: its co_spawn state is no part of run_op()'s frame when
// run() is awaited on the strand.
asio::awaitable<error_code> session::impl::run_from_elsewhere()
{
    co_return co_await asio::co_spawn(strand_, run_op(true), asio::use_awaitable);
}

error_code session::impl::end_run(bool cancelled)
{
    // Not the value of `||`: the arm that finished first says why (first()), and `||`
    // reports only which arm it saw complete.
    error_code ec = cause_.value_or(error_code(asio::error::operation_aborted));
    if (cancel_requested_ || cancelled)
        ec = asio::error::operation_aborted;
    last_.silent_for = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - last_rx_);
    state_ = state::closing;

    if (end_as_)
        ec = *end_as_;  // idle_timeout, slow consumer, server shutdown: however the close went

    std::string why = end_as_ ? std::move(end_as_detail_) : std::move(last_.detail);
    if (why.empty()) {
        if (!ec)
            why = "closed by the application";
        else if (close_code_of(ec))
            why = "peer closed with code " + std::to_string(last_.close_code) +
                  (last_.close_reason.empty() ? std::string() : " \"" + last_.close_reason + "\"");
        else if (ec == asio::error::operation_aborted)
            why = "cancelled";
        else
            why = with_context("connection lost", ec);
    }
    end_connection(ec, std::move(why));
    if (handler_error_)
        std::rethrow_exception(std::exchange(handler_error_, nullptr));
    return ec;
}

error_code session::impl::first(error_code ec)
{
    // Arms that end after the first were cancelled, or failed because the first one tore
    // something down: only the first says why the session ended.
    if (!cause_) {
        cause_ = ec;
        // A failure means the transport is finished. Closing the socket now makes every
        // other pending operation fail at once, so `||` cannot be held up by one that
        // ignores cancellation in some state (Beast's close handshake, for one).
        if (ec)
            close_socket();
    }
    return ec;
}

// ---------------------------------------------------------------------------------------
// close, send, cancel

asio::awaitable<error_code> session::impl::close_op(std::uint16_t code, std::string reason)
{
    co_await enable_any_cancellation();
    co_await asio::this_coro::throw_if_cancelled(false);
    websocket::close_reason cr(static_cast<websocket::close_code>(code), reason);
    if (state_ == state::running && !close_queued_) {
        close_queued_ = true;
        auto token = asio::as_tuple(asio::use_awaitable);
        auto [ec] = co_await asio::async_initiate<decltype(token), void(error_code)>(
            [this, cr](auto handler) {
                queue_.push_back(outgoing{{}, message_type::text, true, std::make_unique<websocket::close_reason>(cr),
                                          handler_type(std::move(handler))});
                wake_writer();
            },
            token);
        co_return ec;
    }
    if (state_ == state::running)
        co_return error::already_running;  // a close is already under way
    if (state_ != state::open)
        co_return error::not_connected;

    // Open but nobody is running it: do the handshake here.
    state_ = state::closing;
    close_requested_ = true;
    auto ec = co_await detail::with_deadline(close_frame(cr), cfg_->close_timeout, error::close_timeout,
                                             [this] { close_socket(); });
    last_.silent_for = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - last_rx_);
    end_connection(ec, ec ? with_context("closing", ec) : std::string("closed by the application"));
    co_return ec;
}

void session::impl::end_connection(error_code ec, std::string detail)
{
    // Nothing of ours is pending any more; destroying the stream also stops Beast's own
    // timer, which an aborted close handshake would otherwise leave waiting.
    close_socket();
    ws_.reset();
    state_ = state::idle;
    last_.reason = ec;
    last_.detail = std::move(detail);
    ended_ = true;
    // An application's clean close must still read as an end, never as a message.
    ended_with_ = ec ? ec : error_code(error::not_connected);
    inbox_wake_.notify_later();
    // Nothing queued may vanish: unwritten messages complete with the reason we ended
    // (never with success, even after a clean close). Posted, not run inline: a waiting
    // coroutine resumed in the middle of teardown could be one that is itself being
    // cancelled (a supervisor's arm), and must not re-enter it.
    fail_queue(ec ? ec : error_code(error::not_connected));
    if (close_handler_) {
        complete(std::move(*close_handler_), ec, false);
        close_handler_.reset();
    }
    notify(events_.on_disconnected, std::as_const(last_));
}

void session::impl::enqueue(outgoing msg)
{
    auto refuse = [&](error_code ec) {
        if (!msg.internal)
            complete(std::move(msg.handler), ec, false);
    };
    const auto s = state_.load();
    if (overflowed_) {
        refuse(error::slow_consumer);
        return;
    }
    if ((s != state::open && s != state::running) || close_queued_) {
        refuse(error::not_connected);
        return;
    }
    if (queue_.size() >= cfg_->send_queue_limit) {
        if (cfg_->send_queue_overflow == overflow_policy::disconnect) {
            refuse(error::slow_consumer);
            overflow();
        } else {
            refuse(error::send_queue_full);
        }
        return;
    }
    queue_.push_back(std::move(msg));
    wake_writer();
}

void session::impl::enqueue_internal(std::string data)
{
    const auto s = state_.load();
    if ((s != state::open && s != state::running) || close_requested_ || overflowed_)
        return;
    // Ahead of the application's queue, so that a backlog does not delay the ping (or our
    // answer to the peer's) and make a live connection look dead. Outside the send queue
    // limit: at most one ping and one answer per ping are ever waiting.
    queue_.push_front(outgoing{std::move(data), message_type::text, false, {}, {}, nullptr, true});
    wake_writer();
}

void session::impl::overflow()
{
    if (overflowed_)
        return;
    overflowed_ = true;
    // What is still queued will never go out: say so now. The message being written (if
    // any) finishes or is cut off with the connection.
    fail_queue(error::slow_consumer, false);
    // 1013, try again later: a transient condition for the peer's supervisor.
    say_goodbye(error::slow_consumer,
                "send queue overflow: " + std::to_string(cfg_->send_queue_limit) +
                    " messages waiting, the peer does not keep up (slow_consumer)",
                websocket::close_reason(websocket::close_code::try_again_later, "slow consumer"));
}

void session::impl::say_goodbye(error_code as, std::string detail, websocket::close_reason why)
{
    if (end_as_)
        return;  // already ending for a reason of its own
    end_as_ = as;
    end_as_detail_ = std::move(detail);
    if (state_ != state::running) {
        close_socket();
        if (state_ == state::open)
            end_connection(as, end_as_detail_);
        return;
    }
    if (close_requested_ || close_queued_)
        return;  // a close handshake is on its way already; run() reports `as`
    // Through the writer, behind what is queued, while the reader keeps reading: the peer's
    // answer ends run() cleanly. Bounded by close_timeout from now, the write in progress
    // included (the timekeeper enforces it).
    queue_.push_back(
        outgoing{{}, message_type::text, true, std::make_unique<websocket::close_reason>(std::move(why)), {}, nullptr, true});
    close_queued_ = true;
    closing_ = true;
    close_started_ = clock_type::now();
    set_deadline(close_started_ + cfg_->close_timeout);
    wake_writer();
}

bool session::impl::heartbeat_consumed(std::string_view data)
{
    try {
        if (heartbeat_->is_pong(data)) {
            if (ping_outstanding_)
                pong_arrived(clock_type::now());
            return true;
        }
        if (auto reply = heartbeat_->answer(data)) {
            enqueue_internal(std::move(*reply));
            return true;
        }
    } catch (...) {
        record_handler_exception();
        return true;
    }
    return false;
}

clock_type::duration session::impl::draw_ping_early()
{
    if (cfg_->ping_jitter <= 0.0)
        return {};
    const auto span = std::chrono::duration<double, clock_type::period>(cfg_->ping_interval) * cfg_->ping_jitter;
    std::uniform_real_distribution<double> u(0.0, 1.0);
    return std::chrono::duration_cast<clock_type::duration>(span * u(rng_));
}

void session::impl::wake_writer()
{
    write_next();
}

void session::impl::complete(handler_type h, error_code ec, bool inline_ok)
{
    // Either way the handler then runs through its own associated executor (a caller's
    // coroutine resumes on its executor, not necessarily our strand). Inside an initiating
    // function it must not run before the initiation returns, hence post.
    if (inline_ok)
        asio::dispatch(strand_, asio::append(std::move(h), ec));
    else
        asio::post(strand_, asio::append(std::move(h), ec));
}

void session::impl::fail_queue(error_code ec, bool with_inflight)
{
    if (with_inflight && inflight_) {
        // The oldest first: it was sent before everything still queued.
        outgoing msg(std::move(*inflight_));
        inflight_.reset();
        if (!msg.internal)
            complete(std::move(msg.handler), ec, false);
    }
    auto pending = std::move(queue_);
    queue_.clear();
    for (auto& msg : pending)
        if (!msg.internal)
            complete(std::move(msg.handler), ec, false);
}

void session::impl::close_socket() noexcept
{
    if (ws_) {
        error_code ignored;
        ws_->next_layer().socket().close(ignored);
    }
}

void session::impl::cancel_now()
{
    const auto s = state_.load();
    if (s == state::idle)
        return;
    cancel_requested_ = true;
    if (resolver_)
        resolver_->cancel();
    if (lookup_)
        lookup_->done.cancel();
    close_socket();
    // Open but not running: no operation will notice, so end the connection here.
    if (s == state::open) {
        last_.silent_for = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - last_rx_);
        end_connection(asio::error::operation_aborted, "cancelled");
    }
}

void session::impl::record_handler_exception()
{
    if (!handler_error_)
        handler_error_ = std::current_exception();
    set_deadline(clock_type::time_point::min());  // the timekeeper ends the session
}

void session::impl::on_control_frame(websocket::frame_type kind, beast::string_view payload)
{
    const auto now = clock_type::now();
    last_rx_ = now;
    if (kind == websocket::frame_type::pong && ping_outstanding_ &&
        std::string_view(payload.data(), payload.size()) == detail::ping_text(ping_seq_).view())
        pong_arrived(now);
}

void session::impl::pong_arrived(clock_type::time_point now)
{
    ping_outstanding_ = false;
    notify(events_.on_pong, std::chrono::duration_cast<std::chrono::microseconds>(now - ping_sent_));
    if (on_confirmed_) {
        try {
            on_confirmed_(ping_covers_);
        } catch (...) {
            record_handler_exception();
        }
        // Messages written since that ping wait for the next one: ask for it now.
        if (written_ > ping_covers_)
            tk_arm(clock_type::now());
    }
}

// ---------------------------------------------------------------------------------------
// The public face: every operation hops onto the strand, so callers may be anywhere.

session::session(asio::any_io_executor ex, session_config cfg)
    : impl_(std::make_unique<impl>(std::move(ex), std::make_shared<const session_config>(std::move(cfg))))
{
}

session::session(asio::any_io_executor ex, std::shared_ptr<const session_config> cfg)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(cfg)))
{
}

session::~session() = default;

session::executor_type session::get_executor() const noexcept
{
    return impl_->strand_;
}

const session_config& session::config() const noexcept
{
    return *impl_->cfg_;
}

void session::set_config(session_config cfg)
{
    impl_->cfg_ = std::make_shared<const session_config>(std::move(cfg));
    impl_->tls_ctx_.reset();
}

session_events& session::events() noexcept
{
    return impl_->events_;
}

asio::awaitable<error_code> session::connect(std::string url)
{
    co_return co_await asio::co_spawn(impl_->strand_, impl_->connect_op(std::move(url)), asio::use_awaitable);
}

asio::awaitable<error_code> session::run()
{
    return impl_->run_op();  // not a coroutine: a frame that would wait for the whole connection
}

asio::awaitable<error_code> session::close(std::uint16_t code, std::string reason)
{
    co_return co_await asio::co_spawn(impl_->strand_, impl_->close_op(code, std::move(reason)), asio::use_awaitable);
}

asio::awaitable<error_code> session::send(std::string data, message_type type)
{
    auto [ec] = co_await async_send(std::move(data), type, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

void session::do_send(std::string data, message_type type, asio::any_completion_handler<void(error_code)> handler)
{
    impl::outgoing msg{std::move(data), type, false, {}, impl::handler_type(std::move(handler))};
    asio::dispatch(impl_->strand_, [p = impl_.get(), msg = std::move(msg)]() mutable { p->enqueue(std::move(msg)); });
}

void session::cancel()
{
    asio::dispatch(impl_->strand_, [p = impl_.get()] { p->cancel_now(); });
}

bool session::is_open() const noexcept
{
    const auto s = impl_->state_.load();
    return s == impl::state::open || s == impl::state::running;
}

const disconnect_info& session::last_disconnect() const noexcept
{
    return impl_->last_;
}

}  // namespace vigil
