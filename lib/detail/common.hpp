// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Small helpers that the session, the supervisor and the server share: error details, the
// one exception policy for event handlers, and the cancellation prologue of an operation.

#include <vigil/error.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/this_coro.hpp>

#include <cstdint>
#include <exception>
#include <string>
#include <utility>

namespace vigil::detail {

/// "resolving \"host\": Host not found [host_not_found]": what failed, the system's words,
/// and the stable name scripts match on.
inline std::string with_context(std::string what, const error_code& ec)
{
    return std::move(what) + ": " + ec.message() + " [" + error_name(ec) + "]";
}

/// Whether a peer may send close code `code` (RFC 6455 section 7.4): 1000-1003 and 1007-1014
/// (1012-1014 registered since), 3000-4999; 0 stands for a close frame without a code.
/// Beast 1.81 refuses the others itself (failing with 1002) but for 5000 and above, which
/// it accepts and echoes: the session answers those with 1002.
inline bool close_code_allowed(std::uint16_t code) noexcept
{
    return code == 0 || (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/// Calls an event handler, if set. The one policy for every event of the session, the
/// supervisor and the server (documented on `session_events`): a handler must not throw;
/// if one does, the exception is caught here and returned, and the caller ends the run()
/// the event belongs to and has that run() rethrow it once its teardown is done. Never
/// lost, never thrown through vigil's own handlers.
template <class F, class... Args>
[[nodiscard]] std::exception_ptr notify(const F& f, Args&&... args) noexcept
{
    if (!f)
        return nullptr;
    try {
        f(std::forward<Args>(args)...);
    } catch (...) {
        return std::current_exception();
    }
    return nullptr;
}

/// Lets terminal, partial and total cancellation in, and hands every one on as terminal:
/// for vigil's operations any cancellation means "stop and tear down".
struct any_cancellation_as_terminal {
    boost::asio::cancellation_type_t operator()(boost::asio::cancellation_type_t t) const noexcept
    {
        return t == boost::asio::cancellation_type::none ? t : boost::asio::cancellation_type::terminal;
    }
};

inline bool cancelled(const boost::asio::cancellation_state& cs) noexcept
{
    return cs.cancelled() != boost::asio::cancellation_type::none;
}

/// The prologue of an operation that runs as a coroutine of its own (connect, close,
/// receive, a supervisor's or server's run): any cancellation is let in as terminal, and
/// awaiting never throws for it, because vigil's operations return errors as values (an
/// `||` arm that throws does not cancel its siblings). Awaited, it changes the calling
/// coroutine's state, since nested coroutines share their thread's.
inline boost::asio::awaitable<void> enter_operation()
{
    co_await boost::asio::this_coro::reset_cancellation_state(boost::asio::enable_total_cancellation(),
                                                              any_cancellation_as_terminal{});
    co_await boost::asio::this_coro::throw_if_cancelled(false);
}

}  // namespace vigil::detail
