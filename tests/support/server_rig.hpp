// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A vigil::server and vigil::session clients on one io_context that the test thread runs
// (`ioc.run_for`), with what their events and handlers reported. Everything runs on the test
// thread, so the records need no locks and the tests read them after (or between) runs.

#include <vigil/server.hpp>
#include <vigil/session.hpp>

#include "one_thread.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace vigil::test {

/// Holds the io_context in a base, so that it is built before the members that use it
/// (clang 14's -Wuninitialized misjudges the same order among plain members).
struct rig_io {
    explicit rig_io(int hint = concurrency_hint()) : ioc(hint) {}
    boost::asio::io_context ioc;
};

/// Spawns `f` on `ioc`; an exception escaping it leaves the io_context's run (failing the case).
template <class F>
void spawn_on(boost::asio::io_context& ioc, F f)
{
    boost::asio::co_spawn(ioc, std::move(f), [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    });
}

/// The server, its events and its handlers' outcome.
class server_rig : public rig_io {
public:
    using steady = std::chrono::steady_clock;
    using handler_type = server::handler_type;

    struct joined {
        std::uint64_t id = 0;
        std::string remote;
        std::string target;
        steady::time_point at{};
    };
    struct ended {
        std::uint64_t id = 0;
        std::string remote;
        disconnect_info info;
        steady::time_point at{};
    };
    struct turned_away {
        std::string remote;
        error_code why;
        std::string detail;
        steady::time_point at{};
    };
    /// What an echo handler's receive() loop saw on one connection.
    struct handler_log {
        std::vector<received> messages;  ///< data messages, in order
        error_code end;                  ///< the ec of the entry that ended the loop
        bool ended = false;
        steady::time_point ended_at{};
    };

    /// A server whose handler echoes every message back (see `echo`).
    explicit server_rig(server_config cfg);
    /// A server with the caller's handler.
    server_rig(server_config cfg, handler_type handler);
    /// The echo server on an io_context constructed with `concurrency_hint` (1: one thread,
    /// where vigil runs without strands).
    server_rig(server_config cfg, int concurrency_hint);
    /// Stops a server still running and drains its io_context for a bounded time.
    ~server_rig();
    server_rig(const server_rig&) = delete;
    server_rig& operator=(const server_rig&) = delete;

    /// listen(), then run() in the background (`run_done`, `run_ec`, `run_ended`).
    error_code start(std::string* detail = nullptr);

    /// `scheme://host:port<target>`.
    std::string url(const std::string& scheme = "ws", const std::string& host = "127.0.0.1",
                    const std::string& target = "/") const;

    template <class F>
    void spawn(F f)
    {
        spawn_on(ioc, std::move(f));
    }

    /// The echo loop used by the default handler, recording into `logs[conn->id()]`:
    /// receive(), send back, until receive() reports the end.
    boost::asio::awaitable<void> echo(server::connection_ptr conn);

    /// Records of the connection whose client is `remote`, or null.
    const ended* ended_for(const std::string& remote) const;
    const joined* joined_for(const std::string& remote) const;

    vigil::server srv;

    std::vector<joined> connected;
    std::vector<ended> disconnected;
    std::vector<turned_away> rejected;
    std::map<std::uint64_t, handler_log> logs;

    bool run_started = false;
    bool run_done = false;
    error_code run_ec = error::not_connected;
    steady::time_point run_ended{};

private:
    void watch();
};

/// A vigil::session on the rig's io_context, and what its events said.
class rig_client {
public:
    using steady = std::chrono::steady_clock;

    rig_client(boost::asio::io_context& ioc, session_config cfg);
    /// Cancels a run() still in progress and lets it finish, so that no coroutine outlives the
    /// session.
    ~rig_client();
    rig_client(const rig_client&) = delete;
    rig_client& operator=(const rig_client&) = delete;

    /// connect(url) then, if it worked, run(), in the background: `connect_ec` / `connect_done`
    /// / `connect_took`, then `run_ec` / `run_done` / `run_ended`.
    void start(std::string url);

    /// Sends from a detached coroutine, recording the result in `send_results`.
    void send(std::string data, message_type type = message_type::text);

    boost::asio::io_context& ioc;
    vigil::session s;

    int pings = 0;
    std::vector<std::chrono::microseconds> rtts;
    std::vector<std::pair<std::string, message_type>> messages;
    std::vector<steady::time_point> message_times;
    int disconnects = 0;
    disconnect_info last;
    steady::time_point disconnected_at{};
    std::vector<error_code> send_results;

    bool started = false;
    bool connect_done = false;
    error_code connect_ec = error::not_connected;
    steady::time_point connect_started{};
    std::chrono::milliseconds connect_took{0};
    steady::time_point connected_at{};
    bool run_done = false;
    error_code run_ec = error::not_connected;
    steady::time_point run_ended{};
};

/// Short timers for test servers: every case ends in well under a second or two.
server_config quick_server();
/// Short timers for test clients; heartbeat off unless the case turns it on, so that only
/// the server's liveness checks are at work.
session_config quick_client();

}  // namespace vigil::test
