// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The reader arm of run(). It keeps one async_read pending for the whole session: Beast
// answers the peer's pings and reports pongs (through the control callback) only while a
// read is pending, so a session that stopped reading would look dead to its peer and blind
// to its own heartbeat.
//
// Its waits are awaited as deferred operations, not with use_awaitable: use_awaitable wraps
// every operation in a coroutine frame of its own, which an idle connection would hold for
// as long as the read is pending.

namespace vigil {

namespace detail {

// Starts the message read with a handler that has no cancellation slot (see reader()). A
// named type, not a lambda: the reader's frame holds it (-Wsubobject-linkage).
struct start_read {
    session::impl* self;
    template <class Handler>
    void operator()(Handler&& handler) const
    {
        self->ws_->async_read(self->rx_, asio::bind_cancellation_slot(asio::cancellation_slot(),
                                                                      std::forward<Handler>(handler)));
    }
};

}  // namespace detail

asio::awaitable<error_code> session::impl::reader()
{
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation(),
                                                       detail::any_cancellation_as_terminal{});
    co_await asio::this_coro::throw_if_cancelled(false);
    for (;;) {
        // Cancellation is delivered once, to whatever operation is pending at that moment. If
        // that operation still succeeded, the next one would never hear of it: look first.
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return first(asio::error::operation_aborted);
        // No cancellation slot on the read: the socket closing ends it (first() closes it on
        // a failure, the timekeeper when it ends for any reason, tk_stop()), and a read that
        // listened for cancellation would install a handler in the slot every time Beast
        // reads from the socket again, every pong, on every connection.
        auto token = asio::as_tuple(asio::deferred);
        auto [ec, n] = co_await asio::async_initiate<decltype(token), void(error_code, std::size_t)>(
            detail::start_read{this}, token);
        // The work between reads is in plain functions: what a coroutine's body holds, its
        // frame holds, for every connection, for as long as the read is pending.
        if (ec)
            co_return first(read_failed(ec));
        if (auto end = delivered(n))
            co_return first(*end);
        // The application is behind: stop reading until it catches up. TCP then pushes back
        // on the peer, and the peer's silence meanwhile is ours, so neither the heartbeat nor
        // idle_timeout judges it (see the timekeeper); both start afresh on resume.
        if (inbox_mode_ && inbox_.size() >= inbox_limit_ && !co_await paused())
            co_return first(asio::error::operation_aborted);
    }
}

// A coroutine of its own, so that the reader's frame does not carry this wait's state.
asio::awaitable<bool> session::impl::paused()
{
    while (inbox_mode_ && inbox_.size() >= inbox_limit_) {
        paused_ = true;
        auto [ec] = co_await reader_resume_.async_wait(asio::as_tuple(asio::deferred));
        paused_ = false;
        if (ec || detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return false;
        last_rx_ = last_data_ = clock_type::now();
    }
    co_return true;
}

error_code session::impl::read_failed(error_code ec)
{
    if (ec != websocket::error::closed)
        return ec;
    if (close_requested_)
        return {};  // the answer to our own close(): a clean end
    const auto& why = ws_->reason();
    last_.close_code = why.code ? static_cast<unsigned>(why.code) : 1005u;
    last_.close_reason.assign(why.reason.data(), why.reason.size());
    return make_close_error(last_.close_code);
}

std::optional<error_code> session::impl::delivered(std::size_t n)
{
    const auto now = clock_type::now();
    last_rx_ = now;
    const bool text = ws_->got_text();
    const auto type = text ? message_type::text : message_type::binary;
    std::string_view data(static_cast<const char*>(rx_.data().data()), rx_.size());
    // Heartbeat messages prove the peer alive but are not data: they must not satisfy
    // idle_timeout, which exists to catch a feed that answers pings and sends nothing.
    const bool heartbeat = heartbeat_ && text && heartbeat_consumed(data);
    if (handler_error_)
        return error::handler_exception;
    if (!heartbeat)
        last_data_ = now;
    bool queued = false;
    if (!heartbeat || cfg_->deliver_heartbeat_messages) {
        if (inbox_mode_) {
            inbox_.push_back(received{{}, std::string(data), type});
            queued = true;
        } else if (events_.on_message) {
            notify(events_.on_message, data, type);
            if (handler_error_)
                return error::handler_exception;
        }
    }
    rx_.consume(n);
    if (queued)
        inbox_wake_.notify();
    return std::nullopt;
}

}  // namespace vigil
