// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Part of the optional library vigil_prometheus, built only where prometheus-cpp (pull) is
// found; see the README's "Metrics" section.

#include <vigil/error.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace vigil {

class server;

/// Serves a `vigil::server`'s metrics to Prometheus over HTTP (`GET /metrics`, the text
/// exposition format). Each scrape reads `server::metrics()` at that moment: nothing is
/// counted twice or kept here.
///
/// Metric families: `vigil_server_accepted_total`, `vigil_server_connected_total`,
/// `vigil_server_rejected_total{reason}`, `vigil_server_disconnects_total{reason}` (the
/// labels of `server_metrics`), `vigil_server_stalls_total`,
/// `vigil_server_budget_evictions_total` (counters); `vigil_server_connections_open`,
/// `vigil_server_held_bytes`, `vigil_server_held_bytes_peak` (gauges).
///
/// **Thread safety:** scrapes run on the exporter's own threads (two); the server's
/// `metrics()` is safe from any thread. **Lifetime:** the server must outlive the
/// exporter; destroying the exporter stops its listener first.
class prometheus_exporter {
public:
    /// Listens on `bind_address`:`port` (`port` 0 picks a free one; see `port()`).
    /// Returns null when the listener cannot be opened (the port is taken, the address is
    /// not this host's); `*detail` then says which address and why. Never throws for that.
    static std::unique_ptr<prometheus_exporter> start(const server& srv, const std::string& bind_address,
                                                      std::uint16_t port, std::string* detail = nullptr);
    ~prometheus_exporter();
    prometheus_exporter(const prometheus_exporter&) = delete;
    prometheus_exporter& operator=(const prometheus_exporter&) = delete;

    /// The port listened on.
    std::uint16_t port() const noexcept;

private:
    struct impl;
    explicit prometheus_exporter(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace vigil
