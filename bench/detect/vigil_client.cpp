// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The vigil side of the detection benchmark (bench/detect/run.py): a vigil::supervisor with
// the default backoff, reporting what the application is told as JSON lines on stdout:
//   {"event":"connected","t":T}
//   {"event":"disconnected","t":T,"reason":"pong_timeout","silent_ms":N,"diagnosis":"network"}
//   {"event":"suspect","t":T,"diagnosis":"network"}     (on_suspect: the early warning)
//   {"event":"stall","t":T,"late_ms":N}                 (on_stall: our own loop ran late)
// T is CLOCK_MONOTONIC in seconds (std::chrono::steady_clock on Linux), the clock Python's
// time.monotonic() and Node's process.hrtime() read too, so that the driver can subtract the
// moment it cut the path from it.
//
//   vigil-bench-detect-client --ping-interval S --pong-timeout S [--close-timeout S] URL
//
// A text message "block S" from the server makes the message handler block the thread for S
// seconds (bench/detect/diagnose.py: a handler that blocks the event loop). Runs until killed.

#include <vigil/supervisor.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>

namespace {

double monotonic_now()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::chrono::milliseconds seconds_arg(const char* flag, const char* text)
{
    char* end = nullptr;
    double v = std::strtod(text, &end);
    if (end == text || *end != '\0' || !std::isfinite(v) || v < 0) {
        std::fprintf(stderr, "vigil-bench-detect-client: %s: '%s' is not a number of seconds\n", flag, text);
        std::exit(64);
    }
    return std::chrono::milliseconds(std::llround(v * 1000.0));
}

}  // namespace

int main(int argc, char** argv)
{
    vigil::supervisor_config cfg;
    std::string url;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        auto value = [&] {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "vigil-bench-detect-client: %s needs a value\n", argv[i]);
                std::exit(64);
            }
            return argv[++i];
        };
        if (arg == "--ping-interval") {
            cfg.session.ping_interval = seconds_arg(argv[i], value());
        } else if (arg == "--pong-timeout") {
            cfg.session.pong_timeout = seconds_arg(argv[i], value());
        } else if (arg == "--close-timeout") {
            cfg.session.close_timeout = seconds_arg(argv[i], value());
        } else if (!arg.empty() && arg[0] != '-' && url.empty()) {
            url = std::string(arg);
        } else {
            std::fprintf(stderr, "vigil-bench-detect-client: unexpected argument '%s'\n", argv[i]);
            return 64;
        }
    }
    if (url.empty()) {
        std::fprintf(stderr, "usage: vigil-bench-detect-client --ping-interval S --pong-timeout S "
                             "[--close-timeout S] URL\n");
        return 64;
    }
    std::string detail;
    if (vigil::validate(cfg, &detail)) {
        std::fprintf(stderr, "vigil-bench-detect-client: %s\n", detail.c_str());
        return 64;
    }

    boost::asio::io_context ioc(1);
    vigil::supervisor sup(ioc.get_executor(), url, cfg);
    auto& ev = sup.session_event_handlers();
    // The timestamp is taken first: it is what the driver compares with the cut.
    ev.on_connected = [] {
        double t = monotonic_now();
        std::printf("{\"event\":\"connected\",\"t\":%.6f}\n", t);
        std::fflush(stdout);
    };
    ev.on_disconnected = [](const vigil::disconnect_info& info) {
        double t = monotonic_now();
        std::printf("{\"event\":\"disconnected\",\"t\":%.6f,\"reason\":\"%s\",\"silent_ms\":%lld,"
                    "\"diagnosis\":\"%s\"}\n",
                    t, std::string(vigil::error_name(info.reason)).c_str(),
                    static_cast<long long>(info.silent_for.count()),
                    std::string(vigil::diagnosis_name(info.diagnosis)).c_str());
        std::fflush(stdout);
    };
    ev.on_suspect = [](vigil::diagnosis why) {
        double t = monotonic_now();
        std::printf("{\"event\":\"suspect\",\"t\":%.6f,\"diagnosis\":\"%s\"}\n", t,
                    std::string(vigil::diagnosis_name(why)).c_str());
        std::fflush(stdout);
    };
    ev.on_stall = [](std::chrono::milliseconds late) {
        double t = monotonic_now();
        std::printf("{\"event\":\"stall\",\"t\":%.6f,\"late_ms\":%lld}\n", t,
                    static_cast<long long>(late.count()));
        std::fflush(stdout);
    };
    ev.on_message = [](std::string_view data, vigil::message_type) {
        // The application's handler blocking the loop, as a slow synchronous call would.
        if (data.starts_with("block ")) {
            double s = std::strtod(std::string(data.substr(6)).c_str(), nullptr);
            if (std::isfinite(s) && s > 0 && s < 60)
                std::this_thread::sleep_for(std::chrono::duration<double>(s));
        }
    };
    boost::asio::co_spawn(sup.get_executor(), sup.run(), boost::asio::detached);
    ioc.run();
    return 0;
}
