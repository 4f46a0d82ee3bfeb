// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The Redis link's glue: hiredis's async API driven by Asio on the link's executor, carrying
// out what redis_link_fsm decides. docs/design.md ("The Redis link") says why it is built so.

#include <vigil/redis.hpp>

#include "../detail/printable.hpp"
#include "link_fsm.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <set>
#include <stdexcept>

namespace vigil {

namespace asio = boost::asio;
using detail::redis_action;
using detail::redis_conn;
using detail::redis_wait;
using clock_type = std::chrono::steady_clock;

namespace {

struct redis_target {
    std::string host;
    std::uint16_t port = 6379;
    std::string user;
    std::string password;
    bool has_password = false;
};

error_code parse_redis_url(std::string_view url, redis_target& out, std::string* detail)
{
    auto fail = [&](const std::string& what) {
        if (detail)
            *detail = "redis url " + detail::quoted_url(url) + ": " + what;
        return error_code(error::invalid_url);
    };
    if (url.empty())
        return fail("is empty (expected redis://[:password@]host[:port])");
    auto r = boost::urls::parse_uri(url);
    if (!r)
        return fail("is not a URL (" + r.error().message() + ")");
    if (r->scheme() != "redis")
        return fail("scheme \"" + std::string(r->scheme()) + "\" is not redis");
    if (!r->has_authority() || r->encoded_host().empty())
        return fail("has no host");
    if (!r->encoded_path().empty() && r->encoded_path() != "/")
        return fail("has a path (\"" + std::string(r->encoded_path()) + "\"); database numbers are not supported");
    if (r->has_query() || r->has_fragment())
        return fail("has a query or fragment, which mean nothing here");
    redis_target t;
    t.host = r->host_address();
    if (r->has_port()) {
        // Checked here: Boost.URL accepts any digits as a port.
        auto p = r->port();
        unsigned long n = 0;
        bool digits = !p.empty() && p.size() <= 5;
        for (char ch : p) {
            digits = digits && ch >= '0' && ch <= '9';
            n = n * 10 + static_cast<unsigned long>(ch - '0');
        }
        if (!digits || n == 0 || n > 65535)
            return fail("port \"" + std::string(p) + "\" is not in 1-65535");
        t.port = static_cast<std::uint16_t>(n);
    }
    if (r->has_userinfo()) {
        t.user = r->user();
        if (!r->has_password())
            return fail("has a user name but no password (redis://[user]:password@host)");
        t.password = r->password();
        t.has_password = true;
    }
    out = std::move(t);
    return {};
}

// Redis's answers to a password it refuses, or to a command that needs one.
error_code classify_error_reply(std::string_view text)
{
    auto starts = [&](std::string_view p) { return text.substr(0, p.size()) == p; };
    if (starts("WRONGPASS") || starts("NOAUTH") || text.find("invalid password") != std::string_view::npos ||
        text.find("without any password configured") != std::string_view::npos)
        return error::redis_auth_failed;
    return error::redis_error;
}

// What a hiredis context that failed reports, as an error_code.
error_code context_error(const redisAsyncContext* ac, int saved_errno)
{
    // The redisContext's fields: hiredis copies them to the async context only later.
    const int err = ac->c.err;
    if (err == REDIS_ERR_EOF)
        return asio::error::eof;
    if (err == REDIS_ERR_IO && saved_errno != 0)
        return error_code(saved_errno, boost::system::system_category());
    // Where errno was overwritten, strerror's text in errstr still says what it was.
    if (err == REDIS_ERR_IO) {
        const std::string_view text = ac->c.errstr;
        for (int e : {ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, EPIPE, ECONNABORTED})
            if (text.find(std::strerror(e)) != std::string_view::npos)
                return error_code(e, boost::system::system_category());
    }
    return asio::error::connection_reset;
}

std::string heartbeat_channel_name()
{
    jitter_source rng;
    auto n = static_cast<unsigned long long>(rng.next_unit() * 1e15);
    return "__vigil:heartbeat:" + std::to_string(n);
}

}  // namespace

error_code validate(const redis_config& cfg, std::string* detail)
{
    redis_target t;
    if (auto ec = parse_redis_url(cfg.url, t, detail))
        return ec;
    auto fail = [&](std::string what) {
        if (detail)
            *detail = std::move(what);
        return error_code(error::invalid_config);
    };
    auto ms = [](std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; };
    const std::pair<const char*, std::chrono::milliseconds> positive[] = {
        {"connect_timeout", cfg.connect_timeout}, {"command_timeout", cfg.command_timeout},
        {"ping_interval", cfg.ping_interval},     {"pong_timeout", cfg.pong_timeout},
        {"min_delay", cfg.min_delay},
    };
    for (const auto& [name, d] : positive)
        if (d.count() <= 0)
            return fail(std::string(name) + " (" + ms(d) + ") must be positive");
    if (cfg.message_ttl.count() < 0)
        return fail("message_ttl (" + ms(cfg.message_ttl) + ") must not be negative (0 means no limit)");
    return {};
}

namespace {

/// A publish on its way: waiting in the outbox, then waiting for Redis's answer.
struct publish_op {
    std::string channel;
    std::string data;
    clock_type::time_point made;
    asio::any_completion_handler<void(error_code)> handler;
};

/// A reply the commands (or, before SUBSCRIBE, the subscriber) connection waits for, in order.
struct expected_reply {
    enum class kind { handshake, ping, publish } what;
    publish_op op;  // for publish
};

}  // namespace

namespace {

/// One hiredis connection and the descriptor Asio watches for it. Lives while hiredis holds
/// its context (`keep`), so hiredis's hooks and callbacks always find it.
class link_conn : public std::enable_shared_from_this<link_conn> {
public:
    link_conn(detail::redis_link_impl& owner, redis_conn which, const asio::any_io_executor& ex)
        : owner(owner), which(which), sd(ex)
    {
    }

    bool open(const std::string& ip, std::uint16_t port, error_code& ec);
    /// Lets go of the context (hiredis then calls every pending callback with no reply, ignored).
    void close();

    detail::redis_link_impl& owner;
    redis_conn which;
    asio::posix::stream_descriptor sd;
    redisAsyncContext* ctx = nullptr;
    bool closing = false;
    bool want_read = false;
    bool want_write = false;
    bool read_armed = false;
    bool write_armed = false;
    std::deque<expected_reply> expected;
    std::shared_ptr<link_conn> keep;

private:
    void arm_read();
    void arm_write();
    void arm(asio::posix::descriptor_base::wait_type type, bool link_conn::*armed, bool link_conn::*wanted,
             void (*handle)(redisAsyncContext*));
    static void add_read(void* p);
    static void del_read(void* p);
    static void add_write(void* p);
    static void del_write(void* p);
    static void cleanup(void* p);
};

}  // namespace

class detail::redis_link_impl : public std::enable_shared_from_this<redis_link_impl> {
public:
    redis_link_impl(asio::any_io_executor ex, redis_config cfg, any_backoff policy)
        : ex_(ex), cfg_(std::move(cfg)), policy_(std::move(policy)),
          fsm_(detail::redis_fsm_settings{cfg_.connect_timeout, cfg_.command_timeout, cfg_.ping_interval,
                                          cfg_.pong_timeout, cfg_.min_delay},
               policy_),
          tick_(ex), done_(ex), resolver_(ex), heartbeat_(heartbeat_channel_name())
    {
        std::string why;
        if (validate(cfg_, &why))
            throw std::invalid_argument(why);
        parse_redis_url(cfg_.url, target_, nullptr);
        done_.expires_at(clock_type::time_point::max());
    }

    // Called on the executor.
    void begin() { handle(fsm_.start(clock_type::now())); }
    void handle(redis_action a);
    void rearm();
    void enqueue_publish(publish_op op);
    void add_channel(std::string ch);
    void remove_channel(std::string ch);

    // hiredis's callbacks, on the executor (inside redisAsyncHandleRead/Write).
    void on_connected(link_conn& c, const redisAsyncContext* ac, int status, int saved_errno);
    void on_disconnected(link_conn& c, const redisAsyncContext* ac, int status, int saved_errno);
    void on_fifo_reply(link_conn& c, redisReply* r);
    void on_sub_reply(link_conn& c, redisReply* r);

    asio::any_io_executor ex_;
    redis_config cfg_;
    redis_target target_;
    any_backoff policy_;
    detail::redis_link_fsm fsm_;
    asio::steady_timer tick_;
    asio::steady_timer done_;
    asio::ip::tcp::resolver resolver_;
    std::string heartbeat_;
    std::shared_ptr<link_conn> conns_[2];
    std::set<std::string> channels_;
    std::deque<publish_op> outbox_;
    std::uint64_t generation_ = 0;
    // run() not yet called, in progress, or over (stopped, permanent failure, cancelled).
    enum class run_phase { idle, running, finished } run_ = run_phase::idle;
    error_code result_;

    std::function<void(std::string_view, std::string_view)> on_message;
    std::function<void()> on_up;
    std::function<void(error_code)> on_down;
    std::function<void(std::size_t, std::chrono::milliseconds, error_code)> on_retry;

    struct atomic_counters {
        std::atomic<std::uint64_t> connects{0}, retries{0}, publishes_ok{0}, publishes_failed{0},
            messages_received{0}, pings{0};
    } counters_;

private:
    void execute(const redis_action& a);
    void connect();
    void open_both(const std::string& ip);
    void send_handshake(link_conn& c);
    void send_subscribe(const std::string& ch);
    void send_publish(publish_op op);
    void send_ping(redis_conn which);
    void close_all(error_code unanswered);
    void fail_outbox(error_code ec);
    void complete(publish_op& op, error_code ec);
    void finish(error_code ec);
    void expire_outbox(clock_type::time_point now);
    link_conn* conn(redis_conn which) { return conns_[static_cast<std::size_t>(which)].get(); }
    static void bump(std::atomic<std::uint64_t>& n) { n.fetch_add(1, std::memory_order_relaxed); }
};

// ---- link_conn: hiredis's event hooks on an Asio descriptor --------------------------------

namespace {

link_conn* from_ac(const redisAsyncContext* ac) { return static_cast<link_conn*>(ac->data); }

// Every callback checks `closing` before it touches the owner: a closed connection may
// outlive the link while hiredis frees it.
void connect_cb(const redisAsyncContext* ac, int status)
{
    int saved = errno;
    auto* c = from_ac(ac);
    if (!c->closing)
        c->owner.on_connected(*c, ac, status, saved);
}

void disconnect_cb(const redisAsyncContext* ac, int status)
{
    int saved = errno;
    auto* c = from_ac(ac);
    if (!c->closing)
        c->owner.on_disconnected(*c, ac, status, saved);
}

// Replies answered in order (before SUBSCRIBE, and on the commands connection).
void fifo_reply_cb(redisAsyncContext* ac, void* r, void*)
{
    auto* c = from_ac(ac);
    if (!c->closing && r)
        c->owner.on_fifo_reply(*c, static_cast<redisReply*>(r));
}

// Subscription confirmations and published messages.
void sub_reply_cb(redisAsyncContext* ac, void* r, void*)
{
    auto* c = from_ac(ac);
    if (!c->closing && r)
        c->owner.on_sub_reply(*c, static_cast<redisReply*>(r));
}

}  // namespace

bool link_conn::open(const std::string& ip, std::uint16_t port, error_code& ec)
{
    ctx = redisAsyncConnect(ip.c_str(), port);
    if (!ctx || ctx->err) {
        ec = ctx ? context_error(ctx, errno) : error_code(asio::error::no_memory);
        if (ctx)
            redisAsyncFree(ctx);
        ctx = nullptr;
        return false;
    }
    // hiredis owns the descriptor: the stream_descriptor only watches it, and releases it in
    // cleanup() rather than closing it.
    sd.assign(ctx->c.fd);
    ctx->data = this;
    ctx->ev.data = this;
    ctx->ev.addRead = &link_conn::add_read;
    ctx->ev.delRead = &link_conn::del_read;
    ctx->ev.addWrite = &link_conn::add_write;
    ctx->ev.delWrite = &link_conn::del_write;
    ctx->ev.cleanup = &link_conn::cleanup;
    keep = shared_from_this();
    // The connect callback asks for the first write event: set it after the hooks.
    redisAsyncSetConnectCallback(ctx, connect_cb);
    redisAsyncSetDisconnectCallback(ctx, disconnect_cb);
    return true;
}

void link_conn::close()
{
    closing = true;
    // Freed from the executor, never from inside hiredis (a connect callback returns into code
    // that still uses the context). Meanwhile nothing drives it: the waits check `ctx`.
    if (auto* c = std::exchange(ctx, nullptr))
        asio::post(sd.get_executor(), [c, self = shared_from_this()] { redisAsyncFree(c); });
}

void link_conn::arm_read() { arm(asio::posix::descriptor_base::wait_read, &link_conn::read_armed, &link_conn::want_read, redisAsyncHandleRead); }

void link_conn::arm_write() { arm(asio::posix::descriptor_base::wait_write, &link_conn::write_armed, &link_conn::want_write, redisAsyncHandleWrite); }

// One wait per direction while hiredis wants it; when it fires, hiredis does the I/O.
void link_conn::arm(asio::posix::descriptor_base::wait_type type, bool link_conn::*armed, bool link_conn::*wanted,
                    void (*handle)(redisAsyncContext*))
{
    if (this->*armed || !(this->*wanted) || !sd.is_open())
        return;
    this->*armed = true;
    sd.async_wait(type, [self = shared_from_this(), type, armed, wanted, handle](error_code ec) {
        self.get()->*armed = false;
        if (ec || !self->ctx || !(self.get()->*wanted))
            return;
        handle(self->ctx);
        self->arm(type, armed, wanted, handle);
    });
}

void link_conn::add_read(void* p)
{
    auto* c = static_cast<link_conn*>(p);
    c->want_read = true;
    c->arm_read();
}

void link_conn::del_read(void* p) { static_cast<link_conn*>(p)->want_read = false; }

void link_conn::add_write(void* p)
{
    auto* c = static_cast<link_conn*>(p);
    c->want_write = true;
    c->arm_write();
}

void link_conn::del_write(void* p) { static_cast<link_conn*>(p)->want_write = false; }

void link_conn::cleanup(void* p)
{
    auto* c = static_cast<link_conn*>(p);
    c->ctx = nullptr;
    c->want_read = c->want_write = false;
    if (c->sd.is_open())
        c->sd.release();  // cancels the waits; hiredis closes the descriptor
    // hiredis is still inside its free: let go of ourselves once it has returned.
    asio::post(c->sd.get_executor(), [keep = std::move(c->keep)] {});
}

// ---- impl: carrying out the machine's actions ----------------------------------------------

void detail::redis_link_impl::handle(redis_action a)
{
    while (a.what != redis_action::kind::none) {
        execute(a);
        a = fsm_.tick(clock_type::now());
    }
    rearm();
}

void detail::redis_link_impl::execute(const redis_action& a)
{
    using kind = redis_action::kind;
    switch (a.what) {
    case kind::none: break;
    case kind::connect: connect(); break;
    case kind::authenticate:
        send_handshake(*conn(redis_conn::subscriber));
        send_handshake(*conn(redis_conn::commands));
        break;
    case kind::subscribe:
        send_subscribe(heartbeat_);
        for (const auto& ch : channels_)
            send_subscribe(ch);
        break;
    case kind::up: {
        bump(counters_.connects);
        if (on_up)
            on_up();
        auto waiting = std::move(outbox_);
        outbox_.clear();
        for (auto& op : waiting)
            send_publish(std::move(op));
        break;
    }
    case kind::ping: send_ping(a.conn); break;
    case kind::back_off:
        close_all(error::delivery_unconfirmed);
        if (on_down)
            on_down(a.reason);
        bump(counters_.retries);
        if (on_retry)
            on_retry(a.attempt, a.delay, a.reason);
        break;
    case kind::give_up:
        close_all(error::delivery_unconfirmed);
        if (on_down)
            on_down(a.reason);
        fail_outbox(a.reason);
        finish(a.reason);
        break;
    case kind::stop:
        close_all(error::delivery_unconfirmed);
        fail_outbox(error::supervisor_stopped);
        finish({});
        break;
    }
}

void detail::redis_link_impl::rearm()
{
    if (run_ == run_phase::finished)
        return;
    auto at = fsm_.next_deadline();
    if (!outbox_.empty() && cfg_.message_ttl.count() > 0)
        at = std::min(at, outbox_.front().made + cfg_.message_ttl);
    tick_.expires_at(at);
    tick_.async_wait([w = weak_from_this()](error_code ec) {
        auto self = w.lock();
        if (ec || !self || self->run_ == run_phase::finished)
            return;
        auto now = clock_type::now();
        self->expire_outbox(now);
        self->handle(self->fsm_.tick(now));
    });
}

void detail::redis_link_impl::connect()
{
    auto gen = ++generation_;
    resolver_.async_resolve(target_.host, std::to_string(target_.port),
                            [self = shared_from_this(), gen](error_code ec, asio::ip::tcp::resolver::results_type rs) {
                                if (gen != self->generation_ || self->fsm_.phase() != detail::redis_phase::connecting)
                                    return;
                                if (!ec && rs.empty())
                                    ec = asio::error::host_not_found;
                                if (ec)
                                    return self->handle(self->fsm_.failed(ec, clock_type::now()));
                                self->open_both(rs.begin()->endpoint().address().to_string());
                            });
}

void detail::redis_link_impl::open_both(const std::string& ip)
{
    for (auto which : {redis_conn::subscriber, redis_conn::commands}) {
        auto c = std::make_shared<link_conn>(*this, which, ex_);
        conns_[static_cast<std::size_t>(which)] = c;
        error_code ec;
        if (!c->open(ip, target_.port, ec))
            return handle(fsm_.failed(ec, clock_type::now()));
    }
}

void detail::redis_link_impl::send_handshake(link_conn& c)
{
    auto* cb = fifo_reply_cb;
    int rc;
    if (!target_.has_password)
        rc = redisAsyncCommand(c.ctx, cb, nullptr, "PING");
    else if (target_.user.empty())
        rc = redisAsyncCommand(c.ctx, cb, nullptr, "AUTH %b", target_.password.data(), target_.password.size());
    else
        rc = redisAsyncCommand(c.ctx, cb, nullptr, "AUTH %b %b", target_.user.data(), target_.user.size(),
                               target_.password.data(), target_.password.size());
    if (rc != REDIS_OK)
        return;  // the context is failing; its disconnect callback reports why
    c.expected.push_back({expected_reply::kind::handshake, {}});
    fsm_.sent(c.which, redis_wait::command, clock_type::now());
}

void detail::redis_link_impl::send_subscribe(const std::string& ch)
{
    auto* c = conn(redis_conn::subscriber);
    auto* cb = sub_reply_cb;
    if (!c || !c->ctx || redisAsyncCommand(c->ctx, cb, nullptr, "SUBSCRIBE %b", ch.data(), ch.size()) != REDIS_OK)
        return;
    fsm_.sent(redis_conn::subscriber, redis_wait::command, clock_type::now());
}

void detail::redis_link_impl::send_ping(redis_conn which)
{
    bump(counters_.pings);
    if (which == redis_conn::subscriber) {
        // A subscribed connection may only send subscription commands, and hiredis 0.14
        // loses the reply to a PING there: subscribing again to the link's own heartbeat
        // channel is the ping, and its confirmation the pong.
        auto* c = conn(which);
        auto* cb = sub_reply_cb;
        if (c && c->ctx)
            redisAsyncCommand(c->ctx, cb, nullptr, "SUBSCRIBE %b", heartbeat_.data(), heartbeat_.size());
        fsm_.sent(which, redis_wait::ping, clock_type::now());
        return;
    }
    auto* c = conn(which);
    auto* cb = fifo_reply_cb;
    if (c && c->ctx && redisAsyncCommand(c->ctx, cb, nullptr, "PING") == REDIS_OK)
        c->expected.push_back({expected_reply::kind::ping, {}});
    // Sent or not, the deadline stands: a context that cannot send is dead.
    fsm_.sent(which, redis_wait::ping, clock_type::now());
}

void detail::redis_link_impl::send_publish(publish_op op)
{
    auto* c = conn(redis_conn::commands);
    auto* cb = fifo_reply_cb;
    if (!c || !c->ctx ||
        redisAsyncCommand(c->ctx, cb, nullptr, "PUBLISH %b %b", op.channel.data(), op.channel.size(), op.data.data(),
                          op.data.size()) != REDIS_OK) {
        complete(op, error::delivery_unconfirmed);
        return;
    }
    c->expected.push_back({expected_reply::kind::publish, std::move(op)});
    fsm_.sent(redis_conn::commands, redis_wait::command, clock_type::now());
}

void detail::redis_link_impl::close_all(error_code unanswered)
{
    ++generation_;
    resolver_.cancel();
    for (auto& c : conns_) {
        if (!c)
            continue;
        auto waiting = std::move(c->expected);
        c->expected.clear();
        c->close();
        for (auto& e : waiting)
            if (e.what == expected_reply::kind::publish)
                complete(e.op, unanswered);
        c.reset();
    }
}

void detail::redis_link_impl::complete(publish_op& op, error_code ec)
{
    bump(ec ? counters_.publishes_failed : counters_.publishes_ok);
    auto h = std::move(op.handler);
    // Never inside hiredis: the awaiting coroutine may resume on this executor.
    asio::post(ex_, [h = std::move(h), ec]() mutable {
        auto ex = asio::get_associated_executor(h);
        asio::dispatch(ex, [h = std::move(h), ec]() mutable { std::move(h)(ec); });
    });
}

void detail::redis_link_impl::fail_outbox(error_code ec)
{
    auto waiting = std::move(outbox_);
    outbox_.clear();
    for (auto& op : waiting)
        complete(op, ec);
}

void detail::redis_link_impl::expire_outbox(clock_type::time_point now)
{
    if (cfg_.message_ttl.count() <= 0)
        return;
    while (!outbox_.empty() && now >= outbox_.front().made + cfg_.message_ttl) {
        complete(outbox_.front(), error::message_expired);
        outbox_.pop_front();
    }
}

void detail::redis_link_impl::finish(error_code ec)
{
    run_ = run_phase::finished;
    result_ = ec;
    tick_.cancel();
    done_.cancel();
}

void detail::redis_link_impl::enqueue_publish(publish_op op)
{
    if (run_ == run_phase::finished)
        return complete(op, result_ ? result_ : error_code(error::supervisor_stopped));
    if (fsm_.phase() == detail::redis_phase::ready)
        return send_publish(std::move(op));
    if (cfg_.outbox_limit == 0)
        return complete(op, error::not_connected);
    if (outbox_.size() >= cfg_.outbox_limit)
        return complete(op, error::send_queue_full);
    outbox_.push_back(std::move(op));
    if (run_ == run_phase::running)
        rearm();
}

void detail::redis_link_impl::add_channel(std::string ch)
{
    if (ch == heartbeat_ || !channels_.insert(ch).second)
        return;
    auto phase = fsm_.phase();
    if (phase == detail::redis_phase::subscribing || phase == detail::redis_phase::ready) {
        send_subscribe(ch);
        rearm();
    }
}

void detail::redis_link_impl::remove_channel(std::string ch)
{
    if (channels_.erase(ch) == 0)
        return;
    auto phase = fsm_.phase();
    auto* c = conn(redis_conn::subscriber);
    if ((phase != detail::redis_phase::subscribing && phase != detail::redis_phase::ready) || !c || !c->ctx)
        return;
    auto* cb = sub_reply_cb;
    if (redisAsyncCommand(c->ctx, cb, nullptr, "UNSUBSCRIBE %b", ch.data(), ch.size()) == REDIS_OK) {
        fsm_.sent(redis_conn::subscriber, redis_wait::command, clock_type::now());
        rearm();
    }
}

// ---- impl: what hiredis reports -------------------------------------------------------------

void detail::redis_link_impl::on_connected(link_conn& c, const redisAsyncContext* ac, int status, int saved_errno)
{
    if (c.closing)
        return;
    if (status != REDIS_OK) {
        // hiredis frees this context when we return: it is no longer ours to free.
        auto ec = context_error(ac, saved_errno);
        c.ctx = nullptr;
        c.closing = true;
        return handle(fsm_.failed(ec, clock_type::now()));
    }
    handle(fsm_.opened(c.which, clock_type::now()));
}

void detail::redis_link_impl::on_disconnected(link_conn& c, const redisAsyncContext* ac, int status,
                                              int saved_errno)
{
    if (c.closing)
        return;
    // hiredis calls cleanup (which clears c.ctx) before this callback, and frees the context
    // after it.
    auto ec = status == REDIS_OK ? error_code(asio::error::eof) : context_error(ac, saved_errno);
    c.ctx = nullptr;
    c.closing = true;
    handle(fsm_.failed(ec, clock_type::now()));
}

void detail::redis_link_impl::on_fifo_reply(link_conn& c, redisReply* r)
{
    if (c.closing || !r || c.expected.empty())
        return;
    auto e = std::move(c.expected.front());
    c.expected.pop_front();
    auto now = clock_type::now();
    const bool is_error = r->type == REDIS_REPLY_ERROR;
    error_code ec = is_error ? classify_error_reply(std::string_view(r->str, r->len)) : error_code();
    if (e.what == expected_reply::kind::publish)
        complete(e.op, ec);
    if (ec == error::redis_auth_failed || (is_error && e.what == expected_reply::kind::handshake))
        return handle(fsm_.failed(ec, now));
    handle(fsm_.replied(c.which, now));
}

void detail::redis_link_impl::on_sub_reply(link_conn& c, redisReply* r)
{
    if (c.closing || !r || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    auto str = [&](std::size_t i) {
        auto* e = r->element[i];
        return e->type == REDIS_REPLY_STRING ? std::string_view(e->str, e->len) : std::string_view();
    };
    auto now = clock_type::now();
    if (str(0) == "message") {
        fsm_.received(c.which, now);
        bump(counters_.messages_received);
        if (on_message)
            on_message(str(1), str(2));
        return;
    }
    // A subscribe or unsubscribe confirmation answers the oldest of those commands.
    handle(fsm_.replied(c.which, now));
}

// ---- the public face -------------------------------------------------------------------------

redis_link::redis_link(asio::any_io_executor ex, redis_config cfg, any_backoff policy)
    : impl_(std::make_shared<detail::redis_link_impl>(std::move(ex), std::move(cfg), std::move(policy)))
{
}

redis_link::~redis_link() { stop(); }

asio::awaitable<error_code> redis_link::run()
{
    auto self = impl_;
    if (self->run_ == detail::redis_link_impl::run_phase::finished)
        co_return self->result_;
    if (self->run_ == detail::redis_link_impl::run_phase::running)
        co_return error::already_running;
    self->run_ = detail::redis_link_impl::run_phase::running;
    self->on_message = on_message;
    self->on_up = on_up;
    self->on_down = on_down;
    self->on_retry = on_retry;
    self->begin();
    error_code ec;  // operation_aborted either way: finish() or the caller's cancellation
    auto token = asio::redirect_error(asio::use_awaitable, ec);
    co_await self->done_.async_wait(token);
    if (self->run_ != detail::redis_link_impl::run_phase::finished) {
        // The awaiting coroutine was cancelled.
        self->handle(self->fsm_.stop());
        co_return asio::error::operation_aborted;
    }
    co_return self->result_;
}

void redis_link::stop()
{
    asio::post(impl_->ex_, [self = impl_] { self->handle(self->fsm_.stop()); });
}

void redis_link::subscribe(std::string channel)
{
    asio::post(impl_->ex_, [self = impl_, ch = std::move(channel)]() mutable { self->add_channel(std::move(ch)); });
}

void redis_link::unsubscribe(std::string channel)
{
    asio::post(impl_->ex_, [self = impl_, ch = std::move(channel)]() mutable { self->remove_channel(std::move(ch)); });
}

asio::awaitable<error_code> redis_link::publish(std::string channel, std::string data)
{
    error_code result;
    auto token = asio::redirect_error(asio::use_awaitable, result);
    // Named, not a temporary in the co_await expression: g++ 12 destroys such temporaries
    // twice, which released the link's last reference here.
    auto initiate = [self = impl_](auto handler, std::string ch, std::string d) {
        publish_op op{std::move(ch), std::move(d), clock_type::now(), std::move(handler)};
        asio::post(self->ex_, [self, op = std::move(op)]() mutable { self->enqueue_publish(std::move(op)); });
    };
    co_await asio::async_initiate<decltype(token), void(error_code)>(initiate, token, std::move(channel),
                                                                     std::move(data));
    co_return result;
}

void redis_link::publish(std::string channel, std::string data, std::function<void(error_code)> done)
{
    if (!done)
        done = [](error_code) {};
    // A std::function's associated executor is the system executor: complete() then calls it
    // on the link's executor.
    publish_op op{std::move(channel), std::move(data), clock_type::now(), std::move(done)};
    asio::post(impl_->ex_, [self = impl_, op = std::move(op)]() mutable { self->enqueue_publish(std::move(op)); });
}

redis_counters redis_link::counters() const
{
    const auto& n = impl_->counters_;
    auto get = [](const std::atomic<std::uint64_t>& v) { return v.load(std::memory_order_relaxed); };
    return {get(n.connects), get(n.retries), get(n.publishes_ok), get(n.publishes_failed), get(n.messages_received),
            get(n.pings)};
}

}  // namespace vigil
