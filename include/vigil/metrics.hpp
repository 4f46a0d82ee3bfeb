// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/error.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace vigil {

/// A histogram of durations with fixed bucket bounds, as Prometheus understands them.
///
/// Bounds (upper, inclusive): 100 us, 250 us, 500 us, 1 ms, 2.5 ms, 5 ms, 10 ms, 25 ms,
/// 50 ms, 100 ms, 250 ms, 500 ms, 1 s, 2.5 s, 5 s, 10 s, 30 s, 60 s; one more bucket takes
/// everything above. They cover a loopback round trip (tens of microseconds) as well as a
/// long backoff wait. `counts[i]` is the number of observations in bucket i alone (not
/// cumulative). A plain value: not thread-safe; snapshots hand out copies.
struct duration_histogram {
    static constexpr std::array<std::int64_t, 18> bounds_us{
        100,     250,     500,     1'000,     2'500,     5'000,     10'000,     25'000,     50'000,
        100'000, 250'000, 500'000, 1'000'000, 2'500'000, 5'000'000, 10'000'000, 30'000'000, 60'000'000};
    /// Observations per bucket; the last one is above every bound.
    std::array<std::uint64_t, bounds_us.size() + 1> counts{};
    /// Sum of every observation.
    std::chrono::microseconds sum{0};
    /// Number of observations (the sum of `counts`).
    std::uint64_t count = 0;

    /// Counts `d` (a negative duration counts as zero).
    void observe(std::chrono::microseconds d) noexcept;
    /// Adds another histogram's observations to this one.
    void merge(const duration_histogram& other) noexcept;
};

/// The bounded label under which a connection's end is counted: for a `vigil::error`, its
/// name (`"pong_timeout"`); `"clean"` for no error; `"closed_by_peer"` for any close code the
/// peer sent; `"handshake_rejected"` for any HTTP status; `"cancelled"` for
/// `operation_aborted`; `"network_error"` for every other code (resets, EOF, TLS errors).
/// The set of labels is fixed by this list and the enumerators of `vigil::error`, so a
/// map keyed by them cannot grow without bound whatever peers do.
std::string disconnect_label(const error_code& reason);

/// Data messages and their payload bytes, each way, counted whole: a message is counted
/// when its last frame was read (received) or written (sent). Payload bytes are the
/// message's own (after decompression with permessage-deflate), without frame headers or
/// TLS. Application-level heartbeat messages count (they are data messages on the wire);
/// protocol pings, pongs and close frames do not. Monotonic.
struct traffic_counts {
    std::uint64_t messages_in = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t messages_out = 0;
    std::uint64_t bytes_out = 0;

    traffic_counts& operator+=(const traffic_counts& o) noexcept
    {
        messages_in += o.messages_in;
        bytes_in += o.bytes_in;
        messages_out += o.messages_out;
        bytes_out += o.bytes_out;
        return *this;
    }
};

/// What waits in queues at one moment (gauges).
struct queue_depths {
    /// Messages the application (or a broadcast) queued that are not yet written whole,
    /// the one being written included, and their payload bytes. Heartbeat messages, which
    /// jump the queue, are not counted.
    std::uint64_t send_messages = 0;
    std::uint64_t send_bytes = 0;
    /// Received messages waiting for `receive()` (a server connection's handler).
    std::uint64_t receive_messages = 0;

    queue_depths& operator+=(const queue_depths& o) noexcept
    {
        send_messages += o.send_messages;
        send_bytes += o.send_bytes;
        receive_messages += o.receive_messages;
        return *this;
    }
};

/// Counts keyed by `disconnect_label()`.
using reason_counts = std::map<std::string, std::uint64_t, std::less<>>;

}  // namespace vigil
