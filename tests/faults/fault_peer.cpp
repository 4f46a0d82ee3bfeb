// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-fault-peer: the two ends the fault tests run inside network namespaces (or behind
// nginx), as separate processes, reporting everything as JSON lines on stdout.
//
//   vigil-fault-peer server --bind ADDR --port P [--ping-interval MS --pong-timeout MS]
//     A vigil::server that records every message it receives (its text) and every client
//     that comes and goes, with why it went.
//
//   vigil-fault-peer exec PROGRAM ARGS...
//     Runs PROGRAM so that it dies with the test process (nginx has no such option).
//
//   vigil-fault-peer client --url URL [--ping-interval MS --pong-timeout MS --end-on-suspect 0|1
//                    --connect-timeout MS --handshake-timeout MS --max-delay MS
//                    --send-every MS --ttl MS --delivery written|confirmed]
//     A vigil::supervisor that sends the numbers 1, 2, 3 ... as text messages, one every
//     --send-every ms whether connected or not, and reports how each send completed. SIGUSR1
//     stops the numbering; once every send has completed it prints "done". SIGTERM stops.
//
// Both roles also take --block-at MS --block-for MS: MS after start, the event loop is
// blocked (a handler that sleeps) for --block-for ms, between a "blocking" and an
// "unblocked" line. Disconnections carry "diagnosis" after a liveness verdict; "stall"
// (late_ms) and, on the client, "suspect" (diagnosis) report what vigil reports.
//
// Every line carries "t" (seconds since start) and "mono_ms" (CLOCK_MONOTONIC in ms, the
// same clock in every process, so a test can measure from the instant it cut the network).
// Durations are milliseconds: this tool serves the tests, not users. Zero ping interval
// turns the heartbeat off.

#include <vigil/server.hpp>
#include <vigil/supervisor.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <nlohmann/json.hpp>

#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using json = nlohmann::ordered_json;
using std::chrono::milliseconds;

const auto started = std::chrono::steady_clock::now();

void emit(json j)
{
    auto now = std::chrono::steady_clock::now();
    auto since = std::chrono::duration_cast<std::chrono::microseconds>(now - started);
    auto mono = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch());
    json line = {{"event", std::move(j["event"])},
                 {"t", static_cast<double>(since.count()) / 1e6},
                 {"mono_ms", static_cast<double>(mono.count()) / 1e3}};
    for (auto& [key, value] : j.items()) {
        if (key != "event") {
            line[key] = std::move(value);
        }
    }
    std::cout << line.dump(-1, ' ', false, json::error_handler_t::replace) << '\n' << std::flush;
}

// "--flag value" pairs after the role.
std::map<std::string, std::string> parse_flags(int argc, char** argv)
{
    std::map<std::string, std::string> flags;
    for (int i = 2; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg.substr(0, 2) != "--" || i + 1 >= argc) {
            throw std::invalid_argument("bad argument '" + std::string(arg) + "'");
        }
        flags[std::string(arg.substr(2))] = argv[++i];
    }
    return flags;
}

std::uint64_t number(const std::map<std::string, std::string>& flags, const std::string& name,
                     std::uint64_t fallback)
{
    auto it = flags.find(name);
    if (it == flags.end()) {
        return fallback;
    }
    std::uint64_t value = 0;
    const auto& text = it->second;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) {
        throw std::invalid_argument("--" + name + ": '" + text + "' is not a whole number");
    }
    return value;
}

milliseconds ms(const std::map<std::string, std::string>& flags, const std::string& name,
                std::uint64_t fallback)
{
    return milliseconds(static_cast<milliseconds::rep>(number(flags, name, fallback)));
}

// --block-at / --block-for: blocks the thread that runs everything, as a slow handler would.
void schedule_block(asio::io_context& ioc, const std::map<std::string, std::string>& flags,
                    std::unique_ptr<asio::steady_timer>& timer)
{
    if (!flags.count("block-for"))
        return;
    const auto length = ms(flags, "block-for", 0);
    timer = std::make_unique<asio::steady_timer>(ioc, ms(flags, "block-at", 0));
    timer->async_wait([length](error_code ec) {
        if (ec)
            return;
        emit({{"event", "blocking"}, {"for_ms", length.count()}});
        std::this_thread::sleep_for(length);
        emit({{"event", "unblocked"}});
    });
}

void add_diagnosis(json& j, const vigil::disconnect_info& info)
{
    if (info.diagnosis != vigil::diagnosis::none)
        j["diagnosis"] = vigil::diagnosis_name(info.diagnosis);
}

void report_stall(milliseconds lateness)
{
    emit({{"event", "stall"}, {"late_ms", lateness.count()}});
}

int run_server(const std::map<std::string, std::string>& flags)
{
    vigil::server_config cfg;
    cfg.bind = flags.count("bind") ? flags.at("bind") : "127.0.0.1";
    cfg.port = static_cast<std::uint16_t>(number(flags, "port", 0));
    cfg.session.ping_interval = ms(flags, "ping-interval", 1000);
    cfg.session.pong_timeout = ms(flags, "pong-timeout", 500);
    cfg.session.close_timeout = milliseconds(1000);

    asio::io_context ioc(1);
    vigil::server server(ioc.get_executor(), cfg, [](vigil::server::connection_ptr c) -> asio::awaitable<void> {
        for (;;) {
            auto msg = co_await c->receive();
            if (msg.ec) {
                co_return;
            }
            emit({{"event", "message"}, {"id", c->id()}, {"text", msg.data}});
        }
    });
    auto& ev = server.events();
    ev.on_connected = [](vigil::connection& c) {
        emit({{"event", "connected"}, {"id", c.id()}, {"remote", c.remote()}});
    };
    ev.on_disconnected = [](vigil::connection& c) {
        const auto& info = c.last_disconnect();
        json j = {{"event", "disconnected"},
                  {"id", c.id()},
                  {"reason", vigil::error_name(info.reason)},
                  {"detail", info.detail},
                  {"silent_ms", info.silent_for.count()}};
        add_diagnosis(j, info);
        emit(std::move(j));
    };
    ev.on_stall = report_stall;
    ev.on_rejected = [](const std::string& remote, const error_code& why, const std::string& detail) {
        emit({{"event", "rejected"}, {"remote", remote}, {"reason", vigil::error_name(why)}, {"detail", detail}});
    };

    std::string detail;
    if (auto ec = server.listen(&detail)) {
        std::cerr << "vigil-fault-peer: listen: " << vigil::error_name(ec) << ": " << detail << '\n';
        return 1;
    }
    emit({{"event", "listening"}, {"port", server.port()}});

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](error_code ec, int) {
        if (!ec) {
            server.stop();
        }
    });
    std::unique_ptr<asio::steady_timer> block;
    schedule_block(ioc, flags, block);
    int status = 1;
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> {
        auto ec = co_await server.run();
        status = ec ? 1 : 0;
        emit({{"event", "stopped"}});
        signals.cancel();
        block.reset();
    }, asio::detached);
    ioc.run();
    return status;
}

// Sends numbered messages on a timer, each on its own, so that a send waiting in the outbox
// never holds back the next number: the numbering goes on through an outage.
class client {
public:
    client(asio::io_context& ioc, const std::map<std::string, std::string>& flags)
        : supervisor_(ioc.get_executor(), flags.at("url"), config(flags),
                      vigil::exponential_backoff({.initial = milliseconds(100),
                                                  .multiplier = 2.0,
                                                  .max = ms(flags, "max-delay", 500),
                                                  .seed = 0})),
          send_every_(ms(flags, "send-every", 0)),
          timer_(supervisor_.get_executor()),
          signals_(ioc, SIGINT, SIGTERM),
          usr1_(ioc, SIGUSR1)
    {
        auto& s = supervisor_.session_event_handlers();
        s.on_connected = [] { emit({{"event", "connected"}}); };
        s.on_pong = [](std::chrono::microseconds rtt) {
            emit({{"event", "pong"}, {"rtt_ms", static_cast<double>(rtt.count()) / 1000.0}});
        };
        s.on_message = [](std::string_view data, vigil::message_type) {
            emit({{"event", "message"}, {"text", data}});
        };
        s.on_disconnected = [](const vigil::disconnect_info& info) {
            json j = {{"event", "disconnected"},
                      {"reason", vigil::error_name(info.reason)},
                      {"transient", !vigil::is_permanent(info.reason)},
                      {"detail", info.detail},
                      {"silent_ms", info.silent_for.count()}};
            add_diagnosis(j, info);
            emit(std::move(j));
        };
        s.on_stall = report_stall;
        s.on_suspect = [](vigil::diagnosis why) {
            emit({{"event", "suspect"}, {"diagnosis", vigil::diagnosis_name(why)}});
        };
        auto& e = supervisor_.events();
        e.on_up = [this] { emit({{"event", "up"}, {"epoch", ++epoch_}}); };
        e.on_retry = [](const vigil::retry_info& r) {
            emit({{"event", "retry"},
                  {"attempt", r.attempt},
                  {"delay_ms", r.delay.count()},
                  {"reason", vigil::error_name(r.last.reason)}});
        };
        e.on_gave_up = [](const error_code& reason, const vigil::disconnect_info& last) {
            emit({{"event", "gave_up"}, {"reason", vigil::error_name(reason)}, {"detail", last.detail}});
        };
    }

    void start()
    {
        signals_.async_wait([this](error_code ec, int) {
            if (!ec) {
                stop_numbering();
                supervisor_.stop();
            }
        });
        usr1_.async_wait([this](error_code ec, int) {
            if (!ec) {
                stop_numbering();
                maybe_done();
            }
        });
        asio::co_spawn(supervisor_.get_executor(), [this]() -> asio::awaitable<void> {
            auto ec = co_await supervisor_.run();
            emit({{"event", "stopped"}, {"reason", vigil::error_name(ec)}});
            stop_numbering();
            signals_.cancel();
            usr1_.cancel();
        }, asio::detached);
        if (send_every_.count() > 0) {
            tick();
        }
    }

private:
    static vigil::supervisor_config config(const std::map<std::string, std::string>& flags)
    {
        vigil::supervisor_config cfg;
        cfg.session.ping_interval = ms(flags, "ping-interval", 1000);
        cfg.session.pong_timeout = ms(flags, "pong-timeout", 500);
        cfg.session.connect_timeout = ms(flags, "connect-timeout", 1000);
        cfg.session.handshake_timeout = ms(flags, "handshake-timeout", 1000);
        cfg.session.close_timeout = milliseconds(1000);
        cfg.min_delay = milliseconds(100);
        cfg.message_ttl = ms(flags, "ttl", 0);
        if (auto it = flags.find("delivery"); it != flags.end()) {
            if (it->second == "confirmed")
                cfg.delivery = vigil::delivery_guarantee::confirmed;
            else if (it->second != "written")
                throw std::invalid_argument("--delivery: '" + it->second + "' is neither written nor confirmed");
        }
        cfg.session.end_on_suspect = number(flags, "end-on-suspect", 0) != 0;
        cfg.outbox_limit = 100000;
        return cfg;
    }

    void tick()
    {
        timer_.expires_after(send_every_);
        timer_.async_wait([this](error_code ec) {
            if (ec || !numbering_) {
                return;
            }
            const auto n = ++sent_;
            ++pending_;
            const auto queued = std::chrono::steady_clock::now();
            supervisor_.async_send(std::to_string(n), vigil::message_type::text, [this, n, queued](error_code result) {
                --pending_;
                auto since = std::chrono::duration_cast<std::chrono::microseconds>(queued.time_since_epoch());
                // epoch: the connection that was up when the send completed (0 before the first).
                emit({{"event", "sent"},
                      {"n", n},
                      {"result", vigil::error_name(result)},
                      {"epoch", epoch_},
                      {"queued_mono_ms", static_cast<double>(since.count()) / 1e3}});
                maybe_done();
            });
            tick();
        });
    }

    void stop_numbering()
    {
        numbering_ = false;
        timer_.cancel();
    }

    void maybe_done()
    {
        if (!numbering_ && pending_ == 0 && !done_) {
            done_ = true;
            emit({{"event", "done"}, {"sent", sent_}});
        }
    }

    vigil::supervisor supervisor_;
    milliseconds send_every_;
    asio::steady_timer timer_;
    asio::signal_set signals_;
    asio::signal_set usr1_;
    std::uint64_t sent_ = 0;
    std::size_t pending_ = 0;
    std::uint64_t epoch_ = 0;
    bool numbering_ = true;
    bool done_ = false;
};

int run_client(const std::map<std::string, std::string>& flags)
{
    if (!flags.count("url")) {
        throw std::invalid_argument("client needs --url");
    }
    asio::io_context ioc(1);
    client c(ioc, flags);
    c.start();
    std::unique_ptr<asio::steady_timer> block;
    schedule_block(ioc, flags, block);
    ioc.run();
    return 0;
}

}  // namespace

int main(int argc, char** argv)
{
    // Started by a test: when the test dies (a timeout kill), so do we, instead of holding a
    // namespace or a port.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    try {
        if (argc < 2) {
            throw std::invalid_argument("usage: vigil-fault-peer server|client --flag value ...");
        }
        std::string_view role = argv[1];
        if (role == "exec" && argc >= 3) {
            // Runs a program (nginx) with the death signal set above: it survives exec, so
            // the program dies with the test too.
            ::execv(argv[2], argv + 2);
            std::cerr << "vigil-fault-peer: cannot run " << argv[2] << ": " << std::strerror(errno) << '\n';
            return 127;
        }
        auto flags = parse_flags(argc, argv);
        if (role == "server") {
            return run_server(flags);
        }
        if (role == "client") {
            return run_client(flags);
        }
        throw std::invalid_argument("unknown role '" + std::string(role) + "'");
    } catch (const std::exception& e) {
        std::cerr << "vigil-fault-peer: " << e.what() << '\n';
        return 64;
    }
}
