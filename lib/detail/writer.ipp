// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The writer arm of run(): the only code that writes data frames, so messages go out one at
// a time in send() order, and the application's close waits behind the messages sent before
// it. Each write's start is registered with the watchdog, which enforces write_timeout.

namespace vigil {

asio::awaitable<error_code> session::impl::writer()
{
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation(),
                                                       detail::any_cancellation_as_terminal{});
    co_await asio::this_coro::throw_if_cancelled(false);
    for (;;) {
        // Cancellation is delivered once, to whatever operation is pending at that moment. If
        // that operation still succeeded, the next one would never hear of it: look first.
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        while (queue_.empty()) {
            co_await writer_wake_.async_wait(asio::as_tuple(asio::use_awaitable));
            if (detail::cancelled(co_await asio::this_coro::cancellation_state))
                co_return asio::error::operation_aborted;
        }
        if (queue_.front().is_close) {
            auto reason = queue_.front().close;
            if (!queue_.front().internal)
                close_handler_.emplace(std::move(queue_.front().handler));
            queue_.pop_front();
            close_requested_ = true;
            // A slow consumer's close was already timed from the overflow.
            if (!closing_) {
                closing_ = true;
                close_started_ = clock_type::now();
                set_deadline(close_started_ + cfg_.close_timeout);
            }
            auto [ec] = co_await ws_->async_close(reason, asio::as_tuple(asio::use_awaitable));
            closing_ = false;
            // A clean close ends run() with success; run() completes close_handler_ with
            // whatever run() returns.
            co_return ec;
        }
        // Out of the queue while it is written: heartbeat messages may be inserted ahead of
        // the queued ones meanwhile, which moves deque elements (and short strings' bytes).
        inflight_.emplace(std::move(queue_.front()));
        queue_.pop_front();
        writing_ = true;
        write_started_ = clock_type::now();
        if (cfg_.write_timeout.count() > 0)
            set_deadline(write_started_ + cfg_.write_timeout);
        ws_->binary(inflight_->type == message_type::binary);
        auto [ec, n] = co_await ws_->async_write(inflight_->bytes(), asio::as_tuple(asio::use_awaitable));
        writing_ = false;
        // Cut off because the session is ending for another reason (we were cancelled, or
        // the first arm to finish closed the socket under us): leave the message in flight,
        // run() reports it with the reason the session ended.
        if (ec && (cause_ || detail::cancelled(co_await asio::this_coro::cancellation_state)))
            co_return ec;
        outgoing done(std::move(*inflight_));
        inflight_.reset();
        // The handler may run inline and send again: the message is out of the way. The
        // count moves first, so that a handler resumed inline reads its own message's number.
        if (!done.internal) {
            if (!ec) {
                ++written_;
                if (on_confirmed_ && !ping_outstanding_)
                    ticker_timer_.cancel();  // a confirming ping is due
            }
            complete(std::move(done.handler), ec);
        }
        if (ec)
            co_return ec;
    }
}

}  // namespace vigil
