// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The writer: the only code that writes data frames, so messages go out one at a time in
// send() order, and the application's close waits behind the messages sent before it. Each
// write's start is registered with the timekeeper, which enforces write_timeout.
//
// Not an arm of run()'s `||` but a chain of completion handlers, started by send() and by
// its own completions. An idle connection's writer has nothing to wait for, and a waiting
// coroutine (its frame, its spawn frame and one more level of `||`) is memory that every
// idle connection would hold; a send then also costs no coroutine resumption. Its failures
// end the session through the timekeeper's verdict, and run() returns only once no write
// is pending (see timekeeper()).

namespace vigil {

// The handlers name no executor of their own: Beast then completes them on the stream's,
// which is the strand (the socket was made on it), without copying a type-erased executor
// into every operation.
struct session::impl::write_handler {
    impl* self;
    void operator()(error_code ec, std::size_t) const { self->wr_done(ec); }
};

struct session::impl::close_handler {
    impl* self;
    void operator()(error_code ec) const { self->wr_close_done(ec); }
};

void session::impl::write_next()
{
    if (!tk_running_ || tk_verdict_ || cause_ || wr_busy_ || queue_.empty())
        return;
    if (queue_.front().is_close) {
        const auto reason = *queue_.front().close;
        if (!queue_.front().internal)
            close_handler_.emplace(std::move(queue_.front().handler));
        queue_.pop_front();
        close_requested_ = true;
        // A slow consumer's close was already timed from the overflow.
        if (!closing_) {
            closing_ = true;
            close_started_ = clock_type::now();
            set_deadline(close_started_ + cfg_->close_timeout);
        }
        wr_busy_ = true;
        ++tk_ops_;
        ws_->async_close(reason, close_handler{this});
        return;
    }
    // Out of the queue while it is written: heartbeat messages may be inserted ahead of the
    // queued ones meanwhile, which moves deque elements (and short strings' bytes).
    inflight_.emplace(std::move(queue_.front()));
    queue_.pop_front();
    wr_busy_ = writing_ = true;
    write_started_ = clock_type::now();
    if (cfg_->write_timeout.count() > 0)
        set_deadline(write_started_ + cfg_->write_timeout);
    ws_->binary(inflight_->type == message_type::binary);
    ++tk_ops_;
    ws_->async_write(inflight_->bytes(), write_handler{this});
}

void session::impl::wr_done(error_code ec)
{
    --tk_ops_;
    wr_busy_ = writing_ = false;
    const bool ending = !tk_running_ || tk_verdict_ || cause_;
    // A failed write cut off because the session is ending for another reason stays in
    // flight: run() reports it with the reason the session ended. A write that succeeded is
    // reported written even then: the peer may have it, and telling the app it was not
    // delivered would invite a duplicate.
    if (!ec || !ending) {
        outgoing done(std::move(*inflight_));
        inflight_.reset();
        // The handler may run inline and send again: the message is out of the way. The
        // count moves first, so that a handler resumed inline reads its own message's number.
        if (!done.internal) {
            if (!ec) {
                ++written_;
                if (!ending && on_confirmed_ && !ping_outstanding_)
                    tk_arm(clock_type::now());  // a confirming ping is due
            }
            // While ending, posted: an inline handler must not send into a session being torn down.
            complete(std::move(done.handler), ec, !ending);
        }
    }
    if (ending) {
        tk_drain_check();
        return;
    }
    if (ec) {
        tk_conclude(ec);  // the transport failed: the session is over
        return;
    }
    write_next();  // unless the handler above already started it
}

void session::impl::wr_close_done(error_code ec)
{
    --tk_ops_;
    wr_busy_ = closing_ = false;
    if (!tk_running_) {
        tk_drain_check();
        return;
    }
    // A clean close ends run() with success; run() completes close_handler_ with whatever
    // run() returns.
    tk_conclude(ec);
}

}  // namespace vigil
