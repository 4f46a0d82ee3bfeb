// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "inbox.hpp"

#include "common.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>

namespace vigil::detail {

namespace asio = boost::asio;

inbox::~inbox()
{
    if (account_)
        account_->remove(holding_part::received, bytes_);
}

void inbox::push(received r)
{
    bytes_ += r.data.size();
    if (account_)
        account_->add(holding_part::received, r.data.size());
    messages_.push_back(std::move(r));
    receiver_.notify();
}

void inbox::end(error_code why)
{
    state_ = state::ended;
    ended_with_ = why;
    receiver_.notify_later();
    room_.notify_later(asio::error::operation_aborted);
}

void inbox::reset() noexcept
{
    messages_.clear();
    if (account_)
        account_->remove(holding_part::received, bytes_);
    bytes_ = 0;
    state_ = state::open;
    ended_with_ = {};
}

asio::awaitable<received> inbox::receive()
{
    co_await enter_operation();
    for (;;) {
        if (!messages_.empty()) {
            received r(std::move(messages_.front()));
            messages_.pop_front();
            bytes_ -= r.data.size();
            if (account_)
                account_->remove(holding_part::received, r.data.size());
            if (!full())
                room_.notify();
            co_return r;
        }
        if (state_ == state::ended)
            co_return received{ended_with_, {}, message_type::text};
        if (receiver_.waiting())
            co_return received{error::already_running, {}, message_type::text};
        if (cancelled(co_await asio::this_coro::cancellation_state))
            co_return received{asio::error::operation_aborted, {}, message_type::text};
        auto [ec] = co_await receiver_.async_wait(asio::as_tuple(asio::deferred));
        if (ec)
            co_return received{asio::error::operation_aborted, {}, message_type::text};
    }
}

}  // namespace vigil::detail
