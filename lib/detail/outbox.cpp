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
    m.queued = now;
    messages_.push_back(std::move(m));
}

void outbox::expire(time_point now)
{
    if (ttl_ <= std::chrono::milliseconds::zero())
        return;
    // A stale order is worse than none: it completes as expired instead of going out late.
    while (!messages_.empty() && messages_.front().queued + ttl_ <= now) {
        done_(messages_.front(), error::message_expired);
        messages_.pop_front();
    }
}

outbox::time_point outbox::next_expiry() const noexcept
{
    if (ttl_ <= std::chrono::milliseconds::zero() || messages_.empty())
        return time_point::max();
    return messages_.front().queued + ttl_;
}

void outbox::fail_all(error_code ec)
{
    auto all = std::move(messages_);
    messages_.clear();
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
