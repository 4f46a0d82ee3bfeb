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
// Before a pong or idle verdict falls it makes sure that nothing the peer sent waits unread
// (our own loop may have been late), and every verdict carries whose fault it was, from the
// kernel's view of the connection (liveness::diagnose). While a pong is awaited it may look
// at that view early, to warn (on_suspect) or end at once (end_on_suspect).
//
// Like the heartbeat, it waits rather than loops: the session's timer wakes it
// (watchdog_tick), and a deadline that moves later costs nothing until it comes.

#include "session_core.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>

namespace vigil::detail {

namespace {

std::string ms_text(std::chrono::milliseconds d)
{
    return std::to_string(d.count()) + " ms";
}

// What a verdict's detail adds about whose fault it was.
std::string fault_text(diagnosis d, const liveness& live)
{
    switch (d) {
    case diagnosis::network:
        return "; what we sent is not acknowledged by the peer's TCP: the path is dead (network)";
    case diagnosis::peer_unresponsive:
        return "; the peer's TCP acknowledges what we send but its application is silent (peer_unresponsive)";
    case diagnosis::local_stall:
        return "; our own event loop ran late by more than " +
               ms_text(std::chrono::duration_cast<std::chrono::milliseconds>(live.stall_threshold())) +
               " (local_stall)";
    case diagnosis::none:
    case diagnosis::unknown:
        break;
    }
    return {};
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
    if (live_.path_check_due() <= now)
        look_at_path(now);
    switch (phase_ == phase::running ? live_.expired(now) : expiry::none) {
    case expiry::none:
        return;
    case expiry::pong:
    case expiry::idle:
        // The silence is the peer's only if nothing it sent waits unread: after our own loop
        // was late, the pong may be in the socket, or in a completion queued behind this
        // one. Read first (the next wake-up looks again); else give the queue one turn.
        if (conn_.verdict == connection_state::verdict_check::queued)
            return;
        if (unread_waiting()) {
            if (live_.unread_held(now))
                conclude(end_reason::kind::failure, error::write_timeout,
                         "the peer keeps sending but reads nothing: our read has waited " +
                             ms_text(cfg_->write_timeout) +
                             " behind our answers to its pings, which it does not take (write_timeout)",
                         diagnosis::peer_unresponsive);
            return;
        }
        conn_.verdict = connection_state::verdict_check::queued;
        ++conn_.pending_ops;
        asio::post(strand_, [this] { confirm_verdict(); });
        return;
    case expiry::message:
        message_too_slow(now);
        return;
    case expiry::write:
        conclude(end_reason::kind::failure, error::write_timeout,
                 "a message write made no progress for " + ms_text(cfg_->write_timeout) +
                     ": the peer stopped reading (write_timeout)",
                 live_.diagnose(now, kernel_view()));
        return;
    case expiry::close:
        close_deadline_passed();
        return;
    }
}

void session_core::confirm_verdict()
{
    conn_.verdict = connection_state::verdict_check::none;
    if (phase_ == phase::running) {
        const auto now = clock_type::now();
        const auto e = live_.expired(now);
        if ((e == expiry::pong || e == expiry::idle) && !unread_waiting())
            liveness_verdict(e, now);
        else
            reschedule();
    }
    op_done();
}

void session_core::liveness_verdict(expiry e, time_point now)
{
    const auto fault = live_.diagnose(now, kernel_view());
    if (e == expiry::pong) {
        conclude(end_reason::kind::failure, error::pong_timeout,
                 "nothing received for " + ms_text(cfg_->pong_timeout) + " after a ping (pong_timeout)" +
                     fault_text(fault, live_),
                 fault);
        return;
    }
    // The peer still answers pings; it is the data that went stale. Say goodbye properly
    // (close_timeout bounds it), so that the peer does not log an abnormal close.
    say_goodbye(error::idle_timeout,
                "no data message for " + ms_text(cfg_->idle_timeout) + " (idle_timeout)" + fault_text(fault, live_),
                websocket::close_reason(websocket::close_code::normal, "idle_timeout"), fault);
}

void session_core::message_too_slow(time_point now)
{
    // Its buffer is dropped at the reader's next step (a read may be filling it now), and
    // what still arrives of it is read and dropped: a trickling peer must not keep the
    // memory it was ended for during the goodbye.
    conn_.partial = connection_state::partial_message::discard;
    const auto bytes = rx_.size();
    std::string detail = "a message was still incomplete after " + std::to_string(bytes) + " bytes, past the " +
                         ms_text(cfg_->message_timeout) + " of message_timeout";
    if (cfg_->message_min_rate > 0)
        detail += " plus one second per " + std::to_string(cfg_->message_min_rate) + " bytes (message_min_rate)";
    say_goodbye(error::message_timeout, std::move(detail),
                websocket::close_reason(websocket::close_code::policy_error, "message too slow"),
                live_.diagnose(now, kernel_view()));
}

void session_core::look_at_path(time_point now)
{
    switch (live_.path_checked(now, kernel_view())) {
    case path_news::quiet:
        return;
    case path_news::suspect:
        emit(&session_events::on_suspect, diagnosis::network);
        return;
    case path_news::dead:
        emit(&session_events::on_suspect, diagnosis::network);
        conclude(end_reason::kind::failure, error::pong_timeout,
                 "TCP retransmitted what we sent after our ping and nothing acknowledged it: the path is dead "
                 "(end_on_suspect)",
                 diagnosis::network);
        return;
    }
}

bool session_core::unread_waiting() noexcept
{
    return ws_ && unread_bytes(ws_->next_layer().socket().native_handle()) > 0;
}

tcp_view session_core::kernel_view() noexcept
{
    return ws_ ? read_tcp_view(ws_->next_layer().socket().native_handle()) : tcp_view{};
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
                 : "no answer to our close frame within " + ms_text(cfg_->close_timeout) + " (close_timeout)",
             live_.diagnose(clock_type::now(), kernel_view()));
}

}  // namespace vigil::detail
