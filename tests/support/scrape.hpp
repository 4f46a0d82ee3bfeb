// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Prometheus scrapes for the metrics tests: a real HTTP GET, and the samples read back from
// the text exposition.

#include <cstdint>
#include <string>

namespace vigil::test {

/// GET /metrics from 127.0.0.1:`port` over a real socket (HTTP/1.0: the answer ends at
/// EOF), at most 5 s; the body, or empty on failure.
std::string scrape(std::uint16_t port);

/// The value of the sample `series` (a name and its labels as printed) in a text
/// exposition, or -1 when it is not there.
double sample(const std::string& text, const std::string& series);

}  // namespace vigil::test
