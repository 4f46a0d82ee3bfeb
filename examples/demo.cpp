// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-demo: a local server and a vigil client in one process. The client heartbeats, then
// the server goes silent without closing anything, and the client finds out within
// ping_interval + pong_timeout. Exits 0 when it did.

#include <vigil/session.hpp>

#include <support/peer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int pongs_before_silence = 3;
// Timers fire a little after their deadline; this much lateness still counts as on time.
constexpr milliseconds scheduling_allowance{100};
// Far beyond anything the demo needs: only a broken build gets here.
constexpr auto demo_deadline = 14s;

class demo {
public:
    explicit demo(asio::io_context& ioc) : ioc_(ioc), session_(ioc.get_executor(), make_config())
    {
        auto& ev = session_.events();
        ev.on_connected = [this] { say("connected to %s", server_.url().c_str()); };
        ev.on_ping = [this] {
            if (silent_) {
                say("ping (the silent server will not answer)");
            }
        };
        ev.on_pong = [this](std::chrono::microseconds rtt) {
            last_frame_ = clock_type::now();
            say("heartbeat: ping answered, round trip %.3f ms",
                static_cast<double>(rtt.count()) / 1000.0);
            if (++pongs_ == pongs_before_silence) {
                // Switching blocks until the server's thread has done it; do it outside the
                // event handler so the session's strand is not held meanwhile.
                asio::post(ioc_, [this] { go_silent(); });
            }
        };
        ev.on_message = [this](std::string_view data, vigil::message_type) {
            last_frame_ = clock_type::now();
            say("echo received: \"%.*s\"", static_cast<int>(data.size()), data.data());
        };
        ev.on_disconnected = [this](const vigil::disconnect_info& info) {
            detected_at_ = clock_type::now();
            info_ = info;
        };
    }

    static vigil::session_config make_config()
    {
        vigil::session_config cfg;
        cfg.ping_interval = 1s;
        cfg.pong_timeout = 500ms;
        return cfg;
    }

    asio::awaitable<void> main()
    {
        const auto& cfg = session_.config();
        say("server listening on %s (an embedded echo server)", server_.url().c_str());
        say("client: ping_interval %lld ms, pong_timeout %lld ms: a dead server is found at most "
            "%lld ms after its last frame",
            static_cast<long long>(cfg.ping_interval.count()),
            static_cast<long long>(cfg.pong_timeout.count()), static_cast<long long>(bound().count()));

        if (auto ec = co_await session_.connect(server_.url())) {
            say("connect failed: %s (%s)", vigil::error_name(ec).c_str(),
                session_.last_disconnect().detail.c_str());
            co_return;
        }
        last_frame_ = clock_type::now();
        asio::co_spawn(ioc_, greet(), asio::detached);

        auto ec = co_await session_.run();
        if (detected_at_ == start_) {
            detected_at_ = clock_type::now();
            info_ = session_.last_disconnect();
        }
        finished_ = true;
        report(ec);
    }

    int exit_code() const noexcept { return ok_ ? 0 : 1; }
    bool finished() const noexcept { return finished_; }
    void cancel() { session_.cancel(); }

private:
    milliseconds bound() const
    {
        return session_.config().ping_interval + session_.config().pong_timeout;
    }

    asio::awaitable<void> greet()
    {
        say("sending \"hello\"");
        if (auto ec = co_await session_.send("hello")) {
            say("send failed: %s", vigil::error_name(ec).c_str());
        }
    }

    void go_silent()
    {
        say("server goes silent (socket stays open, nothing flows)");
        server_.set_behaviour(vigil::test::peer_behaviour::silent);
        silent_ = true;
        silent_since_ = clock_type::now();
    }

    void report(const vigil::error_code& ec)
    {
        auto measured = std::chrono::duration_cast<milliseconds>(detected_at_ - last_frame_);
        say("client: connection dead, reason %s%s%s", vigil::error_name(ec).c_str(),
            info_.detail.empty() ? "" : ": ", info_.detail.c_str());
        if (!silent_) {
            say("the connection ended before the server went silent: unexpected");
            return;
        }
        auto since_silent = std::chrono::duration_cast<milliseconds>(detected_at_ - silent_since_);
        std::printf("    last frame received     %6lld ms before detection (session says %lld ms)\n"
                    "    server silent for       %6lld ms\n"
                    "    bound                   %6lld ms (ping_interval + pong_timeout)\n",
                    static_cast<long long>(measured.count()),
                    static_cast<long long>(info_.silent_for.count()),
                    static_cast<long long>(since_silent.count()),
                    static_cast<long long>(bound().count()));
        ok_ = ec == vigil::error::pong_timeout && measured <= bound() + scheduling_allowance;
        if (ok_) {
            std::printf("OK: detected within the bound (allowing %lld ms of timer lateness)\n",
                        static_cast<long long>(scheduling_allowance.count()));
        } else {
            std::printf("FAILED: expected pong_timeout within %lld ms\n",
                        static_cast<long long>((bound() + scheduling_allowance).count()));
        }
        std::fflush(stdout);
    }

    template <class... Args>
    void say(const char* format, Args... args)
    {
        auto t = std::chrono::duration<double>(clock_type::now() - start_).count();
        std::printf("[%6.3f s] ", t);
        std::printf(format, args...);
        std::printf("\n");
        std::fflush(stdout);
    }

    // Plain text never reaches printf as a format.
    void say(const char* text) { say("%s", text); }

    asio::io_context& ioc_;
    clock_type::time_point start_ = clock_type::now();
    vigil::test::peer server_;
    vigil::session session_;
    int pongs_ = 0;
    bool silent_ = false;
    bool finished_ = false;
    bool ok_ = false;
    clock_type::time_point last_frame_ = start_;
    clock_type::time_point silent_since_ = start_;
    clock_type::time_point detected_at_ = start_;
    vigil::disconnect_info info_;
};

}  // namespace

int main()
{
    try {
        asio::io_context ioc(1);
        demo d(ioc);
        asio::co_spawn(ioc, d.main(), [](std::exception_ptr e) {
            if (e) {
                std::rethrow_exception(e);
            }
        });
        ioc.run_for(demo_deadline);
        if (!d.finished()) {
            std::printf("FAILED: no verdict within %lld s\n",
                        static_cast<long long>(
                            std::chrono::duration_cast<std::chrono::seconds>(demo_deadline).count()));
            d.cancel();
            ioc.run_for(2s);
            return 1;
        }
        return d.exit_code();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vigil-demo: %s\n", e.what());
        return 1;
    }
}
