// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// chat-server [PORT [REDIS_URL]]: a chat room. Every line a member sends goes to every
// member, tagged with the sender. Members who vanish without a word (laptop lid closed, phone
// out of coverage) are evicted by the heartbeat; without it they would stay in the room
// forever and every broadcast would pile up in their send queues.
//
// Given a Redis URL (redis://HOST:PORT), the server is one node of a cluster: every node given
// the same Redis shares the room, so a load balancer can spread members over several nodes,
// and when a node dies its members reconnect to another one (cluster-demo.sh runs three).

#include <vigil/server.hpp>
#ifdef VIGIL_CHAT_REDIS
#include <vigil/redis.hpp>
#endif

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// The room is one channel: on a cluster, every node's members of "room" hear each other.
constexpr std::string_view room_channel = "room";

class chat_room {
public:
    chat_room(asio::any_io_executor ex, vigil::server_config cfg)
        : server_(std::move(ex), std::move(cfg),
                  [this](vigil::server::connection_ptr c) { return member(std::move(c)); })
    {
    }

    vigil::server& server() { return server_; }

private:
    // One coroutine per member, from the upgrade to the end of the connection.
    asio::awaitable<void> member(vigil::server::connection_ptr c)
    {
        // Unique across the cluster: connection ids are per node.
        const std::string name = "user " + std::to_string(c->id()) + "@" + server_.node_id().substr(0, 4);
        std::cout << "chat-server: " << name << " joined from " << c->remote() << std::endl;
        server_.join(c, std::string(room_channel));
        // broadcast() never waits: a member too slow to keep up is disconnected
        // (slow_consumer) rather than holding back the room.
        server_.broadcast(room_channel, "* " + name + " joined");

        for (;;) {
            vigil::received msg = co_await c->receive();
            if (msg.ec) {
                // The reason says how they left: closed_by_peer, pong_timeout (vanished),
                // slow_consumer, server_shutdown ...
                const auto why = vigil::error_name(msg.ec);
                std::cout << "chat-server: " << name << " left: " << why << " ("
                          << c->last_disconnect().detail << ")" << std::endl;
                server_.broadcast(room_channel, "* " + name + " left (" + why + ")");
                co_return;
            }
            if (msg.type == vigil::message_type::text) {
                server_.broadcast(room_channel, "[" + name + "] " + msg.data);
            }
        }
    }

    vigil::server server_;
};

bool parse_port(std::string_view text, std::uint16_t& port)
{
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
    return ec == std::errc{} && end == text.data() + text.size();
}

}  // namespace

int main(int argc, char** argv)
{
    std::uint16_t port = 9000;
    if (argc > 3 || (argc >= 2 && !parse_port(argv[1], port))) {
        std::cerr << "usage: chat-server [PORT [REDIS_URL]]   (default 9000, no cluster)\n";
        return 64;
    }

    vigil::server_config cfg;  // starts from vigil::server_session_defaults()
    cfg.port = port;
    // A member who vanished leaves the room within 5 + 3 s. Chat is interactive, so that is
    // worth a ping every five quiet seconds; a market feed or an IoT fleet would use 15-30 s.
    cfg.session.ping_interval = 5s;
    cfg.session.pong_timeout = 3s;
    // Chat lines are short: a client sending megabytes is misbehaving.
    cfg.session.max_message_size = 64 * 1024;

    try {
        asio::io_context ioc;
#ifdef VIGIL_CHAT_REDIS
        // A node of a cluster: the fan-out carries the room's lines to the other nodes, and
        // theirs to us. It keeps its link to Redis up by itself (heartbeat, reconnect).
        std::shared_ptr<vigil::redis_fanout> fanout;
        if (argc == 3) {
            fanout = std::make_shared<vigil::redis_fanout>(ioc.get_executor(), vigil::redis_config{argv[2]}, "chat");
            fanout->link().on_up = [] { std::cout << "chat-server: linked to the cluster" << std::endl; };
            fanout->link().on_down = [](vigil::error_code why) {
                std::cout << "chat-server: cluster link down: " << vigil::error_name(why) << std::endl;
            };
            cfg.fanout = fanout;
        }
#else
        if (argc == 3) {
            std::cerr << "chat-server: this build has no Redis support (hiredis was not found)\n";
            return 64;
        }
#endif
        chat_room room(ioc.get_executor(), cfg);

        std::string detail;
        if (auto ec = room.server().listen(&detail)) {
            std::cerr << "chat-server: " << vigil::error_name(ec) << ": " << detail << '\n';
            return 1;
        }
        std::cout << "chat-server: listening on ws://127.0.0.1:" << room.server().port() << "/" << std::endl;

        // Ctrl-C: every member gets a close frame with 1001 "going away", so their clients
        // know to reconnect rather than wait for a timeout.
        asio::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&room](boost::system::error_code ec, int) {
            if (!ec) {
                room.server().stop();
            }
        });
#ifdef VIGIL_CHAT_REDIS
        if (fanout) {
            asio::co_spawn(ioc, fanout->run(), [&room](std::exception_ptr, vigil::error_code ec) {
                if (ec && ec != asio::error::operation_aborted) {
                    // A wrong password will not get better: a node cut off from the room stops.
                    std::cerr << "chat-server: cluster link failed: " << vigil::error_name(ec) << '\n';
                    room.server().stop();
                }
            });
        }
#endif
        asio::co_spawn(ioc, room.server().run(), [&](std::exception_ptr e, vigil::error_code) {
            signals.cancel();
#ifdef VIGIL_CHAT_REDIS
            if (fanout) {
                fanout->stop();
            }
#endif
            if (e) {
                std::rethrow_exception(e);
            }
        });
        ioc.run();
        std::cout << "chat-server: stopped" << std::endl;
    } catch (const std::exception& e) {
        std::cerr << "chat-server: " << e.what() << '\n';
        return 1;
    }
}
