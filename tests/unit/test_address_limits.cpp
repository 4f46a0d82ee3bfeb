// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The server's limits per client address (lib/detail/address_limits.hpp), stepped with a
// fake clock: open connections, connects per window with the Retry-After they give, and the
// records kept, which a flood of distinct addresses must not grow without bound.

#include "detail/address_limits.hpp"

#include <support/testing.hpp>

#include <boost/asio/ip/address.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <string>

namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using time_point = std::chrono::steady_clock::time_point;
using vigil::detail::address_key;
using vigil::detail::address_limits;
using kind = address_limits::verdict::kind;

const time_point t0 = time_point(std::chrono::hours(10));

address_key addr(const char* text)
{
    return address_key::of(boost::asio::ip::make_address(text));
}

}  // namespace

TEST_SUITE("address_limits")
{
    TEST_CASE("an address is a key: IPv4, IPv6, and IPv4-mapped IPv6 as its IPv4 address")
    {
        CHECK(addr("127.0.0.1") == addr("127.0.0.1"));
        CHECK(addr("127.0.0.1") != addr("127.0.0.2"));
        CHECK(addr("::ffff:127.0.0.1") == addr("127.0.0.1"));
        CHECK(addr("::1") != addr("0.0.0.1"));
        CHECK(addr("2001:db8::1") != addr("2001:db8::2"));
        CHECK(addr("127.0.0.1").to_string() == "127.0.0.1");
        CHECK(addr("::ffff:192.0.2.7").to_string() == "192.0.2.7");
        CHECK(addr("2001:db8::1").to_string() == "2001:db8::1");
    }

    TEST_CASE("no limits: everything is accepted and nothing is kept")
    {
        address_limits l(0, 0, 1000ms, 16);
        CHECK_FALSE(l.enabled());
        for (int i = 0; i < 100; ++i)
            CHECK(l.admit(addr("10.0.0.1"), t0).what == kind::accept);
        CHECK(l.records() == 0);
        l.released(addr("10.0.0.1"), t0);  // unknown: nothing happens
        CHECK(l.records() == 0);
    }

    TEST_CASE("open connections per address: the N+1-th is refused, another address is not, a release frees a slot")
    {
        address_limits l(2, 0, 1000ms, 16);
        const auto a = addr("127.0.0.1");
        const auto b = addr("127.0.0.2");
        CHECK(l.admit(a, t0).what == kind::accept);
        CHECK(l.admit(a, t0).what == kind::accept);
        const auto v = l.admit(a, t0);
        CHECK(v.what == kind::too_many_open);
        CHECK(v.count == 2);
        CHECK(l.open(a) == 2);  // a refusal counts nothing
        CHECK(l.admit(b, t0).what == kind::accept);
        CHECK(l.open(b) == 1);

        l.released(a, t0 + 1s);
        CHECK(l.open(a) == 1);
        CHECK(l.admit(a, t0 + 1s).what == kind::accept);
        CHECK(l.admit(a, t0 + 1s).what == kind::too_many_open);

        // Nothing open and no rate: the record goes at once.
        l.released(b, t0 + 2s);
        CHECK(l.open(b) == 0);
        CHECK(l.records() == 1);
        l.released(a, t0 + 2s);
        l.released(a, t0 + 2s);
        CHECK(l.records() == 0);
        l.released(a, t0 + 2s);  // one release too many is ignored
        CHECK(l.admit(a, t0 + 2s).what == kind::accept);
    }

    TEST_CASE("connects per window: refused until the oldest leaves, Retry-After rounded up to whole seconds")
    {
        address_limits l(0, 3, 10s, 16);
        const auto a = addr("192.0.2.1");
        CHECK(l.admit(a, t0).what == kind::accept);
        CHECK(l.admit(a, t0 + 2500ms).what == kind::accept);
        CHECK(l.admit(a, t0 + 2600ms).what == kind::accept);
        auto v = l.admit(a, t0 + 2700ms);
        CHECK(v.what == kind::too_fast);
        CHECK(v.count == 3);
        CHECK(v.retry_after == 8000ms);  // 7.3 s until t0 + 10 s, rounded up
        // Refusals are not counted: the window frees at t0 + 10 s whatever the client tried.
        for (int i = 0; i < 50; ++i)
            CHECK(l.admit(a, t0 + 9s).what == kind::too_fast);
        v = l.admit(a, t0 + 9999ms);
        CHECK(v.what == kind::too_fast);
        CHECK(v.retry_after == 1000ms);  // 1 ms, but never less than a second
        CHECK(l.admit(a, t0 + 10s).what == kind::accept);
        // Now the window holds t0 + 2.5 s, 2.6 s and 10 s.
        v = l.admit(a, t0 + 10s);
        CHECK(v.what == kind::too_fast);
        CHECK(v.retry_after == 3000ms);  // 2.5 s, rounded up
        CHECK(l.admit(a, t0 + 12500ms).what == kind::accept);
        // Another address has a window of its own.
        CHECK(l.admit(addr("192.0.2.2"), t0 + 12500ms).what == kind::accept);
    }

    TEST_CASE("both limits: the open count is asked first, and a refusal for it uses no connect")
    {
        address_limits l(1, 2, 1s, 16);
        const auto a = addr("2001:db8::7");
        CHECK(l.admit(a, t0).what == kind::accept);
        CHECK(l.admit(a, t0).what == kind::too_many_open);
        CHECK(l.admit(a, t0).what == kind::too_many_open);
        l.released(a, t0 + 10ms);
        CHECK(l.admit(a, t0 + 10ms).what == kind::accept);  // the second connect of the window
        l.released(a, t0 + 20ms);
        const auto v = l.admit(a, t0 + 20ms);
        CHECK(v.what == kind::too_fast);
        CHECK(v.retry_after == 1000ms);
        CHECK(l.admit(a, t0 + 1s).what == kind::accept);
    }

    TEST_CASE("a record with nothing open is kept while its connects are in the window, then dropped")
    {
        address_limits l(0, 2, 1s, 16);
        const auto a = addr("198.51.100.1");
        CHECK(l.admit(a, t0).what == kind::accept);
        CHECK(l.admit(a, t0 + 100ms).what == kind::accept);
        l.released(a, t0 + 200ms);
        l.released(a, t0 + 300ms);
        // Nothing open, but the rate still holds.
        CHECK(l.records() == 1);
        CHECK(l.idle_records() == 1);
        CHECK(l.admit(a, t0 + 400ms).what == kind::too_fast);
        // Another address's admit at t0 + 1.1 s (after a's last connect left) prunes it.
        CHECK(l.admit(addr("198.51.100.2"), t0 + 1100ms).what == kind::accept);
        CHECK(l.records() == 1);
        CHECK(l.open(a) == 0);
        CHECK(l.idle_records() == 0);
        // Released long after its window: dropped at once.
        l.released(addr("198.51.100.2"), t0 + 5s);
        CHECK(l.records() == 0);
        // An idle record that connects again is open, not idle.
        CHECK(l.admit(a, t0 + 6s).what == kind::accept);
        l.released(a, t0 + 6100ms);
        CHECK(l.idle_records() == 1);
        CHECK(l.admit(a, t0 + 6200ms).what == kind::accept);
        CHECK(l.idle_records() == 0);
        CHECK(l.records() == 1);
    }

    TEST_CASE("a flood of distinct addresses: records stay within the open ones plus max_records")
    {
        constexpr std::size_t max_records = 100;
        address_limits l(3, 5, 60s, max_records);
        auto now = t0;
        // 10,000 addresses connecting once each and leaving at once, far faster than the window.
        for (unsigned i = 0; i < 10000; ++i) {
            const auto a = address_key::of(boost::asio::ip::make_address_v4(0x0a000000u + i));
            REQUIRE(l.admit(a, now).what == kind::accept);
            l.released(a, now);
            CHECK(l.records() <= max_records);
            now += 1ms;
        }
        CHECK(l.records() == max_records);
        // Connections that stay open are kept however many idle records there are.
        for (unsigned i = 0; i < 500; ++i) {
            const auto a = address_key::of(boost::asio::ip::make_address_v4(0x0b000000u + i));
            REQUIRE(l.admit(a, now).what == kind::accept);
        }
        CHECK(l.records() == max_records + 500);
        CHECK(l.idle_records() == max_records);
        // The most recent addresses are the ones remembered: the last one is still limited.
        const auto last = address_key::of(boost::asio::ip::make_address_v4(0x0a000000u + 9999));
        for (int i = 0; i < 3; ++i)
            CHECK(l.admit(last, now).what == kind::accept);  // its connects 2 to 4
        CHECK(l.admit(last, now).what == kind::too_many_open);
        for (int i = 0; i < 3; ++i)
            l.released(last, now);
        CHECK(l.admit(last, now).what == kind::accept);  // the fifth
        CHECK(l.admit(last, now).what == kind::too_fast);
        // Once every window is over, only the open connections are left.
        for (unsigned i = 0; i < 500; ++i) {
            const auto a = address_key::of(boost::asio::ip::make_address_v4(0x0b000000u + i));
            l.released(a, now + 61s);
        }
        l.released(last, now + 61s);
        CHECK(l.records() == 0);
    }
}
