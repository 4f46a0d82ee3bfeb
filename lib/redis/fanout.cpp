// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The Redis fan-out: a redis_link subscribed to one channel, whose messages go to whichever
// receiver the server set last.

#include <vigil/redis.hpp>

#include <mutex>
#include <stdexcept>

namespace vigil {

/// The receiver, shared with the link's on_message (which may run while the fan-out is being
/// destroyed): set_receiver swaps it under the mutex that every delivery holds.
struct redis_fanout::receiver_slot {
    std::mutex mu;
    receiver r;
};

namespace {

std::string checked_channel(std::string channel)
{
    if (channel.empty())
        throw std::invalid_argument("redis_fanout: the channel name is empty");
    return channel;
}

}  // namespace

redis_fanout::redis_fanout(boost::asio::any_io_executor ex, redis_config cfg, std::string channel, any_backoff policy)
    : slot_(std::make_shared<receiver_slot>()), link_(std::move(ex), std::move(cfg), std::move(policy)),
      channel_(checked_channel(std::move(channel)))
{
    link_.on_message = [slot = slot_, mine = channel_](std::string_view ch, std::string_view data) {
        if (ch != mine)
            return;
        std::lock_guard lock(slot->mu);
        if (slot->r)
            slot->r(data);
    };
    link_.subscribe(channel_);
}

redis_fanout::~redis_fanout()
{
    set_receiver({});
}

boost::asio::awaitable<error_code> redis_fanout::run()
{
    co_return co_await link_.run();
}

void redis_fanout::stop()
{
    link_.stop();
}

void redis_fanout::publish(std::string message, completion done)
{
    link_.publish(channel_, std::move(message), std::move(done));
}

void redis_fanout::set_receiver(receiver r)
{
    receiver old;
    {
        std::lock_guard lock(slot_->mu);
        old = std::exchange(slot_->r, std::move(r));
    }
    // Destroyed outside the lock: it may own what a delivery would wait for.
}

}  // namespace vigil
