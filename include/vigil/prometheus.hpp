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
class supervisor;

/// Serves the metrics of vigil servers and supervisors to Prometheus over HTTP
/// (`GET /metrics`, the text exposition format). Each scrape reads `server::metrics()` and
/// `supervisor::metrics()` at that moment: nothing is counted twice or kept here.
///
/// Server families (label `server="NAME"` when added with a name):
/// `vigil_server_accepted_total`, `vigil_server_connected_total`,
/// `vigil_server_rejected_total{reason}`, `vigil_server_disconnects_total{reason}` (the
/// labels of `server_metrics`), `vigil_server_stalls_total`,
/// `vigil_server_budget_evictions_total`, `vigil_server_fanout_published_total`,
/// `_fanout_failed_total`, `_fanout_received_total`, `_fanout_missed_total`,
/// `_fanout_invalid_total` (the fan-out's counts of `server_counters`; zero without one),
/// `vigil_server_messages_received_total`,
/// `vigil_server_messages_sent_total`, `vigil_server_received_bytes_total`,
/// `vigil_server_sent_bytes_total` (counters); `vigil_server_connections_open`,
/// `vigil_server_held_bytes`, `vigil_server_held_bytes_peak`,
/// `vigil_server_send_queue_messages`, `vigil_server_send_queue_bytes`,
/// `vigil_server_receive_queue_messages` (gauges); `vigil_server_round_trip_seconds`
/// (histogram).
///
/// Supervisor families (label `supervisor="NAME"`): `vigil_supervisor_attempts_total`,
/// `vigil_supervisor_connects_total`, `vigil_supervisor_retries_total`,
/// `vigil_supervisor_planned_reconnects_total`, `vigil_supervisor_disconnects_total{reason}`,
/// `vigil_supervisor_messages_delivered_total` (sends completed without error),
/// `vigil_supervisor_messages_failed_total`, `vigil_supervisor_messages_received_total`,
/// `vigil_supervisor_messages_sent_total`, `vigil_supervisor_received_bytes_total`,
/// `vigil_supervisor_sent_bytes_total`, `vigil_supervisor_connected_seconds_total`
/// (counters); `vigil_supervisor_up`, `vigil_supervisor_pending_messages`,
/// `vigil_supervisor_pending_bytes` (gauges); `vigil_supervisor_round_trip_seconds`,
/// `vigil_supervisor_backoff_wait_seconds` (histograms).
///
/// **Thread safety:** scrapes run on the exporter's own threads (two); `add` and `remove`
/// are safe from any thread. **Lifetime:** what was added must outlive the exporter, or be
/// removed first: `remove` returns once no scrape reads it any more. Destroying the
/// exporter stops its listener first.
class prometheus_exporter {
public:
    /// Listens on `bind_address`:`port` (`port` 0 picks a free one; see `port()`), exposing
    /// nothing until `add`. Returns null when the listener cannot be opened (the port is
    /// taken, the address is not this host's); `*detail` then says which address and why.
    /// Never throws for that.
    static std::unique_ptr<prometheus_exporter> start(const std::string& bind_address, std::uint16_t port,
                                                      std::string* detail = nullptr);
    /// `start(bind_address, port, detail)`, then `add(srv)`.
    static std::unique_ptr<prometheus_exporter> start(const server& srv, const std::string& bind_address,
                                                      std::uint16_t port, std::string* detail = nullptr);
    ~prometheus_exporter();
    prometheus_exporter(const prometheus_exporter&) = delete;
    prometheus_exporter& operator=(const prometheus_exporter&) = delete;

    /// Exposes `srv`, its series labelled `server="name"` (no label when `name` is empty).
    /// Returns false, and changes nothing, when `srv` or another server of that name is
    /// exposed already (two series with the same labels would be invalid).
    bool add(const server& srv, std::string name = {});
    /// Exposes `sup`, its series labelled `supervisor="name"`. Returns false, and changes
    /// nothing, when `sup` or another supervisor of that name is exposed already.
    bool add(const supervisor& sup, std::string name);
    /// Stops exposing it; returns whether it was exposed.
    bool remove(const server& srv);
    bool remove(const supervisor& sup);

    /// The port listened on.
    std::uint16_t port() const noexcept;

private:
    struct impl;
    explicit prometheus_exporter(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace vigil
