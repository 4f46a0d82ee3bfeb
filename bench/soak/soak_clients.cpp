// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The soak's clients: N vigil::supervisors in one process, each sending numbered messages
// ("<client> <seq> <padding>") at random intervals for as long as it runs, connected or not.
// Every send's completion is recorded against its number: completed once (written, or an
// error saying it never will be), twice (a bug), or never (a bug: lost silently).
//
// SIGUSR1: stop sending; print "drained" once every send has completed. SIGTERM: stop every
// supervisor, write the report and exit. Reports on stdout as JSON lines: "stats" every
// second, "drained", "final".
//
// Report file, one record a line:
//   c <client> <sends>          every client
//   e <client> <seq> <error>    a send that completed with an error
//   d <client> <seq>            a send that completed more than once
//   p <client> <seq>            a send that never completed

#include "soak.hpp"

#include <vigil/supervisor.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>

namespace soak {

namespace {

namespace asio = boost::asio;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

enum : std::uint8_t { pending = 0, written = 1, failed = 2 };

struct client {
    std::unique_ptr<vigil::supervisor> sup;
    std::unique_ptr<asio::steady_timer> pace;
    // By seq - 1, allocated and touched up front for the whole run, so that the bookkeeping
    // does not grow the RSS the soak checks.
    std::vector<std::uint8_t> status;
    std::uint64_t sent = 0;
    std::vector<std::pair<std::uint64_t, std::string>> errors;
    std::vector<std::uint64_t> doubles;
    std::uint64_t last_completed = 0;
    bool up = false;
    bool finished = false;
};

struct clients_state {
    std::vector<client> all;
    bool sending = true;
    bool stopping = false;
    bool drained_reported = false;
    std::size_t up = 0;
    std::size_t finished = 0;
    std::uint64_t sent = 0;
    std::uint64_t ok = 0;
    std::uint64_t failed = 0;
    std::uint64_t doubles = 0;
    std::uint64_t completed_out_of_order = 0;
    std::uint64_t broadcasts = 0;
    std::uint64_t ups = 0;
    std::map<std::string, std::uint64_t> failures;     // by error_name
    std::map<std::string, std::uint64_t> disconnects;  // by error_name of the reason
    std::map<std::string, std::uint64_t> run_results;  // by error_name
    std::mt19937 rng{7};
    std::chrono::milliseconds rate{500};

    std::uint64_t pending_count() const { return sent - ok - failed; }
};

// The completion of one send; a named type rather than a lambda so that what it records is
// plain to see.
struct completion {
    clients_state* st;
    std::uint32_t id;
    std::uint64_t seq;

    void operator()(vigil::error_code ec) const
    {
        auto& c = st->all[id];
        if (c.status.size() < seq)
            c.status.resize(seq * 2, pending);
        auto& s = c.status[seq - 1];
        if (s != pending) {
            ++st->doubles;
            c.doubles.push_back(seq);
            return;
        }
        if (seq < c.last_completed)
            ++st->completed_out_of_order;
        c.last_completed = seq;
        if (ec) {
            s = failed;
            ++st->failed;
            auto name = vigil::error_name(ec);
            ++st->failures[name];
            c.errors.emplace_back(seq, std::move(name));
        } else {
            s = written;
            ++st->ok;
        }
    }
};

asio::awaitable<void> sender(clients_state* st, std::uint32_t id)
{
    auto& c = st->all[id];
    std::uniform_int_distribution<long> gap(st->rate.count() / 2, st->rate.count() * 3 / 2);
    std::uniform_int_distribution<std::size_t> pad(0, 256);
    for (;;) {
        c.pace->expires_after(std::chrono::milliseconds(gap(st->rng)));
        co_await c.pace->async_wait(use_tuple);
        if (!st->sending)
            co_return;
        const std::uint64_t seq = ++c.sent;
        if (c.status.size() < seq)
            c.status.resize(seq * 2, pending);
        ++st->sent;
        c.sup->async_send(make_message(id, seq, pad(st->rng)), vigil::message_type::text, completion{st, id, seq});
    }
}

void write_report(const clients_state& st, const std::string& path)
{
    std::ofstream out(path);
    if (!out)
        throw std::runtime_error("clients: cannot write " + path);
    for (std::size_t i = 0; i < st.all.size(); ++i) {
        const auto& c = st.all[i];
        out << "c " << i << ' ' << c.sent << '\n';
        for (const auto& [seq, name] : c.errors)
            out << "e " << i << ' ' << seq << ' ' << name << '\n';
        for (auto seq : c.doubles)
            out << "d " << i << ' ' << seq << '\n';
        for (std::size_t k = 0; k < c.sent; ++k)
            if (c.status[k] == pending)
                out << "p " << i << ' ' << (k + 1) << '\n';
    }
}

}  // namespace

int clients_main(const std::vector<std::string>& args)
{
    arg_list a(args);
    const auto url = a.get("--url", "");
    const auto report = a.get("--report", "");
    const auto n = static_cast<std::size_t>(a.get_int("--clients", 1000));
    if (url.empty() || report.empty())
        throw std::invalid_argument("clients: --url and --report are required");

    asio::io_context ioc(1);
    clients_state st;
    st.rate = std::chrono::milliseconds(a.get_int("--rate-ms", 500));

    vigil::supervisor_config cfg;
    cfg.session.ping_interval = std::chrono::milliseconds(a.get_int("--ping-ms", 1000));
    cfg.session.pong_timeout = std::chrono::milliseconds(a.get_int("--pong-ms", 500));
    cfg.session.connect_timeout = std::chrono::seconds(2);
    cfg.session.handshake_timeout = std::chrono::seconds(2);
    cfg.session.close_timeout = std::chrono::seconds(1);
    cfg.stable_after = std::chrono::seconds(2);
    // Small bounds, so that a fault's backlog meets them: sends then fail with
    // send_queue_full or message_expired, and those must never arrive.
    cfg.outbox_limit = static_cast<std::size_t>(a.get_int("--outbox", 8));
    cfg.message_ttl = std::chrono::milliseconds(a.get_int("--ttl-ms", 3000));
    vigil::exponential_backoff::options backoff;
    backoff.initial = std::chrono::milliseconds(200);
    backoff.max = std::chrono::milliseconds(2000);

    st.all.resize(n);
    const auto expected = static_cast<std::size_t>(a.get_int("--expected-messages", 4096));
    for (std::uint32_t i = 0; i < n; ++i) {
        auto& c = st.all[i];
        c.status.assign(expected, pending);
        c.sup = std::make_unique<vigil::supervisor>(ioc.get_executor(), url + "/c/" + std::to_string(i), cfg,
                                                    vigil::exponential_backoff(backoff));
        c.pace = std::make_unique<asio::steady_timer>(c.sup->get_executor());
        c.sup->events().on_up = [&st, i] {
            st.all[i].up = true;
            ++st.up;
            ++st.ups;
        };
        c.sup->session_event_handlers().on_disconnected = [&st, i](const vigil::disconnect_info& d) {
            auto& c = st.all[i];
            if (c.up) {
                c.up = false;
                --st.up;
                ++st.disconnects[vigil::error_name(d.reason)];
            }
        };
        c.sup->session_event_handlers().on_message = [&st](std::string_view data, vigil::message_type) {
            if (data.rfind("tick ", 0) == 0)
                ++st.broadcasts;
        };
    }

    auto stats = [&] {
        emit("stats", {{"up", st.up},
                       {"sent", st.sent},
                       {"ok", st.ok},
                       {"failed", st.failed},
                       {"pending", st.pending_count()},
                       {"doubles", st.doubles},
                       {"ups", st.ups},
                       {"broadcasts", st.broadcasts},
                       {"rss_kb", rss_kb()},
                       {"heap_kb", heap_kb()},
                       {"fds", count_fds()}});
    };
    auto finish = [&] {
        stats();
        write_report(st, report);
        emit("final", {{"sent", st.sent},
                       {"ok", st.ok},
                       {"failed", st.failed},
                       {"pending", st.pending_count()},
                       {"doubles", st.doubles},
                       {"completed_out_of_order", st.completed_out_of_order},
                       {"failures", st.failures},
                       {"disconnects", st.disconnects},
                       {"run_results", st.run_results},
                       {"ups", st.ups},
                       {"broadcasts", st.broadcasts}});
    };

    for (std::uint32_t i = 0; i < n; ++i) {
        auto& c = st.all[i];
        asio::co_spawn(c.sup->get_executor(), c.sup->run(), [&, i](std::exception_ptr e, vigil::error_code ec) {
            st.all[i].finished = true;
            ++st.run_results[e ? "exception" : vigil::error_name(ec)];
            if (++st.finished == n)
                finish();
        });
        asio::co_spawn(c.sup->get_executor(), sender(&st, i), asio::detached);
    }

    asio::signal_set signals(ioc, SIGUSR1, SIGTERM);
    asio::steady_timer stats_timer(ioc);
    std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec,
                                                                                int sig) {
        if (ec)
            return;
        st.sending = false;
        if (sig == SIGTERM) {
            st.stopping = true;
            for (auto& c : st.all) {
                c.pace->cancel();
                c.sup->stop();
            }
            stats_timer.cancel();
            return;  // no more signals: the supervisors' ends finish the process
        }
        signals.async_wait(on_signal);
    };
    signals.async_wait(on_signal);
    std::function<void()> tick = [&] {
        stats_timer.expires_after(std::chrono::seconds(1));
        stats_timer.async_wait([&](const boost::system::error_code& ec) {
            if (ec || st.stopping)
                return;
            stats();
            if (!st.sending && !st.drained_reported && st.pending_count() == 0) {
                st.drained_reported = true;
                emit("drained", {{"sent", st.sent}});
            }
            tick();
        });
    };
    tick();
    ioc.run();
    return 0;
}

}  // namespace soak
