// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The reader arm of run(). It keeps one async_read pending for the whole session: Beast
// answers the peer's pings and reports pongs (through the control callback) only while a
// read is pending, so a session that stopped reading would look dead to its peer and blind
// to its own heartbeat.

namespace vigil {

asio::awaitable<error_code> session::impl::reader()
{
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation(),
                                                       detail::any_cancellation_as_terminal{});
    co_await asio::this_coro::throw_if_cancelled(false);
    for (;;) {
        // Cancellation is delivered once, to whatever operation is pending at that moment. If
        // that operation still succeeded, the next one would never hear of it: look first.
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        auto [ec, n] = co_await ws_->async_read(rx_, asio::as_tuple(asio::use_awaitable));
        if (ec) {
            if (ec != websocket::error::closed)
                co_return ec;
            if (close_requested_)
                co_return error_code{};  // the answer to our own close(): a clean end
            const auto& why = ws_->reason();
            last_.close_code = why.code ? static_cast<unsigned>(why.code) : 1005u;
            last_.close_reason.assign(why.reason.data(), why.reason.size());
            co_return make_close_error(last_.close_code);
        }
        last_rx_ = last_data_ = clock_type::now();
        if (events_.on_message) {
            std::string_view data(static_cast<const char*>(rx_.data().data()), rx_.size());
            notify(events_.on_message, data, ws_->got_text() ? message_type::text : message_type::binary);
            if (handler_error_)
                co_return error::handler_exception;
        }
        rx_.consume(n);
    }
}

}  // namespace vigil
