// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-probe: opens one WebSocket connection and reports everything it does as JSON lines
// on stdout, so that scripts and tests can watch a connection live and die.

#include <vigil/session.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using json = nlohmann::ordered_json;
using std::chrono::milliseconds;

// sysexits.h EX_USAGE: what scripts expect from a command given bad arguments.
constexpr int exit_usage = 64;

constexpr std::string_view usage_text =
    "usage: vigil-probe [options] URL\n"
    "\n"
    "Opens a WebSocket connection to URL (ws:// or wss://) and prints one JSON object per\n"
    "line on stdout for each event: connecting, connected, ping, pong, message, disconnected.\n"
    "\n"
    "options (S = seconds, fractions allowed):\n"
    "  --ping-interval S      ping after S seconds without traffic (0: no heartbeat)\n"
    "  --pong-timeout S       declare the connection dead S seconds after an unanswered ping\n"
    "  --idle-timeout S       end when no data message arrives for S seconds (0: off)\n"
    "  --connect-timeout S    bound on DNS resolution plus TCP connect\n"
    "  --handshake-timeout S  bound on the WebSocket upgrade\n"
    "  --close-timeout S      bound on the close handshake\n"
    "  --ping-mode idle|fixed ping only when idle (default), or every interval\n"
    "  --ca FILE              trust this PEM CA for wss://\n"
    "  --insecure             no certificate verification (test servers only)\n"
    "  --send TEXT            send TEXT once connected (repeatable); each stdin line is sent too\n"
    "  --duration S           close cleanly after S seconds\n"
    "  --no-reconnect         end after the first session (the default)\n"
    "  --help                 show this text\n"
    "\n"
    "exit status: 0 after --duration, a signal or a clean close; 1 when the connection\n"
    "failed; 64 for bad arguments.\n";

struct usage_error {
    std::string message;
};

struct options {
    vigil::session_config cfg;
    std::string url;
    std::vector<std::string> sends;
    std::optional<milliseconds> duration;
    bool help = false;
};

milliseconds parse_seconds(std::string_view flag, std::string_view text)
{
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() ||
        !std::isfinite(value)) {
        throw usage_error{std::string(flag) + ": '" + std::string(text) +
                          "' is not a number of seconds"};
    }
    if (value < 0) {
        throw usage_error{std::string(flag) + ": '" + std::string(text) + "' is negative"};
    }
    // Past this the millisecond count would overflow; nobody means a billion seconds.
    if (value > 1e9) {
        throw usage_error{std::string(flag) + ": '" + std::string(text) + "' is too large"};
    }
    return milliseconds(std::llround(value * 1000.0));
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

        auto& cfg = opts.cfg;
        if (flag == "--ping-interval") {
            cfg.ping_interval = parse_seconds(flag, value());
        } else if (flag == "--pong-timeout") {
            cfg.pong_timeout = parse_seconds(flag, value());
        } else if (flag == "--idle-timeout") {
            cfg.idle_timeout = parse_seconds(flag, value());
        } else if (flag == "--connect-timeout") {
            cfg.connect_timeout = parse_seconds(flag, value());
        } else if (flag == "--handshake-timeout") {
            cfg.handshake_timeout = parse_seconds(flag, value());
        } else if (flag == "--close-timeout") {
            cfg.close_timeout = parse_seconds(flag, value());
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
        } else if (flag == "--ca") {
            cfg.tls.ca_file = std::string(value());
        } else if (flag == "--insecure") {
            no_value();
            cfg.tls.insecure_skip_verify = true;
        } else if (flag == "--send") {
            opts.sends.emplace_back(value());
        } else if (flag == "--duration") {
            opts.duration = parse_seconds(flag, value());
        } else if (flag == "--no-reconnect") {
            no_value();
        } else if (flag == "--help") {
            no_value();
            opts.help = true;
        } else {
            throw usage_error{"unknown option '" + std::string(flag) + "'"};
        }
    }

    if (opts.help) {
        return opts;
    }
    if (positional.empty()) {
        throw usage_error{"missing URL"};
    }
    if (positional.size() > 1) {
        throw usage_error{"one URL only (got '" + std::string(positional[1]) + "' too)"};
    }
    opts.url = std::string(positional.front());
    return opts;
}

class probe {
public:
    probe(asio::io_context& ioc, options opts, std::chrono::steady_clock::time_point start)
        : ioc_(ioc),
          opts_(std::move(opts)),
          start_(start),
          session_(ioc.get_executor(), opts_.cfg),
          signals_(ioc, SIGINT, SIGTERM),
          duration_timer_(ioc),
          stdin_(ioc)
    {
        auto& ev = session_.events();
        ev.on_connected = [this] {
            connected_ = true;
            emit({{"event", "connected"}});
        };
        ev.on_ping = [this] { emit({{"event", "ping"}}); };
        ev.on_pong = [this](std::chrono::microseconds rtt) {
            emit({{"event", "pong"}, {"rtt_ms", static_cast<double>(rtt.count()) / 1000.0}});
        };
        ev.on_message = [this](std::string_view data, vigil::message_type type) {
            if (type == vigil::message_type::text) {
                emit({{"event", "message"}, {"text", data}});
            } else {
                emit({{"event", "message"}, {"bytes", data.size()}});
            }
        };
        ev.on_disconnected = [this](const vigil::disconnect_info& info) { report(info); };
    }

    void start()
    {
        if (opts_.cfg.tls.insecure_skip_verify) {
            std::cerr << "vigil-probe: warning: --insecure: certificates are not verified; "
                         "anyone on the path can read and change this connection\n";
        }
        open_stdin();
        signals_.async_wait([this](error_code ec, int) {
            if (!ec) {
                stop(stop_cause::signal);
                // A second signal means "now": no waiting for the close handshake.
                signals_.async_wait([this](error_code ec2, int) {
                    if (!ec2) {
                        session_.cancel();
                    }
                });
            }
        });
        if (opts_.duration) {
            duration_timer_.expires_after(*opts_.duration);
            duration_timer_.async_wait([this](error_code ec) {
                if (!ec) {
                    stop(stop_cause::duration);
                }
            });
        }
        asio::co_spawn(ioc_, main_loop(), [this](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                    std::cerr << "vigil-probe: " << ex.what() << '\n';
                }
                exit_code_ = 1;
                finish();
            }
        });
    }

    int exit_code() const noexcept { return exit_code_; }

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

    void report(const vigil::disconnect_info& info)
    {
        reported_ = true;
        json j = {{"event", "disconnected"},
                  {"reason", vigil::error_name(info.reason)},
                  {"detail", info.detail}};
        if (connected_) {
            j["silent_ms"] = info.silent_for.count();
        }
        if (info.http_status != 0) {
            j["status"] = info.http_status;
        }
        if (info.close_code != 0) {
            j["close_code"] = info.close_code;
        }
        if (!info.close_reason.empty()) {
            j["close_reason"] = info.close_reason;
        }
        emit(std::move(j));
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
        if (!session_.is_open()) {
            // Still connecting: there is no connection to close yet.
            session_.cancel();
            return;
        }
        start_close();
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
        auto ec = co_await session_.close(1000);
        if (ec && ec != vigil::error::not_connected) {
            std::cerr << "vigil-probe: close: " << vigil::error_name(ec) << '\n';
        }
    }

    asio::awaitable<void> feed()
    {
        for (auto& text : opts_.sends) {
            if (auto ec = co_await session_.send(text)) {
                std::cerr << "vigil-probe: send: " << vigil::error_name(ec) << '\n';
                co_return;
            }
        }
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
            if (auto sec = co_await session_.send(std::move(line))) {
                std::cerr << "vigil-probe: send: " << vigil::error_name(sec) << '\n';
                co_return;
            }
            if (ec) {
                co_return;
            }
        }
    }

    asio::awaitable<void> main_loop()
    {
        emit({{"event", "connecting"}, {"url", opts_.url}});
        reported_ = false;
        auto ec = co_await session_.connect(opts_.url);
        if (ec) {
            if (!reported_) {
                report(session_.last_disconnect());
            }
            // Interrupted by the user while connecting is a normal way to end; a
            // --duration that ran out before the connection was even open is not.
            exit_code_ = (stop_cause_ == stop_cause::signal && ec == asio::error::operation_aborted)
                             ? 0
                             : 1;
            finish();
            co_return;
        }
        if (stop_cause_ != stop_cause::none) {
            // The stop request raced the last step of connect(); honour it now.
            start_close();
        }
        asio::co_spawn(ioc_, feed(), asio::detached);

        ec = co_await session_.run();
        if (!reported_) {
            report(session_.last_disconnect());
        }
        exit_code_ = clean_end(ec) ? 0 : 1;
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

    // Nothing may keep the io_context alive once the connection is over.
    void finish()
    {
        finished_ = true;
        error_code ignored;
        signals_.cancel(ignored);
        duration_timer_.cancel();
        if (stdin_.is_open()) {
            stdin_.cancel(ignored);
            stdin_.close(ignored);
        }
    }

    asio::io_context& ioc_;
    options opts_;
    std::chrono::steady_clock::time_point start_;
    vigil::session session_;
    asio::signal_set signals_;
    asio::steady_timer duration_timer_;
    asio::posix::stream_descriptor stdin_;
    stop_cause stop_cause_ = stop_cause::none;
    bool connected_ = false;
    bool closing_ = false;
    bool reported_ = false;
    bool finished_ = false;
    int exit_code_ = 1;
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
                  << "usage: vigil-probe [options] URL (--help for the options)\n";
        return exit_usage;
    }
    if (opts.help) {
        std::cout << usage_text;
        return 0;
    }

    try {
        asio::io_context ioc(1);
        probe p(ioc, std::move(opts), start);
        p.start();
        ioc.run();
        return p.exit_code();
    } catch (const std::exception& e) {
        std::cerr << "vigil-probe: " << e.what() << '\n';
        return 1;
    }
}
