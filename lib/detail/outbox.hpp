// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The supervisor's side of "no message is lost silently": the outbox, where messages wait
// for a connection (bounded, each with a time to live), and the delivery tracker, where
// written messages wait for a pong that proves the peer read them
// (delivery_guarantee::confirmed and resend_unconfirmed). Every message leaves them through
// `completer`, exactly once.

#include <vigil/detail/async_send.hpp>
#include <vigil/supervisor.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

namespace vigil::detail {

struct pending_message {
    std::string data;
    message_type type = message_type::text;
    /// This message's time to live; negative: the outbox's default. Zero: no limit.
    std::chrono::milliseconds ttl{-1};
    send_handler handler;
    /// When it expires (set by push; `time_point::max()` for never).
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

/// Completes a message's send with `ec` (the supervisor counts it, with its size, and posts
/// the handler).
struct completer {
    void (*fn)(void* owner, send_handler h, error_code ec, std::size_t bytes);
    void* owner;
    void operator()(pending_message& m, error_code ec) const { fn(owner, std::move(m.handler), ec, m.data.size()); }
};

class outbox {
public:
    using time_point = std::chrono::steady_clock::time_point;

    outbox(std::size_t limit, std::chrono::milliseconds ttl, completer done) : limit_(limit), ttl_(ttl), done_(done) {}

    /// Queues `m` (its deadline counted from `now`), or completes it with `send_queue_full`.
    void push(pending_message m, time_point now);
    /// Completes with `message_expired` what waited longer than its TTL, wherever it is in
    /// the queue (TTLs differ per message), keeping the others in order.
    void expire(time_point now);
    /// No later than when the next message expires (`time_point::max()` for never): it may be
    /// earlier, after the message that set it left; expire() then makes it exact.
    time_point next_expiry() const noexcept { return earliest_; }
    /// Completes everything with `ec`.
    void fail_all(error_code ec);

    bool empty() const noexcept { return messages_.empty(); }
    /// The oldest, out of the outbox while it is written (so that the TTL cannot touch it).
    pending_message take_front();
    /// Back at the head: its write was cut off, or it must be sent again.
    void put_back(pending_message m)
    {
        earliest_ = std::min(earliest_, m.deadline);
        messages_.push_front(std::move(m));
    }

private:
    std::deque<pending_message> messages_;
    std::size_t limit_;
    std::chrono::milliseconds ttl_;  // zero: no limit
    completer done_;
    time_point earliest_ = time_point::max();  // a lower bound on every message's deadline
};

class delivery_tracker {
public:
    delivery_tracker(delivery_guarantee g, completer done) : guarantee_(g), done_(done) {}

    /// Whether a successful write completes the send (`written`), or a pong must confirm it.
    bool confirms() const noexcept { return guarantee_ != delivery_guarantee::written; }
    /// `m` was written; it was message number `n` of its connection.
    void written(pending_message m, std::uint64_t n) { unconfirmed_.emplace_back(n, std::move(m)); }
    /// A pong proved the peer read the first `n` messages of the connection.
    void confirm_upto(std::uint64_t n);
    /// The connection ended: what it did not confirm goes back to the head of `box`, oldest
    /// first (resend_unconfirmed), or completes with `delivery_unconfirmed` (confirmed).
    void settle(outbox& box);

private:
    delivery_guarantee guarantee_;
    completer done_;
    std::deque<std::pair<std::uint64_t, pending_message>> unconfirmed_;
};

}  // namespace vigil::detail
