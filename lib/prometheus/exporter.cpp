// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <vigil/prometheus.hpp>
#include <vigil/server.hpp>
#include <vigil/supervisor.hpp>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <algorithm>
#include <exception>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

namespace vigil {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using labels = std::vector<ClientMetric::Label>;

double num(std::uint64_t n)
{
    return static_cast<double>(n);
}

// The families of one scrape, each gathering the samples of every server (or supervisor)
// under its one name: a name may appear once in the exposition.
class families {
public:
    void counter(const std::string& name, const char* help, const labels& l, double v)
    {
        auto& m = sample(name, help, MetricType::Counter, l);
        m.counter.value = v;
    }
    void gauge(const std::string& name, const char* help, const labels& l, double v)
    {
        auto& m = sample(name, help, MetricType::Gauge, l);
        m.gauge.value = v;
    }
    void by_reason(const std::string& name, const char* help, const labels& l, const reason_counts& counts)
    {
        family(name, help, MetricType::Counter);  // present even while nothing is counted
        for (const auto& [reason, n] : counts) {
            auto with = l;
            with.push_back({"reason", reason});
            counter(name, help, with, num(n));
        }
    }
    void histogram(const std::string& name, const char* help, const labels& l, const duration_histogram& h)
    {
        auto& m = sample(name, help, MetricType::Histogram, l);
        m.histogram.sample_count = h.count;
        m.histogram.sample_sum = std::chrono::duration<double>(h.sum).count();
        std::uint64_t below = 0;
        for (std::size_t i = 0; i < h.counts.size(); ++i) {
            below += h.counts[i];
            const bool last = i == duration_histogram::bounds_us.size();
            const double bound = last ? std::numeric_limits<double>::infinity() : duration_histogram::bounds_us[i] / 1e6;
            m.histogram.bucket.push_back({below, bound});
        }
    }
    std::vector<MetricFamily> take() { return std::move(out_); }

private:
    MetricFamily& family(const std::string& name, const char* help, MetricType type)
    {
        auto at = std::find_if(out_.begin(), out_.end(), [&](const MetricFamily& f) { return f.name == name; });
        if (at != out_.end())
            return *at;
        return out_.emplace_back(MetricFamily{name, help, type, {}});
    }
    ClientMetric& sample(const std::string& name, const char* help, MetricType type, const labels& l)
    {
        auto& m = family(name, help, type).metric.emplace_back();
        m.label = l;
        return m;
    }

    std::vector<MetricFamily> out_;
};

// The four traffic counters, `prefix` naming whose (vigil_server, vigil_supervisor).
void add_traffic(families& f, const std::string& prefix, const traffic_counts& t, const labels& l)
{
    f.counter(prefix + "_messages_received_total", "Data messages received whole", l, num(t.messages_in));
    f.counter(prefix + "_messages_sent_total", "Data messages written whole", l, num(t.messages_out));
    f.counter(prefix + "_received_bytes_total", "Payload bytes of the messages received", l, num(t.bytes_in));
    f.counter(prefix + "_sent_bytes_total", "Payload bytes of the messages written", l, num(t.bytes_out));
}

void add_server(families& f, const server_metrics& m, const labels& l)
{
    const auto& c = m.counters;
    f.counter("vigil_server_accepted_total", "TCP connections accepted", l, num(c.accepted));
    f.counter("vigil_server_connected_total", "WebSocket upgrades completed", l, num(c.connected));
    f.by_reason("vigil_server_rejected_total", "Clients turned away before the upgrade completed", l, m.rejections);
    f.by_reason("vigil_server_disconnects_total", "Connections that ended, by reason", l, m.disconnects);
    f.counter("vigil_server_stalls_total", "Stalls of the server's own event loop", l, num(c.stalls));
    f.counter("vigil_server_budget_evictions_total", "Connections ended by the memory budget", l, num(c.budget_evictions));
    f.counter("vigil_server_fanout_published_total", "Channel broadcasts the fan-out accepted", l, num(c.fanout_published));
    f.counter("vigil_server_fanout_failed_total", "Channel broadcasts the fan-out did not carry", l, num(c.fanout_failed));
    f.counter("vigil_server_fanout_received_total", "Broadcasts from other nodes delivered here", l, num(c.fanout_received));
    f.counter("vigil_server_fanout_missed_total", "Broadcasts of other nodes missed here", l, num(c.fanout_missed));
    f.counter("vigil_server_fanout_invalid_total", "Messages from the fan-out dropped: unreadable or repeated", l,
              num(c.fanout_invalid));
    add_traffic(f, "vigil_server", m.traffic, l);
    f.gauge("vigil_server_connections_open", "Connections open now, handshakes included", l, num(c.open));
    f.gauge("vigil_server_held_bytes", "Memory held for messages now", l, num(c.held_bytes));
    f.gauge("vigil_server_held_bytes_peak", "The most memory ever held for messages", l, num(c.held_bytes_peak));
    f.gauge("vigil_server_send_queue_messages", "Messages waiting to be written, all connections", l,
            num(m.queues.send_messages));
    f.gauge("vigil_server_send_queue_bytes", "Bytes of the messages waiting to be written", l, num(m.queues.send_bytes));
    f.gauge("vigil_server_receive_queue_messages", "Received messages waiting for handlers", l,
            num(m.queues.receive_messages));
    f.histogram("vigil_server_round_trip_seconds", "Round trips of the server's pings", l, m.round_trips);
}

void add_supervisor(families& f, const supervisor_metrics& m, const labels& l)
{
    const auto& c = m.counters;
    f.counter("vigil_supervisor_attempts_total", "Connection attempts started", l, num(c.attempts));
    f.counter("vigil_supervisor_connects_total", "Connections that came up", l, num(c.connects));
    f.counter("vigil_supervisor_retries_total", "Waits between attempts", l, num(c.retries));
    f.counter("vigil_supervisor_planned_reconnects_total", "Planned replacements carried out", l,
              num(c.planned_reconnects));
    reason_counts ends(c.disconnects.begin(), c.disconnects.end());
    f.by_reason("vigil_supervisor_disconnects_total", "Sessions and attempts that ended, by reason", l, ends);
    f.counter("vigil_supervisor_messages_delivered_total", "Sends completed without error", l, num(c.messages_sent));
    f.counter("vigil_supervisor_messages_failed_total", "Sends completed with an error", l, num(c.messages_failed));
    add_traffic(f, "vigil_supervisor", m.traffic, l);
    f.counter("vigil_supervisor_connected_seconds_total", "Time a connection was up", l,
              std::chrono::duration<double>(c.time_connected).count());
    f.gauge("vigil_supervisor_up", "1 while a connection is up", l, m.connected ? 1 : 0);
    f.gauge("vigil_supervisor_pending_messages", "Sends not completed yet", l, num(m.pending_messages));
    f.gauge("vigil_supervisor_pending_bytes", "Bytes of the sends not completed yet", l, num(m.pending_bytes));
    f.histogram("vigil_supervisor_round_trip_seconds", "Round trips of the heartbeat's pings", l, m.round_trips);
    f.histogram("vigil_supervisor_backoff_wait_seconds", "Waits between attempts", l, m.backoff_waits);
}

// What the exporter exposes, read at each scrape (on one of the exposer's threads). The
// lock is held through a scrape, so remove() returns only once nobody reads the source.
template <class Source>
struct source {
    const Source* object;
    std::string name;
};

template <class Source>
bool add_to(std::vector<source<Source>>& all, const Source& s, std::string name)
{
    const bool taken = std::any_of(all.begin(), all.end(), [&](const source<Source>& e) {
        return e.object == &s || e.name == name;
    });
    if (!taken)
        all.push_back({&s, std::move(name)});
    return !taken;
}

template <class Source>
bool remove_from(std::vector<source<Source>>& all, const Source& s)
{
    const auto n = std::erase_if(all, [&](const source<Source>& e) { return e.object == &s; });
    return n > 0;
}

class sources final : public prometheus::Collectable {
public:
    std::vector<MetricFamily> Collect() const override
    {
        std::lock_guard lock(mu_);
        families f;
        for (const auto& s : servers)
            add_server(f, s.object->metrics(), s.name.empty() ? labels{} : labels{{"server", s.name}});
        for (const auto& s : supervisors)
            add_supervisor(f, s.object->metrics(), labels{{"supervisor", s.name}});
        return f.take();
    }

    mutable std::mutex mu_;
    std::vector<source<server>> servers;
    std::vector<source<supervisor>> supervisors;
};

}  // namespace

struct prometheus_exporter::impl {
    std::shared_ptr<sources> exposed = std::make_shared<sources>();
    std::unique_ptr<prometheus::Exposer> exposer;  // after `exposed`: destroyed first
    std::uint16_t port = 0;
};

std::unique_ptr<prometheus_exporter> prometheus_exporter::start(const std::string& bind_address, std::uint16_t port,
                                                                std::string* detail)
{
    auto p = std::make_unique<impl>();
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
    p->exposer->RegisterCollectable(p->exposed);
    return std::unique_ptr<prometheus_exporter>(new prometheus_exporter(std::move(p)));
}

std::unique_ptr<prometheus_exporter> prometheus_exporter::start(const server& srv, const std::string& bind_address,
                                                                std::uint16_t port, std::string* detail)
{
    auto e = start(bind_address, port, detail);
    if (e)
        e->add(srv);
    return e;
}

bool prometheus_exporter::add(const server& srv, std::string name)
{
    std::lock_guard lock(impl_->exposed->mu_);
    return add_to(impl_->exposed->servers, srv, std::move(name));
}

bool prometheus_exporter::add(const supervisor& sup, std::string name)
{
    std::lock_guard lock(impl_->exposed->mu_);
    return add_to(impl_->exposed->supervisors, sup, std::move(name));
}

bool prometheus_exporter::remove(const server& srv)
{
    std::lock_guard lock(impl_->exposed->mu_);
    return remove_from(impl_->exposed->servers, srv);
}

bool prometheus_exporter::remove(const supervisor& sup)
{
    std::lock_guard lock(impl_->exposed->mu_);
    return remove_from(impl_->exposed->supervisors, sup);
}

prometheus_exporter::prometheus_exporter(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

prometheus_exporter::~prometheus_exporter() = default;

std::uint16_t prometheus_exporter::port() const noexcept
{
    return impl_->port;
}

}  // namespace vigil
