// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// vigil-bench-scale: one side of the scale benchmark; bench/scale/run.py drives a server and
// a clients process and compares vigil with a plain Beast floor (and Node's ws server).
//
//   vigil-bench-scale server  --impl vigil|beast [--ping-ms 1000] [--pong-ms 500]
//   vigil-bench-scale clients --impl vigil|beast --port P [--ping-ms 1000] [--pong-ms 500]
//                             [--concurrency 200]
//
// Each process runs one io_context on one thread and reads commands on stdin, one a line;
// it answers with JSON lines on stdout ("event", "t" in seconds since start, "mono_ns" on the
// system-wide monotonic clock so that the two processes' times compare):
//
//   both      stats                 -> {"event":"stats", user_s, sys_s (getrusage), rss_kb
//                                        (VmRSS), fds, open}
//             quit                  -> exits
//   server    broadcast K SIZE      -> sends one text message "bK:..." of SIZE bytes to every
//                                      open connection; {"event":"broadcast", k, t0_ns, t1_ns,
//                                      queued}
//   clients   connect N             -> opens N connections (at most --concurrency handshakes at
//                                      a time); {"event":"connected", open, failed, seconds}
//
// Clients print {"event":"broadcast_done", k, count, first_ns, last_ns} once every open client
// has received broadcast K.
//
// "beast" is the floor: a websocket::stream<tcp::socket> per connection with one steady_timer
// and async_ping, written plainly with callbacks as in Beast's own examples. Its server pings
// every interval and drops a connection whose pong did not arrive before the next tick; its
// client pings only when nothing arrived during an interval (as vigil's ping_mode::idle) and
// drops the connection when its own ping went unanswered for an interval.

#include <vigil/server.hpp>
#include <vigil/session.hpp>

#include <nlohmann/json.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <dirent.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

const auto started = steady::now();

std::int64_t mono_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch()).count();
}

void emit(const char* event, json fields = json::object())
{
    fields["event"] = event;
    fields["t"] = std::chrono::duration<double>(steady::now() - started).count();
    fields["mono_ns"] = mono_ns();
    std::fputs((fields.dump() + "\n").c_str(), stdout);
    std::fflush(stdout);
}

long rss_kb()
{
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0)
            return std::stol(line.substr(6));
    return -1;
}

// Heap in use (malloc's own count): RSS less what the allocator holds free, to tell what a
// connection holds from how the allocator lays it out.
long heap_kb()
{
    return static_cast<long>(::mallinfo2().uordblks / 1024);
}

int count_fds()
{
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (auto* e = ::readdir(d))
            if (e->d_name[0] != '.')
                ++n;
        ::closedir(d);
        --n;  // the directory stream itself
    }
    return n;
}

// Why connections ended, by vigil::error_name or a short label of the floor's own.
std::map<std::string, std::size_t> end_reasons;

json process_stats(std::size_t open)
{
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
    return {{"user_s", secs(ru.ru_utime)},
            {"sys_s", secs(ru.ru_stime)},
            {"rss_kb", rss_kb()},
            {"heap_kb", heap_kb()},
            {"fds", count_fds()},
            {"open", open},
            {"ended", end_reasons}};
}

void raise_fd_limit()
{
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

struct options {
    std::string role;
    std::string impl;
    std::uint16_t port = 0;
    std::chrono::milliseconds ping{1000};
    std::chrono::milliseconds pong{500};
    std::size_t concurrency = 200;
    // vigil only: permessage-deflate on server and clients, keeping the history between
    // messages ("takeover") or not ("no-takeover", the server default when enabled).
    std::string deflate = "off";
};

void apply_deflate(vigil::session_config& cfg, const options& opt)
{
    if (opt.deflate == "off")
        return;
    cfg.deflate.enabled = true;
    const bool fresh = opt.deflate == "no-takeover";
    cfg.deflate.client_no_context_takeover = fresh;
    cfg.deflate.server_no_context_takeover = fresh;
}

// Reads command lines from stdin until EOF (the driver went away: exit) or "quit".
class command_reader {
public:
    using handler = std::function<void(const std::vector<std::string>&)>;

    command_reader(asio::io_context& ioc, handler h) : in_(ioc, ::dup(0)), handler_(std::move(h)) {}

    void start() { read(); }

private:
    void read()
    {
        asio::async_read_until(in_, asio::dynamic_buffer(buf_), '\n', [this](boost::system::error_code ec, std::size_t n) {
            if (ec) {
                std::_Exit(0);  // no driver: nobody to report to
            }
            std::string line = buf_.substr(0, n - 1);
            buf_.erase(0, n);
            std::istringstream words(line);
            std::vector<std::string> argv;
            for (std::string w; words >> w;)
                argv.push_back(w);
            if (!argv.empty()) {
                if (argv[0] == "quit") {
                    std::fflush(stdout);
                    std::_Exit(0);  // the benchmark is over; no orderly teardown to measure
                }
                handler_(argv);
            }
            read();
        });
    }

    asio::posix::stream_descriptor in_;
    std::string buf_;
    handler handler_;
};

std::string broadcast_payload(long k, std::size_t size)
{
    std::string s = "b" + std::to_string(k) + ":";
    if (s.size() < size)
        s.append(size - s.size(), 'x');
    return s;
}

// Which broadcast a received message is, or -1.
long broadcast_number(std::string_view data)
{
    if (data.size() < 3 || data[0] != 'b')
        return -1;
    long k = 0;
    std::size_t i = 1;
    for (; i < data.size() && data[i] >= '0' && data[i] <= '9'; ++i)
        k = k * 10 + (data[i] - '0');
    return (i < data.size() && data[i] == ':') ? k : -1;
}

// Arrival bookkeeping of broadcasts, shared by both client kinds (one thread).
struct broadcast_tracker {
    struct entry {
        std::size_t count = 0;
        std::int64_t first = 0;
        std::int64_t last = 0;
        bool reported = false;
    };
    std::map<long, entry> seen;
    std::size_t* open = nullptr;

    void arrived(long k)
    {
        auto now = mono_ns();
        auto& e = seen[k];
        if (e.count++ == 0)
            e.first = now;
        e.last = now;
        if (!e.reported && e.count >= *open) {
            e.reported = true;
            emit("broadcast_done", {{"k", k}, {"count", e.count}, {"first_ns", e.first}, {"last_ns", e.last}});
        }
    }
};

// ---------------------------------------------------------------------------------------
// The floor: plain Beast.

using plain_ws = websocket::stream<tcp::socket>;

struct beast_server_conn;
using conn_list = std::list<std::shared_ptr<beast_server_conn>>;

struct beast_server_conn : std::enable_shared_from_this<beast_server_conn> {
    beast_server_conn(tcp::socket s, conn_list& all, std::size_t& open, std::chrono::milliseconds interval)
        : ws(std::move(s)), timer(ws.get_executor()), all(all), open(open), interval(interval)
    {
    }

    void start()
    {
        boost::system::error_code ignored;
        ws.next_layer().set_option(tcp::no_delay(true), ignored);
        ws.control_callback([this](websocket::frame_type kind, beast::string_view) {
            if (kind == websocket::frame_type::pong)
                alive = true;
        });
        ws.async_accept([self = shared_from_this()](boost::system::error_code ec) {
            if (ec)
                return;
            self->where = self->all.insert(self->all.end(), self);
            self->registered = true;
            ++self->open;
            self->read();
            self->tick();
        });
    }

    void read()
    {
        ws.async_read(buf, [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
            if (ec) {
                if (!self->ended)
                    ++end_reasons[ec.message()];
                return self->end();
            }
            self->buf.consume(n);
            self->read();
        });
    }

    void tick()
    {
        timer.expires_after(interval);
        timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (ec || self->ended)
                return;
            if (!self->alive) {
                ++end_reasons["no_pong"];
                return self->end();  // no pong since the last ping: dead
            }
            self->alive = false;
            if (!self->pinging) {
                self->pinging = true;
                self->ws.async_ping({}, [self](boost::system::error_code pec) {
                    self->pinging = false;
                    if (pec)
                        self->end();
                });
            }
            self->tick();
        });
    }

    void send(std::shared_ptr<const std::string> msg)
    {
        out.push_back(std::move(msg));
        if (!writing)
            write_next();
    }

    void write_next()
    {
        writing = true;
        ws.text(true);
        ws.async_write(asio::buffer(*out.front()), [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
            self->out.pop_front();
            self->writing = false;
            if (ec)
                return self->end();
            if (!self->out.empty())
                self->write_next();
        });
    }

    void end()
    {
        if (ended)
            return;
        ended = true;
        timer.cancel();
        boost::system::error_code ignored;
        ws.next_layer().close(ignored);
        if (registered) {
            --open;
            all.erase(where);  // may drop the last reference held by the list; handlers hold others
        }
    }

    plain_ws ws;
    beast::flat_buffer buf;
    asio::steady_timer timer;
    conn_list& all;
    conn_list::iterator where;
    std::size_t& open;
    std::chrono::milliseconds interval;
    std::deque<std::shared_ptr<const std::string>> out;
    bool alive = true;
    bool pinging = false;
    bool writing = false;
    bool registered = false;
    bool ended = false;
};

int run_beast_server(const options& opt)
{
    asio::io_context ioc(1);
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), opt.port));
    conn_list all;
    std::size_t open = 0;
    std::function<void()> accept = [&] {
        acceptor.async_accept([&](boost::system::error_code ec, tcp::socket s) {
            if (!ec)
                std::make_shared<beast_server_conn>(std::move(s), all, open, opt.ping)->start();
            accept();
        });
    };
    accept();
    command_reader commands(ioc, [&](const std::vector<std::string>& argv) {
        if (argv[0] == "stats") {
            emit("stats", process_stats(open));
        } else if (argv[0] == "broadcast" && argv.size() == 3) {
            const long k = std::stol(argv[1]);
            auto msg = std::make_shared<const std::string>(broadcast_payload(k, std::stoul(argv[2])));
            const auto t0 = mono_ns();
            std::size_t n = 0;
            for (auto& c : all) {
                c->send(msg);
                ++n;
            }
            emit("broadcast", {{"k", k}, {"t0_ns", t0}, {"t1_ns", mono_ns()}, {"queued", n}});
        }
    });
    commands.start();
    emit("listening", {{"port", acceptor.local_endpoint().port()}});
    ioc.run();
    return 0;
}

struct beast_client : std::enable_shared_from_this<beast_client> {
    beast_client(asio::io_context& ioc, std::chrono::milliseconds interval, broadcast_tracker& bt, std::size_t& open)
        : ws(ioc), timer(ioc), interval(interval), bt(bt), open(open)
    {
    }

    void start(tcp::endpoint ep, std::function<void(bool)> done)
    {
        ws.control_callback([this](websocket::frame_type, beast::string_view) { heard = true; });
        ws.next_layer().async_connect(ep, [self = shared_from_this(), ep, done](boost::system::error_code ec) {
            if (ec)
                return done(false);
            boost::system::error_code ignored;
            self->ws.next_layer().set_option(tcp::no_delay(true), ignored);
            self->ws.async_handshake("127.0.0.1:" + std::to_string(ep.port()), "/",
                                     [self, done](boost::system::error_code hec) {
                                         if (hec)
                                             return done(false);
                                         ++self->open;
                                         self->up = true;
                                         self->read();
                                         self->tick();
                                         done(true);
                                     });
        });
    }

    void read()
    {
        ws.async_read(buf, [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
            if (ec) {
                if (!self->ended)
                    ++end_reasons[ec.message()];
                return self->end();
            }
            self->heard = true;
            const auto* p = static_cast<const char*>(self->buf.data().data());
            if (long k = broadcast_number(std::string_view(p, self->buf.size())); k >= 0)
                self->bt.arrived(k);
            self->buf.consume(n);
            self->read();
        });
    }

    void tick()
    {
        timer.expires_after(interval);
        timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (ec || self->ended)
                return;
            if (self->heard) {
                self->heard = false;
                self->ping_unanswered = false;
            } else if (self->ping_unanswered) {
                ++end_reasons["no_pong"];
                return self->end();  // our ping went unanswered for an interval
            } else if (!self->pinging) {
                self->ping_unanswered = true;
                self->pinging = true;
                self->ws.async_ping({}, [self](boost::system::error_code pec) {
                    self->pinging = false;
                    if (pec)
                        self->end();
                });
            }
            self->tick();
        });
    }

    void end()
    {
        if (ended)
            return;
        ended = true;
        timer.cancel();
        boost::system::error_code ignored;
        ws.next_layer().close(ignored);
        if (up)
            --open;
    }

    plain_ws ws;
    beast::flat_buffer buf;
    asio::steady_timer timer;
    std::chrono::milliseconds interval;
    broadcast_tracker& bt;
    std::size_t& open;
    bool heard = false;
    bool ping_unanswered = false;
    bool pinging = false;
    bool up = false;
    bool ended = false;
};

// ---------------------------------------------------------------------------------------
// vigil.

int run_vigil_server(const options& opt)
{
    asio::io_context ioc(1);
    vigil::server_config cfg;
    cfg.port = opt.port;
    cfg.max_connections = 1'000'000;
    cfg.session.ping_interval = opt.ping;
    cfg.session.pong_timeout = opt.pong;
    apply_deflate(cfg.session, opt);
    vigil::server srv(ioc.get_executor(), cfg, nullptr);
    srv.events().on_disconnected = [](vigil::connection& c) { ++end_reasons[vigil::error_name(c.last_disconnect().reason)]; };
    srv.events().on_rejected = [](const std::string&, const vigil::error_code& ec, const std::string&) {
        ++end_reasons["rejected: " + vigil::error_name(ec)];
    };
    std::string detail;
    if (auto ec = srv.listen(&detail)) {
        std::fprintf(stderr, "listen: %s\n", detail.c_str());
        return 1;
    }
    asio::co_spawn(ioc, srv.run(), asio::detached);
    command_reader commands(ioc, [&](const std::vector<std::string>& argv) {
        if (argv[0] == "stats") {
            emit("stats", process_stats(srv.counters().open));
        } else if (argv[0] == "broadcast" && argv.size() == 3) {
            const long k = std::stol(argv[1]);
            auto msg = broadcast_payload(k, std::stoul(argv[2]));
            const auto t0 = mono_ns();
            const auto n = srv.broadcast(std::move(msg));
            emit("broadcast", {{"k", k}, {"t0_ns", t0}, {"t1_ns", mono_ns()}, {"queued", n}});
        }
    });
    commands.start();
    emit("listening", {{"port", srv.port()}});
    ioc.run();
    return 0;
}

struct vigil_clients {
    vigil_clients(asio::io_context& ioc, const options& opt, broadcast_tracker& bt, std::size_t& open)
        : ioc(ioc), opt(opt), bt(bt), open(open)
    {
    }

    // One of `concurrency` workers: takes the next client, connects it (on its strand),
    // starts its run() there, and goes on.
    asio::awaitable<void> worker(std::size_t end, std::string url)
    {
        while (next < end) {
            auto& s = *sessions[next++];
            auto ec = co_await asio::co_spawn(s.get_executor(), s.connect(url), asio::use_awaitable);
            if (ec) {
                ++failed;
                ++end_reasons["connect: " + vigil::error_name(ec)];
                continue;
            }
            ++open;
            asio::co_spawn(s.get_executor(), s.run(), [this](std::exception_ptr, vigil::error_code rec) {
                --open;
                ++end_reasons[vigil::error_name(rec)];
            });
        }
    }

    asio::awaitable<void> connect(std::size_t n)
    {
        const auto t0 = steady::now();
        // One config for the whole fleet, as a server's connections share theirs.
        auto cfg = std::make_shared<vigil::session_config>();
        cfg->ping_interval = opt.ping;
        cfg->pong_timeout = opt.pong;
        apply_deflate(*cfg, opt);
        const std::shared_ptr<const vigil::session_config> shared = std::move(cfg);
        const std::size_t begin = sessions.size();
        for (std::size_t i = 0; i < n; ++i) {
            auto s = std::make_unique<vigil::session>(ioc.get_executor(), shared);
            s->events().on_message = [this](std::string_view data, vigil::message_type) {
                if (long k = broadcast_number(data); k >= 0)
                    bt.arrived(k);
            };
            sessions.push_back(std::move(s));
        }
        next = begin;
        const std::string url = "ws://127.0.0.1:" + std::to_string(opt.port) + "/";
        std::size_t workers = std::min(opt.concurrency, n);
        std::size_t finished = 0;
        auto ex = co_await asio::this_coro::executor;
        asio::steady_timer all_done(ex, steady::time_point::max());
        for (std::size_t w = 0; w < workers; ++w)
            asio::co_spawn(ex, worker(sessions.size(), url), [&](std::exception_ptr) {
                if (++finished == workers)
                    all_done.cancel();
            });
        boost::system::error_code ec;
        co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        emit("connected", {{"open", open}, {"failed", failed},
                           {"seconds", std::chrono::duration<double>(steady::now() - t0).count()}});
    }

    asio::io_context& ioc;
    const options& opt;
    broadcast_tracker& bt;
    std::size_t& open;
    std::vector<std::unique_ptr<vigil::session>> sessions;
    std::size_t next = 0;
    std::size_t failed = 0;
};

// ---------------------------------------------------------------------------------------

int run_clients(const options& opt)
{
    asio::io_context ioc(1);
    std::size_t open = 0;
    broadcast_tracker bt;
    bt.open = &open;
    vigil_clients vc(ioc, opt, bt, open);
    std::vector<std::shared_ptr<beast_client>> raw;
    std::size_t raw_failed = 0;

    auto connect_raw = [&](std::size_t n) {
        const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), opt.port);
        auto t0 = std::make_shared<steady::time_point>(steady::now());
        auto next = std::make_shared<std::size_t>(raw.size());
        auto pending = std::make_shared<std::size_t>(0);
        const std::size_t end = raw.size() + n;
        for (std::size_t i = 0; i < n; ++i)
            raw.push_back(std::make_shared<beast_client>(ioc, opt.ping, bt, open));
        auto launch = std::make_shared<std::function<void()>>();
        *launch = [&, next, pending, end, ep, t0, launch] {
            while (*pending < opt.concurrency && *next < end) {
                ++*pending;
                raw[(*next)++]->start(ep, [&, pending, next, end, t0, launch](bool ok) {
                    --*pending;
                    if (!ok) {
                        ++raw_failed;
                        ++end_reasons["connect failed"];
                    }
                    if (*next < end) {
                        (*launch)();
                    } else if (*pending == 0) {
                        emit("connected", {{"open", open}, {"failed", raw_failed},
                                           {"seconds", std::chrono::duration<double>(steady::now() - *t0).count()}});
                        *launch = nullptr;  // break the cycle
                    }
                });
            }
        };
        (*launch)();
    };

    command_reader commands(ioc, [&](const std::vector<std::string>& argv) {
        if (argv[0] == "stats") {
            emit("stats", process_stats(open));
        } else if (argv[0] == "connect" && argv.size() == 2) {
            const std::size_t n = std::stoul(argv[1]);
            if (opt.impl == "vigil")
                asio::co_spawn(ioc, vc.connect(n), asio::detached);
            else
                connect_raw(n);
        }
    });
    commands.start();
    emit("ready");
    ioc.run();
    return 0;
}

int usage(const char* why)
{
    std::fprintf(stderr,
                 "vigil-bench-scale: %s\n"
                 "usage: vigil-bench-scale server --impl vigil|beast [--ping-ms N] [--pong-ms N]\n"
                 "       vigil-bench-scale clients --impl vigil|beast --port P [--ping-ms N] [--pong-ms N] "
                 "[--concurrency N]\n",
                 why);
    return 64;
}

}  // namespace

int main(int argc, char** argv)
{
    options opt;
    if (argc < 2)
        return usage("missing role");
    opt.role = argv[1];
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc)
            return usage(("missing value for " + a).c_str());
        std::string v = argv[++i];
        if (a == "--impl")
            opt.impl = v;
        else if (a == "--port")
            opt.port = static_cast<std::uint16_t>(std::stoul(v));
        else if (a == "--ping-ms")
            opt.ping = std::chrono::milliseconds(std::stol(v));
        else if (a == "--pong-ms")
            opt.pong = std::chrono::milliseconds(std::stol(v));
        else if (a == "--concurrency")
            opt.concurrency = std::stoul(v);
        else if (a == "--deflate")
            opt.deflate = v;
        else
            return usage(("unknown option " + a).c_str());
    }
    if (opt.impl != "vigil" && opt.impl != "beast")
        return usage("--impl must be vigil or beast");
    if (opt.deflate != "off" && opt.deflate != "takeover" && opt.deflate != "no-takeover")
        return usage("--deflate must be off, takeover or no-takeover");
    if (opt.deflate != "off" && opt.impl != "vigil")
        return usage("--deflate is for --impl vigil");
    raise_fd_limit();
    try {
        if (opt.role == "server")
            return opt.impl == "vigil" ? run_vigil_server(opt) : run_beast_server(opt);
        if (opt.role == "clients") {
            if (opt.port == 0)
                return usage("clients need --port");
            return run_clients(opt);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vigil-bench-scale: %s\n", e.what());
        return 1;
    }
    return usage("role must be server or clients");
}
