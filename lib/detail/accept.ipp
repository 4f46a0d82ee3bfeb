// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The server side of a session: adopting an accepted socket, the upgrade with its
// deadlines and HTTP refusals, and the receive queue behind connection::receive().

namespace vigil {

namespace detail {

// Named types, not lambdas: g++ rejects types without linkage in the coroutine frames of
// functions defined outside the main file (-Wsubobject-linkage).
struct socket_closer {
    session::impl* self;
    void operator()() const { self->close_socket(); }
};

struct server_header {
    std::string name;
    void operator()(websocket::response_type& res) const { res.set(beast::http::field::server, name); }
};

struct control_frame_relay {
    session::impl* self;
    void operator()(websocket::frame_type kind, beast::string_view payload) const
    {
        self->on_control_frame(kind, payload);
    }
};

}  // namespace detail

detail::accept_result session::impl::accept_failed(detail::accept_result& result, error_code ec)
{
    if (cancel_requested_)
        ec = asio::error::operation_aborted;
    result.ec = ec;
    end_connection(ec, result.detail);
    return result;
}

asio::awaitable<error_code> session::impl::tls_accept()
{
    auto [ec] = co_await ws_->next_layer().tls()->async_handshake(asio::ssl::stream_base::server,
                                                                   asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

asio::awaitable<error_code> session::impl::respond(unsigned status, std::string body, std::string retry_after)
{
    namespace http = beast::http;
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::server, server_name_);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.set(http::field::connection, "close");
    if (!retry_after.empty())
        res.set(http::field::retry_after, retry_after);
    res.body() = std::move(body) + "\n";
    res.prepare_payload();
    auto [ec, n] = co_await http::async_write(ws_->next_layer(), res, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

asio::awaitable<error_code> session::impl::read_upgrade(detail::accept_params& params, detail::accept_result& result)
{
    namespace http = beast::http;
    http::request_parser<http::empty_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(params.max_request_header, UINT32_MAX)));
    parser.body_limit(0);  // an upgrade request has no body
    auto [ec, n] = co_await http::async_read(ws_->next_layer(), rx_, parser, asio::as_tuple(asio::use_awaitable));
    if (ec) {
        if (ec == http::error::header_limit) {
            result.detail = "upgrade request header larger than " + std::to_string(params.max_request_header) +
                            " bytes (max_request_header)";
            co_await respond(431, "request header too large", {});
            co_return make_http_status_error(431);
        }
        if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
            ec != http::error::end_of_stream &&
            ec != http::error::partial_message) {
            // Garbage instead of HTTP: say what was wrong, the way a web server would.
            result.detail = "malformed upgrade request: " + ec.message();
            co_await respond(400, "malformed HTTP request: " + ec.message(), {});
            co_return make_http_status_error(400);
        }
        result.detail = with_context("reading the upgrade request", ec);
        co_return ec;
    }
    auto& req = parser.get();
    result.target = std::string(req.target());
    if (params.refuse) {
        const auto secs = (params.retry_after.count() + 999) / 1000;
        result.detail = "at max_connections: answered 503 with Retry-After " + std::to_string(secs);
        co_await respond(503, "too many connections, retry later", std::to_string(secs));
        co_return make_http_status_error(503);
    }
    if (!websocket::is_upgrade(req)) {
        result.detail = "not a WebSocket upgrade request: " + std::string(req.method_string()) + " " + result.target;
        co_await respond(400, "this endpoint speaks WebSocket only", {});
        co_return make_http_status_error(400);
    }
    // Beast checks the rest (version, key) and answers 400 or 426 itself.
    auto [aec] = co_await ws_->async_accept(req, asio::as_tuple(asio::use_awaitable));
    if (aec)
        result.detail = with_context("WebSocket upgrade refused", aec);
    co_return aec;
}

asio::awaitable<detail::accept_result> session::impl::accept_op(asio::ip::tcp::socket sock, detail::accept_params params)
{
    co_await enable_any_cancellation();
    co_await asio::this_coro::throw_if_cancelled(false);
    detail::accept_result result;
    if (state_ != state::idle) {
        result.ec = error::already_running;
        co_return result;
    }
    state_ = state::connecting;
    start_connection();
    server_name_ = params.server_name;
    ws_.reset();
    ws_.emplace(std::move(sock), params.tls);
    {
        error_code ignored;
        ws_->next_layer().socket().set_option(asio::ip::tcp::no_delay(true), ignored);
    }

    if (params.tls) {
        auto ec = co_await detail::with_deadline(tls_accept(), cfg_->tls_handshake_timeout, error::tls_handshake_timeout,
                                                 detail::socket_closer{this});
        if (ec) {
            result.detail = ec == error::tls_handshake_timeout
                                ? "no TLS handshake within " + std::to_string(cfg_->tls_handshake_timeout.count()) +
                                      " ms (tls_handshake_timeout)"
                                : with_context("TLS handshake", ec);
            co_return accept_failed(result, ec);
        }
    }

    // One deadline over the whole upgrade: a client that sends nothing, or dribbles its
    // request a byte at a time, is dropped when it passes.
    ws_->set_option(websocket::stream_base::timeout{websocket::stream_base::none(), websocket::stream_base::none(),
                                                    false});
    ws_->set_option(websocket::stream_base::decorator(detail::server_header{server_name_}));
    ws_->read_message_max(cfg_->max_message_size);
    ws_->control_callback(detail::control_frame_relay{this});
    auto ec = co_await detail::with_deadline(read_upgrade(params, result), cfg_->handshake_timeout,
                                             error::handshake_timeout, detail::socket_closer{this});
    if (ec) {
        if (ec == error::handshake_timeout)
            result.detail = "no complete upgrade request within " + std::to_string(cfg_->handshake_timeout.count()) +
                            " ms (handshake_timeout)";
        co_return accept_failed(result, ec);
    }
    if (cancel_requested_ || detail::cancelled(co_await asio::this_coro::cancellation_state)) {
        result.detail = "cancelled";
        co_return accept_failed(result, asio::error::operation_aborted);
    }
    // As on the client: Beast's timer only backstops a close handshake the peer starts.
    ws_->set_option(websocket::stream_base::timeout{2 * cfg_->close_timeout, websocket::stream_base::none(), false});
    const auto now = clock_type::now();
    last_rx_ = last_data_ = ping_sent_ = now;
    rx_.clear();
    inbox_mode_ = params.receive_queue_limit > 0;
    inbox_limit_ = params.receive_queue_limit;
    state_ = state::open;
    co_return result;
}

asio::awaitable<received> session::impl::receive_op()
{
    co_await enable_any_cancellation();
    co_await asio::this_coro::throw_if_cancelled(false);
    for (;;) {
        if (!inbox_.empty()) {
            received r(std::move(inbox_.front()));
            inbox_.pop_front();
            if (paused_ && inbox_.size() < inbox_limit_)
                reader_resume_.notify();
            co_return r;
        }
        if (ended_)
            co_return received{ended_with_, {}, message_type::text};
        if (state_ == state::idle)
            co_return received{error::not_connected, {}, message_type::text};
        if (inbox_wake_.waiting())
            co_return received{error::already_running, {}, message_type::text};
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return received{asio::error::operation_aborted, {}, message_type::text};
        auto [ec] = co_await inbox_wake_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec)
            co_return received{asio::error::operation_aborted, {}, message_type::text};
    }
}

// ---------------------------------------------------------------------------------------
// The server's hooks.

asio::awaitable<detail::accept_result> detail::session_access::accept(session& s, asio::ip::tcp::socket sock,
                                                                      accept_params params)
{
    co_return co_await asio::co_spawn(s.impl_->strand_, s.impl_->accept_op(std::move(sock), std::move(params)),
                                      asio::use_awaitable);
}

asio::awaitable<received> detail::session_access::receive(session& s)
{
    co_return co_await asio::co_spawn(s.impl_->strand_, s.impl_->receive_op(), asio::use_awaitable);
}

const asio::any_io_executor& detail::session_access::executor(const session& s) noexcept
{
    return s.impl_->strand_;
}

void detail::session_access::send_shared(session& s, std::shared_ptr<void> owner,
                                         std::shared_ptr<const std::string> data, message_type type)
{
    // A broadcast reaches connections that may end (and be freed) before this step runs.
    asio::dispatch(s.impl_->strand_,
                   [p = s.impl_.get(), owner = std::move(owner), data = std::move(data), type]() mutable {
                       p->enqueue(session::impl::outgoing{{}, type, false, {}, {}, std::move(data), true});
                   });
}

void detail::session_access::track_writes(session& s, std::function<void(std::uint64_t)> on_confirmed)
{
    s.impl_->on_confirmed_ = std::move(on_confirmed);
}

std::uint64_t detail::session_access::writes(const session& s) noexcept
{
    return s.impl_->written_;
}

void detail::session_access::end_as(session& s, error_code ec, std::string detail)
{
    auto& p = *s.impl_;
    if (p.end_as_)
        return;  // the first reason stands (a slow consumer is still one during shutdown)
    p.end_as_ = ec;
    p.end_as_detail_ = std::move(detail);
}

}  // namespace vigil
