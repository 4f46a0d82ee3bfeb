// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/backoff.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using vigil::retry_context;

// A policy written by a user, outside the library: Fibonacci growth (1, 1, 2, 3, 5 ... units)
// capped at a maximum, and move-only, as a policy holding a resource would be.
class fibonacci_backoff {
public:
    fibonacci_backoff(milliseconds unit, milliseconds max) : unit_(unit), max_(max) {}
    fibonacci_backoff(fibonacci_backoff&&) = default;
    fibonacci_backoff& operator=(fibonacci_backoff&&) = default;
    fibonacci_backoff(const fibonacci_backoff&) = delete;
    fibonacci_backoff& operator=(const fibonacci_backoff&) = delete;

    milliseconds next_delay(const retry_context&)
    {
        const auto delay = std::min(unit_ * current_, max_);
        const auto next = current_ + previous_;
        previous_ = current_;
        current_ = next;
        return delay;
    }
    void reset() noexcept
    {
        previous_ = 0;
        current_ = 1;
    }

private:
    milliseconds unit_;
    milliseconds max_;
    std::int64_t previous_ = 0;
    std::int64_t current_ = 1;
};

// Returns whole seconds: anything convertible to milliseconds without loss is accepted.
struct seconds_backoff {
    std::chrono::seconds next_delay(const retry_context& c) const { return std::chrono::seconds(c.attempt); }
    void reset() {}
};

struct without_reset {
    milliseconds next_delay(const retry_context&) { return 1s; }
};

struct returns_string {
    std::string next_delay(const retry_context&) { return "1s"; }
    void reset() {}
};

struct without_context {
    milliseconds next_delay() { return 1s; }
    void reset() {}
};

struct not_movable {
    not_movable() = default;
    not_movable(not_movable&&) = delete;
    milliseconds next_delay(const retry_context&) { return 1s; }
    void reset() {}
};

struct returns_double_seconds {
    // Fractional durations would truncate silently, so they are not accepted.
    std::chrono::duration<double> next_delay(const retry_context&) { return std::chrono::duration<double>(0.5); }
    void reset() {}
};

struct reset_returns_bool {
    milliseconds next_delay(const retry_context&) { return 1s; }
    bool reset() { return true; }
};

static_assert(vigil::backoff_policy<fibonacci_backoff>);
static_assert(vigil::backoff_policy<seconds_backoff>);
static_assert(!vigil::backoff_policy<without_reset>);
static_assert(!vigil::backoff_policy<returns_string>);
static_assert(!vigil::backoff_policy<without_context>);
static_assert(!vigil::backoff_policy<not_movable>);
static_assert(!vigil::backoff_policy<returns_double_seconds>);
static_assert(!vigil::backoff_policy<reset_returns_bool>);
static_assert(!vigil::backoff_policy<int>);
static_assert(!vigil::backoff_policy<milliseconds>);

// any_backoff takes policies only, and is not itself copyable.
static_assert(std::is_constructible_v<vigil::any_backoff, fibonacci_backoff>);
static_assert(!std::is_constructible_v<vigil::any_backoff, without_reset>);
static_assert(!std::is_constructible_v<vigil::any_backoff, int>);
static_assert(!std::is_copy_constructible_v<vigil::any_backoff>);

retry_context attempt(std::size_t n)
{
    return retry_context{n, {}};
}

template <class F>
std::string invalid_argument_of(F make)
{
    try {
        make();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    FAIL("no std::invalid_argument thrown");
    return {};
}

template <class P>
std::vector<milliseconds> draw(P& p, std::size_t n, std::size_t at_attempt)
{
    std::vector<milliseconds> out;
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back(p.next_delay(attempt(at_attempt)));
    }
    return out;
}

}  // namespace

TEST_CASE("jitter_source draws uniformly in [0, 1)")
{
    vigil::jitter_source rng(42);
    double sum = 0;
    double lo = 1;
    double hi = 0;
    constexpr int n = 10000;
    for (int i = 0; i < n; ++i) {
        const double u = rng.next_unit();
        REQUIRE(u >= 0.0);
        REQUIRE(u < 1.0);
        sum += u;
        lo = std::min(lo, u);
        hi = std::max(hi, u);
    }
    CHECK(sum / n == doctest::Approx(0.5).epsilon(0.05));
    CHECK(lo < 0.01);
    CHECK(hi > 0.99);
}

TEST_CASE("jitter_source: the same seed repeats, seed 0 does not")
{
    vigil::jitter_source a(7);
    vigil::jitter_source b(7);
    vigil::jitter_source c(8);
    vigil::jitter_source r1(0);
    vigil::jitter_source r2(0);
    bool c_differs = false;
    bool random_differs = false;
    for (int i = 0; i < 16; ++i) {
        const double x = a.next_unit();
        CHECK(x == b.next_unit());
        c_differs = c_differs || x != c.next_unit();
        random_differs = random_differs || r1.next_unit() != r2.next_unit();
    }
    CHECK(c_differs);
    CHECK(random_differs);
}

TEST_CASE("exponential_backoff defaults are the documented ones")
{
    const vigil::exponential_backoff p;
    CHECK(p.settings().initial == 500ms);
    CHECK(p.settings().multiplier == 2.0);
    CHECK(p.settings().max == 30s);
    CHECK(p.settings().seed == 0);
}

TEST_CASE("exponential_backoff stays in [0, max] for every attempt, without overflow")
{
    for (const double multiplier : {1.0, 1.5, 2.0, 10.0, 1e300}) {
        CAPTURE(multiplier);
        vigil::exponential_backoff p({.initial = 100ms, .multiplier = multiplier, .max = 30s, .seed = 1});
        for (std::size_t n = 1; n <= 200; ++n) {
            CAPTURE(n);
            const double ceiling = std::min(100.0 * std::pow(multiplier, static_cast<double>(n - 1)), 30000.0);
            for (int i = 0; i < 20; ++i) {
                const auto d = p.next_delay(attempt(n));
                REQUIRE(d >= 0ms);
                REQUIRE(d.count() <= static_cast<milliseconds::rep>(ceiling));
            }
        }
    }
}

TEST_CASE("exponential_backoff survives extreme attempt counts and limits")
{
    vigil::exponential_backoff p({.initial = 1ms, .multiplier = 2.0, .max = milliseconds::max(), .seed = 3});
    for (const std::size_t n : {std::size_t{0}, std::size_t{62}, std::size_t{63}, std::size_t{64}, std::size_t{1000},
             std::numeric_limits<std::size_t>::max()}) {
        CAPTURE(n);
        for (int i = 0; i < 100; ++i) {
            const auto d = p.next_delay(attempt(n));
            REQUIRE(d >= 0ms);
            REQUIRE(d <= milliseconds::max());
        }
    }
    // Attempt 0 is treated as the first retry.
    vigil::exponential_backoff q({.initial = 10ms, .multiplier = 2.0, .max = 30s, .seed = 3});
    for (int i = 0; i < 100; ++i) {
        REQUIRE(q.next_delay(attempt(0)) <= 10ms);
    }
}

TEST_CASE("exponential_backoff: the ceiling grows with the attempt until max")
{
    vigil::exponential_backoff p({.initial = 100ms, .multiplier = 2.0, .max = 30s, .seed = 11});
    milliseconds previous_ceiling{0};
    for (std::size_t n = 1; n <= 12; ++n) {
        CAPTURE(n);
        const auto ceiling = std::min(milliseconds(100 << (n - 1)), milliseconds(30s));
        const auto delays = draw(p, 500, n);
        const auto top = *std::max_element(delays.begin(), delays.end());
        CHECK(top <= ceiling);
        // Among 500 draws some land above the previous ceiling, except once max is reached.
        if (ceiling > previous_ceiling) {
            CHECK(top > previous_ceiling);
        }
        CHECK(top > ceiling * 9 / 10);
        previous_ceiling = ceiling;
    }
}

TEST_CASE("exponential_backoff spreads delays at the cap instead of pinning them")
{
    vigil::exponential_backoff p({.initial = 500ms, .multiplier = 2.0, .max = 30s, .seed = 5});
    const auto delays = draw(p, 1000, 50);
    const auto [lo, hi] = std::minmax_element(delays.begin(), delays.end());
    CHECK(*lo < 3s);
    CHECK(*hi > 27s);
    CHECK(*hi <= 30s);
    const std::set<milliseconds> distinct(delays.begin(), delays.end());
    CHECK(distinct.size() > 900);
    const auto at_cap = std::count(delays.begin(), delays.end(), milliseconds(30s));
    CHECK(at_cap < 10);
}

TEST_CASE("exponential_backoff: same seed, same sequence; different or zero seeds differ")
{
    const vigil::exponential_backoff::options opt{.initial = 100ms, .multiplier = 2.0, .max = 30s, .seed = 99};
    vigil::exponential_backoff a(opt);
    vigil::exponential_backoff b(opt);
    auto other = opt;
    other.seed = 100;
    vigil::exponential_backoff c(other);
    auto random = opt;
    random.seed = 0;
    vigil::exponential_backoff r1(random);
    vigil::exponential_backoff r2(random);

    std::vector<milliseconds> sa, sb, sc, s1, s2;
    for (std::size_t n = 1; n <= 20; ++n) {
        sa.push_back(a.next_delay(attempt(n)));
        sb.push_back(b.next_delay(attempt(n)));
        sc.push_back(c.next_delay(attempt(n)));
        s1.push_back(r1.next_delay(attempt(n)));
        s2.push_back(r2.next_delay(attempt(n)));
    }
    CHECK(sa == sb);
    CHECK(sa != sc);
    CHECK(s1 != s2);
}

TEST_CASE("exponential_backoff rejects invalid options, naming the field")
{
    using opts = vigil::exponential_backoff::options;
    CHECK(invalid_argument_of([] { vigil::exponential_backoff(opts{.initial = 0ms}); }).find("initial") !=
          std::string::npos);
    CHECK(invalid_argument_of([] { vigil::exponential_backoff(opts{.initial = -5ms}); }).find("initial") !=
          std::string::npos);
    CHECK(invalid_argument_of([] { vigil::exponential_backoff(opts{.multiplier = 0.5}); }).find("multiplier") !=
          std::string::npos);
    CHECK(invalid_argument_of([] {
        vigil::exponential_backoff(opts{.multiplier = std::numeric_limits<double>::infinity()});
    }).find("multiplier") != std::string::npos);
    CHECK(invalid_argument_of([] {
        vigil::exponential_backoff(opts{.multiplier = std::numeric_limits<double>::quiet_NaN()});
    }).find("multiplier") != std::string::npos);
    CHECK(invalid_argument_of([] { vigil::exponential_backoff(opts{.initial = 2s, .max = 1s}); }).find("max") !=
          std::string::npos);
    // The boundaries themselves are valid.
    CHECK_NOTHROW(vigil::exponential_backoff(opts{.initial = 1ms, .multiplier = 1.0, .max = 1ms}));
}

TEST_CASE("decorrelated_jitter_backoff stays in [initial, max] for every attempt")
{
    vigil::decorrelated_jitter_backoff p({.initial = 100ms, .max = 30s, .seed = 21});
    milliseconds previous = 100ms;
    for (std::size_t n = 1; n <= 200; ++n) {
        CAPTURE(n);
        const auto d = p.next_delay(attempt(n));
        REQUIRE(d >= 100ms);
        REQUIRE(d <= 30s);
        REQUIRE(d <= previous * 3);
        previous = d;
    }

    vigil::decorrelated_jitter_backoff huge({.initial = 1ms, .max = milliseconds::max(), .seed = 4});
    for (int i = 0; i < 200; ++i) {
        const auto d = huge.next_delay(attempt(1));
        REQUIRE(d >= 1ms);
        REQUIRE(d <= milliseconds::max());
    }
}

TEST_CASE("decorrelated_jitter_backoff grows, spreads at the cap, and reset starts over")
{
    vigil::decorrelated_jitter_backoff p({.initial = 100ms, .max = 30s, .seed = 8});
    const auto first = p.next_delay(attempt(1));
    CHECK(first >= 100ms);
    CHECK(first <= 300ms);

    // Long streaks reach the cap region, and there the delays are spread, not pinned to max.
    const auto delays = draw(p, 1000, 1);
    const auto [lo, hi] = std::minmax_element(delays.begin(), delays.end());
    CHECK(*hi > 27s);
    CHECK(*lo < 3s);
    CHECK(std::set<milliseconds>(delays.begin(), delays.end()).size() > 900);

    // After reset the range is [initial, 3 * initial] again, whatever came before.
    for (int i = 0; i < 100; ++i) {
        draw(p, 20, 1);
        p.reset();
        const auto d = p.next_delay(attempt(1));
        REQUIRE(d >= 100ms);
        REQUIRE(d <= 300ms);
    }
}

TEST_CASE("decorrelated_jitter_backoff: initial == max gives a fixed delay")
{
    vigil::decorrelated_jitter_backoff p({.initial = 250ms, .max = 250ms, .seed = 1});
    for (int i = 0; i < 50; ++i) {
        REQUIRE(p.next_delay(attempt(1)) == 250ms);
    }
}

TEST_CASE("decorrelated_jitter_backoff: same seed, same sequence; different or zero seeds differ")
{
    vigil::decorrelated_jitter_backoff a({.initial = 100ms, .max = 30s, .seed = 77});
    vigil::decorrelated_jitter_backoff b({.initial = 100ms, .max = 30s, .seed = 77});
    vigil::decorrelated_jitter_backoff c({.initial = 100ms, .max = 30s, .seed = 78});
    vigil::decorrelated_jitter_backoff r1({.initial = 100ms, .max = 30s, .seed = 0});
    vigil::decorrelated_jitter_backoff r2({.initial = 100ms, .max = 30s, .seed = 0});
    const auto sa = draw(a, 30, 1);
    CHECK(sa == draw(b, 30, 1));
    CHECK(sa != draw(c, 30, 1));
    CHECK(draw(r1, 30, 1) != draw(r2, 30, 1));
}

TEST_CASE("decorrelated_jitter_backoff rejects invalid options, naming the field")
{
    using opts = vigil::decorrelated_jitter_backoff::options;
    CHECK(invalid_argument_of([] { vigil::decorrelated_jitter_backoff(opts{.initial = 0ms}); }).find("initial") !=
          std::string::npos);
    CHECK(invalid_argument_of([] { vigil::decorrelated_jitter_backoff(opts{.initial = 5s, .max = 1s}); })
              .find("max") != std::string::npos);
}

TEST_CASE("constant_backoff returns its delay for every attempt")
{
    vigil::constant_backoff def;
    CHECK(def.next_delay(attempt(1)) == 1s);
    vigil::constant_backoff p(250ms);
    for (std::size_t n = 1; n <= 200; ++n) {
        REQUIRE(p.next_delay(attempt(n)) == 250ms);
    }
    p.reset();
    CHECK(p.next_delay(attempt(1)) == 250ms);
}

TEST_CASE("any_backoff forwards to the built-in policies")
{
    SUBCASE("exponential, same sequence as the bare policy")
    {
        const vigil::exponential_backoff::options opt{.initial = 100ms, .multiplier = 2.0, .max = 30s, .seed = 12};
        vigil::exponential_backoff bare(opt);
        vigil::any_backoff any = vigil::exponential_backoff(opt);
        for (std::size_t n = 1; n <= 30; ++n) {
            REQUIRE(any.next_delay(attempt(n)) == bare.next_delay(attempt(n)));
        }
    }
    SUBCASE("decorrelated, including reset")
    {
        const vigil::decorrelated_jitter_backoff::options opt{.initial = 100ms, .max = 30s, .seed = 13};
        vigil::decorrelated_jitter_backoff bare(opt);
        vigil::any_backoff any = vigil::decorrelated_jitter_backoff(opt);
        for (int i = 0; i < 10; ++i) {
            REQUIRE(any.next_delay(attempt(1)) == bare.next_delay(attempt(1)));
        }
        any.reset();
        bare.reset();
        for (int i = 0; i < 10; ++i) {
            REQUIRE(any.next_delay(attempt(1)) == bare.next_delay(attempt(1)));
        }
    }
    SUBCASE("constant, after being moved")
    {
        vigil::any_backoff first = vigil::constant_backoff(40ms);
        vigil::any_backoff any = std::move(first);
        CHECK(any.next_delay(attempt(1)) == 40ms);
        CHECK(any.next_delay(attempt(9)) == 40ms);
    }
}

TEST_CASE("any_backoff takes a user-defined policy")
{
    vigil::any_backoff any = fibonacci_backoff(10ms, 200ms);
    std::vector<milliseconds> got;
    for (std::size_t n = 1; n <= 10; ++n) {
        got.push_back(any.next_delay(attempt(n)));
    }
    const std::vector<milliseconds> want{10ms, 10ms, 20ms, 30ms, 50ms, 80ms, 130ms, 200ms, 200ms, 200ms};
    CHECK(got == want);
    any.reset();
    CHECK(any.next_delay(attempt(1)) == 10ms);
    CHECK(any.next_delay(attempt(2)) == 10ms);
    CHECK(any.next_delay(attempt(3)) == 20ms);

    vigil::any_backoff secs = seconds_backoff{};
    CHECK(secs.next_delay(attempt(3)) == 3000ms);
}
