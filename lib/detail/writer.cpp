// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The writer: the only code that writes data frames, so messages go out one at a time in
// send() order, and a close waits behind the messages sent before it. Each write's start
// and end are told to the liveness rules, which enforce write_timeout.
//
// Not an arm of run()'s `||` but a chain of completion handlers, started by send() and by
// its own completions (docs/design.md says why): an idle connection's writer has nothing to
// wait for, and a waiting coroutine is memory that every idle connection would hold; a send
// then also costs no coroutine resumption. Its failures end the connection through
// conclude(), and the watchdog waits for its last write before run() returns.

#include "session_core.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>

namespace vigil::detail {

/// The write's and the close's completion handlers: named types with no executor of their
/// own, so that Beast completes them on the stream's (the strand) without copying one.
struct session_core::write_done {
    session_core* self;
    void operator()(error_code ec, std::size_t) const { self->on_written(ec); }
};

struct session_core::piece_done {
    session_core* self;
    void operator()(error_code ec, std::size_t n) const { self->on_piece_written(ec, n); }
};

struct session_core::close_done {
    session_core* self;
    void operator()(error_code ec) const { self->on_closed(ec); }
};

void session_core::send(outgoing msg)
{
    auto refuse = [&](error_code ec) {
        if (msg.from == outgoing::owner::application)
            complete(std::move(msg.handler), ec, false);
    };
    const auto p = phase_.load();
    if (p != phase::open && p != phase::running)
        return refuse(error::not_connected);
    if (conn_.close != close_state::none) {
        // Closing: a goodbye says why (slow_consumer, idle_timeout); else the application's close.
        const bool goodbye = conn_.end.decided() == end_reason::kind::goodbye;
        return refuse(goodbye ? conn_.end.code() : error_code(error::not_connected));
    }
    const auto size = msg.bytes().size();
    const bool too_many = queue_ && queue_->size() >= cfg_->send_queue_limit;
    // A message longer than the limit still goes when nothing else waits.
    const bool too_big = cfg_->send_queue_bytes > 0 && conn_.queued_bytes > 0 &&
                         conn_.queued_bytes + size > cfg_->send_queue_bytes;
    if (too_many || too_big) {
        if (cfg_->send_queue_overflow == overflow_policy::reject)
            return refuse(error::send_queue_full);
        refuse(error::slow_consumer);
        return overflow(too_many ? std::to_string(cfg_->send_queue_limit) + " messages waiting"
                                 : std::to_string(conn_.queued_bytes) + " bytes waiting and " + std::to_string(size) +
                                       " more would pass send_queue_bytes (" +
                                       std::to_string(cfg_->send_queue_bytes) + ")");
    }
    conn_.queued_bytes += size;
    meter_.queued(size);
    // Shared bytes (a broadcast) are one copy for every connection: the budget counts what
    // this connection alone holds.
    if (budget_ && !msg.shared)
        budget_->add(holding_part::sending, size);
    queue().push_back(std::move(msg));
    write_next();
}

void session_core::left_queue(const outgoing& m) noexcept
{
    // Heartbeat messages never entered send() (nor its counts); everything else did.
    if (m.kind != outgoing::what::message || (m.from == outgoing::owner::internal && !m.shared))
        return;
    const auto size = m.bytes().size();
    conn_.queued_bytes -= std::min(conn_.queued_bytes, size);
    meter_.dequeued(size);
    if (budget_ && !m.shared)
        budget_->remove(holding_part::sending, size);
}

session_core::send_queue& session_core::queue()
{
    if (!queue_)
        queue_ = std::make_unique<send_queue>();
    return *queue_;
}

void session_core::send_heartbeat_message(std::string data)
{
    // Dropped once our close frame is out (or Beast's): nothing may follow it. A close
    // still queued behind messages lets pings through, so the heartbeat goes on meanwhile.
    const auto p = phase_.load();
    if ((p != phase::open && p != phase::running) || conn_.close == close_state::sent ||
        conn_.close == close_state::answering)
        return;
    // Ahead of the application's queue, so that a backlog does not delay the ping (or our
    // answer to the peer's) and make a live connection look dead. Outside the send queue
    // limit: at most one ping and one answer per ping are ever waiting.
    queue().push_front(outgoing{.data = std::move(data), .from = outgoing::owner::internal});
    write_next();
}

void session_core::write_next()
{
    if (phase_ != phase::running || conn_.writer != writer_state::idle || !queue_ || queue_->empty())
        return;
    // Out of the queue while it is written: heartbeat messages may be inserted ahead of the
    // queued ones meanwhile, which moves deque elements (and short strings' bytes).
    conn_.inflight.emplace(std::move(queue_->front()));
    queue_->pop_front();
    if (conn_.inflight->kind == outgoing::what::close)
        return start_close();
    conn_.writer = writer_state::writing;
    live_.write_started(clock_type::now());
    reschedule();
    ws_->binary(conn_.inflight->type == message_type::binary);
    conn_.inflight_sent = 0;
    write_piece();
}

void session_core::write_piece()
{
    // A message longer than a piece goes out a piece at a time (frames of one message), and
    // each piece written is progress that moves write_timeout on: a 16 MB snapshot on a thin
    // link is not a stall; no progress for write_timeout is.
    const auto all = conn_.inflight->bytes();
    ++conn_.pending_ops;
    if (all.size() <= write_piece_size) {
        ws_->async_write(all, write_done{this});
        return;
    }
    const auto rest = all + conn_.inflight_sent;
    if (rest.size() <= write_piece_size)
        ws_->async_write_some(true, rest, write_done{this});
    else
        ws_->async_write_some(false, asio::buffer(rest, write_piece_size), piece_done{this});
}

void session_core::on_piece_written(error_code ec, std::size_t n)
{
    // Not written whole while the connection ends: the message stays in flight, and
    // end_connection() completes it with the reason (the peer never saw it whole).
    if (!ec && phase_ != phase::running)
        ec = asio::error::operation_aborted;
    if (ec)
        return on_written(ec);
    conn_.inflight_sent += n;
    live_.write_progressed(clock_type::now());
    write_piece();
    op_done();
}

void session_core::start_close()
{
    // The close stays in flight to the end: end_connection() completes the application's
    // close() with how the connection ended.
    conn_.close = close_state::sent;
    live_.close_started(clock_type::now());  // a goodbye's deadline runs from when it was said
    reschedule();
    conn_.writer = writer_state::closing;
    ++conn_.pending_ops;
    ws_->async_close(*conn_.inflight->close, close_done{this});
}

void session_core::on_written(error_code ec)
{
    conn_.writer = writer_state::idle;
    live_.write_finished();
    const bool ending = phase_ != phase::running;
    // A write that failed because the connection is ending for another reason stays in
    // flight: end_connection() completes it with that reason. One that succeeded is
    // reported written even then: the peer may have it, and saying otherwise would invite
    // a duplicate.
    if (!ec || !ending) {
        outgoing done(std::move(*conn_.inflight));
        conn_.inflight.reset();
        if (!ec)
            meter_.sent(done.bytes().size());
        left_queue(done);
        if (done.from == outgoing::owner::application) {
            if (!ec)
                live_.message_written();  // first: a handler resumed inline reads its own count
            if (!ec && !ending && client_ && client_->on_confirmed)
                confirm_writes(clock_type::now());  // before the handler can queue more behind it
            // While ending (on_ping may just have thrown), posted: an inline handler must not
            // send into a session being torn down.
            complete(std::move(done.handler), ec, phase_ == phase::running);
        }
    }
    // `closed`: Beast is closing on its own, and the reader reports why.
    if (!ending && ec && ec != websocket::error::closed)
        conclude(end_reason::kind::failure, ec, with_context("writing a message", ec));
    if (!ec)
        write_next();  // unless the handler above already started it
    op_done();
}

void session_core::on_closed(error_code ec)
{
    conn_.writer = writer_state::idle;
    // A clean close ends run() with success; end_connection() completes the application's
    // close() with whatever run() returns.
    if (phase_ == phase::running)
        conclude(end_reason::kind::failure, ec, ec ? with_context("closing", ec) : std::string());
    op_done();
}

void session_core::say_goodbye(error_code as, std::string detail, websocket::close_reason why, diagnosis fault)
{
    const auto p = phase_.load();
    if (p != phase::open && p != phase::running)
        return;
    conn_.end.record(end_reason::kind::goodbye, as, std::move(detail), fault);
    if (p == phase::open) {
        end_connection();  // nobody runs it, so nobody would hear the answer
        return;
    }
    if (conn_.close != close_state::none)
        return;  // a close is on its way already; run() reports `as`
    // Through the writer, behind what is queued, while the reader keeps reading: the peer's
    // answer ends run() cleanly. Bounded by close_timeout from now, the write in progress
    // included.
    outgoing msg{.kind = outgoing::what::close, .from = outgoing::owner::internal};
    msg.close = std::make_unique<websocket::close_reason>(std::move(why));
    queue().push_back(std::move(msg));
    conn_.close = close_state::queued;
    live_.close_started(clock_type::now());
    reschedule();
    write_next();
}

void session_core::overflow(std::string why)
{
    // What is still queued will never go out: say so now. The message being written (if
    // any) finishes or is cut off with the connection. 1013, try again later: a transient
    // condition for the peer's supervisor.
    fail_queue(error::slow_consumer);
    say_goodbye(error::slow_consumer,
                "send queue overflow: " + why + ", the peer does not keep up (slow_consumer)",
                websocket::close_reason(websocket::close_code::try_again_later, "slow consumer"));
}

void session_core::evict()
{
    if (!budget_)
        return;
    const auto part = budget_->largest();
    const auto held = budget_->total();
    // A message in progress is dropped as it arrives (the reader frees its buffer at its
    // next step), and what waits to be written will not be: both are what it was ended for.
    conn_.partial = connection_state::partial_message::discard;
    fail_queue(error::memory_budget_exceeded);
    const char* what = part == holding_part::message    ? "an incoming message in progress"
                       : part == holding_part::received ? "received messages the application has not taken"
                                                        : "messages waiting to be written";
    say_goodbye(error::memory_budget_exceeded,
                "the server's memory budget stayed exceeded and this connection held the most: " +
                    std::to_string(held) + " bytes, mostly " + what + " (memory_budget)",
                part == holding_part::message
                    ? websocket::close_reason(websocket::close_code::too_big, "message too big for the server now")
                    : websocket::close_reason(websocket::close_code::try_again_later, "server overloaded"));
}

void session_core::complete(send_handler h, error_code ec, bool inline_ok)
{
    // Either way the handler then runs through its own associated executor (a caller's
    // coroutine resumes on its executor, not necessarily our strand). Inside an initiating
    // function it must not run before the initiation returns, hence post.
    if (inline_ok)
        asio::dispatch(strand_, asio::append(std::move(h), ec));
    else
        asio::post(strand_, asio::append(std::move(h), ec));
}

void session_core::fail_queue(error_code ec)
{
    if (!queue_)
        return;
    auto pending = std::move(*queue_);
    queue_->clear();
    for (auto& msg : pending) {
        left_queue(msg);
        if (msg.from == outgoing::owner::application)
            complete(std::move(msg.handler), ec, false);
    }
}

}  // namespace vigil::detail
