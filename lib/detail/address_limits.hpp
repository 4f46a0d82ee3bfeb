// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The server's limits per client address (server_config::max_connections_per_address,
// connects_per_address), as decisions without I/O: the accept loop asks admit() for every
// connection it would let in and tells released() when one ends; `now` is always an
// argument. Unit-tested with a fake clock (tests/unit/test_address_limits.cpp).

#include <boost/asio/ip/address.hpp>
#include <boost/circular_buffer.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <utility>

namespace vigil::detail {

/// An IP address as a key: 16 bytes (IPv4 in the first 4) and the family. An IPv4-mapped
/// IPv6 address ("::ffff:192.0.2.1", how a dual-stack listener sees IPv4 clients) is its
/// IPv4 address. The IPv6 scope id is left out.
struct address_key {
    std::array<unsigned char, 16> bytes{};
    bool v6 = false;

    static address_key of(const boost::asio::ip::address& a) noexcept;
    std::string to_string() const;
    friend auto operator<=>(const address_key&, const address_key&) = default;
};

class address_limits {
public:
    using time_point = std::chrono::steady_clock::time_point;

    struct verdict {
        enum class kind {
            accept,         ///< counted: call released() when the connection ends
            too_many_open,  ///< `count` connections of the address are open (the limit)
            too_fast,       ///< `count` connections accepted within the window (the limit)
        };
        kind what = kind::accept;
        std::size_t count = 0;
        /// too_fast: until the window has room again, rounded up to whole seconds, at
        /// least 1 s (what Retry-After says).
        std::chrono::milliseconds retry_after{0};
    };

    /// Zero counts are no limit. `max_records`: most addresses kept for their recent
    /// connects alone (nothing open); beyond that the one whose window ends first is
    /// forgotten early.
    address_limits(std::size_t max_open, std::size_t connects, std::chrono::milliseconds window,
                   std::size_t max_records);

    /// True when either limit is set (otherwise admit() always accepts and keeps nothing).
    bool enabled() const noexcept { return max_open_ > 0 || connects_ > 0; }

    /// A connection from `a` would be let in at `now`. On accept it is counted as open and
    /// as a connect of the window; a refusal counts nothing.
    verdict admit(const address_key& a, time_point now);

    /// A connection admit() accepted has ended (nothing for an address it does not know).
    void released(const address_key& a, time_point now);

    /// Open connections of `a` now.
    std::size_t open(const address_key& a) const;
    /// Addresses kept: with connections open, and with only recent connects.
    std::size_t records() const noexcept { return entries_.size(); }
    std::size_t idle_records() const noexcept { return idle_.size(); }

private:
    struct entry {
        std::size_t open = 0;
        boost::circular_buffer<time_point> recent;  // accepted connects, oldest first
        time_point forget_at{};  // with nothing open: when the last connect leaves the window
    };
    using map_type = std::map<address_key, entry>;

    void prune(time_point now);
    void make_idle(map_type::iterator it, time_point now);

    std::size_t max_open_;
    std::size_t connects_;
    std::chrono::milliseconds window_;
    std::size_t max_records_;
    map_type entries_;
    std::set<std::pair<time_point, address_key>> idle_;  // entries with nothing open, by forget_at
};

}  // namespace vigil::detail
