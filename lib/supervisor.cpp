// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The supervisor carries out what its state machine (detail/reconnect) decides: connect,
// run the session and the hook, wait, stop or give up. Messages wait in the outbox and,
// for confirmed delivery, in the delivery tracker (detail/outbox). It is written against
// vigil::session's public API only: it never sees Beast, so this file compiles in seconds.

#include <vigil/supervisor.hpp>

#include "detail/common.hpp"
#include "detail/outbox.hpp"
#include "detail/reconnect.hpp"
#include "detail/serialized.hpp"
#include "detail/session_access.hpp"
#include "detail/window_limit.hpp"

#include <vigil/url.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>
#include <random>
#include <variant>

namespace vigil {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using detail::reconnect_action;
using kind = detail::reconnect_action::kind;

namespace {

// How many messages a connection may send per message window: the limit, less the pings the
// heartbeat may send in a window; with confirmed delivery, each message also brings a ping.
std::size_t message_slots(const supervisor_config& cfg)
{
    const auto& l = cfg.limiter->limits();
    std::size_t pings = 0;
    if (cfg.session.ping_interval.count() > 0)
        pings = static_cast<std::size_t>((l.message_window.count() + cfg.session.ping_interval.count() - 1) /
                                         cfg.session.ping_interval.count());
    const std::size_t left = l.messages > pings ? l.messages - pings : 0;
    return cfg.delivery == delivery_guarantee::written ? left : left / 2;
}

}  // namespace

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
    if (cfg.policy_violation_delay.count() < 0)
        return fail("policy_violation_delay (" + ms(cfg.policy_violation_delay) + ") must not be negative (0: no floor)");
    if (cfg.max_connection_age.count() < 0)
        return fail("max_connection_age (" + ms(cfg.max_connection_age) + ") must not be negative (0: no limit)");
    if (cfg.failback_after.count() < 0)
        return fail("failback_after (" + ms(cfg.failback_after) + ") must not be negative (0: stay on a backup)");
    if (cfg.failback_after.count() > 0 && cfg.failback_after < cfg.stable_after)
        return fail("failback_after (" + ms(cfg.failback_after) + ") must be at least stable_after (" +
                    ms(cfg.stable_after) + "): a backup is left only once it proved stable");
    if (cfg.prepare_timeout.count() <= 0)
        return fail("prepare_timeout (" + ms(cfg.prepare_timeout) + ") must be positive");
    if (cfg.limiter) {
        if (auto ec = validate(cfg.limiter->limits(), detail))
            return ec;
        if (cfg.limiter->limits().messages > 0 && message_slots(cfg) == 0)
            return fail("rate_limits.messages (" + std::to_string(cfg.limiter->limits().messages) + " per " +
                        ms(cfg.limiter->limits().message_window) +
                        ") leaves no room for messages beside the heartbeat's pings (session.ping_interval " +
                        ms(cfg.session.ping_interval) + ")");
    }
    for (std::size_t i = 0; i < cfg.backup_urls.size(); ++i) {
        endpoint ep;
        std::string why;
        if (auto ec = parse_url(cfg.backup_urls[i], ep, &why))
            return fail("backup_urls[" + std::to_string(i) + "]: " + error_name(ec) + ": " + why);
    }
    if (cfg.outbox_limit == 0)
        return fail("outbox_limit must be positive");
    if (cfg.delivery != delivery_guarantee::written && cfg.delivery != delivery_guarantee::confirmed &&
        cfg.delivery != delivery_guarantee::resend_unconfirmed)
        return fail("delivery (" + std::to_string(static_cast<int>(cfg.delivery)) + ") is not a delivery_guarantee");
    if (cfg.make_before_break && cfg.delivery != delivery_guarantee::written)
        return fail("make_before_break needs delivery_guarantee::written: confirmations are counted on one "
                    "connection at a time");
    if (cfg.delivery != delivery_guarantee::written && cfg.session.ping_interval.count() <= 0)
        return fail("delivery confirmation needs the heartbeat (session.ping_interval > 0): its pongs are the "
                    "confirmation");
    return validate(cfg.session, detail);
}

namespace {

detail::reconnect_settings reconnect_settings_of(const supervisor_config& cfg)
{
    return {cfg.stable_after,
            cfg.min_delay,
            cfg.max_retry_after,
            cfg.max_attempts,
            cfg.policy_violation_delay,
            cfg.is_permanent,
            1 + cfg.backup_urls.size(),
            cfg.failback_after,
            cfg.max_connection_age,
            cfg.make_before_break};
}

// A close frame holds 123 bytes of reason, and it must stay valid UTF-8: cut at a character
// boundary.
std::string close_reason_of(std::string reason)
{
    if (reason.empty())
        return "reconnect";
    constexpr std::size_t max_reason = 123;
    if (reason.size() > max_reason) {
        std::size_t n = max_reason;
        while (n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80)
            --n;
        reason.resize(n);
    }
    return reason;
}

// A uniform draw in [0, 1) for the state machine's jitter.
double random_fraction()
{
    thread_local std::minstd_rand rng{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

std::vector<std::string> endpoints_of(std::string primary, const supervisor_config& cfg)
{
    std::vector<std::string> all;
    all.reserve(1 + cfg.backup_urls.size());
    all.push_back(std::move(primary));
    all.insert(all.end(), cfg.backup_urls.begin(), cfg.backup_urls.end());
    return all;
}

const char* replacement_reason(detail::replacement why)
{
    return why == detail::replacement::failback ? "failback" : "max_connection_age";
}

// One connection of the supervisor: a session, and whether its run() is in progress. run()
// is spawned on its own rather than awaited by the step that opened it, so that under
// make-before-break a connection can be handed over to the next step while the one it
// replaces closes in the background.
enum class link_phase {
    idle,  ///< no run() in progress
    running,  ///< run() in progress; a step of the supervisor awaits its end
    retiring,  ///< handed over: it closes in the background, and nobody awaits it
};

struct link {
    link(const asio::any_io_executor& ex, const session_config& cfg) : s(ex, cfg) {}
    session s;
    link_phase phase = link_phase::idle;
    error_code result;  // what the last run() returned
};

// Whether a connection's on_connected hook has yet to run.
enum class hook_stage { pending, done };

// What cancelling the arm that awaits a session's end does to the session.
enum class on_cancel { end_session, leave_running };

// The replacement's coroutine (make-before-break).
enum class task_phase { idle, running };

}  // namespace

struct supervisor::impl final : detail::connection_observer {
    impl(asio::any_io_executor ex, std::string url, supervisor_config cfg, any_backoff policy)
        : strand_(detail::serialized(std::move(ex))), endpoints_(endpoints_of(std::move(url), cfg)), cfg_(std::move(cfg)),
          policy_(std::move(policy)), fsm_(reconnect_settings_of(cfg_), policy_),
          // The session shares our executor (see detail::serialized() for why). Its writer may
          // then resume our outbox pump inline when a send completes; its teardown posts.
          outbox_(cfg_.outbox_limit, cfg_.message_ttl, completer()), delivery_(cfg_.delivery, completer()),
          outbox_wake_(strand_), backoff_timer_(strand_), attempt_timer_(strand_), pace_timer_(strand_),
          replace_timer_(strand_), settled_(strand_, clock_type::time_point::max())
    {
        links_[0] = std::make_unique<link>(strand_, cfg_.session);
        detail::session_access::observe(links_[0]->s, this);
    }

    // run(): one step per action of the state machine, each returning the next.
    asio::awaitable<error_code> run_op();
    error_code prepare_run();
    asio::awaitable<reconnect_action> attempt_connect(const reconnect_action& a);
    asio::awaitable<error_code> open_link(link& l, attempt_params& p);
    asio::awaitable<error_code> prepare_attempt(link& l, attempt_params& p);
    asio::awaitable<error_code> wait_turn(bool& waited);
    asio::awaitable<error_code> wait_begin(bool& waited);
    asio::awaitable<error_code> throttled_until(clock_type::time_point at, bool& waited);
    asio::awaitable<error_code> pace_message();
    asio::awaitable<error_code> call_prepare(attempt_params& p);
    asio::awaitable<error_code> prepare_deadline();
    error_code failed_before_connect(error_code ec, std::string detail);
    asio::awaitable<reconnect_action> attempt_run(link& l, hook_stage stage);
    void start_run(link& l);
    void run_ended(link& l, std::exception_ptr e, error_code ec);
    asio::awaitable<error_code> session_ended(link& l, on_cancel how);
    asio::awaitable<void> until_idle(const link& l);
    asio::awaitable<error_code> attempt_body(link& l, hook_stage stage);
    asio::awaitable<error_code> run_hook(link& l);
    void went_up(clock_type::time_point now);
    asio::awaitable<error_code> pump_outbox(link& l);
    asio::awaitable<error_code> replace_when_due();
    // Make-before-break: the replacement, opened beside the live connection.
    void start_replacement(std::string reason);
    asio::awaitable<void> make_replacement(std::string reason);
    asio::awaitable<reconnect_action> open_replacement(link& spare);
    asio::awaitable<reconnect_action> hook_replacement(link& spare);
    reconnect_action replacement_failed(error_code ec);
    void settle_replacement(link& spare, const reconnect_action& a, const std::string& reason);
    void hand_over(const std::string& reason);
    bool halted() const noexcept;
    void abort_replacement();
    asio::awaitable<reconnect_action> await_replacement();
    asio::awaitable<void> wind_down(const reconnect_action& a);
    asio::awaitable<error_code> until_cancelled();
    asio::awaitable<reconnect_action> close_opened();
    asio::awaitable<reconnect_action> wait_between(const reconnect_action& a);
    error_code finish_run(const reconnect_action& a);
    reconnect_action attempt_ended(error_code ec);

    // From other threads, through the strand.
    void enqueue(detail::pending_message msg);
    void request_retry_now();
    void request_stop();
    void request_reconnect(std::string reason);
    void replace_live(std::string reason);

    detail::completer completer() { return {&impl::complete_send, this}; }
    static void complete_send(void* self, detail::send_handler h, error_code ec, std::size_t bytes);
    template <class Handler, class... Args>
    void emit(const Handler& h, Args&&... args);
    template <class F>
    void count(F&& f)
    {
        std::lock_guard lock(counters_mutex_);
        f(counters_);
    }
    error_code refusal() const;
    bool active() const noexcept;

    enum class activity { idle, running };

    asio::any_io_executor strand_;  // shared with session_; see detail::serialized()
    const std::vector<std::string> endpoints_;  // the primary, then cfg_.backup_urls
    supervisor_config cfg_;
    any_backoff policy_;
    detail::reconnect_fsm fsm_;
    connected_hook hook_;
    prepare_hook prepare_;
    std::size_t attempt_endpoint_ = 0;  // the endpoint of the latest attempt
    // Two connections under make-before-break (the second made by run()), one otherwise.
    // live_ indexes the live one (or the one the regular attempt uses); the other is the
    // replacement's, or the one closing after a hand-over.
    std::array<std::unique_ptr<link>, 2> links_;
    std::size_t live_ = 0;
    link* attempt_link_ = nullptr;  // the link being connected: stop() aborts its connect()
    link& live() noexcept { return *links_[live_]; }
    link& spare() noexcept { return *links_[1 - live_]; }
    task_phase replacement_task_ = task_phase::idle;
    link* replacement_link_ = nullptr;  // the link the replacement's coroutine uses
    reconnect_action replacement_result_;  // its last step, for await_replacement()
    std::string requested_reason_;  // reconnect()'s reason, for the retries of its replacement
    supervisor_events events_;
    disconnect_info last_;

    detail::outbox outbox_;
    detail::delivery_tracker delivery_;
    asio::steady_timer outbox_wake_;  // the pump waits on it while the outbox is empty
    asio::steady_timer backoff_timer_;
    // The steps of an attempt before it connects wait on it: the limiter's turn, the
    // before_attempt hook's deadline. stop() cancels it (abort_attempt).
    asio::steady_timer attempt_timer_;
    asio::steady_timer pace_timer_;  // the outbox pump waits on it for the message limit
    asio::steady_timer replace_timer_;  // replace_when_due() waits on it for the planned moment
    // Never expires: cancelled whenever a link's run() ends or is handed over, or the
    // replacement's coroutine ends, to wake whoever waits for that.
    asio::steady_timer settled_;
    detail::window_limit message_window_{0, std::chrono::milliseconds(0)};  // this connection's messages
    activity activity_ = activity::idle;
    error_code last_result_;  // what the last run() returned: sends fail with it
    std::exception_ptr handler_exception_;  // an event handler threw: run() rethrows it

    // supervisor_metrics beyond the counters, under the same mutex.
    void round_trip(std::chrono::microseconds rtt) noexcept override
    {
        count([&](supervisor_counters&) { round_trips_.observe(rtt); });
    }
    mutable std::mutex counters_mutex_;
    supervisor_counters counters_;
    supervisor_counters counters_now() const;  // with the live connection's time; under the mutex
    std::uint64_t submitted_ = 0;  // send() calls: minus those completed, what is pending
    std::uint64_t pending_bytes_ = 0;
    duration_histogram round_trips_;
    duration_histogram backoff_waits_;
    clock_type::time_point live_since_{};  // when the live connection came up (under the mutex); zero: none
};

void supervisor::impl::complete_send(void* self, detail::send_handler h, error_code ec, std::size_t bytes)
{
    auto& s = *static_cast<impl*>(self);
    s.count([&](supervisor_counters& c) {
        ++(ec ? c.messages_failed : c.messages_sent);
        s.pending_bytes_ -= std::min(s.pending_bytes_, bytes);
    });
    asio::post(s.strand_, asio::append(std::move(h), ec));
}

template <class Handler, class... Args>
void supervisor::impl::emit(const Handler& h, Args&&... args)
{
    auto e = detail::notify(h, std::forward<Args>(args)...);
    if (!e)
        return;
    if (!handler_exception_)
        handler_exception_ = std::move(e);
    // Stop this run(), which rethrows it; at its very end (on_gave_up) there is nothing to
    // stop, and a stop() then would end the next run() too.
    if (active())
        request_stop();
}

bool supervisor::impl::active() const noexcept
{
    switch (fsm_.state()) {
    case detail::reconnect_state::connecting:
    case detail::reconnect_state::running_hook:
    case detail::reconnect_state::up:
    case detail::reconnect_state::replacing:
    case detail::reconnect_state::waiting:
        return true;
    default:
        return false;
    }
}

error_code supervisor::impl::refusal() const
{
    switch (fsm_.state()) {
    case detail::reconnect_state::idle:
        // Before the first run(), messages wait for it; after a run() that refused its
        // config (the machine never started), they fail with what it returned.
        return last_result_;
    case detail::reconnect_state::stopping:
        return error::supervisor_stopped;
    case detail::reconnect_state::stopped:
    case detail::reconnect_state::gave_up:
        return last_result_ ? last_result_ : error_code(error::supervisor_stopped);
    default:
        return {};
    }
}

void supervisor::impl::enqueue(detail::pending_message msg)
{
    if (auto ec = refusal()) {
        complete_send(this, std::move(msg.handler), ec, msg.data.size());
        return;
    }
    outbox_.push(std::move(msg), clock_type::now());
    outbox_wake_.cancel();  // the pump, if it waits
    // A wait between attempts sleeps until the next expiry it knew of: this message may
    // expire sooner (its own TTL), and must not outlive it by a long backoff.
    if (fsm_.state() == detail::reconnect_state::waiting && outbox_.next_expiry() < backoff_timer_.expiry())
        backoff_timer_.cancel();
}

void supervisor::impl::request_retry_now()
{
    if (fsm_.retry_now(clock_type::now()) == detail::reconnect_interrupt::cancel_wait)
        backoff_timer_.cancel();
}

void supervisor::impl::request_reconnect(std::string reason)
{
    switch (fsm_.reconnect(clock_type::now())) {
    case detail::reconnect_interrupt::cancel_wait:
        backoff_timer_.cancel();
        break;
    case detail::reconnect_interrupt::close_session:
        replace_live(close_reason_of(std::move(reason)));
        break;
    case detail::reconnect_interrupt::open_replacement:
        requested_reason_ = close_reason_of(std::move(reason));
        start_replacement(requested_reason_);
        break;
    default:
        break;
    }
}

void supervisor::impl::replace_live(std::string reason)
{
    count([](supervisor_counters& c) { ++c.planned_reconnects; });
    emit(events_.on_reconnect, std::as_const(reason));
    // The session's end then brings the machine to its next attempt (attempt_ended).
    asio::co_spawn(strand_, live().s.close(1000, std::move(reason)), asio::detached);
}

void supervisor::impl::request_stop()
{
    switch (fsm_.stop()) {
    case detail::reconnect_interrupt::none:
        break;
    case detail::reconnect_interrupt::cancel_wait:
        backoff_timer_.cancel();
        break;
    case detail::reconnect_interrupt::abort_attempt:
        attempt_timer_.cancel();  // ends the before_attempt hook, if it runs
        if (attempt_link_)
            attempt_link_->s.cancel();
        break;
    case detail::reconnect_interrupt::close_session:
        // A close handshake, bounded by close_timeout; run() then returns and we end.
        asio::co_spawn(strand_, live().s.close(1000, "stopping"), asio::detached);
        if (fsm_.replacing_phase() != detail::replacement_phase::none &&
            fsm_.replacing_role() == detail::replacement_role::beside_live)
            abort_replacement();  // stop() during the overlap closes both
        break;
    default:
        break;
    }
}

// ---------------------------------------------------------------------------------------
// run

asio::awaitable<error_code> supervisor::impl::run_op()
{
    co_await detail::enter_operation();
    if (activity_ == activity::running)
        co_return error::already_running;
    activity_ = activity::running;
    last_result_ = {};
    handler_exception_ = nullptr;
    error_code result = prepare_run();
    if (!result) {
        auto action = fsm_.start();
        while (action.what != kind::stop && action.what != kind::give_up) {
            if (detail::cancelled(co_await asio::this_coro::cancellation_state))
                action = fsm_.cancelled();
            else if (action.what == kind::connect)
                action = co_await attempt_connect(action);
            else if (action.what == kind::run)
                action = co_await attempt_run(live(), hook_stage::pending);
            else if (action.what == kind::adopt)
                action = co_await attempt_run(live(), hook_stage::done);
            else if (action.what == kind::await_replacement)
                action = co_await await_replacement();
            else if (action.what == kind::close_session)
                action = co_await close_opened();
            else
                action = co_await wait_between(action);
        }
        co_await wind_down(action);
        result = finish_run(action);
    }
    activity_ = activity::idle;
    if (auto e = std::exchange(handler_exception_, nullptr))
        std::rethrow_exception(e);
    co_return result;
}

error_code supervisor::impl::prepare_run()
{
    std::string detail;
    if (auto ec = validate(cfg_, &detail)) {
        last_ = disconnect_info{};
        last_.reason = ec;
        last_.detail = std::move(detail);
        last_result_ = ec;
        outbox_.fail_all(ec);
        emit(events_.on_gave_up, ec, std::as_const(last_));
        return ec;
    }
    if (cfg_.make_before_break && !links_[1]) {
        auto spare = std::make_unique<link>(strand_, cfg_.session);
        detail::session_access::observe(spare->s, this);
        std::lock_guard lock(counters_mutex_);  // metrics() reads links_ from any thread
        links_[1] = std::move(spare);
    }
    live_ = 0;
    for (auto& l : links_) {
        if (!l)
            continue;
        l->s.set_config(cfg_.session);
        if (delivery_.confirms())
            detail::session_access::track_writes(l->s, [this](std::uint64_t n) { delivery_.confirm_upto(n); });
        else
            detail::session_access::track_writes(l->s, {});
    }
    if (cfg_.limiter && cfg_.limiter->limits().messages > 0)
        message_window_ = detail::window_limit(message_slots(cfg_), cfg_.limiter->limits().message_window);
    return {};
}

error_code supervisor::impl::finish_run(const reconnect_action& a)
{
    const error_code result = a.reason;
    if (a.what == kind::give_up)
        emit(events_.on_gave_up, result, std::as_const(last_));
    last_result_ =
        (result && result != asio::error::operation_aborted) ? result : error_code(error::supervisor_stopped);
    outbox_.fail_all(last_result_);
    for (auto& l : links_)
        if (l && l->s.is_open())
            l->s.cancel();  // cancelled between connect() and run(): nothing else would close it
    return result;
}

reconnect_action supervisor::impl::attempt_ended(error_code ec)
{
    const auto now = clock_type::now();
    count([&](supervisor_counters& c) {
        if (live_since_ != clock_type::time_point{}) {
            c.time_connected += std::chrono::duration_cast<std::chrono::milliseconds>(now - live_since_);
            live_since_ = {};
        }
        ++c.disconnects[error_name(ec)];
        if (last_.diagnosis != diagnosis::none)
            ++c.diagnoses[std::string(diagnosis_name(last_.diagnosis))];
    });
    return fsm_.attempt_ended({ec, last_.retry_after, &last_}, now);
}

asio::awaitable<reconnect_action> supervisor::impl::attempt_connect(const reconnect_action& a)
{
    count([](supervisor_counters& c) { ++c.attempts; });
    attempt_endpoint_ = a.endpoint;
    attempt_params p{endpoints_.at(a.endpoint), cfg_.session.headers, a.endpoint, fsm_.streak() + 1};
    if (const error_code ec = co_await open_link(live(), p))
        co_return attempt_ended(ec);
    co_return fsm_.connected();
}

// An attempt's steps on `l`, a regular attempt's or a replacement's: the limiter's turn,
// fresh parameters, the limiter counts it, then connect().
asio::awaitable<error_code> supervisor::impl::open_link(link& l, attempt_params& p)
{
    bool throttled = false;  // counted once per attempt, however many waits it took
    error_code ec = co_await wait_turn(throttled);
    if (!ec && prepare_)
        ec = co_await prepare_attempt(l, p);
    if (!ec)
        ec = co_await wait_begin(throttled);
    if (throttled)
        count([](supervisor_counters& c) { ++c.throttled_connects; });
    if (ec)
        co_return ec;
    emit(events_.on_connecting, std::as_const(p));
    if (halted())  // stop() meanwhile, or the handler threw
        co_return failed_before_connect(asio::error::operation_aborted, "cancelled");
    if (&l != links_[0].get())
        l.s.events() = links_[0]->s.events();  // the application set the first one's
    attempt_link_ = &l;
    ec = co_await l.s.connect(std::move(p.url));
    last_ = l.s.last_disconnect();
    co_return ec;
}

// The before_attempt hook, bounded by prepare_timeout; its headers are checked as the
// config's are. An error here fails the attempt before any connect.
asio::awaitable<error_code> supervisor::impl::prepare_attempt(link& l, attempt_params& p)
{
    using namespace asio::experimental::awaitable_operators;
    attempt_timer_.expires_after(cfg_.prepare_timeout);
    auto ended = co_await (call_prepare(p) || prepare_deadline());
    if (ended.index() == 1) {
        const error_code ec = std::get<1>(ended);
        co_return failed_before_connect(
            ec, ec == error::prepare_timeout
                    ? "before_attempt took longer than prepare_timeout (" +
                          std::to_string(cfg_.prepare_timeout.count()) + " ms)"
                    : std::string("cancelled"));
    }
    if (const error_code ec = std::get<0>(ended))
        co_return failed_before_connect(ec, "before_attempt failed: " + error_name(ec));
    if (fsm_.state() == detail::reconnect_state::stopping)
        co_return failed_before_connect(asio::error::operation_aborted, "cancelled");
    session_config checked = cfg_.session;
    checked.headers = p.headers;
    std::string why;
    if (auto ec = validate(checked, &why))
        co_return failed_before_connect(ec, "before_attempt: " + why);
    detail::session_access::use_headers(l.s, std::make_shared<const detail::session_access::header_list>(
                                                      std::move(checked.headers)));
    co_return error_code{};
}

// The shared connect limit, first step: wait for this attempt's turn in the queue.
asio::awaitable<error_code> supervisor::impl::wait_turn(bool& waited)
{
    if (!cfg_.limiter)
        co_return error_code{};
    co_return co_await throttled_until(cfg_.limiter->reserve_connect(clock_type::now()), waited);
}

// Second step, right before connecting: be counted, or wait for the window's oldest to leave.
asio::awaitable<error_code> supervisor::impl::wait_begin(bool& waited)
{
    if (!cfg_.limiter)
        co_return error_code{};
    for (;;) {
        const auto now = clock_type::now();
        const auto at = cfg_.limiter->begin_connect(now);
        if (at <= now)
            co_return error_code{};
        if (auto ec = co_await throttled_until(at, waited))
            co_return ec;
    }
}

// stop() ends these waits as it ends the hook (abort_attempt cancels attempt_timer_);
// retry_now() cannot shorten them.
asio::awaitable<error_code> supervisor::impl::throttled_until(clock_type::time_point at, bool& waited)
{
    if (at <= clock_type::now())
        co_return error_code{};
    waited = true;
    attempt_timer_.expires_at(at);
    auto [ec] = co_await attempt_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec || fsm_.state() == detail::reconnect_state::stopping)
        co_return failed_before_connect(asio::error::operation_aborted, "cancelled");
    co_return error_code{};
}

// The message limit of this connection: wait for the next message's turn. Cancelled with
// the pump by `||`.
asio::awaitable<error_code> supervisor::impl::pace_message()
{
    const auto now = clock_type::now();
    const auto at = message_window_.reserve(now);
    if (at <= now)
        co_return error_code{};
    count([](supervisor_counters& c) { ++c.paced_messages; });
    pace_timer_.expires_at(at);
    auto [ec] = co_await pace_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

asio::awaitable<error_code> supervisor::impl::call_prepare(attempt_params& p)
{
    // An arm of `||` must not throw: its sibling would not be cancelled.
    try {
        co_return co_await prepare_(p);
    } catch (...) {
    }
    co_return error::handler_exception;
}

asio::awaitable<error_code> supervisor::impl::prepare_deadline()
{
    auto [ec] = co_await attempt_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    // Cancelled by stop(), or by `||` when the hook finished first.
    co_return ec ? error_code(asio::error::operation_aborted) : error_code(error::prepare_timeout);
}

error_code supervisor::impl::failed_before_connect(error_code ec, std::string detail)
{
    last_ = disconnect_info{};
    last_.reason = ec;
    last_.detail = std::move(detail);
    last_.http_status = http_status_of(ec);
    last_.close_code = close_code_of(ec);
    return ec;
}

asio::awaitable<reconnect_action> supervisor::impl::close_opened()
{
    const error_code ec = co_await live().s.close(1000, "stopping");
    last_ = live().s.last_disconnect();
    co_return attempt_ended(ec);
}

// The live connection: its session runs (spawned: see `link`) beside the hook, then the
// outbox pump and the planned replacement. `stage` is `done` for a replacement that was
// handed over with its hook already run.
asio::awaitable<reconnect_action> supervisor::impl::attempt_run(link& l, hook_stage stage)
{
    using namespace asio::experimental::awaitable_operators;
    if (stage == hook_stage::pending)
        start_run(l);
    auto ended = co_await (session_ended(l, on_cancel::end_session) || attempt_body(l, stage));
    if (&l != &live()) {  // handed over: it closes on its own
        if (l.phase == link_phase::idle)  // it had ended already
            count([&](supervisor_counters& c) { ++c.disconnects[error_name(l.result)]; });
        reconnect_action adopt;
        adopt.what = kind::adopt;
        co_return adopt;
    }
    // Whatever the dead connection did not confirm is reported (or queued again).
    delivery_.settle(outbox_);
    const std::string hook_detail = last_.detail;
    last_ = l.s.last_disconnect();
    const error_code ec = ended.index() == 0 ? std::get<0>(ended) : std::get<1>(ended);
    if (ended.index() == 1) {
        // The hook failed (and `||` tore the session down): that is the reason.
        last_.reason = ec;
        if (ec != asio::error::operation_aborted)
            last_.detail = hook_detail;
    }
    co_return attempt_ended(ec);
}

void supervisor::impl::start_run(link& l)
{
    l.phase = link_phase::running;
    asio::co_spawn(strand_, l.s.run(),
                   [this, &l](std::exception_ptr e, error_code ec) { run_ended(l, std::move(e), ec); });
}

void supervisor::impl::run_ended(link& l, std::exception_ptr e, error_code ec)
{
    if (e) {
        // A session event handler threw: run() rethrows it at the end.
        if (!handler_exception_)
            handler_exception_ = std::move(e);
        ec = error::handler_exception;
        request_stop();
    }
    l.result = ec;
    if (l.phase == link_phase::retiring)  // nobody awaits it: count its end here
        count([&](supervisor_counters& c) { ++c.disconnects[error_name(ec)]; });
    l.phase = link_phase::idle;
    settled_.cancel();
}

// An arm of `||`: the end of `l`'s run(), or its hand-over. Cancelled, it ends the session
// (as cancelling run() itself would) and still waits for the end, unless told to leave it.
asio::awaitable<error_code> supervisor::impl::session_ended(link& l, on_cancel how)
{
    bool ending = false;
    while (l.phase == link_phase::running) {
        if (!ending && detail::cancelled(co_await asio::this_coro::cancellation_state)) {
            if (how == on_cancel::leave_running)
                co_return asio::error::operation_aborted;
            ending = true;
            l.s.cancel();
        }
        co_await settled_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_return l.result;
}

asio::awaitable<void> supervisor::impl::until_idle(const link& l)
{
    while (l.phase != link_phase::idle)
        co_await settled_.async_wait(asio::as_tuple(asio::use_awaitable));
}

asio::awaitable<error_code> supervisor::impl::attempt_body(link& l, hook_stage stage)
{
    co_await detail::enter_operation();
    if (stage == hook_stage::pending) {
        if (const error_code ec = co_await run_hook(l))
            co_return ec;
        const auto now = clock_type::now();
        fsm_.hook_succeeded(now, random_fraction());
        if (fsm_.state() != detail::reconnect_state::up)
            co_return co_await until_cancelled();  // stop() or reconnect() came during the hook
        went_up(now);
    }
    if (!cfg_.make_before_break && fsm_.replacement().why == detail::replacement::none)
        co_return co_await pump_outbox(l);
    using namespace asio::experimental::awaitable_operators;
    auto ended = co_await (pump_outbox(l) || replace_when_due());
    co_return std::visit([](error_code ec) { return ec; }, ended);
}

// The on_connected hook on `l`; an exception counts as its failure.
asio::awaitable<error_code> supervisor::impl::run_hook(link& l)
{
    if (!hook_)
        co_return error_code{};
    error_code ec;
    try {
        ec = co_await hook_(l.s);
    } catch (...) {
        ec = error::handler_exception;  // the hook's failure, classified like any other
    }
    if (ec) {
        last_.detail = "on_connected failed: " + error_name(ec);
        co_return ec;
    }
    if (detail::cancelled(co_await asio::this_coro::cancellation_state))
        co_return asio::error::operation_aborted;
    co_return error_code{};
}

// A connection is up (its hook succeeded): it is the live one from `now`.
void supervisor::impl::went_up(clock_type::time_point now)
{
    count([&](supervisor_counters& c) {
        ++c.connects;
        if (live_since_ != clock_type::time_point{})  // a hand-over: the old one's time ends here
            c.time_connected += std::chrono::duration_cast<std::chrono::milliseconds>(now - live_since_);
        live_since_ = now;
    });
    message_window_.clear();  // servers count per connection
    emit(events_.on_up);
}

// The machine's planned replacement (max_connection_age, failback, and under
// make-before-break a failed replacement's next try), when it comes.
asio::awaitable<error_code> supervisor::impl::replace_when_due()
{
    for (;;) {
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        const auto planned = fsm_.replacement();
        replace_timer_.expires_at(planned.at);
        co_await replace_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            continue;
        switch (fsm_.replacement_due(clock_type::now())) {
        case detail::reconnect_interrupt::close_session:
            replace_live(replacement_reason(planned.why));
            // The session's close ends session_ended(), and `||` cancels this arm with the others.
            co_return co_await until_cancelled();
        case detail::reconnect_interrupt::open_replacement:
            start_replacement(planned.why == detail::replacement::requested ? requested_reason_
                                                                           : replacement_reason(planned.why));
            break;
        default:
            break;  // not yet, or the plan changed (replace_timer_ was cancelled): look again
        }
    }
}

asio::awaitable<error_code> supervisor::impl::until_cancelled()
{
    asio::steady_timer idle(strand_, clock_type::time_point::max());
    while (!detail::cancelled(co_await asio::this_coro::cancellation_state))
        co_await idle.async_wait(asio::as_tuple(asio::use_awaitable));
    co_return asio::error::operation_aborted;
}

// ---------------------------------------------------------------------------------------
// make-before-break: the replacement is opened on the spare link while the live connection
// keeps running; once its hook succeeded, the outbox moves to it and the old one closes.

void supervisor::impl::start_replacement(std::string reason)
{
    emit(events_.on_reconnect, std::as_const(reason));
    replacement_task_ = task_phase::running;
    asio::co_spawn(strand_, make_replacement(std::move(reason)), asio::detached);
}

asio::awaitable<void> supervisor::impl::make_replacement(std::string reason)
{
    link& sp = spare();
    replacement_link_ = &sp;
    co_await until_idle(sp);  // a connection handed over before may still be closing
    auto a = halted() ? replacement_failed(asio::error::operation_aborted) : co_await open_replacement(sp);
    if (a.what == kind::run)
        a = co_await hook_replacement(sp);
    settle_replacement(sp, a, reason);
    replacement_task_ = task_phase::idle;
    settled_.cancel();
}

asio::awaitable<reconnect_action> supervisor::impl::open_replacement(link& sp)
{
    count([](supervisor_counters& c) { ++c.attempts; });
    const std::size_t ep = fsm_.replacement_endpoint();
    attempt_params p{endpoints_.at(ep), cfg_.session.headers, ep, fsm_.replacement_failures() + 1};
    if (const error_code ec = co_await open_link(sp, p))
        co_return replacement_failed(ec);
    auto a = fsm_.replacement_connected();
    if (a.what == kind::close_session) {  // stop() came
        co_await sp.s.close(1000, "stopping");
        co_return replacement_failed(asio::error::operation_aborted);
    }
    co_return a;
}

// Its session runs beside its hook; the live connection goes on meanwhile.
asio::awaitable<reconnect_action> supervisor::impl::hook_replacement(link& sp)
{
    using namespace asio::experimental::awaitable_operators;
    start_run(sp);
    auto ended = co_await (session_ended(sp, on_cancel::leave_running) || run_hook(sp));
    if (ended.index() == 1 && !std::get<1>(ended))
        co_return fsm_.replacement_up(clock_type::now(), random_fraction());
    error_code ec = ended.index() == 0 ? std::get<0>(ended) : std::get<1>(ended);
    if (sp.phase == link_phase::running)
        sp.s.cancel();  // the hook failed: end its session
    co_await until_idle(sp);
    if (ended.index() == 0) {
        last_ = sp.s.last_disconnect();
        if (!ec)
            ec = asio::error::operation_aborted;  // closed by stop() during its hook
    } else {
        last_.reason = ec;
    }
    co_return replacement_failed(ec);
}

reconnect_action supervisor::impl::replacement_failed(error_code ec)
{
    count([&](supervisor_counters& c) { ++c.disconnects[error_name(ec)]; });
    return fsm_.replacement_failed({ec, last_.retry_after, &last_}, clock_type::now());
}

void supervisor::impl::settle_replacement(link& sp, const reconnect_action& a, const std::string& reason)
{
    replacement_result_ = a;
    switch (a.what) {
    case kind::hand_over:
        hand_over(reason);
        break;
    case kind::adopt:  // the live connection ended meanwhile: this one is up in its place
        went_up(clock_type::now());
        break;
    case kind::keep: {
        count([](supervisor_counters& c) { ++c.failed_replacements; });
        replacement_failure info{last_, a.endpoint, a.attempt, std::nullopt};
        if (fsm_.replacement().why != detail::replacement::none)
            info.retry_in = a.delay;
        replace_timer_.cancel();  // replace_when_due() looks at the new plan
        emit(events_.on_replacement_failed, std::as_const(info));
        break;
    }
    case kind::stop:
        if (sp.phase == link_phase::running)  // stop() came as it went up: close it too
            asio::co_spawn(strand_, sp.s.close(1000, "stopping"), asio::detached);
        break;
    default:
        break;  // a regular attempt's failure: await_replacement() carries it out
    }
}

// The replacement is up: the outbox moves to it (the old link's arms end, and the run
// loop adopts it), and the old connection closes with the reason, in the background.
void supervisor::impl::hand_over(const std::string& reason)
{
    link& old = live();
    live_ = 1 - live_;
    count([](supervisor_counters& c) { ++c.planned_reconnects; });
    if (old.phase == link_phase::running) {  // (it may have ended just now, its step not yet told)
        old.phase = link_phase::retiring;
        asio::co_spawn(strand_, old.s.close(1000, reason), asio::detached);
        settled_.cancel();  // old's session_ended() arm: it is handed over
    }
    went_up(clock_type::now());
}

// stop() or cancellation came: no new connect may begin.
bool supervisor::impl::halted() const noexcept
{
    return !active();
}

// stop() during the overlap: the replacement closes too (or its attempt is abandoned).
void supervisor::impl::abort_replacement()
{
    attempt_timer_.cancel();  // its limiter turn or before_attempt hook
    if (!replacement_link_)
        return;
    link& sp = *replacement_link_;
    if (sp.phase == link_phase::running)
        asio::co_spawn(strand_, sp.s.close(1000, "stopping"), asio::detached);
    else
        sp.s.cancel();  // its connect(), if it runs
}

// The live connection ended while its replacement was being opened: that replacement is the
// attempt now. Its outcome is what the machine said to its last step.
asio::awaitable<reconnect_action> supervisor::impl::await_replacement()
{
    live_ = 1 - live_;
    bool aborted = false;
    while (replacement_task_ == task_phase::running) {
        if (!aborted && detail::cancelled(co_await asio::this_coro::cancellation_state)) {
            aborted = true;
            abort_replacement();
        }
        co_await settled_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (aborted)
        co_return fsm_.cancelled();
    co_return replacement_result_;
}

// Before run() returns: no replacement left running, no connection left closing.
asio::awaitable<void> supervisor::impl::wind_down(const reconnect_action& a)
{
    if (replacement_task_ == task_phase::running)
        abort_replacement();
    if (a.reason == asio::error::operation_aborted)  // cancelled: no close handshake to wait for
        for (auto& l : links_)
            if (l && l->phase != link_phase::idle)
                l->s.cancel();
    while (replacement_task_ == task_phase::running)
        co_await settled_.async_wait(asio::as_tuple(asio::use_awaitable));
    for (auto& l : links_)
        if (l)
            co_await until_idle(*l);
}

asio::awaitable<error_code> supervisor::impl::pump_outbox(link& l)
{
    // One message at a time: a message leaves the outbox only once the session reports it
    // written, so a connection that dies mid-write leaves it at the head for the next one.
    for (;;) {
        // `||` cancels this arm once, when run() ends, possibly while it is suspended in
        // send(), which ignores cancellation: a wait started after that would never hear of
        // it, so look before every wait.
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        outbox_.expire(clock_type::now());
        if (outbox_.empty()) {
            outbox_wake_.expires_at(clock_type::time_point::max());
            co_await outbox_wake_.async_wait(asio::as_tuple(asio::use_awaitable));
            continue;
        }
        if (co_await pace_message())
            continue;  // cancelled: the loop's first check ends the arm
        outbox_.expire(clock_type::now());  // the TTL holds while a message waits its turn
        if (outbox_.empty())
            continue;
        auto msg = outbox_.take_front();
        const auto ec = co_await l.s.send(msg.data, msg.type);
        if (ec) {
            // Not written: the session is ending. The message waits for the next connection,
            // and this arm for `||` to end it; run()'s reason is what counts, not this echo.
            outbox_.put_back(std::move(msg));
            break;
        }
        if (delivery_.confirms())
            delivery_.written(std::move(msg), detail::session_access::writes(l.s));
        else
            complete_send(this, std::move(msg.handler), {}, msg.data.size());
    }
    co_return co_await until_cancelled();
}

asio::awaitable<reconnect_action> supervisor::impl::wait_between(const reconnect_action& a)
{
    count([](supervisor_counters& c) { ++c.retries; });
    const auto began = clock_type::now();
    // The machine waits already: a stop() or retry_now() from the handler counts.
    emit(events_.on_retry, retry_info{a.attempt, a.delay, last_, attempt_endpoint_, a.endpoint});
    while (fsm_.state() == detail::reconnect_state::waiting && clock_type::now() < fsm_.wait_until()) {
        outbox_.expire(clock_type::now());
        backoff_timer_.expires_at(std::min(fsm_.wait_until(), outbox_.next_expiry()));
        co_await backoff_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return fsm_.cancelled();
    }
    const auto now = clock_type::now();
    count([&](supervisor_counters&) {
        backoff_waits_.observe(std::chrono::duration_cast<std::chrono::microseconds>(now - began));
    });
    co_return fsm_.time_up(now);
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

void supervisor::before_attempt(prepare_hook hook)
{
    impl_->prepare_ = std::move(hook);
}

const std::vector<std::string>& supervisor::endpoints() const noexcept
{
    return impl_->endpoints_;
}

std::size_t supervisor::current_endpoint() const noexcept
{
    return impl_->fsm_.endpoint();
}

vigil::session_events& supervisor::session_event_handlers() noexcept
{
    return impl_->links_[0]->s.events();
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

void supervisor::reconnect(std::string reason)
{
    asio::dispatch(impl_->strand_, [p = impl_.get(), r = std::move(reason)]() mutable { p->request_reconnect(std::move(r)); });
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

asio::awaitable<error_code> supervisor::send(std::string data, message_type type, std::chrono::milliseconds ttl)
{
    auto [ec] = co_await async_send(std::move(data), type, ttl, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

void supervisor::start_send(std::string data, message_type type, std::optional<std::chrono::milliseconds> ttl,
                            detail::send_handler handler)
{
    impl_->count([&](supervisor_counters&) {
        ++impl_->submitted_;
        impl_->pending_bytes_ += data.size();
    });
    if (ttl && ttl->count() < 0) {
        impl::complete_send(impl_.get(), std::move(handler), error::invalid_config, data.size());
        return;
    }
    detail::pending_message msg{std::move(data), type, ttl.value_or(std::chrono::milliseconds(-1)), std::move(handler)};
    asio::dispatch(impl_->strand_, [p = impl_.get(), msg = std::move(msg)]() mutable { p->enqueue(std::move(msg)); });
}

supervisor_counters supervisor::impl::counters_now() const
{
    auto c = counters_;
    if (live_since_ != clock_type::time_point{})
        c.time_connected += std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - live_since_);
    return c;
}

supervisor_counters supervisor::counters() const
{
    std::lock_guard lock(impl_->counters_mutex_);
    return impl_->counters_now();
}

supervisor_metrics supervisor::metrics() const
{
    supervisor_metrics m;
    std::lock_guard lock(impl_->counters_mutex_);
    m.counters = impl_->counters_now();
    m.connected = impl_->live_since_ != clock_type::time_point{};
    const auto& c = impl_->counters_;
    m.pending_messages = impl_->submitted_ - std::min(impl_->submitted_, std::uint64_t{c.messages_sent + c.messages_failed});
    m.pending_bytes = impl_->pending_bytes_;
    m.round_trips = impl_->round_trips_;
    m.backoff_waits = impl_->backoff_waits_;
    for (const auto& l : impl_->links_) {
        if (l)
            m.traffic += l->s.traffic();
    }
    return m;
}

const any_backoff& supervisor::policy() const noexcept
{
    return impl_->policy_;
}

const disconnect_info& supervisor::last_disconnect() const noexcept
{
    return impl_->last_;
}

bool supervisor::compressed() const noexcept
{
    return impl_->links_[impl_->live_]->s.compressed();
}

}  // namespace vigil
