// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-serve: a WebSocket server on the command line. It echoes (or broadcasts) what
// clients send, keeps every connection honest with vigil's heartbeat and deadlines, and
// reports each connection, message, eviction and refusal as JSON lines on stdout, so that
// scripts and tests can watch clients live, die and get evicted.

#include <vigil/server.hpp>
#ifdef VIGIL_CLI_PROMETHEUS
#include <vigil/prometheus.hpp>
#endif
#ifdef VIGIL_CLI_REDIS
#include <vigil/redis.hpp>
#endif

#include <boost/url/parse.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <nlohmann/json.hpp>

#include "cli.hpp"

#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstddef>
#include <cstdint>
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

constexpr int exit_ok = 0;
// The server could not start or ended for a reason other than a signal (port in use ...).
constexpr int exit_failed = 1;
// sysexits.h EX_USAGE: what scripts expect from a command given bad arguments.
constexpr int exit_usage = 64;

constexpr std::string_view usage_text =
    "usage: vigil-serve [options]\n"
    "\n"
    "A WebSocket server that echoes or broadcasts what clients send, pings idle clients and\n"
    "evicts the ones that stop answering. Prints one JSON object per line on stdout for each\n"
    "event: listening (first, with the port), client_connected, message, client_disconnected,\n"
    "rejected (with the HTTP status and a detail naming the limit, if any), accept_error,\n"
    "stall, stopped. A client_disconnected event after a liveness verdict says whose fault\n"
    "it was: \"diagnosis\" is network, peer_unresponsive, local_stall or unknown; stall\n"
    "(with late_ms) says our own loop ran late.\n"
    "\n"
    "options (S = seconds, fractions allowed):\n"
    "  --port P               port to listen on (default 0: the system picks one)\n"
    "  --bind ADDR            address to listen on (default 127.0.0.1; 0.0.0.0 or :: for all)\n"
    "  --mode echo|broadcast  send each message back to its sender (default), or to every\n"
    "                         member of the sender's channels (broadcast): a client's\n"
    "                         channels are named in its URL (?channel=NAME, repeatable;\n"
    "                         default all, which every such client joins), and it joins and\n"
    "                         leaves others by sending {\"type\":\"join\",\"channel\":NAME}\n"
    "                         or \"leave\" (answered joined/left, or error)\n"
    "  --fanout redis://[:PASSWORD@]HOST[:PORT][/CHANNEL]\n"
    "                         make this server a node of a cluster: broadcasts reach the\n"
    "                         members of a channel on every node given the same Redis and\n"
    "                         CHANNEL (default vigil); events fanout_up, fanout_down,\n"
    "                         fanout_retry, fanout_error, fanout_gap, and fanout_failed when\n"
    "                         Redis refuses for good (then the server stops, exit 1); needs\n"
    "                         a build with hiredis, else exit 64\n"
    "  --ping-interval S      ping a client after S seconds without traffic (default 20;\n"
    "                         0: no heartbeat)\n"
    "  --pong-timeout S       evict a client S seconds after an unanswered ping (default 10)\n"
    "  --stall-threshold S    report our own loop running later than S (event stall;\n"
    "                         default a quarter of the pong timeout)\n"
    "  --idle-timeout S       evict a client that sends no data message for S seconds\n"
    "                         (default 0: off)\n"
    "  --handshake-timeout S  bound on a client's TLS handshake and upgrade request (default 10)\n"
    "  --max-connections N    beyond N open connections, answer 503 (default 10000)\n"
    "  --max-per-address N    beyond N open connections from one IP address, answer that\n"
    "                         address 503 (default: no limit, as behind a proxy or NAT\n"
    "                         every client shares one address)\n"
    "  --connects-per-address N/S\n"
    "                         beyond N new connections from one IP address in any S\n"
    "                         seconds, answer 429 with Retry-After (default: no limit)\n"
    "  --max-message BYTES    largest message accepted; a larger one closes with 1009\n"
    "                         (default 1048576)\n"
    "  --memory-budget BYTES  most memory all clients together may hold for messages in\n"
    "                         progress, queued for the server or waiting to be sent; the\n"
    "                         heaviest are closed (1009/1013) when it stays short for 2 s\n"
    "                         (default 134217728; 0: no budget)\n"
    "  --max-receive-rate BYTES  most bytes per second read from one client; a faster one is\n"
    "                         slowed down, not closed (default 4194304; 0: no limit)\n"
    "  --message-timeout S    a message must arrive within S seconds plus one per 64 KiB of\n"
    "                         it, else the client is closed with 1008 (default 10; 0: off)\n"
    "  --tls-cert FILE        serve wss:// with this PEM certificate chain (needs --tls-key)\n"
    "  --tls-key FILE         the PEM private key of --tls-cert\n"
    "  --app-ping TEXT        application-level heartbeat: ping clients with the text message\n"
    "                         TEXT instead of ping frames, and answer their TEXT pings\n"
    "  --app-pong TEXT        ... with TEXT as the pong (both flags or neither)\n"
    "  --allow-origin ORIGIN  admit browsers from ORIGIN only (scheme://host[:port];\n"
    "                         repeatable); another Origin is answered 403. Requests without\n"
    "                         an Origin (non-browser clients) are admitted unless\n"
    "                         --require-origin\n"
    "  --require-origin       with --allow-origin, answer 403 to requests without an Origin\n"
    "  --token SECRET         admit only clients presenting SECRET (Authorization: Bearer\n"
    "                         SECRET, or ?token=SECRET in the URL); others get 401 with\n"
    "                         WWW-Authenticate. Checked after the Origin\n"
    "  --subprotocol NAME     a subprotocol this server speaks (repeatable, in order of\n"
    "                         preference); the first one a client offers is chosen\n"
    "  --help                 show this text\n"
    "\n"
    "signals: SIGINT/SIGTERM close every connection with 1001 (going away), bounded by the\n"
    "close timeout, print stopped and exit 0; a second one drops the connections at once.\n"
    "\n"
    "exit status: 0 after a signal; 1 when the server cannot listen (address in use ...)\n"
    "or the fan-out failed for good (fanout_failed);\n"
    "64 for bad arguments.\n";

enum class serve_mode { echo, broadcast };

// --fanout: the Redis URL without its path, and the channel the path named.
struct fanout_target {
    std::string redis_url;
    std::string channel = "vigil";
};

fanout_target parse_fanout(std::string_view text)
{
    auto fail = [&](const std::string& why) {
        return usage_error{"--fanout: '" + std::string(text) + "' " + why};
    };
    auto u = boost::urls::parse_uri(text);
    if (!u) {
        throw fail("is not a URL (" + u.error().message() + ")");
    }
    if (u->scheme() != "redis") {
        throw fail("is not a redis:// URL");
    }
    if (u->has_query() || u->has_fragment()) {
        throw fail("has a query or fragment; the form is redis://[:PASSWORD@]HOST[:PORT][/CHANNEL]");
    }
    fanout_target t;
    t.redis_url = "redis://" + std::string(u->encoded_authority());
    auto path = u->path();  // decoded
    if (path.size() > 1) {
        t.channel = path.substr(1);
        if (t.channel.find('/') != std::string::npos) {
            throw fail("names a channel with '/'; the form is redis://HOST[:PORT][/CHANNEL]");
        }
    }
    return t;
}

struct options {
    vigil::server_config cfg;
    serve_mode mode = serve_mode::echo;
    std::optional<std::string> app_ping;
    std::optional<std::string> app_pong;
    bool help = false;
    std::vector<std::string> allow_origins;
    vigil::missing_origin missing = vigil::missing_origin::allow;
    std::optional<std::string> token;
    metrics_listener metrics;
    std::optional<fanout_target> fanout;
};

// The admission check the flags ask for: the Origin policy first (a page from elsewhere
// never gets as far as guessing tokens), then the token.
vigil::upgrade_check make_check(options& opts)
{
    vigil::upgrade_check check;
    if (opts.token) {
        if (opts.token->empty()) {
            throw usage_error{"--token must not be empty"};
        }
        check = vigil::require_token(*opts.token);
    }
    if (!opts.allow_origins.empty()) {
        try {
            check = vigil::allow_origins(opts.allow_origins, opts.missing, std::move(check));
        } catch (const std::invalid_argument& e) {
            throw usage_error{std::string("--allow-origin: ") + e.what()};
        }
    } else if (opts.missing == vigil::missing_origin::refuse) {
        throw usage_error{"--require-origin needs --allow-origin"};
    }
    return check;
}

std::size_t positive_count(std::string_view flag, std::string_view text)
{
    auto n = parse_count(flag, text);
    if (n == 0) {
        throw usage_error{std::string(flag) + " must be positive"};
    }
    return n;
}

std::string seconds_text(milliseconds d)
{
    auto text = std::to_string(static_cast<double>(d.count()) / 1000.0);
    text.erase(text.find_last_not_of('0') + 1);
    if (text.back() == '.') {
        text.pop_back();
    }
    return text + " s";
}

options parse_args(int argc, char** argv)
{
    options opts;
    auto& session = opts.cfg.session;

    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg.size() < 2 || arg.substr(0, 2) != "--") {
            throw usage_error{"unexpected argument '" + std::string(arg) + "'"};
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

        if (flag == "--port") {
            auto text = value();
            auto port = parse_count(flag, text);
            if (port > 65535) {
                throw usage_error{"--port: '" + std::string(text) + "' is not a port (0-65535)"};
            }
            opts.cfg.port = static_cast<std::uint16_t>(port);
        } else if (flag == "--bind") {
            opts.cfg.bind = std::string(value());
            if (opts.cfg.bind.empty()) {
                throw usage_error{"--bind needs an address"};
            }
        } else if (flag == "--mode") {
            auto mode = value();
            if (mode == "echo") {
                opts.mode = serve_mode::echo;
            } else if (mode == "broadcast") {
                opts.mode = serve_mode::broadcast;
            } else {
                throw usage_error{"--mode: '" + std::string(mode) +
                                  "' is neither echo nor broadcast"};
            }
        } else if (flag == "--ping-interval") {
            session.ping_interval = parse_seconds(flag, value());
        } else if (flag == "--pong-timeout") {
            session.pong_timeout = positive(flag, parse_seconds(flag, value()));
        } else if (flag == "--stall-threshold") {
            session.stall_threshold = parse_seconds(flag, value());
        } else if (flag == "--idle-timeout") {
            session.idle_timeout = parse_seconds(flag, value());
        } else if (flag == "--handshake-timeout") {
            // One bound for the whole way from TCP accept to WebSocket: a client stuck in
            // either step holds a connection slot just the same.
            session.handshake_timeout = positive(flag, parse_seconds(flag, value()));
            session.tls_handshake_timeout = session.handshake_timeout;
        } else if (flag == "--max-connections") {
            opts.cfg.max_connections = positive_count(flag, value());
        } else if (flag == "--max-per-address") {
            opts.cfg.max_connections_per_address = positive_count(flag, value());
        } else if (flag == "--connects-per-address") {
            const auto r = parse_rate(flag, value());
            opts.cfg.connects_per_address = r.count;
            opts.cfg.connect_window = r.window;
        } else if (flag == "--max-message") {
            session.max_message_size = positive_count(flag, value());
        } else if (flag == "--memory-budget") {
            opts.cfg.memory_budget = parse_count(flag, value());
        } else if (flag == "--max-receive-rate") {
            session.max_receive_rate = parse_count(flag, value());
        } else if (flag == "--message-timeout") {
            session.message_timeout = parse_seconds(flag, value());
        } else if (flag == "--tls-cert") {
            opts.cfg.tls.cert_file = std::string(value());
        } else if (flag == "--tls-key") {
            opts.cfg.tls.key_file = std::string(value());
        } else if (flag == "--app-ping") {
            opts.app_ping = std::string(value());
        } else if (flag == "--app-pong") {
            opts.app_pong = std::string(value());
        } else if (flag == "--allow-origin") {
            opts.allow_origins.emplace_back(value());
        } else if (flag == "--require-origin") {
            no_value();
            opts.missing = vigil::missing_origin::refuse;
        } else if (flag == "--token") {
            opts.token = std::string(value());
        } else if (flag == "--subprotocol") {
            opts.cfg.subprotocols.emplace_back(value());
        } else if (flag == "--fanout") {
#ifndef VIGIL_CLI_REDIS
            throw usage_error{"--fanout needs a vigil-serve built with hiredis (Debian: libhiredis-dev)"};
#endif
            opts.fanout = parse_fanout(value());
        } else if (parse_metrics_flag("vigil-serve", flag, value, opts.metrics)) {
            // --metrics-port, --metrics-bind (cli.hpp)
        } else if (flag == "--help") {
            no_value();
            opts.help = true;
        } else if (parse_deflate_flag(flag, value, no_value, session.deflate)) {
            // --deflate and its knobs (cli.hpp)
        } else {
            throw usage_error{"unknown option '" + std::string(flag) + "'"};
        }
    }
    if (opts.help) {
        return opts;
    }

    // The library checks these too, but names its fields; a user typed flags.
    if (session.ping_interval.count() > 0 && session.pong_timeout >= session.ping_interval) {
        throw usage_error{"--pong-timeout (" + seconds_text(session.pong_timeout) +
                          ") must be shorter than --ping-interval (" +
                          seconds_text(session.ping_interval) + ")"};
    }
    if (session.ping_interval.count() > 0 && session.idle_timeout.count() > 0 &&
        session.ping_interval >= session.idle_timeout) {
        throw usage_error{"--ping-interval (" + seconds_text(session.ping_interval) +
                          ") must be shorter than --idle-timeout (" +
                          seconds_text(session.idle_timeout) + ")"};
    }
    if (opts.cfg.tls.cert_file.empty() != opts.cfg.tls.key_file.empty()) {
        throw usage_error{opts.cfg.tls.cert_file.empty() ? "--tls-key needs --tls-cert"
                                                         : "--tls-cert needs --tls-key"};
    }
    if (opts.app_ping.has_value() != opts.app_pong.has_value()) {
        throw usage_error{opts.app_ping ? "--app-ping needs --app-pong" : "--app-pong needs --app-ping"};
    }
    if (opts.app_ping) {
        if (opts.app_ping->empty() || opts.app_pong->empty()) {
            throw usage_error{std::string(opts.app_ping->empty() ? "--app-ping" : "--app-pong") +
                              " must not be empty"};
        }
        if (*opts.app_ping == *opts.app_pong) {
            throw usage_error{"--app-ping and --app-pong must differ"};
        }
        // Pings clients with the text, recognises their answer, and answers theirs.
        session.heartbeat = vigil::message_heartbeat::text(*opts.app_ping, *opts.app_pong);
    }
    opts.cfg.check_upgrade = make_check(opts);
#ifdef VIGIL_CLI_REDIS
    if (opts.fanout) {
        std::string detail;
        if (vigil::validate(vigil::redis_config{opts.fanout->redis_url}, &detail)) {
            throw usage_error{"--fanout: " + detail};
        }
    }
#endif
    return opts;
}

// The channels a client names in its URL (?channel=a&channel=b); "all" when it names none.
std::vector<std::string> channels_in(const std::string& target)
{
    std::vector<std::string> names;
    if (auto u = boost::urls::parse_origin_form(target)) {
        for (auto param : u->params()) {
            if (param.key == "channel") {
                names.push_back(param.value);
            }
        }
    }
    if (names.empty()) {
        names.emplace_back("all");
    }
    return names;
}

// A client's {"type":"join"|"leave","channel":NAME}; nullopt for any other message.
struct channel_command {
    bool join = true;
    std::optional<std::string> channel;  // nullopt: missing or not a string
};

std::optional<channel_command> parse_command(const std::string& text)
{
    if (text.empty() || text.front() != '{') {
        return std::nullopt;
    }
    auto j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return std::nullopt;
    }
    auto type = j.find("type");
    if (type == j.end() || !type->is_string() || (*type != "join" && *type != "leave")) {
        return std::nullopt;
    }
    channel_command c;
    c.join = *type == "join";
    if (auto ch = j.find("channel"); ch != j.end() && ch->is_string()) {
        c.channel = ch->get<std::string>();
    }
    return c;
}

class serve {
public:
    serve(asio::io_context& ioc, options opts, std::chrono::steady_clock::time_point start)
        : ioc_(ioc),
          mode_(opts.mode),
          start_(start),
          metrics_opts_(opts.metrics),
#ifdef VIGIL_CLI_REDIS
          fanout_(make_fanout(ioc, opts)),
#endif
          server_(ioc.get_executor(), std::move(opts.cfg),
                  [this](vigil::server::connection_ptr c) { return handle(std::move(c)); }),
          signals_(ioc, SIGINT, SIGTERM)
    {
        auto& ev = server_.events();
        ev.on_connected = [this](vigil::connection& c) {
            emit({{"event", "client_connected"},
                  {"id", c.id()},
                  {"remote", c.remote()},
                  {"subprotocol", c.subprotocol()},
                  {"compressed", c.compressed()}});
        };
        ev.on_disconnected = [this](vigil::connection& c) {
            const auto& info = c.last_disconnect();
            json j = {{"event", "client_disconnected"},
                      {"id", c.id()},
                      {"reason", vigil::error_name(info.reason)},
                      {"detail", info.detail},
                      {"silent_ms", info.silent_for.count()}};
            if (info.diagnosis != vigil::diagnosis::none) {
                j["diagnosis"] = vigil::diagnosis_name(info.diagnosis);
            }
            if (info.close_code != 0) {
                j["close_code"] = info.close_code;
            }
            if (!info.close_reason.empty()) {
                j["close_reason"] = info.close_reason;
            }
            emit(std::move(j));
        };
        ev.on_rejected = [this](const std::string& remote, const error_code& why,
                                const std::string& detail) {
            json j = {{"event", "rejected"},
                      {"remote", remote},
                      {"reason", vigil::error_name(why)},
                      {"detail", detail}};
            if (auto status = vigil::http_status_of(why)) {
                j["status"] = status;
            }
            emit(std::move(j));
        };
        ev.on_stall = [this](milliseconds lateness) {
            emit({{"event", "stall"}, {"late_ms", lateness.count()}});
        };
        ev.on_accept_error = [this](const error_code& ec) {
            emit({{"event", "accept_error"}, {"reason", vigil::error_name(ec)}});
        };
        ev.on_fanout_error = [this](std::string_view channel, const error_code& why, const std::string& detail) {
            emit({{"event", "fanout_error"},
                  {"channel", std::string(channel)},
                  {"reason", vigil::error_name(why)},
                  {"detail", detail}});
        };
        ev.on_fanout_gap = [this](std::string_view origin, std::uint64_t missed) {
            emit({{"event", "fanout_gap"}, {"origin", std::string(origin)}, {"missed", missed}});
        };
        watch_fanout();
    }

    // Binds the socket, so that the port is known before anything else is printed.
    // Returns an exit status on failure.
    std::optional<int> listen()
    {
        std::string detail;
        if (auto ec = server_.listen(&detail)) {
            std::cerr << "vigil-serve: " << (detail.empty() ? vigil::error_name(ec) : detail)
                      << '\n';
            // A certificate that cannot be loaded came from a flag; a busy port did not.
            return ec == vigil::error::invalid_config ? exit_usage : exit_failed;
        }
        json listening = {{"event", "listening"}, {"port", server_.port()}, {"node", server_.node_id()}};
        if (!start_metrics(listening)) {
            return exit_failed;
        }
        emit(std::move(listening));
        return std::nullopt;
    }

    void start()
    {
        signals_.async_wait([this](error_code ec, int) {
            if (ec) {
                return;
            }
            server_.stop();
            // A second signal means "now": connections are dropped without a close handshake.
            signals_.async_wait([this](error_code ec2, int) {
                if (!ec2) {
                    forced_ = true;
                    abort_.emit(asio::cancellation_type::terminal);
                }
            });
        });
        auto done = [this](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                    std::cerr << "vigil-serve: " << ex.what() << '\n';
                }
                exit_code_ = exit_failed;
                finish();
            }
        };
        asio::co_spawn(ioc_, run(), asio::bind_cancellation_slot(abort_.slot(), std::move(done)));
    }

    int exit_code() const noexcept { return exit_code_; }

private:
    // The Prometheus listener of --metrics-port; its port goes into the listening event.
    bool start_metrics([[maybe_unused]] json& listening)
    {
#ifdef VIGIL_CLI_PROMETHEUS
        if (metrics_opts_.port) {
            std::string detail;
            metrics_ = vigil::prometheus_exporter::start(server_, metrics_opts_.bind, *metrics_opts_.port, &detail);
            if (!metrics_) {
                std::cerr << "vigil-serve: " << detail << '\n';
                return false;
            }
            listening["metrics_port"] = metrics_->port();
        }
#endif
        return true;
    }

#ifdef VIGIL_CLI_REDIS
    // The fan-out of --fanout, handed to the server through its config.
    static std::shared_ptr<vigil::redis_fanout> make_fanout(asio::io_context& ioc, options& opts)
    {
        if (!opts.fanout) {
            return nullptr;
        }
        auto f = std::make_shared<vigil::redis_fanout>(ioc.get_executor(), vigil::redis_config{opts.fanout->redis_url},
                                                       opts.fanout->channel);
        opts.cfg.fanout = f;
        return f;
    }

    // Ends with the server; a permanent failure (a wrong password) stops the server.
    asio::awaitable<void> run_fanout()
    {
        auto ec = co_await fanout_->run();
        if (ec && ec != asio::error::operation_aborted) {
            emit({{"event", "fanout_failed"}, {"reason", vigil::error_name(ec)}, {"detail", ec.message()}});
            fanout_failed_ = true;
            server_.stop();
        }
    }
#endif

    void watch_fanout()
    {
#ifdef VIGIL_CLI_REDIS
        if (!fanout_) {
            return;
        }
        auto& link = fanout_->link();
        link.on_up = [this] { emit({{"event", "fanout_up"}, {"channel", fanout_->channel()}}); };
        link.on_down = [this](error_code why) {
            emit({{"event", "fanout_down"}, {"reason", vigil::error_name(why)}});
        };
        link.on_retry = [this](std::size_t attempt, milliseconds delay, error_code why) {
            emit({{"event", "fanout_retry"},
                  {"attempt", attempt},
                  {"delay_ms", delay.count()},
                  {"reason", vigil::error_name(why)}});
        };
#endif
    }

    asio::awaitable<void> run()
    {
#ifdef VIGIL_CLI_REDIS
        if (fanout_) {
            asio::co_spawn(ioc_, run_fanout(), asio::detached);
        }
#endif
        auto ec = co_await server_.run();
#ifdef VIGIL_CLI_REDIS
        if (fanout_) {
            fanout_->stop();
        }
#endif
        // Empty after stop(); operation_aborted after a second signal.
        if (ec && ec != asio::error::operation_aborted) {
            std::cerr << "vigil-serve: " << vigil::error_name(ec) << '\n';
            exit_code_ = exit_failed;
        } else {
            exit_code_ = fanout_failed_ ? exit_failed : exit_ok;
        }
        const auto counters = server_.counters();
        emit({{"event", "stopped"},
              {"held_bytes_peak", counters.held_bytes_peak},
              {"budget_evictions", counters.budget_evictions}});
        finish();
    }

    // One coroutine per client, on the client's strand.
    asio::awaitable<void> handle(vigil::server::connection_ptr conn)
    {
        if (mode_ == serve_mode::broadcast && !co_await join_named(conn)) {
            co_return;
        }
        for (;;) {
            auto msg = co_await conn->receive();
            if (msg.ec) {
                // The connection ended; on_disconnected has reported why.
                co_return;
            }
            emit({{"event", "message"}, {"id", conn->id()}, {"bytes", msg.data.size()}});
            if (mode_ == serve_mode::echo) {
                // Awaiting the write before the next receive lets a client that sends faster
                // than it reads slow itself down, instead of growing our queue. A failed send
                // needs no handling here: the end of the connection shows in receive().
                co_await conn->send(std::move(msg.data), msg.type);
            } else {
                co_await relay(conn, std::move(msg));
            }
        }
    }

    // The channels of the client's URL; false (and closed with 1008) for an invalid name.
    asio::awaitable<bool> join_named(const vigil::server::connection_ptr& conn)
    {
        for (auto& name : channels_in(conn->target())) {
            if (server_.join(conn, name)) {
                co_await conn->close(1008, "invalid channel name (1 to 1024 bytes)");
                co_return false;
            }
            emit({{"event", "client_joined"}, {"id", conn->id()}, {"channel", name}});
        }
        co_return true;
    }

    // A join or leave command, or a message for every member of the sender's channels.
    asio::awaitable<void> relay(const vigil::server::connection_ptr& conn, vigil::received msg)
    {
        auto command = msg.type == vigil::message_type::text ? parse_command(msg.data) : std::nullopt;
        if (!command) {
            // Never waits: a client that cannot keep up is disconnected by its overflow
            // policy rather than stalling everyone else.
            for (const auto& channel : server_.channels(conn)) {
                server_.broadcast(channel, msg.data, msg.type);
            }
            co_return;
        }
        json reply;
        if (!command->channel) {
            reply = {{"type", "error"}, {"error", "a join or leave needs \"channel\": a string"}};
        } else if (command->join) {
            if (server_.join(conn, *command->channel)) {
                reply = {{"type", "error"}, {"error", "invalid channel name (1 to 1024 bytes)"}};
            } else {
                emit({{"event", "client_joined"}, {"id", conn->id()}, {"channel", *command->channel}});
                reply = {{"type", "joined"}, {"channel", *command->channel}};
            }
        } else {
            server_.leave(conn, *command->channel);
            emit({{"event", "client_left"}, {"id", conn->id()}, {"channel", *command->channel}});
            reply = {{"type", "left"}, {"channel", *command->channel}};
        }
        co_await conn->send(reply.dump(-1, ' ', false, json::error_handler_t::replace));
    }

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
        // Details can quote what a client sent; one bad byte must never cost the line.
        std::cout << line.dump(-1, ' ', false, json::error_handler_t::replace) << '\n'
                  << std::flush;
    }

    // Nothing may keep the io_context alive once the server is done.
    void finish()
    {
        if (forced_) {
            // Asked to end at once: a close handshake still under way must not keep us.
            ioc_.stop();
        }
        error_code ignored;
        signals_.cancel(ignored);
    }

    asio::io_context& ioc_;
    serve_mode mode_;
    std::chrono::steady_clock::time_point start_;
    metrics_listener metrics_opts_;
#ifdef VIGIL_CLI_REDIS
    std::shared_ptr<vigil::redis_fanout> fanout_;  // before server_: the server holds it in its config
#endif
    vigil::server server_;
#ifdef VIGIL_CLI_PROMETHEUS
    std::unique_ptr<vigil::prometheus_exporter> metrics_;  // after server_: destroyed first
#endif
    asio::signal_set signals_;
    asio::cancellation_signal abort_;
    int exit_code_ = exit_failed;
    bool forced_ = false;
    bool fanout_failed_ = false;  // the fan-out stopped for good, and so did the server
};

}  // namespace

int main(int argc, char** argv)
{
    auto start = std::chrono::steady_clock::now();
    options opts;
    try {
        opts = parse_args(argc, argv);
    } catch (const usage_error& e) {
        std::cerr << "vigil-serve: " << e.message << "\n"
                  << "usage: vigil-serve [options] (--help for the options)\n";
        return exit_usage;
    }
    if (opts.help) {
        const auto at = usage_text.find("  --help ");
        std::cout << usage_text.substr(0, at)
                  << deflate_usage("accept", "no takeover: each message compressed on its own, and\n"
                                             "                         no history kept between messages")
                  << metrics_usage("the server's; the listening event gains metrics_port") << usage_text.substr(at);
        return exit_ok;
    }
    // Anything else the library rejects (it names its own fields).
    std::string detail;
    if (vigil::validate(opts.cfg, &detail)) {
        std::cerr << "vigil-serve: invalid configuration: " << detail << "\n"
                  << "usage: vigil-serve [options] (--help for the options)\n";
        return exit_usage;
    }

    try {
        asio::io_context ioc(1);
        serve s(ioc, std::move(opts), start);
        if (auto failed = s.listen()) {
            return *failed;
        }
        s.start();
        ioc.run();
        return s.exit_code();
    } catch (const std::exception& e) {
        std::cerr << "vigil-serve: " << e.what() << '\n';
        return exit_failed;
    }
}
