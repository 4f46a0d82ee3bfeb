// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The supervisor is written against vigil::session's public API only: it never sees Beast,
// so this translation unit compiles in seconds.

#include <vigil/supervisor.hpp>

#include "detail/serialized.hpp"
#include "detail/session_access.hpp"
#include "detail/with_deadline.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <deque>
#include <mutex>
#include <variant>

namespace vigil {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

error_code validate(const supervisor_config& cfg, std::string* detail)
{
    auto fail = [&](std::string what) {
        if (detail)
            *detail = std::move(what);
        return error_code(error::invalid_config);
    };
    auto ms = [](std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; };
    if (cfg.min_delay.count() <= 0)
        return fail("min_delay (" + ms(cfg.min_delay) + ") must be positive: it is what prevents a tight retry loop");
    if (cfg.stable_after.count() < 0)
        return fail("stable_after (" + ms(cfg.stable_after) + ") must not be negative");
    if (cfg.max_retry_after.count() < 0)
        return fail("max_retry_after (" + ms(cfg.max_retry_after) + ") must not be negative (0 ignores Retry-After)");
    if (cfg.message_ttl.count() < 0)
        return fail("message_ttl (" + ms(cfg.message_ttl) + ") must not be negative (0 means no limit)");
    if (cfg.outbox_limit == 0)
        return fail("outbox_limit must be positive");
    if (cfg.delivery != delivery_guarantee::written && cfg.delivery != delivery_guarantee::confirmed &&
        cfg.delivery != delivery_guarantee::resend_unconfirmed)
        return fail("delivery (" + std::to_string(static_cast<int>(cfg.delivery)) + ") is not a delivery_guarantee");
    if (cfg.delivery != delivery_guarantee::written && cfg.session.ping_interval.count() <= 0)
        return fail("delivery confirmation needs the heartbeat (session.ping_interval > 0): its pongs are the "
                    "confirmation");
    return validate(cfg.session, detail);
}

struct supervisor::impl {
    using handler_type = asio::any_completion_handler<void(error_code)>;

    struct pending {
        std::string data;
        message_type type = message_type::text;
        clock_type::time_point queued;
        handler_type handler;
    };

    enum class phase { idle, connecting, up, waiting };

    impl(asio::any_io_executor ex, std::string url, supervisor_config cfg, any_backoff policy)
        : strand_(detail::serialized(std::move(ex))),
          url_(std::move(url)),
          cfg_(std::move(cfg)),
          policy_(std::move(policy)),
          // The session shares our strand (see detail::serialized() for why). Its writer may
          // then resume our outbox pump inline when a send completes; its teardown posts.
          session_(strand_, cfg_.session),
          outbox_wake_(strand_),
          backoff_timer_(strand_)
    {
    }

    asio::awaitable<error_code> run_op();
    asio::awaitable<error_code> attempt_body(clock_type::time_point* up_at);
    asio::awaitable<error_code> wait_backoff(clock_type::duration delay);
    void enqueue(pending msg);
    void expire_outbox();
    void fail_outbox(error_code ec);
    void confirm_upto(std::uint64_t writes);
    void settle_unconfirmed();
    void complete(handler_type h, error_code ec);
    void request_retry_now();
    void request_stop();
    template <class F, class... Args>
    void notify(const F& f, Args&&... args)
    {
        if (!f)
            return;
        try {
            f(std::forward<Args>(args)...);
        } catch (...) {
            // Documented: supervisor handlers must not throw; one that does is not allowed
            // to take the retry loop down with it.
        }
    }
    template <class F>
    void count(F&& f)
    {
        std::lock_guard lock(counters_mutex_);
        f(counters_);
    }

    asio::any_io_executor strand_;  // shared with session_; see detail::serialized()
    std::string url_;
    supervisor_config cfg_;
    any_backoff policy_;
    session session_;
    connected_hook hook_;
    supervisor_events events_;
    disconnect_info last_;

    std::deque<pending> outbox_;
    // Written on the current connection, waiting for a pong to confirm them, with the
    // session's write count after each (delivery_guarantee::confirmed and resend_unconfirmed).
    std::deque<std::pair<std::uint64_t, pending>> unconfirmed_;
    asio::steady_timer outbox_wake_;
    bool pump_waiting_ = false;

    asio::steady_timer backoff_timer_;
    phase phase_ = phase::idle;
    bool running_ = false;
    bool ended_ = false;          // run() returned: new sends fail
    error_code end_reason_;       // ... with this
    bool stop_requested_ = false;
    bool retry_now_requested_ = false;

    mutable std::mutex counters_mutex_;
    supervisor_counters counters_;
};

void supervisor::impl::complete(handler_type h, error_code ec)
{
    count([&](supervisor_counters& c) { ++(ec ? c.messages_failed : c.messages_sent); });
    asio::post(strand_, asio::append(std::move(h), ec));
}

void supervisor::impl::enqueue(pending msg)
{
    if (ended_ || stop_requested_) {
        complete(std::move(msg.handler), end_reason_ ? end_reason_ : error_code(error::supervisor_stopped));
        return;
    }
    expire_outbox();
    if (outbox_.size() >= cfg_.outbox_limit) {
        complete(std::move(msg.handler), error::send_queue_full);
        return;
    }
    msg.queued = clock_type::now();
    outbox_.push_back(std::move(msg));
    if (pump_waiting_)
        outbox_wake_.cancel();
}

void supervisor::impl::expire_outbox()
{
    if (cfg_.message_ttl.count() <= 0)
        return;
    const auto oldest_allowed = clock_type::now() - cfg_.message_ttl;
    while (!outbox_.empty() && outbox_.front().queued <= oldest_allowed) {
        complete(std::move(outbox_.front().handler), error::message_expired);
        outbox_.pop_front();
    }
}

void supervisor::impl::fail_outbox(error_code ec)
{
    auto pending_msgs = std::move(outbox_);
    outbox_.clear();
    for (auto& msg : pending_msgs)
        complete(std::move(msg.handler), ec);
}

void supervisor::impl::confirm_upto(std::uint64_t writes)
{
    while (!unconfirmed_.empty() && unconfirmed_.front().first <= writes) {
        complete(std::move(unconfirmed_.front().second.handler), {});
        unconfirmed_.pop_front();
    }
}

void supervisor::impl::settle_unconfirmed()
{
    if (cfg_.delivery == delivery_guarantee::resend_unconfirmed) {
        // Back to the head of the outbox, oldest first, ahead of what was never sent.
        while (!unconfirmed_.empty()) {
            outbox_.push_front(std::move(unconfirmed_.back().second));
            unconfirmed_.pop_back();
        }
        return;
    }
    for (auto& [n, msg] : unconfirmed_)
        complete(std::move(msg.handler), error::delivery_unconfirmed);
    unconfirmed_.clear();
}

void supervisor::impl::request_retry_now()
{
    if (phase_ == phase::waiting) {
        retry_now_requested_ = true;
        backoff_timer_.cancel();
    }
}

void supervisor::impl::request_stop()
{
    if (stop_requested_)
        return;
    stop_requested_ = true;
    switch (phase_) {
    case phase::waiting:
        backoff_timer_.cancel();
        break;
    case phase::connecting:
        session_.cancel();
        break;
    case phase::up:
        // A close handshake, bounded by close_timeout; run() then returns and we end.
        asio::co_spawn(strand_, session_.close(1000, "stopping"), asio::detached);
        break;
    case phase::idle:
        break;
    }
}

asio::awaitable<error_code> supervisor::impl::wait_backoff(clock_type::duration delay)
{
    const auto until = clock_type::now() + delay;
    for (;;) {
        // stop() or retry_now() may have come before the timer was armed (from on_retry, or
        // between two waits): cancelling an idle timer does nothing, so check first.
        if (stop_requested_ || std::exchange(retry_now_requested_, false))
            co_return error_code{};
        expire_outbox();
        auto wake = until;
        if (cfg_.message_ttl.count() > 0 && !outbox_.empty())
            wake = std::min(wake, outbox_.front().queued + cfg_.message_ttl);
        backoff_timer_.expires_at(wake);
        co_await backoff_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        if (clock_type::now() >= until)
            co_return error_code{};
    }
}

asio::awaitable<error_code> supervisor::impl::attempt_body(clock_type::time_point* up_at)
{
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation(),
                                                       detail::any_cancellation_as_terminal{});
    co_await asio::this_coro::throw_if_cancelled(false);
    if (hook_) {
        error_code ec;
        try {
            ec = co_await hook_(session_);
        } catch (...) {
            ec = error::handler_exception;
        }
        if (ec) {
            last_.detail = "on_connected failed: " + error_name(ec);
            co_return ec;
        }
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
    }
    *up_at = clock_type::now();
    count([](supervisor_counters& c) { ++c.connects; });
    notify(events_.on_up);

    // Drain the outbox into the session one message at a time: a message leaves the outbox
    // only once the session reports it written, so a connection that dies mid-write leaves
    // it at the head for the next connection, in order.
    for (;;) {
        // `||` cancels this arm once, when run() ends. That can happen while we are suspended
        // in session_.send(), which ignores cancellation and may still report the message as
        // written; a wait started after that would never see the signal, and `||` (so the
        // whole supervisor) would hang. Look before every wait.
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        expire_outbox();
        if (outbox_.empty()) {
            pump_waiting_ = true;
            outbox_wake_.expires_at(clock_type::time_point::max());
            co_await outbox_wake_.async_wait(asio::as_tuple(asio::use_awaitable));
            pump_waiting_ = false;
            if (detail::cancelled(co_await asio::this_coro::cancellation_state))
                co_return asio::error::operation_aborted;
            continue;
        }
        // Out of the outbox while in flight, so that TTL expiry cannot touch it.
        pending msg = std::move(outbox_.front());
        outbox_.pop_front();
        const auto ec = co_await session_.send(msg.data, msg.type);
        if (!ec) {
            if (cfg_.delivery == delivery_guarantee::written)
                complete(std::move(msg.handler), {});
            else
                unconfirmed_.emplace_back(detail::session_access::writes(session_), std::move(msg));
            continue;
        }
        outbox_.push_front(std::move(msg));
        // Not written: the session is ending. Keep the message and wait to be cancelled by
        // run() finishing; run()'s reason is what counts, not this echo of it.
        pump_waiting_ = true;
        outbox_wake_.expires_at(clock_type::time_point::max());
        while (!detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_await outbox_wake_.async_wait(asio::as_tuple(asio::use_awaitable));
        pump_waiting_ = false;
        co_return asio::error::operation_aborted;
    }
}

asio::awaitable<error_code> supervisor::impl::run_op()
{
    using namespace asio::experimental::awaitable_operators;
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation(),
                                                       detail::any_cancellation_as_terminal{});
    co_await asio::this_coro::throw_if_cancelled(false);
    if (running_)
        co_return error::already_running;
    running_ = true;
    ended_ = false;  // a supervisor may be run again after run() returned
    end_reason_ = {};

    error_code result;
    std::string detail;
    if (auto ec = validate(cfg_, &detail)) {
        last_ = disconnect_info{};
        last_.reason = ec;
        last_.detail = std::move(detail);
        result = ec;
        notify(events_.on_gave_up, result, last_);
    } else {
        session_.set_config(cfg_.session);
        if (cfg_.delivery != delivery_guarantee::written)
            detail::session_access::track_writes(session_, [this](std::uint64_t n) { confirm_upto(n); });
        else
            detail::session_access::track_writes(session_, {});
        std::size_t streak = 0;
        for (;;) {
            if (stop_requested_)
                break;
            if (detail::cancelled(co_await asio::this_coro::cancellation_state)) {
                result = asio::error::operation_aborted;
                break;
            }
            phase_ = phase::connecting;
            count([](supervisor_counters& c) { ++c.attempts; });
            error_code ec = co_await session_.connect(url_);
            last_ = session_.last_disconnect();
            clock_type::time_point up_at{};
            if (!ec) {
                phase_ = phase::up;
                if (stop_requested_)  // stop() raced the handshake: close what we just opened
                    asio::co_spawn(strand_, session_.close(1000, "stopping"), asio::detached);
                auto ended = co_await (session_.run() || attempt_body(&up_at));
                // Whatever the dead connection did not confirm is reported (or queued again).
                settle_unconfirmed();
                const std::string hook_detail = last_.detail;
                last_ = session_.last_disconnect();
                if (ended.index() == 0) {
                    ec = std::get<0>(ended);
                } else {
                    // The hook failed (the session was torn down by `||`): that is the reason.
                    ec = std::get<1>(ended);
                    last_.reason = ec;
                    if (ec != asio::error::operation_aborted)
                        last_.detail = hook_detail;
                }
                if (up_at != clock_type::time_point{}) {
                    const auto up_for = clock_type::now() - up_at;
                    count([&](supervisor_counters& c) {
                        c.time_connected += std::chrono::duration_cast<std::chrono::milliseconds>(up_for);
                    });
                    if (up_for >= cfg_.stable_after) {
                        policy_.reset();
                        streak = 0;
                    }
                }
            }
            phase_ = phase::idle;
            count([&](supervisor_counters& c) { ++c.disconnects[error_name(ec)]; });
            if (ec == asio::error::operation_aborted) {
                if (!stop_requested_)
                    result = ec;
                break;
            }
            if (stop_requested_ || !ec)
                break;  // stop(): the session closed cleanly (or died while closing)
            const bool permanent = cfg_.is_permanent ? cfg_.is_permanent(ec) : is_permanent(ec);
            if (permanent) {
                result = ec;
                notify(events_.on_gave_up, result, last_);
                break;
            }
            ++streak;
            if (cfg_.max_attempts > 0 && streak >= cfg_.max_attempts) {
                result = error::retries_exhausted;
                notify(events_.on_gave_up, result, last_);
                break;
            }
            auto delay = std::max(policy_.next_delay(retry_context{streak, ec}), cfg_.min_delay);
            if (cfg_.max_retry_after.count() > 0 && last_.retry_after.count() > 0)
                delay = std::max(delay, std::min(last_.retry_after, cfg_.max_retry_after));
            count([](supervisor_counters& c) { ++c.retries; });
            // Waiting already: a stop() or retry_now() from the on_retry handler must count.
            phase_ = phase::waiting;
            notify(events_.on_retry, retry_info{streak, delay, last_});
            const auto waited = co_await wait_backoff(delay);
            phase_ = phase::idle;
            retry_now_requested_ = false;  // one that raced the end of the wait is spent
            if (waited) {
                result = waited;
                break;
            }
        }
    }

    ended_ = true;
    end_reason_ = (result && result != asio::error::operation_aborted) ? result : error_code(error::supervisor_stopped);
    fail_outbox(end_reason_);
    stop_requested_ = false;  // consumed: stop() ends one run()
    running_ = false;
    co_return result;
}

// ---------------------------------------------------------------------------------------

supervisor::supervisor(asio::any_io_executor ex, std::string url, supervisor_config cfg, any_backoff policy, int)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(url), std::move(cfg), std::move(policy)))
{
}

supervisor::~supervisor() = default;

supervisor::executor_type supervisor::get_executor() const noexcept
{
    return impl_->strand_;
}

void supervisor::on_connected(connected_hook hook)
{
    impl_->hook_ = std::move(hook);
}

vigil::session_events& supervisor::session_event_handlers() noexcept
{
    return impl_->session_.events();
}

supervisor_events& supervisor::events() noexcept
{
    return impl_->events_;
}

asio::awaitable<error_code> supervisor::run()
{
    co_return co_await asio::co_spawn(impl_->strand_, impl_->run_op(), asio::use_awaitable);
}

void supervisor::retry_now()
{
    asio::dispatch(impl_->strand_, [p = impl_.get()] { p->request_retry_now(); });
}

void supervisor::stop()
{
    asio::dispatch(impl_->strand_, [p = impl_.get()] { p->request_stop(); });
}

asio::awaitable<error_code> supervisor::send(std::string data, message_type type)
{
    auto [ec] = co_await async_send(std::move(data), type, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

void supervisor::do_send(std::string data, message_type type, asio::any_completion_handler<void(error_code)> handler)
{
    // Built with the handler in place: Boost 1.81's any_completion_handler move assignment
    // is broken (it wraps the handler in itself).
    impl::pending msg{std::move(data), type, {}, impl::handler_type(std::move(handler))};
    asio::dispatch(impl_->strand_, [p = impl_.get(), msg = std::move(msg)]() mutable { p->enqueue(std::move(msg)); });
}

supervisor_counters supervisor::counters() const
{
    std::lock_guard lock(impl_->counters_mutex_);
    return impl_->counters_;
}

const disconnect_info& supervisor::last_disconnect() const noexcept
{
    return impl_->last_;
}

}  // namespace vigil
