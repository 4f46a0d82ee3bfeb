// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <vigil/prometheus.hpp>
#include <vigil/server.hpp>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <exception>
#include <utility>
#include <vector>

namespace vigil {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily one(std::string name, std::string help, MetricType type, double value)
{
    ClientMetric m;
    if (type == MetricType::Counter)
        m.counter.value = value;
    else
        m.gauge.value = value;
    return MetricFamily{std::move(name), std::move(help), type, {std::move(m)}};
}

MetricFamily by_reason(std::string name, std::string help, const reason_counts& counts)
{
    MetricFamily f{std::move(name), std::move(help), MetricType::Counter, {}};
    for (const auto& [reason, n] : counts) {
        ClientMetric m;
        m.label.push_back({"reason", reason});
        m.counter.value = static_cast<double>(n);
        f.metric.push_back(std::move(m));
    }
    return f;
}

// Reads the server's snapshot at scrape time (on one of the exposer's threads).
class server_collectable final : public prometheus::Collectable {
public:
    explicit server_collectable(const server& srv) : srv_(srv) {}

    std::vector<MetricFamily> Collect() const override
    {
        const auto m = srv_.metrics();
        const auto& c = m.counters;
        auto d = [](std::size_t n) { return static_cast<double>(n); };
        std::vector<MetricFamily> out;
        out.push_back(one("vigil_server_accepted_total", "TCP connections accepted", MetricType::Counter, d(c.accepted)));
        out.push_back(one("vigil_server_connected_total", "WebSocket upgrades completed", MetricType::Counter, d(c.connected)));
        out.push_back(by_reason("vigil_server_rejected_total", "Clients turned away before the upgrade completed", m.rejections));
        out.push_back(by_reason("vigil_server_disconnects_total", "Connections that ended, by reason", m.disconnects));
        out.push_back(one("vigil_server_stalls_total", "Stalls of the server's own event loop", MetricType::Counter, d(c.stalls)));
        out.push_back(one("vigil_server_budget_evictions_total", "Connections ended by the memory budget", MetricType::Counter,
                          d(c.budget_evictions)));
        out.push_back(one("vigil_server_connections_open", "Connections open now, handshakes included", MetricType::Gauge, d(c.open)));
        out.push_back(one("vigil_server_held_bytes", "Memory held for messages now", MetricType::Gauge, d(c.held_bytes)));
        out.push_back(one("vigil_server_held_bytes_peak", "The most memory ever held for messages", MetricType::Gauge,
                          d(c.held_bytes_peak)));
        return out;
    }

private:
    const server& srv_;
};

}  // namespace

struct prometheus_exporter::impl {
    std::shared_ptr<server_collectable> collectable;
    std::unique_ptr<prometheus::Exposer> exposer;  // after collectable: destroyed first
    std::uint16_t port = 0;
};

std::unique_ptr<prometheus_exporter> prometheus_exporter::start(const server& srv, const std::string& bind_address,
                                                                std::uint16_t port, std::string* detail)
{
    auto p = std::make_unique<impl>();
    p->collectable = std::make_shared<server_collectable>(srv);
    // An IPv6 literal needs brackets in the listener's address.
    const bool v6 = bind_address.find(':') != std::string::npos;
    const auto where = (v6 ? "[" + bind_address + "]" : bind_address) + ":" + std::to_string(port);
    try {
        p->exposer = std::make_unique<prometheus::Exposer>(where, 2);
    } catch (const std::exception& e) {
        if (detail)
            *detail = "cannot listen for metrics on " + where + ": " + e.what();
        return nullptr;
    }
    const auto ports = p->exposer->GetListeningPorts();
    if (ports.empty() || ports.front() <= 0 || ports.front() > 65535) {
        if (detail)
            *detail = "cannot listen for metrics on " + where + ": no port was opened";
        return nullptr;
    }
    p->port = static_cast<std::uint16_t>(ports.front());
    p->exposer->RegisterCollectable(p->collectable);
    return std::unique_ptr<prometheus_exporter>(new prometheus_exporter(std::move(p)));
}

prometheus_exporter::prometheus_exporter(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

prometheus_exporter::~prometheus_exporter() = default;

std::uint16_t prometheus_exporter::port() const noexcept
{
    return impl_->port;
}

}  // namespace vigil
