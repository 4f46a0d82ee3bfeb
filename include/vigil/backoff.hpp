// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/error.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

namespace vigil {

struct disconnect_info;  // <vigil/session.hpp>

/// What a backoff policy is told when it must choose the next delay: everything the
/// supervisor knows about the failure streak. Valid only during the `next_delay()` call.
struct retry_context {
    /// 1 for the first retry after a healthy period, then 2, 3 ... until the supervisor
    /// calls `reset()` (see `backoff_policy`). With backup endpoints the policy is asked once
    /// per round through the list, and this counts rounds.
    std::size_t attempt = 1;
    /// Why the last attempt ended (transient, or the supervisor would not retry).
    error_code reason;
    /// The server's `Retry-After` on this failure (a 429 or 503 upgrade answer), zero if it
    /// sent none. The supervisor waits at least this long (bounded by `max_retry_after`)
    /// whatever the policy returns.
    std::chrono::milliseconds retry_after{0};
    /// How long the streak has been failing: from the end of its first failed attempt to the
    /// end of this one. Zero on attempt 1.
    std::chrono::milliseconds failing_for{0};
    /// The wait the supervisor chose before the previous attempt (with backup endpoints: at
    /// the end of the previous round) of this streak, with its floors and `Retry-After`
    /// applied (`retry_now()` may have cut it short). Zero on attempt 1.
    std::chrono::milliseconds previous_delay{0};
    /// The last attempt's end in full (HTTP status, close code and reason, detail,
    /// diagnosis), or null where no attempt ran (unit tests of a policy).
    const disconnect_info* last = nullptr;
};

/// A backoff policy decides how long the supervisor waits before the next attempt.
///
/// A type models it when, given `P& p` and `const retry_context& c`:
/// - `p.next_delay(c)` returns something convertible to `std::chrono::milliseconds`;
/// - `p.reset()` forgets the failure streak. A supervisor calls it when a connection that
///   stayed up for at least `stable_after` ends (then asks `next_delay()` with `attempt` 1
///   if it retries), not at the moment `stable_after` passes: a policy sees the end of every
///   connection, stable or not, at the same point;
/// - `P` is move constructible (the supervisor stores it).
///
/// The supervisor applies its floor (`supervisor_config::min_delay`) and the server's
/// `Retry-After` on top of what the policy returns, so a policy cannot cause a tight loop.
/// Policies are used from one thread at a time (the supervisor's executor) and need no locking.
template <class P>
concept backoff_policy = std::move_constructible<P> && requires(P& p, const retry_context& c) {
    { p.next_delay(c) } -> std::convertible_to<std::chrono::milliseconds>;
    { p.reset() } -> std::same_as<void>;
};

/// A small, fast, seedable random source for jitter (splitmix64). Not for cryptography.
class jitter_source {
public:
    /// `seed == 0` seeds from std::random_device, so that a fleet of clients restarted
    /// together does not retry in lockstep; tests pass a fixed seed for repeatable delays.
    explicit jitter_source(std::uint64_t seed = 0);
    /// Uniform in [0, 1).
    double next_unit() noexcept;

private:
    std::uint64_t state_;
};

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// [0, min(max, initial * multiplier^(n-1))]. Jitter is applied after the cap, so delays at
/// the cap are spread over [0, max] and a restarted server is not hit by every client at
/// the same instant.
///
/// Defaults (trading and chat backends): `initial` 500 ms, so the first retry comes within
/// half a second (and never at 0: the supervisor's floor applies); `multiplier` 2; `max`
/// 30 s, under common proxy idle cuts and short enough that a recovered service is found
/// quickly.
///
/// Large attempt counts are safe: the ceiling saturates at `max` and never overflows. An
/// `attempt` of 0 is treated as 1. The delay depends only on the attempt number, so `reset()`
/// has nothing to forget.
class exponential_backoff {
public:
    struct options {
        std::chrono::milliseconds initial{500};
        double multiplier = 2.0;
        std::chrono::milliseconds max{30000};
        std::uint64_t seed = 0;  // 0: random
    };

    exponential_backoff() : exponential_backoff(options{}) {}
    /// @throws std::invalid_argument naming the field when `initial <= 0`, when `multiplier`
    ///         is below 1, NaN or infinite, or when `max < initial`.
    explicit exponential_backoff(options opt);

    std::chrono::milliseconds next_delay(const retry_context& c);
    void reset() noexcept {}

    const options& settings() const noexcept { return opt_; }

private:
    options opt_;
    jitter_source rng_;
};

/// "Decorrelated jitter": each delay is uniform in [initial, min(max, 3 * previous delay)],
/// where the previous delay starts at `initial`. Spreads clients well while growing less
/// predictably than exponential backoff. The cap bounds the range rather than the draw, so at
/// the cap delays stay spread over [initial, max] instead of piling up on `max`. The delay
/// depends on the previous one, not on `retry_context::attempt`. `reset()` starts again from
/// `initial`.
class decorrelated_jitter_backoff {
public:
    struct options {
        std::chrono::milliseconds initial{500};
        std::chrono::milliseconds max{30000};
        std::uint64_t seed = 0;  // 0: random
    };

    decorrelated_jitter_backoff() : decorrelated_jitter_backoff(options{}) {}
    /// @throws std::invalid_argument naming the field when `initial <= 0` or `max < initial`.
    explicit decorrelated_jitter_backoff(options opt);

    std::chrono::milliseconds next_delay(const retry_context& c);
    void reset() noexcept;

    const options& settings() const noexcept { return opt_; }

private:
    options opt_;
    jitter_source rng_;
    std::chrono::milliseconds previous_;
};

/// The same delay every time, no jitter. For tests and for comparing against jitter; a fleet
/// using it reconnects in lockstep after a server restart.
class constant_backoff {
public:
    constant_backoff() = default;
    explicit constant_backoff(std::chrono::milliseconds delay) : delay_(delay) {}

    std::chrono::milliseconds next_delay(const retry_context&) const noexcept { return delay_; }
    void reset() noexcept {}

private:
    std::chrono::milliseconds delay_{1000};
};

/// Holds any backoff_policy behind one type, so that the supervisor is not a template.
/// Move-only; a moved-from any_backoff may only be assigned to or destroyed.
class any_backoff {
public:
    // The self-check comes first and short-circuits: checking backoff_policy<any_backoff>
    // asks whether any_backoff is move constructible, which considers this constructor again.
    template <class P>
        requires(!std::same_as<std::remove_cvref_t<P>, any_backoff> && backoff_policy<P>)
    any_backoff(P policy) : impl_(std::make_unique<model<P>>(std::move(policy)))
    {
    }

    std::chrono::milliseconds next_delay(const retry_context& c) { return impl_->next_delay(c); }
    void reset() { impl_->reset(); }

    /// The policy held, if it is a `P` (as passed in, not a base of it); else null. For
    /// reading a policy's own state back (metrics), from the thread that uses it.
    template <class P>
    P* target() noexcept
    {
        auto* m = dynamic_cast<model<P>*>(impl_.get());
        return m ? &m->policy : nullptr;
    }
    template <class P>
    const P* target() const noexcept
    {
        auto* m = dynamic_cast<const model<P>*>(impl_.get());
        return m ? &m->policy : nullptr;
    }

private:
    struct concept_t {
        virtual ~concept_t() = default;
        virtual std::chrono::milliseconds next_delay(const retry_context& c) = 0;
        virtual void reset() = 0;
    };
    template <class P>
    struct model final : concept_t {
        explicit model(P p) : policy(std::move(p)) {}
        std::chrono::milliseconds next_delay(const retry_context& c) override
        {
            return std::chrono::milliseconds(policy.next_delay(c));
        }
        void reset() override { policy.reset(); }
        P policy;
    };
    std::unique_ptr<concept_t> impl_;
};

static_assert(backoff_policy<exponential_backoff>);
static_assert(backoff_policy<decorrelated_jitter_backoff>);
static_assert(backoff_policy<constant_backoff>);
static_assert(backoff_policy<any_backoff>);

}  // namespace vigil
