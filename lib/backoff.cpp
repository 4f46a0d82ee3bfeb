// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/backoff.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

namespace vigil {

namespace {

using std::chrono::milliseconds;
using rep = milliseconds::rep;

std::uint64_t random_seed()
{
    std::random_device rd;
    // random_device yields 32 bits per call on common implementations; take two so that
    // the whole 64-bit state is unpredictable.
    const auto hi = static_cast<std::uint64_t>(rd());
    const auto lo = static_cast<std::uint64_t>(rd());
    return (hi << 32) ^ lo;
}

// Uniform in [0, n], n >= 0. The arithmetic stays in double until the result is known to be
// below n, so that even n near the top of the range cannot overflow on conversion.
rep uniform_up_to(jitter_source& rng, rep n) noexcept
{
    const double x = rng.next_unit() * (static_cast<double>(n) + 1.0);
    if (!(x < static_cast<double>(n))) {
        return n;
    }
    return std::min(static_cast<rep>(x), n);
}

exponential_backoff::options validated(exponential_backoff::options opt)
{
    if (opt.initial <= milliseconds::zero()) {
        throw std::invalid_argument("exponential_backoff: initial must be greater than zero");
    }
    if (!std::isfinite(opt.multiplier) || !(opt.multiplier >= 1.0)) {
        throw std::invalid_argument("exponential_backoff: multiplier must be finite and at least 1");
    }
    if (opt.max < opt.initial) {
        throw std::invalid_argument("exponential_backoff: max must not be less than initial");
    }
    return opt;
}

decorrelated_jitter_backoff::options validated(decorrelated_jitter_backoff::options opt)
{
    if (opt.initial <= milliseconds::zero()) {
        throw std::invalid_argument("decorrelated_jitter_backoff: initial must be greater than zero");
    }
    if (opt.max < opt.initial) {
        throw std::invalid_argument("decorrelated_jitter_backoff: max must not be less than initial");
    }
    return opt;
}

}  // namespace

jitter_source::jitter_source(std::uint64_t seed) : state_(seed != 0 ? seed : random_seed()) {}

double jitter_source::next_unit() noexcept
{
    // splitmix64 (Steele, Lea, Flood 2014): one add and a mixing function per draw, and every
    // state, 0 included, is a valid starting point.
    state_ += 0x9e3779b97f4a7c15ULL;
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    // The top 53 bits fill a double's mantissa exactly, so the result is never 1.0.
    return static_cast<double>(z >> 11) * 0x1.0p-53;
}

exponential_backoff::exponential_backoff(options opt) : opt_(validated(opt)), rng_(opt_.seed) {}

milliseconds exponential_backoff::next_delay(const retry_context& c)
{
    const rep max = opt_.max.count();
    // Attempt 0 is not meaningful; treat it as the first retry rather than dividing the delay.
    const auto exponent = static_cast<double>(c.attempt > 0 ? c.attempt - 1 : 0);
    // pow() saturates to infinity for large exponents, which the comparison below turns into
    // max; the ceiling is converted to an integer only once it is known to be below max.
    const double ceiling = static_cast<double>(opt_.initial.count()) * std::pow(opt_.multiplier, exponent);
    const rep cap = ceiling < static_cast<double>(max) ? std::min(static_cast<rep>(ceiling), max) : max;
    return milliseconds(uniform_up_to(rng_, cap));
}

decorrelated_jitter_backoff::decorrelated_jitter_backoff(options opt)
    : opt_(validated(opt)), rng_(opt_.seed), previous_(opt_.initial)
{
}

milliseconds decorrelated_jitter_backoff::next_delay(const retry_context&)
{
    const rep lo = opt_.initial.count();
    const rep max = opt_.max.count();
    const rep prev = previous_.count();
    // Cap the upper bound rather than the draw, so that at the cap the delays stay spread over
    // [initial, max] instead of piling up on max.
    const rep hi = prev > max / 3 ? max : std::min(prev * 3, max);
    previous_ = milliseconds(lo + uniform_up_to(rng_, hi - lo));
    return previous_;
}

void decorrelated_jitter_backoff::reset() noexcept
{
    previous_ = opt_.initial;
}

}  // namespace vigil
