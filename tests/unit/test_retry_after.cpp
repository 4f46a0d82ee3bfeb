// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// <vigil/retry_after.hpp>: parsing a server's Retry-After, both forms, and refusing garbage.

#include <vigil/retry_after.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <ctime>
#include <string>

namespace {

using std::chrono::milliseconds;

std::chrono::system_clock::time_point at(int year, int mon, int day, int h, int m, int s)
{
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

}  // namespace

TEST_SUITE("retry_after")
{
    TEST_CASE("Retry-After: delay-seconds")
    {
        CHECK(vigil::parse_retry_after("1") == milliseconds(1000));
        CHECK(vigil::parse_retry_after("0") == milliseconds(0));
        CHECK(vigil::parse_retry_after(" 120 ") == milliseconds(120000));
        // Absurd values are clamped to a day, never overflowed.
        CHECK(vigil::parse_retry_after("99999999999999999999") == milliseconds(std::chrono::hours(24)));
        CHECK(vigil::parse_retry_after("172800") == milliseconds(std::chrono::hours(24)));
    }

    TEST_CASE("Retry-After: HTTP dates in all three forms")
    {
        const auto now = at(2015, 10, 21, 7, 27, 0);
        CHECK(vigil::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == milliseconds(60000));
        CHECK(vigil::parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now) == milliseconds(60000));
        CHECK(vigil::parse_retry_after("Wed Oct 21 07:28:00 2015", now) == milliseconds(60000));
        // A date in the past means "now".
        CHECK(vigil::parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now) == milliseconds(0));
    }

    TEST_CASE("Retry-After: garbage is rejected, not guessed")
    {
        for (const char* bad : {"", " ", "-1", "1.5", "soon", "1s", "Wed, 21 Oct 2015 07:28:00 PST",
                                "Wed, 21 Oct 2015 07:28:00 GMT trailing", "0x10"}) {
            CAPTURE(bad);
            CHECK_FALSE(vigil::parse_retry_after(bad).has_value());
        }
        CHECK_FALSE(vigil::parse_retry_after(std::string(1000, '9') + "x").has_value());
        CHECK_FALSE(vigil::parse_retry_after(std::string("1\0" "0", 3)).has_value());
    }

}
