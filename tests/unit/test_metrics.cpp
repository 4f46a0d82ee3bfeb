// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/metrics.hpp>

#include <boost/asio/error.hpp>

#include <doctest/doctest.h>

#include <set>

using namespace std::chrono_literals;
using vigil::duration_histogram;

TEST_CASE("duration_histogram: a value on a bound goes in that bound's bucket, above the last in the overflow one")
{
    duration_histogram h;
    h.observe(0us);            // bucket 0 (<= 100 us)
    h.observe(100us);          // bucket 0: bounds are inclusive
    h.observe(101us);          // bucket 1 (<= 250 us)
    h.observe(1ms);            // bucket 3 (<= 1 ms)
    h.observe(250ms);          // bucket 10 (<= 250 ms)
    h.observe(60s);            // bucket 17 (<= 60 s), the last bound
    h.observe(60s + 1us);      // the overflow bucket
    h.observe(-5ms);           // counts as zero
    CHECK(h.count == 8);
    CHECK(h.counts[0] == 3);
    CHECK(h.counts[1] == 1);
    CHECK(h.counts[3] == 1);
    CHECK(h.counts[10] == 1);
    CHECK(h.counts[17] == 1);
    CHECK(h.counts[18] == 1);
    CHECK(h.counts.size() == 19);
    std::uint64_t total = 0;
    for (auto n : h.counts)
        total += n;
    CHECK(total == h.count);
    CHECK(h.sum == 100us + 101us + 1ms + 250ms + 60s + 60s + 1us);

    duration_histogram other;
    other.observe(3ms);
    h.merge(other);
    CHECK(h.count == 9);
    CHECK(h.counts[5] == 1);  // <= 5 ms
    CHECK(h.sum == 100us + 101us + 1ms + 250ms + 60s + 60s + 1us + 3ms);
}

TEST_CASE("disconnect_label: a bounded set of labels, whatever the code")
{
    CHECK(vigil::disconnect_label({}) == "clean");
    CHECK(vigil::disconnect_label(vigil::error::pong_timeout) == "pong_timeout");
    CHECK(vigil::disconnect_label(vigil::error::memory_budget_exceeded) == "memory_budget_exceeded");
    CHECK(vigil::disconnect_label(vigil::make_close_error(1000)) == "closed_by_peer");
    CHECK(vigil::disconnect_label(vigil::make_close_error(4321)) == "closed_by_peer");
    CHECK(vigil::disconnect_label(vigil::make_http_status_error(503)) == "handshake_rejected");
    CHECK(vigil::disconnect_label(boost::asio::error::operation_aborted) == "cancelled");
    CHECK(vigil::disconnect_label(boost::asio::error::connection_reset) == "network_error");
    CHECK(vigil::disconnect_label(boost::asio::error::eof) == "network_error");

    // Every close code and every errno maps into the few buckets above.
    std::set<std::string> labels;
    for (int code = 1000; code < 5000; ++code)
        labels.insert(vigil::disconnect_label(vigil::make_close_error(static_cast<unsigned>(code))));
    for (int e = 1; e < 200; ++e)
        labels.insert(vigil::disconnect_label(vigil::error_code(e, boost::system::system_category())));
    // ECANCELED is operation_aborted.
    CHECK(labels == std::set<std::string>{"cancelled", "closed_by_peer", "network_error"});
}
