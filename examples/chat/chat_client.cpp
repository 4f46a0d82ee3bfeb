// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// chat-client URL: sends each line read from stdin, prints each line received. A
// vigil::supervisor keeps it in the room: when the server restarts or the network drops, it
// reconnects with backoff, and lines typed meanwhile wait in its outbox and go out, in order,
// once it is back. End of input (Ctrl-D) or Ctrl-C leaves the room.

#include <vigil/supervisor.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <utility>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// Asio makes the descriptor it reads non-blocking, and that flag belongs to the open file
// (the terminal), which the shell that started us shares: put it back on the way out.
struct stdin_flags_guard {
    int flags = ::fcntl(STDIN_FILENO, F_GETFL);
    ~stdin_flags_guard()
    {
        if (flags != -1) {
            ::fcntl(STDIN_FILENO, F_SETFL, flags);
        }
    }
};

asio::awaitable<void> send_lines(asio::posix::stream_descriptor& input, vigil::supervisor& chat)
{
    std::string buffer;
    for (;;) {
        auto [ec, n] = co_await asio::async_read_until(input, asio::dynamic_buffer(buffer), '\n',
                                                       asio::as_tuple(asio::use_awaitable));
        if (ec) {
            break;  // end of input, or closed because the supervisor ended
        }
        std::string line = buffer.substr(0, n - 1);
        buffer.erase(0, n);
        if (line.empty()) {
            continue;
        }
        // Completes once the line is written, also across a reconnect: the next line is read
        // only then, so lines go out in the order typed.
        if (auto err = co_await chat.send(std::move(line))) {
            std::cerr << "(not sent: " << vigil::error_name(err) << ")\n";
        }
    }
    chat.stop();
}

}  // namespace

int main(int argc, char** argv)
{
    if (argc != 2) {
        std::cerr << "usage: chat-client URL   (e.g. ws://127.0.0.1:9000/)\n";
        return 64;
    }

    vigil::supervisor_config cfg;
    // The server pings us; our own pings find a dead server (or path) while we only listen.
    cfg.session.ping_interval = 10s;
    cfg.session.pong_timeout = 5s;
    // A chat line that could not be sent for a minute is no longer worth sending.
    cfg.message_ttl = 60s;

    stdin_flags_guard restore_stdin;
    try {
        asio::io_context ioc;
        vigil::supervisor chat(ioc.get_executor(), argv[1], cfg);

        auto& session_events = chat.session_event_handlers();
        session_events.on_connected = [] { std::cerr << "(connected)\n"; };
        session_events.on_message = [](std::string_view line, vigil::message_type) {
            std::cout << line << std::endl;
        };
        chat.events().on_retry = [](const vigil::retry_info& r) {
            std::cerr << "(" << vigil::error_name(r.last.reason) << "; reconnecting in "
                      << r.delay.count() << " ms)\n";
        };

        // A duplicate of stdin: closing it when we are done leaves the terminal's own
        // descriptor alone.
        asio::posix::stream_descriptor input(chat.get_executor(), ::dup(STDIN_FILENO));
        asio::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&chat](boost::system::error_code ec, int) {
            if (!ec) {
                chat.stop();  // leaves with a close handshake
            }
        });

        int status = 0;
        asio::co_spawn(chat.get_executor(), send_lines(input, chat), asio::detached);
        // run() ends on stop(), or on a permanent failure (bad URL, 403, untrusted
        // certificate): retrying those cannot help.
        asio::co_spawn(chat.get_executor(), chat.run(),
                       [&](std::exception_ptr e, vigil::error_code ec) {
                           signals.cancel();
                           boost::system::error_code ignored;
                           input.close(ignored);
                           if (e) {
                               std::rethrow_exception(e);
                           }
                           if (ec) {
                               std::cerr << "chat-client: " << vigil::error_name(ec) << ": "
                                         << chat.last_disconnect().detail << '\n';
                               status = 1;
                           }
                       });
        ioc.run();
        return status;
    } catch (const std::exception& e) {
        std::cerr << "chat-client: " << e.what() << '\n';
        return 1;
    }
}
