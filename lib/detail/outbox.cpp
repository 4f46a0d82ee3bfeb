// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "outbox.hpp"

namespace vigil::detail {

void outbox::push(pending_message m, time_point now)
{
    expire(now);
    if (messages_.size() >= limit_) {
        done_(m, error::send_queue_full);
        return;
    }
    const auto ttl = m.ttl < std::chrono::milliseconds::zero() ? ttl_ : m.ttl;
    m.deadline = ttl > std::chrono::milliseconds::zero() ? now + ttl : time_point::max();
    earliest_ = std::min(earliest_, m.deadline);
    messages_.push_back(std::move(m));
}

void outbox::expire(time_point now)
{
    // Cheap while nothing is due: the bound says when to look at all.
    if (now < earliest_)
        return;
    // A stale order is worse than none: it completes as expired instead of going out late.
    earliest_ = time_point::max();
    std::deque<pending_message> kept;
    for (auto& m : messages_) {
        if (m.deadline <= now) {
            done_(m, error::message_expired);
        } else {
            earliest_ = std::min(earliest_, m.deadline);
            kept.push_back(std::move(m));
        }
    }
    messages_ = std::move(kept);
}

void outbox::fail_all(error_code ec)
{
    auto all = std::move(messages_);
    messages_.clear();
    earliest_ = time_point::max();
    for (auto& m : all)
        done_(m, ec);
}

pending_message outbox::take_front()
{
    pending_message m(std::move(messages_.front()));
    messages_.pop_front();
    return m;
}

void delivery_tracker::confirm_upto(std::uint64_t n)
{
    while (!unconfirmed_.empty() && unconfirmed_.front().first <= n) {
        done_(unconfirmed_.front().second, error_code{});
        unconfirmed_.pop_front();
    }
}

void delivery_tracker::settle(outbox& box)
{
    if (guarantee_ == delivery_guarantee::resend_unconfirmed) {
        // Back to the head, oldest first, ahead of what was never sent.
        while (!unconfirmed_.empty()) {
            box.put_back(std::move(unconfirmed_.back().second));
            unconfirmed_.pop_back();
        }
        return;
    }
    for (auto& [n, m] : unconfirmed_)
        done_(m, error::delivery_unconfirmed);
    unconfirmed_.clear();
}

}  // namespace vigil::detail
