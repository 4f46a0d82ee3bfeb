// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The watchdog, an arm of run(): it ends the connection when a deadline passes (the pong,
// idle_timeout, the write, the close handshake: see liveness.hpp for the rules) and
// completes with the verdict. Whatever else ends the connection (the reader's failure, a
// write's, the application's close or cancel) goes through the same conclude(); the
// watchdog completes once every handler still in flight is in, so that run() never returns
// while one of them could touch the session. It is also the arm that hears run()'s
// cancellation of any kind and turns it into a teardown.
//
// Like the heartbeat, it waits rather than loops: the session's timer wakes it
// (watchdog_tick), and a deadline that moves later costs nothing until it comes.

#include "session_core.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>

namespace vigil::detail {

namespace {

std::string ms_text(std::chrono::milliseconds d)
{
    return std::to_string(d.count()) + " ms";
}

}  // namespace

asio::awaitable<error_code> session_core::watchdog()
{
    co_await enter_operation();
    auto token = asio::as_tuple(asio::deferred);
    auto [ec] = co_await asio::async_initiate<decltype(token), void(error_code)>(
        [this](auto handler) {
            watchdog_done_.async_wait(std::move(handler), &session_core::on_watchdog_cancelled, this);
            settle_if_drained();  // the end may have come before this arm started
        },
        token);
    co_return ec;
}

void session_core::on_watchdog_cancelled(void* self)
{
    // From inside the emitter: conclude() resumes no one inline. `||` cancels the watchdog
    // only after another arm ended, by which time the session is concluding already; a
    // cancellation while it runs is the caller's.
    auto& s = *static_cast<session_core*>(self);
    if (s.phase_ == phase::running)
        s.conclude(end_reason::kind::cancelled, asio::error::operation_aborted, "cancelled");
}

void session_core::watchdog_tick(time_point now)
{
    if (phase_ != phase::running)
        return;
    switch (live_.expired(now)) {
    case expiry::none:
        return;
    case expiry::pong:
        conclude(end_reason::kind::failure, error::pong_timeout,
                 "nothing received for " + ms_text(cfg_->pong_timeout) + " after a ping (pong_timeout)");
        return;
    case expiry::idle:
        // The peer still answers pings; it is the data that went stale. Say goodbye
        // properly (close_timeout bounds it), so that the peer does not log an abnormal close.
        say_goodbye(error::idle_timeout, "no data message for " + ms_text(cfg_->idle_timeout) + " (idle_timeout)",
                    websocket::close_reason(websocket::close_code::normal, "idle_timeout"));
        return;
    case expiry::write:
        conclude(end_reason::kind::failure, error::write_timeout,
                 "a message write made no progress for " + ms_text(cfg_->write_timeout) +
                     ": the peer stopped reading (write_timeout)");
        return;
    case expiry::close:
        close_deadline_passed();
        return;
    }
}

void session_core::close_deadline_passed()
{
    // Beast answers a close (the peer's, or its own after a protocol violation) and only the
    // TCP teardown is left, which a peer that keeps its socket open would hold forever: cut
    // it short, and Beast's read reports what it was closing for.
    if (conn_.close == close_state::answering && ws_->next_layer().cut_teardown()) {
        timer_.stop();
        return;
    }
    conclude(end_reason::kind::failure, error::close_timeout,
             conn_.close == close_state::answering
                 ? "the close handshake the peer started did not finish within " + ms_text(cfg_->close_timeout) +
                       " (close_timeout)"
                 : "no answer to our close frame within " + ms_text(cfg_->close_timeout) + " (close_timeout)");
}

}  // namespace vigil::detail
