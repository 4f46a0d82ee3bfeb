// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A server connection's received messages, waiting for the handler's
// connection::receive(): bounded, and the reader waits for room when it is full (TCP then
// pushes back on the client). Once the connection has ended, receive() hands out what is
// left and then why it ended. Connections whose server has a handler get one at accept;
// the others drop what they receive and make one (holding nothing) only if somebody calls
// receive(), to learn of the end.

#include "memory_budget.hpp"
#include "wakeup.hpp"

#include <vigil/server.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/container/deque.hpp>

#include <cstddef>

namespace vigil::detail {

class inbox {
public:
    /// `ex` must outlive the inbox (it is its session's). `limit` 0: it holds no message,
    /// and only reports the end. `byte_limit`: full once the messages held reach it (0: no
    /// limit in bytes). `account`: where the bytes held are charged (null: nowhere); it must
    /// outlive the inbox.
    inbox(const boost::asio::any_io_executor& ex, std::size_t limit, std::size_t byte_limit = 0,
          budget_account* account = nullptr)
        : limit_(limit), byte_limit_(byte_limit), account_(account), receiver_(ex), room_(ex)
    {
    }
    ~inbox();

    /// Whether messages are kept for receive() (else the reader drops them).
    bool holds() const noexcept { return limit_ > 0; }
    bool full() const noexcept
    {
        return holds() && (messages_.size() >= limit_ || (byte_limit_ > 0 && bytes_ >= byte_limit_));
    }

    /// Messages held now.
    std::size_t waiting() const noexcept { return messages_.size(); }

    /// A message arrived: wakes a waiting receive() inline (the reader is on the strand).
    void push(received r);

    /// The connection ended with `why` (never empty: a clean close reads `not_connected`).
    void end(error_code why);
    /// A new connection starts (a session is reused): nothing held, nothing ended.
    void reset() noexcept;

    /// The next message, or the end. One receiver at a time (`already_running` otherwise).
    /// Cancellation of any kind completes it with `operation_aborted`; nothing is lost.
    boost::asio::awaitable<received> receive();

    /// Completes when there is room again (empty code), or with `operation_aborted` when the
    /// waiting reader is cancelled or the connection ends.
    template <class CompletionToken>
    auto async_wait_for_room(CompletionToken&& token)
    {
        return room_.async_wait(std::forward<CompletionToken>(token));
    }

private:
    enum class state { open, ended };

    boost::container::deque<received> messages_;
    std::size_t limit_;
    std::size_t byte_limit_;
    std::size_t bytes_ = 0;  // of the messages held
    budget_account* account_;
    state state_ = state::open;
    error_code ended_with_;
    wakeup<boost::asio::any_io_executor> receiver_;  // receive() waits here
    wakeup<boost::asio::any_io_executor> room_;  // a paused reader waits here
};

}  // namespace vigil::detail
