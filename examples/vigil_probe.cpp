// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-probe: keeps a WebSocket connection open (reconnecting as vigil::supervisor does) and
// reports everything it does as JSON lines on stdout, so that scripts and tests can watch a
// connection live, die and come back.

#include <vigil/heartbeat.hpp>
#include <vigil/session.hpp>
#include <vigil/supervisor.hpp>
#ifdef VIGIL_CLI_PROMETHEUS
#include <vigil/prometheus.hpp>
#endif

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>

#include "cli.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace vigil_cli;
namespace asio = boost::asio;
using boost::system::error_code;
using json = nlohmann::ordered_json;
using std::chrono::milliseconds;

// Exit statuses. 2 is what a wrapper script must not retry: retrying cannot help.
constexpr int exit_ok = 0;
constexpr int exit_failed = 1;
constexpr int exit_gave_up = 2;
// sysexits.h EX_USAGE: what scripts expect from a command given bad arguments.
constexpr int exit_usage = 64;

constexpr std::string_view usage_text =
    "usage: vigil-probe [options] URL [BACKUP_URL...]\n"
    "\n"
    "Keeps a WebSocket connection to URL (ws:// or wss://) open, reconnecting after transient\n"
    "failures, and prints one JSON object per line on stdout for each event: connecting,\n"
    "connected, ping, pong, message, stall, suspect, disconnected, retry, retry_now,\n"
    "reconnect, gave_up.\n"
    "With backup URLs, a failure moves on to the next URL at once and the retry delay comes\n"
    "after each round through the list; connecting and retry name the endpoint by its place\n"
    "(0 is URL, 1 the first backup ...).\n"
    "A disconnected event after a liveness verdict says whose fault it was: \"diagnosis\" is\n"
    "network, peer_unresponsive, local_stall or unknown (see vigil::diagnosis).\n"
    "\n"
    "options (S = seconds, fractions allowed):\n"
    "  --ping-interval S      ping after S seconds without traffic (0: no heartbeat)\n"
    "  --pong-timeout S       declare the connection dead S seconds after an unanswered ping\n"
    "  --idle-timeout S       end when no data message arrives for S seconds (0: off)\n"
    "  --fresh-field F=V      only messages whose JSON field F is V count as data for\n"
    "                         --idle-timeout (a feed whose acks still arrive is stale)\n"
    "  --connect-timeout S    bound on DNS resolution plus TCP connect (and a proxy's tunnel)\n"
    "  --handshake-timeout S  bound on the WebSocket upgrade\n"
    "  --close-timeout S      bound on the close handshake\n"
    "  --write-timeout S      end when a message write makes no progress for S seconds\n"
    "                         (default 10; 0: off)\n"
    "  --stall-threshold S    report our own loop running later than S (event stall;\n"
    "                         default a quarter of the pong timeout)\n"
    "  --end-on-suspect       end as soon as TCP retransmits our ping unacknowledged (event\n"
    "                         suspect) instead of waiting for the pong timeout\n"
    "  --ping-mode idle|fixed ping only when idle (default), or every interval\n"
    "  --app-ping TEXT        application-level heartbeat: ping with the text message TEXT\n"
    "                         instead of ping frames (needs --app-pong or --app-pong-field)\n"
    "  --app-pong TEXT        the pong is exactly TEXT; the server's own TEXT pings (same\n"
    "                         text as --app-ping) are answered with it\n"
    "  --app-pong-field F=V   the pong is a JSON object whose field F (or JSON pointer, /a/b)\n"
    "                         is V, e.g. type=pong; with --app-pong too, that text still\n"
    "                         answers the server's pings\n"
    "  --ca FILE              trust this PEM CA for wss://\n"
    "  --insecure             no certificate verification (test servers only)\n"
    "  --proxy URL            connect through a proxy: http://[USER:PASS@]HOST[:PORT] (HTTP\n"
    "                         CONNECT), socks5h://[USER:PASS@]HOST[:PORT] (SOCKS5, the proxy\n"
    "                         resolves the server's name) or socks5:// (resolved here);\n"
    "                         default port 1080\n"
    "  --proxy-from-env       take the proxy from http_proxy (ws://), https_proxy or\n"
    "                         HTTPS_PROXY (wss://), then all_proxy or ALL_PROXY, and the\n"
    "                         hosts to reach directly from no_proxy or NO_PROXY, as curl does\n"
    "                         (--proxy wins over the environment)\n"
    "  --no-proxy LIST        hosts reached directly, never through the proxy: host names\n"
    "                         (their subdomains too), IP addresses, or * (comma-separated)\n"
    "  --bind ADDR            connect from the local IP address ADDR (hosts with several\n"
    "                         interfaces)\n"
    "  --subprotocol NAME     offer subprotocol NAME (repeatable, in order of preference);\n"
    "                         the server's choice is the connected event's subprotocol; a\n"
    "                         server choosing one not offered, or none, is a permanent\n"
    "                         failure (subprotocol_mismatch)\n"
    "  --send TEXT            send TEXT after every connect, e.g. a subscription (repeatable);\n"
    "                         each stdin line is sent once, queued while disconnected\n"
    "  --duration S           close cleanly after S seconds\n"
    "  --no-reconnect         one session only: end when it ends\n"
    "  --backoff-initial S    ceiling of the first retry delay (default 0.5); delays are\n"
    "                         exponential with full jitter, never below 0.1\n"
    "  --backoff-max S        cap on the delay ceiling (default 30)\n"
    "  --max-attempts N       give up after N failed attempts in a row (default 0: never)\n"
    "  --stable-after S       a connection up this long resets the backoff (default 5)\n"
    "  --policy-violation-delay S  wait at least S before retrying after close code 1008\n"
    "                         (default 30)\n"
    "  --max-connection-age S replace a connection up about S seconds with a new one\n"
    "                         (event reconnect; default 0: never)\n"
    "  --make-before-break    planned replacements (--max-connection-age, --failback,\n"
    "                         SIGUSR2) open the new connection first and close the old one\n"
    "                         once the new one is up: no message missed, duplicates possible\n"
    "                         (event replacement_failed when the new one fails; the old stays)\n"
    "  --message-ttl S        a line from stdin waiting longer than S for a connection is\n"
    "                         dropped and reported on stderr (default 0: no limit)\n"
    "  --connect-limit N/S    at most N connection attempts in any S seconds\n"
    "  --message-limit N/S    at most N messages in any S seconds on a connection, heartbeat\n"
    "                         pings included (stdin lines wait for their turn)\n"
    "  --failback S           once a backup has held the connection S seconds (at least\n"
    "                         --stable-after), reconnect to URL (event reconnect, reason\n"
    "                         failback; default 0: stay on the backup until it fails)\n"
    "  --help                 show this text\n"
    "\n"
    "signals: SIGINT/SIGTERM close with a close handshake and exit (a second one: at once);\n"
    "SIGUSR1 cuts a pending retry delay short; SIGUSR2 replaces the live connection with a\n"
    "new one (a planned reconnect, event reconnect).\n"
    "\n"
    "exit status: 0 after --duration, a signal or a clean close; 1 when the single session of\n"
    "--no-reconnect failed transiently; 2 on a permanent failure as vigil::is_permanent\n"
    "classifies it (bad URL or config, upgrade rejected with 401/403/404..., untrusted\n"
    "certificate, close code 1002/1003/1007/1010, a proxy that wants other credentials or\n"
    "refuses the server) or when --max-attempts ran out; 64 for bad arguments.\n";

struct options {
    vigil::supervisor_config cfg;
    std::optional<std::string> app_ping;
    std::optional<std::string> app_pong;
    std::optional<vigil::message_match> app_pong_field;
    std::optional<milliseconds> backoff_initial;
    std::optional<milliseconds> backoff_max;
    std::string url;
    std::vector<std::string> sends;
    std::optional<milliseconds> duration;
    vigil::rate_limits limits;
    bool reconnect = true;
    bool help = false;
    metrics_listener metrics;
};

// --app-ping with --app-pong and/or --app-pong-field: the session pings with a text message
// and recognises the pong by its exact text or by one JSON field.
void set_app_heartbeat(options& opts)
{
    if (!opts.app_ping && !opts.app_pong && !opts.app_pong_field) {
        return;
    }
    if (!opts.app_ping) {
        throw usage_error{std::string(opts.app_pong ? "--app-pong" : "--app-pong-field") +
                          " needs --app-ping"};
    }
    if (!opts.app_pong && !opts.app_pong_field) {
        throw usage_error{"--app-ping needs --app-pong or --app-pong-field"};
    }
    if (opts.app_ping->empty()) {
        throw usage_error{"--app-ping must not be empty"};
    }
    if (opts.app_pong && opts.app_pong->empty()) {
        throw usage_error{"--app-pong must not be empty"};
    }
    if (opts.app_pong && *opts.app_pong == *opts.app_ping) {
        throw usage_error{"--app-ping and --app-pong must differ"};
    }
    vigil::message_heartbeat hb;
    if (opts.app_pong) {
        // Also answers the server's pings when they are the same text as ours.
        hb = vigil::message_heartbeat::text(*opts.app_ping, *opts.app_pong);
    } else {
        hb.ping = *opts.app_ping;
    }
    if (opts.app_pong_field) {
        hb.pong = *opts.app_pong_field;
    }
    opts.cfg.session.heartbeat = std::move(hb);
}

options parse_args(int argc, char** argv)
{
    options opts;
    std::vector<std::string_view> positional;
    bool only_positional = false;

    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (only_positional || arg.size() < 2 || arg.substr(0, 2) != "--") {
            if (!only_positional && arg.size() > 1 && arg[0] == '-') {
                throw usage_error{"unknown option '" + std::string(arg) + "'"};
            }
            positional.push_back(arg);
            continue;
        }
        if (arg == "--") {
            only_positional = true;
            continue;
        }

        std::string_view flag = arg;
        std::optional<std::string_view> inline_value;
        if (auto eq = arg.find('='); eq != std::string_view::npos) {
            flag = arg.substr(0, eq);
            inline_value = arg.substr(eq + 1);
        }
        auto value = [&]() -> std::string_view {
            if (inline_value) {
                return *inline_value;
            }
            if (i + 1 >= argc) {
                throw usage_error{std::string(flag) + " needs a value"};
            }
            return argv[++i];
        };
        auto no_value = [&] {
            if (inline_value) {
                throw usage_error{std::string(flag) + " takes no value"};
            }
        };

        auto& cfg = opts.cfg.session;
        if (flag == "--ping-interval") {
            cfg.ping_interval = parse_seconds(flag, value());
        } else if (flag == "--pong-timeout") {
            cfg.pong_timeout = parse_seconds(flag, value());
        } else if (flag == "--idle-timeout") {
            cfg.idle_timeout = parse_seconds(flag, value());
        } else if (flag == "--fresh-field") {
            auto spec = value();
            auto fresh = vigil::message_match::parse_field_spec(spec);
            if (!fresh)
                throw usage_error{"--fresh-field: '" + std::string(spec) + "' is not FIELD=VALUE"};
            cfg.is_fresh = [match = std::move(*fresh)](std::string_view data, vigil::message_type type) {
                return type == vigil::message_type::text && match.matches(data);
            };
        } else if (flag == "--connect-timeout") {
            cfg.connect_timeout = parse_seconds(flag, value());
        } else if (flag == "--handshake-timeout") {
            cfg.handshake_timeout = parse_seconds(flag, value());
        } else if (flag == "--close-timeout") {
            cfg.close_timeout = parse_seconds(flag, value());
        } else if (flag == "--write-timeout") {
            cfg.write_timeout = parse_seconds(flag, value());
        } else if (flag == "--stall-threshold") {
            cfg.stall_threshold = parse_seconds(flag, value());
        } else if (flag == "--end-on-suspect") {
            no_value();
            cfg.end_on_suspect = true;
        } else if (flag == "--ping-mode") {
            auto mode = value();
            if (mode == "idle") {
                cfg.ping = vigil::ping_mode::idle;
            } else if (mode == "fixed") {
                cfg.ping = vigil::ping_mode::fixed;
            } else {
                throw usage_error{"--ping-mode: '" + std::string(mode) +
                                  "' is neither idle nor fixed"};
            }
        } else if (flag == "--app-ping") {
            opts.app_ping = std::string(value());
        } else if (flag == "--app-pong") {
            opts.app_pong = std::string(value());
        } else if (flag == "--app-pong-field") {
            auto spec = value();
            opts.app_pong_field = vigil::message_match::parse_field_spec(spec);
            if (!opts.app_pong_field) {
                throw usage_error{"--app-pong-field: '" + std::string(spec) +
                                  "' is not FIELD=VALUE"};
            }
        } else if (flag == "--ca") {
            cfg.tls.ca_file = std::string(value());
        } else if (flag == "--insecure") {
            no_value();
            cfg.tls.insecure_skip_verify = true;
        } else if (flag == "--proxy") {
            cfg.proxy.url = std::string(value());
        } else if (flag == "--proxy-from-env") {
            no_value();
            cfg.proxy.from_environment = true;
        } else if (flag == "--no-proxy") {
            cfg.proxy.no_proxy = std::string(value());
        } else if (flag == "--bind") {
            cfg.local_address = std::string(value());
        } else if (flag == "--subprotocol") {
            cfg.subprotocols.emplace_back(value());
        } else if (flag == "--send") {
            opts.sends.emplace_back(value());
        } else if (flag == "--duration") {
            opts.duration = parse_seconds(flag, value());
        } else if (flag == "--no-reconnect") {
            no_value();
            opts.reconnect = false;
        } else if (flag == "--backoff-initial") {
            opts.backoff_initial = positive(flag, parse_seconds(flag, value()));
        } else if (flag == "--backoff-max") {
            opts.backoff_max = positive(flag, parse_seconds(flag, value()));
        } else if (flag == "--max-attempts") {
            opts.cfg.max_attempts = parse_count(flag, value());
        } else if (flag == "--stable-after") {
            opts.cfg.stable_after = parse_seconds(flag, value());
        } else if (flag == "--policy-violation-delay") {
            opts.cfg.policy_violation_delay = parse_seconds(flag, value());
        } else if (flag == "--max-connection-age") {
            opts.cfg.max_connection_age = parse_seconds(flag, value());
        } else if (flag == "--make-before-break") {
            no_value();
            opts.cfg.make_before_break = true;
        } else if (flag == "--failback") {
            opts.cfg.failback_after = parse_seconds(flag, value());
        } else if (flag == "--message-ttl") {
            opts.cfg.message_ttl = parse_seconds(flag, value());
        } else if (flag == "--connect-limit") {
            const auto r = parse_rate(flag, value());
            opts.limits.connects = r.count;
            opts.limits.connect_window = r.window;
        } else if (flag == "--message-limit") {
            const auto r = parse_rate(flag, value());
            opts.limits.messages = r.count;
            opts.limits.message_window = r.window;
        } else if (flag == "--help") {
            no_value();
            opts.help = true;
        } else if (parse_metrics_flag("vigil-probe", flag, value, opts.metrics)) {
            // --metrics-port, --metrics-bind (cli.hpp)
        } else if (parse_deflate_flag(flag, value, no_value, cfg.deflate)) {
            // --deflate and its knobs (cli.hpp)
        } else {
            throw usage_error{"unknown option '" + std::string(flag) + "'"};
        }
    }

    if (opts.help) {
        return opts;
    }
    set_app_heartbeat(opts);
    if (opts.backoff_initial && opts.backoff_max && *opts.backoff_max < *opts.backoff_initial) {
        throw usage_error{"--backoff-max must not be below --backoff-initial"};
    }
    if (positional.empty()) {
        throw usage_error{"missing URL"};
    }
    if (opts.metrics.port && !opts.reconnect) {
        throw usage_error{"--metrics-port: the metrics are the supervisor's, and --no-reconnect has none"};
    }
    if (positional.size() > 1 && !opts.reconnect) {
        throw usage_error{"--no-reconnect takes one URL (got '" + std::string(positional[1]) + "' too)"};
    }
    opts.url = std::string(positional.front());
    opts.cfg.backup_urls.assign(positional.begin() + 1, positional.end());
    if (opts.limits.connects > 0 || opts.limits.messages > 0) {
        opts.cfg.limiter = std::make_shared<vigil::rate_limiter>(opts.limits);
    }
    return opts;
}

// A single bound given alone moves the other default out of its way: `--backoff-max 0.2`
// means "never wait more than 0.2 s", not a conflict with the default initial 0.5 s.
vigil::exponential_backoff make_backoff(const options& opts)
{
    vigil::exponential_backoff::options b;
    if (opts.backoff_initial) {
        b.initial = *opts.backoff_initial;
        b.max = std::max(b.max, b.initial);
    }
    if (opts.backoff_max) {
        b.max = *opts.backoff_max;
        b.initial = std::min(b.initial, b.max);
    }
    return vigil::exponential_backoff(b);
}

class probe {
public:
    probe(asio::io_context& ioc, options opts, std::chrono::steady_clock::time_point start)
        : ioc_(ioc),
          opts_(std::move(opts)),
          start_(start),
          stop_signals_(ioc, SIGINT, SIGTERM),
          retry_signal_(ioc, SIGUSR1),
          reconnect_signal_(ioc, SIGUSR2),
          duration_timer_(ioc),
          stdin_(ioc)
    {
        vigil::session_events* ev = nullptr;
        if (opts_.reconnect) {
            supervisor_ = std::make_unique<vigil::supervisor>(ioc.get_executor(), opts_.url,
                                                              opts_.cfg, make_backoff(opts_));
            ev = &supervisor_->session_event_handlers();
            watch_supervisor();
        } else {
            session_ = std::make_unique<vigil::session>(ioc.get_executor(), opts_.cfg.session);
            ev = &session_->events();
        }
        ev->on_connected = [this] {
            connected_ = true;
            // A supervisor's session is not known here: its hook reports it (watch_supervisor).
            if (session_) {
                emit_connected(*session_);
            }
        };
        ev->on_ping = [this] { emit({{"event", "ping"}}); };
        ev->on_pong = [this](std::chrono::microseconds rtt) {
            emit({{"event", "pong"}, {"rtt_ms", static_cast<double>(rtt.count()) / 1000.0}});
        };
        ev->on_message = [this](std::string_view data, vigil::message_type type, const vigil::message_meta& meta) {
            json e{{"event", "message"}, {"connection", meta.connection}, {"sequence", meta.sequence}};
            if (type == vigil::message_type::text)
                e["text"] = data;
            else
                e["bytes"] = data.size();
            emit(std::move(e));
        };
        ev->on_stall = [this](milliseconds lateness) {
            emit({{"event", "stall"}, {"late_ms", lateness.count()}});
        };
        ev->on_suspect = [this](vigil::diagnosis why) {
            emit({{"event", "suspect"}, {"diagnosis", vigil::diagnosis_name(why)}});
        };
        ev->on_disconnected = [this](const vigil::disconnect_info& info) { report(info); };
    }

    void start()
    {
        if (!start_metrics()) {
            exit_code_ = exit_failed;
            finish();
            return;
        }
        if (opts_.cfg.session.tls.insecure_skip_verify) {
            std::cerr << "vigil-probe: warning: --insecure: certificates are not verified; "
                         "anyone on the path can read and change this connection\n";
        }
        open_stdin();
        stop_signals_.async_wait([this](error_code ec, int) {
            if (!ec) {
                stop(stop_cause::signal);
                // A second signal means "now": no waiting for the close handshake.
                stop_signals_.async_wait([this](error_code ec2, int) {
                    if (!ec2) {
                        abort_now();
                    }
                });
            }
        });
        // Installed without --no-reconnect too: the default action of SIGUSR1 and SIGUSR2
        // would kill us.
        wait_retry_signal();
        wait_reconnect_signal();
        if (opts_.duration) {
            duration_timer_.expires_after(*opts_.duration);
            duration_timer_.async_wait([this](error_code ec) {
                if (!ec) {
                    stop(stop_cause::duration);
                }
            });
        }
        auto done = [this](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                    std::cerr << "vigil-probe: " << ex.what() << '\n';
                }
                exit_code_ = exit_failed;
                finish();
            }
        };
        if (supervisor_) {
            asio::co_spawn(ioc_, supervise(),
                           asio::bind_cancellation_slot(abort_.slot(), std::move(done)));
        } else {
            asio::co_spawn(ioc_, single_session(), std::move(done));
        }
    }

    int exit_code() const noexcept { return exit_code_; }
    /// A second signal asked to end at once: operations may still be pending.
    bool forced() const noexcept { return forced_; }

private:
    enum class stop_cause { none, signal, duration };

    void emit(json j)
    {
        auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
            std::chrono::steady_clock::now() - start_);
        json line = {{"event", std::move(j["event"])},
                     {"t", static_cast<double>(elapsed.count()) / 1e6}};
        for (auto& [key, value] : j.items()) {
            if (key != "event") {
                line[key] = std::move(value);
            }
        }
        // A peer's text is validated UTF-8 by the WebSocket layer, but one bad byte must
        // never cost the whole line.
        std::cout << line.dump(-1, ' ', false, json::error_handler_t::replace) << '\n'
                  << std::flush;
    }

    static void add_status(json& j, const vigil::disconnect_info& info)
    {
        if (info.http_status != 0) {
            j["status"] = info.http_status;
        }
        if (info.close_code != 0) {
            j["close_code"] = info.close_code;
        }
    }

    void emit_connecting(const std::string& url, std::optional<std::size_t> endpoint = {})
    {
        connected_ = false;
        reported_ = false;
        json j = {{"event", "connecting"}, {"url", url}};
        if (endpoint) {
            j["endpoint"] = *endpoint;
        }
        emit(std::move(j));
    }

    void report(const vigil::disconnect_info& info)
    {
        reported_ = true;
        json j = {{"event", "disconnected"},
                  {"reason", vigil::error_name(info.reason)},
                  {"detail", info.detail}};
        if (connected_) {
            j["silent_ms"] = info.silent_for.count();
        }
        if (info.diagnosis != vigil::diagnosis::none) {
            j["diagnosis"] = vigil::diagnosis_name(info.diagnosis);
        }
        add_status(j, info);
        if (!info.close_reason.empty()) {
            j["close_reason"] = info.close_reason;
        }
        emit(std::move(j));
    }

    void emit_connected(const vigil::session& s)
    {
        emit({{"event", "connected"}, {"subprotocol", s.subprotocol()}, {"compressed", s.compressed()}});
    }

    void watch_supervisor()
    {
        auto& sup = *supervisor_;
        sup.on_connected([this](vigil::session& s) -> asio::awaitable<error_code> {
            emit_connected(s);
            // Like a subscription: the server forgot it with the old connection.
            for (const auto& text : opts_.sends) {
                if (auto ec = co_await s.send(text)) {
                    co_return ec;
                }
            }
            co_return error_code{};
        });
        auto& ev = sup.events();
        ev.on_connecting = [this](const vigil::attempt_params& p) { emit_connecting(p.url, p.endpoint); };
        ev.on_retry = [this](const vigil::retry_info& r) {
            json j = {{"event", "retry"},
                      {"attempt", r.attempt},
                      {"delay_ms", r.delay.count()},
                      {"reason", vigil::error_name(r.last.reason)},
                      {"permanent", false},
                      {"endpoint", r.endpoint},
                      {"next_endpoint", r.next_endpoint}};
            add_status(j, r.last);
            if (r.last.retry_after.count() > 0) {
                j["retry_after_ms"] = r.last.retry_after.count();
            }
            emit(std::move(j));
        };
        ev.on_reconnect = [this](const std::string& reason) {
            emit({{"event", "reconnect"}, {"reason", reason}});
        };
        ev.on_replacement_failed = [this](const vigil::replacement_failure& f) {
            json j = {{"event", "replacement_failed"},
                      {"reason", vigil::error_name(f.last.reason)},
                      {"detail", f.last.detail},
                      {"endpoint", f.endpoint},
                      {"failures", f.failures}};
            add_status(j, f.last);
            if (f.retry_in) {
                j["retry_in_ms"] = f.retry_in->count();
            }
            emit(std::move(j));
        };
        ev.on_gave_up = [this](const error_code& reason, const vigil::disconnect_info& last) {
            if (!reported_) {
                // Failed before any connection attempt (invalid configuration).
                report(last);
            }
            json j = {{"event", "gave_up"},
                      {"reason", vigil::error_name(reason)},
                      {"detail", last.detail}};
            if (reason != last.reason) {
                j["last_reason"] = vigil::error_name(last.reason);
            }
            add_status(j, last);
            emit(std::move(j));
        };
    }

    void wait_retry_signal()
    {
        retry_signal_.async_wait([this](error_code ec, int) {
            if (ec) {
                return;
            }
            if (supervisor_ && !finished_) {
                emit({{"event", "retry_now"}});
                supervisor_->retry_now();
            }
            wait_retry_signal();
        });
    }

    void wait_reconnect_signal()
    {
        reconnect_signal_.async_wait([this](error_code ec, int) {
            if (ec) {
                return;
            }
            if (supervisor_ && !finished_) {
                supervisor_->reconnect("SIGUSR2");
            }
            wait_reconnect_signal();
        });
    }

    // Lines typed into a terminal are not ours to read: a probe left running in the
    // background would be stopped by SIGTTIN. Pipes, files and /dev/null are read; a closed
    // descriptor is simply not.
    void open_stdin()
    {
        if (::isatty(STDIN_FILENO) || ::fcntl(STDIN_FILENO, F_GETFD) == -1) {
            return;
        }
        int fd = ::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
        if (fd == -1) {
            return;
        }
        error_code ec;
        stdin_.assign(fd, ec);
        if (ec) {
            ::close(fd);
            return;
        }
        stdin_.non_blocking(true, ec);
    }

    void stop(stop_cause cause)
    {
        if (stop_cause_ != stop_cause::none || finished_) {
            return;
        }
        stop_cause_ = cause;
        if (supervisor_) {
            supervisor_->stop();
            return;
        }
        if (!session_->is_open()) {
            // Still connecting: there is no connection to close yet.
            session_->cancel();
            return;
        }
        start_close();
    }

    void abort_now()
    {
        forced_ = true;
        if (finished_) {
            // The outcome is known; only a lingering close handshake is left.
            ioc_.stop();
            return;
        }
        if (supervisor_) {
            abort_.emit(asio::cancellation_type::terminal);
        } else {
            session_->cancel();
        }
    }

    void start_close()
    {
        if (closing_) {
            return;
        }
        closing_ = true;
        asio::co_spawn(ioc_, close_session(), asio::detached);
    }

    asio::awaitable<void> close_session()
    {
        auto ec = co_await session_->close(1000);
        if (ec && ec != vigil::error::not_connected) {
            std::cerr << "vigil-probe: close: " << vigil::error_name(ec) << '\n';
        }
    }

    // Reads stdin lines and hands each to `send`; stops at the first error it returns.
    template <class Send>
    asio::awaitable<void> read_stdin(Send send)
    {
        if (!stdin_.is_open()) {
            co_return;
        }
        std::string buffer;
        for (;;) {
            auto [ec, n] = co_await asio::async_read_until(
                stdin_, asio::dynamic_buffer(buffer), '\n', asio::as_tuple(asio::use_awaitable));
            std::string line;
            if (ec) {
                // End of input is no reason to end the connection: just stop reading.
                if (ec != asio::error::eof || buffer.empty() || finished_) {
                    co_return;
                }
                line = std::move(buffer);
                buffer.clear();
            } else {
                line = buffer.substr(0, n - 1);
                buffer.erase(0, n);
            }
            if (!line.empty() && line.back() == '\r') {
                line.pop_back();
            }
            if (!co_await send(std::move(line)) || ec) {
                co_return;
            }
        }
    }

    asio::awaitable<void> feed_session()
    {
        for (auto& text : opts_.sends) {
            if (auto ec = co_await session_->send(text)) {
                std::cerr << "vigil-probe: send: " << vigil::error_name(ec) << '\n';
                co_return;
            }
        }
        co_await read_stdin([this](std::string line) -> asio::awaitable<bool> {
            if (auto ec = co_await session_->send(std::move(line))) {
                std::cerr << "vigil-probe: send: " << vigil::error_name(ec) << '\n';
                co_return false;
            }
            co_return true;
        });
    }

    asio::awaitable<void> feed_supervisor()
    {
        co_await read_stdin([this](std::string line) -> asio::awaitable<bool> {
            auto ec = co_await supervisor_->send(std::move(line));
            if (!ec) {
                co_return true;
            }
            // The end of the supervisor is reported by its own events, not once per line.
            if (ec != vigil::error::supervisor_stopped && !finished_) {
                std::cerr << "vigil-probe: send: " << vigil::error_name(ec) << '\n';
            }
            // A full outbox or an expired line loses that line only; anything else means
            // no later line can go out either.
            co_return ec == vigil::error::send_queue_full || ec == vigil::error::message_expired;
        });
    }

    asio::awaitable<void> supervise()
    {
        asio::co_spawn(ioc_, feed_supervisor(), asio::detached);
        auto ec = co_await supervisor_->run();
        // Empty after stop(); operation_aborted after a second signal. Anything else is a
        // permanent failure or retries_exhausted, already reported by on_gave_up.
        exit_code_ = (!ec || ec == asio::error::operation_aborted) ? exit_ok : exit_gave_up;
        finish();
    }

    asio::awaitable<void> single_session()
    {
        emit_connecting(opts_.url);
        auto ec = co_await session_->connect(opts_.url);
        if (ec) {
            if (!reported_) {
                report(session_->last_disconnect());
            }
            // Interrupted by the user while connecting is a normal way to end; a
            // --duration that ran out before the connection was even open is not.
            if (stop_cause_ == stop_cause::signal && ec == asio::error::operation_aborted) {
                exit_code_ = exit_ok;
            } else {
                exit_code_ = vigil::is_permanent(ec) ? exit_gave_up : exit_failed;
            }
            finish();
            co_return;
        }
        if (stop_cause_ != stop_cause::none) {
            // The stop request raced the last step of connect(); honour it now.
            start_close();
        }
        asio::co_spawn(ioc_, feed_session(), asio::detached);

        ec = co_await session_->run();
        if (!reported_) {
            report(session_->last_disconnect());
        }
        // Asked to stop, and stopped: how the close handshake went is in `disconnected`.
        if (clean_end(ec) || stop_cause_ != stop_cause::none) {
            exit_code_ = exit_ok;
        } else {
            exit_code_ = vigil::is_permanent(ec) ? exit_gave_up : exit_failed;
        }
        finish();
    }

    bool clean_end(const error_code& ec) const
    {
        if (!ec) {
            return true;
        }
        if (vigil::close_code_of(ec) == 1000) {
            return true;
        }
        return stop_cause_ != stop_cause::none && ec == asio::error::operation_aborted;
    }

    // --metrics-port: the supervisor's metrics, served from the start (before connecting).
    bool start_metrics()
    {
#ifdef VIGIL_CLI_PROMETHEUS
        if (opts_.metrics.port) {
            std::string detail;
            metrics_ = vigil::prometheus_exporter::start(opts_.metrics.bind, *opts_.metrics.port, &detail);
            if (!metrics_) {
                std::cerr << "vigil-probe: " << detail << '\n';
                return false;
            }
            metrics_->add(*supervisor_, "probe");
            emit({{"event", "metrics_listening"}, {"metrics_port", metrics_->port()}});
        }
#endif
        return true;
    }

    // Nothing may keep the io_context alive once the connection is over.
    void finish()
    {
        finished_ = true;
        if (forced_) {
            // Asked to end at once: a close handshake still waiting for its answer must not
            // keep us.
            ioc_.stop();
        }
        error_code ignored;
        stop_signals_.cancel(ignored);
        retry_signal_.cancel(ignored);
        reconnect_signal_.cancel(ignored);
        duration_timer_.cancel();
        if (stdin_.is_open()) {
            stdin_.cancel(ignored);
            stdin_.close(ignored);
        }
    }

    asio::io_context& ioc_;
    options opts_;
    std::chrono::steady_clock::time_point start_;
    // Exactly one of the two: a supervisor by default, a bare session with --no-reconnect.

    std::unique_ptr<vigil::supervisor> supervisor_;
    std::unique_ptr<vigil::session> session_;
#ifdef VIGIL_CLI_PROMETHEUS
    std::unique_ptr<vigil::prometheus_exporter> metrics_;  // after supervisor_: destroyed first
#endif
    asio::cancellation_signal abort_;
    asio::signal_set stop_signals_;
    asio::signal_set retry_signal_;
    asio::signal_set reconnect_signal_;
    asio::steady_timer duration_timer_;
    asio::posix::stream_descriptor stdin_;
    stop_cause stop_cause_ = stop_cause::none;
    bool connected_ = false;
    bool closing_ = false;
    bool reported_ = false;
    bool finished_ = false;
    bool forced_ = false;
    int exit_code_ = exit_failed;
};

}  // namespace

int main(int argc, char** argv)
{
    auto start = std::chrono::steady_clock::now();
    options opts;
    try {
        opts = parse_args(argc, argv);
    } catch (const usage_error& e) {
        std::cerr << "vigil-probe: " << e.message << "\n"
                  << "usage: vigil-probe [options] URL [BACKUP_URL...] (--help for the options)\n";
        return exit_usage;
    }
    if (opts.help) {
        const auto at = usage_text.find("  --help ");
        std::cout << usage_text.substr(0, at) << deflate_usage("offer", "as the server asks")
                  << metrics_usage("the supervisor's; a metrics_listening event gives metrics_port")
                  << usage_text.substr(at);
        return exit_ok;
    }

    try {
        asio::io_context ioc(1);
        probe p(ioc, std::move(opts), start);
        p.start();
        ioc.run();
        if (p.forced()) {
            // Operations the second signal cut short may still hold the session; leaving
            // now, without unwinding them, is what "at once" means.
            std::cout.flush();
            std::_Exit(p.exit_code());
        }
        return p.exit_code();
    } catch (const std::exception& e) {
        std::cerr << "vigil-probe: " << e.what() << '\n';
        return exit_failed;
    }
}
