// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The acceptor, the registry of connections and the lifecycle of each one. Every
// connection is a vigil::session (see detail/session_access.hpp for the hooks), so the
// server's heartbeat, deadlines and queues are the client's, tested once.

#include <vigil/server.hpp>

#include "detail/address_limits.hpp"
#include "detail/common.hpp"
#include "detail/fanout_codec.hpp"
#include "detail/memory_budget.hpp"
#include "detail/printable.hpp"
#include "detail/serialized.hpp"
#include "detail/session_access.hpp"
#include "detail/subprotocols.hpp"
#include "detail/wakeup.hpp"
#include "detail/with_deadline.hpp"

#include <algorithm>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/ssl.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace vigil {

namespace asio = boost::asio;
using detail::with_context;

namespace {

constexpr std::size_t max_channel_name = 1024;

std::string endpoint_string(const asio::ip::tcp::endpoint& ep)
{
    // Built by appending: g++ 12 misreads `"[" + std::string` as an overlapping copy
    // (-Wrestrict).
    const auto addr = ep.address();
    std::string out;
    if (addr.is_v6())
        out.append(1, '[').append(addr.to_string()).append(1, ']');
    else
        out = addr.to_string();
    out.append(1, ':').append(std::to_string(ep.port()));
    return out;
}

// A refused client still gets its 503 (or 429) politely, but a flood of them must not
// become a second unbounded population of coroutines: beyond this many, whichever limit
// refused them, the socket is just closed.
constexpr std::size_t max_refusing = 64;

// The addresses kept for their recent connects alone, at least (address_limits).
constexpr std::size_t min_address_records = 1024;

}  // namespace

session_config server_session_defaults()
{
    session_config cfg;
    cfg.ping_jitter = 0.2;
    cfg.send_queue_overflow = overflow_policy::disconnect;
    cfg.max_message_size = 1024 * 1024;
    cfg.send_queue_bytes = 4 * 1024 * 1024;
    cfg.message_timeout = std::chrono::seconds(10);
    cfg.message_min_rate = 64 * 1024;
    cfg.max_receive_rate = 4 * 1024 * 1024;
    // Compression stays off; a server that turns it on keeps no history between messages.
    cfg.deflate.client_no_context_takeover = true;
    cfg.deflate.server_no_context_takeover = true;
    return cfg;
}

error_code validate(const server_config& cfg, std::string* detail)
{
    std::string inner;
    if (auto ec = validate(cfg.session, &inner)) {
        if (detail)
            *detail = "session." + inner;
        return ec;
    }
    auto fail = [detail](std::string message) {
        if (detail)
            *detail = std::move(message);
        return error_code(error::invalid_config);
    };
    error_code ec;
    asio::ip::make_address(cfg.bind, ec);
    if (ec)
        return fail("bind (\"" + detail::printable(cfg.bind, 64, false) + "\") is not an IP address");
    if (cfg.max_connections == 0)
        return fail("max_connections (0) must be positive");
    if (cfg.receive_queue_limit == 0)
        return fail("receive_queue_limit (0) must be positive");
    if (cfg.budget_grace.count() <= 0)
        return fail("budget_grace (" + std::to_string(cfg.budget_grace.count()) + " ms) must be positive");
    if (cfg.retry_after.count() < 0)
        return fail("retry_after (" + std::to_string(cfg.retry_after.count()) + " ms) must not be negative");
    if (cfg.connect_window.count() < 0 || (cfg.connects_per_address > 0 && cfg.connect_window.count() == 0))
        return fail("connect_window (" + std::to_string(cfg.connect_window.count()) + " ms) must be " +
                    (cfg.connect_window.count() < 0 ? "positive" : "positive when connects_per_address is set"));
    if (cfg.max_request_header < 1024)
        return fail("max_request_header (" + std::to_string(cfg.max_request_header) +
                    ") must be at least 1024: browsers send upgrade requests of several hundred bytes");
    if (cfg.server_name.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
        return fail("server_name contains CR, LF or NUL");
    if (std::string why; !detail::check_subprotocols(cfg.subprotocols, "subprotocols", why))
        return fail(std::move(why));
    if (!cfg.tls.context && cfg.tls.cert_file.empty() != cfg.tls.key_file.empty())
        return fail(cfg.tls.cert_file.empty() ? "tls.key_file is set without tls.cert_file"
                                              : "tls.cert_file is set without tls.key_file");
    if (!cfg.tls.context) {
        // The contents are checked by listen(), which loads them; here only what can be
        // said without OpenSSL.
        for (auto [field, path] :
             {std::pair{"tls.cert_file", &cfg.tls.cert_file}, {"tls.key_file", &cfg.tls.key_file}}) {
            if (path->empty())
                continue;
            std::error_code fs_ec;
            if (!std::filesystem::is_regular_file(*path, fs_ec))
                return fail(std::string(field) + " \"" + detail::printable(*path, 128, false) +
                            "\" is not a regular file" + (fs_ec ? " (" + fs_ec.message() + ")" : std::string()));
            if (!std::ifstream(*path, std::ios::binary))
                return fail(std::string(field) + " \"" + detail::printable(*path, 128, false) +
                            "\" cannot be opened for reading");
        }
    }
    return {};
}

// ---------------------------------------------------------------------------------------
// connection

namespace detail {

/// Lets the server make connections (whose constructor is private) with one allocation for
/// the object and its reference count.
template <class T>
struct connection_allocator {
    using value_type = T;
    connection_allocator() = default;
    template <class U>
    connection_allocator(const connection_allocator<U>&) noexcept
    {
    }
    T* allocate(std::size_t n) { return std::allocator<T>{}.allocate(n); }
    void deallocate(T* p, std::size_t n) noexcept { std::allocator<T>{}.deallocate(p, n); }
    template <class U, class... Args>
    void construct(U* p, Args&&... args)
    {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
    template <class U>
    void destroy(U* p) noexcept
    {
        p->~U();
    }
    template <class U>
    bool operator==(const connection_allocator<U>&) const noexcept
    {
        return true;
    }
};

}  // namespace detail

struct connection::impl {
    /// Whether the connection's session has ended (its handler then has close_timeout left).
    enum class stage { live, over };
    /// How the application's handler ended.
    enum class outcome { running, returned, threw };

    impl(asio::any_io_executor ex, std::shared_ptr<const session_config> cfg, std::uint64_t id_)
        : s(std::move(ex), std::move(cfg)), id(id_)
    {
    }

    session s;
    std::uint64_t id;
    std::string remote;
    std::string target;
    detail::address_key from;  // the client's IP address, for the limits per address
    // The rest lives on the session's executor.
    std::unique_ptr<detail::wakeup<asio::any_io_executor>> ended;  // with a handler: its grace starts
    unsigned arms = 0;  // of run() and the handler arm, those still running
    stage now = stage::live;
    outcome handler = outcome::running;
    std::shared_ptr<void> user_data;  // set before the connection is shared, then read-only
    std::set<std::string> channels;  // under the server's mutex
};

connection::connection(std::shared_ptr<impl> p) : impl_(std::move(p))
{
}
connection::~connection() = default;

std::uint64_t connection::id() const noexcept
{
    return impl_->id;
}

const std::string& connection::remote() const noexcept
{
    return impl_->remote;
}

const std::string& connection::target() const noexcept
{
    return impl_->target;
}

const std::string& connection::subprotocol() const noexcept
{
    return impl_->s.subprotocol();
}

const std::shared_ptr<void>& connection::user_data() const noexcept
{
    return impl_->user_data;
}

asio::any_io_executor connection::get_executor() const noexcept
{
    return impl_->s.get_executor();
}

asio::awaitable<received> connection::receive()
{
    co_return co_await detail::session_access::receive(impl_->s);
}

void connection::start_send(std::string data, message_type type, detail::send_handler handler)
{
    // The session's own send steps onto its executor holding a plain pointer; a connection
    // may be released by every holder before that step runs, so it keeps itself alive.
    asio::dispatch(impl_->s.get_executor(),
                   [keep = impl_, data = std::move(data), type, h = std::move(handler)]() mutable {
                       keep->s.async_send(std::move(data), type, std::move(h));
                   });
}

void connection::start_send(std::shared_ptr<const std::string> data, message_type type, detail::send_handler handler)
{
    asio::dispatch(impl_->s.get_executor(),
                   [keep = impl_, data = std::move(data), type, h = std::move(handler)]() mutable {
                       keep->s.async_send(std::move(data), type, std::move(h));
                   });
}

asio::awaitable<error_code> connection::send(std::string data, message_type type)
{
    co_return co_await impl_->s.send(std::move(data), type);
}

asio::awaitable<error_code> connection::send(std::shared_ptr<const std::string> data, message_type type)
{
    co_return co_await impl_->s.send(std::move(data), type);
}

asio::awaitable<error_code> connection::close(std::uint16_t code, std::string reason)
{
    co_return co_await impl_->s.close(code, std::move(reason));
}

void connection::cancel()
{
    asio::dispatch(impl_->s.get_executor(), [keep = impl_] { keep->s.cancel(); });
}

bool connection::is_open() const noexcept
{
    return impl_->s.is_open();
}

bool connection::compressed() const noexcept
{
    return impl_->s.compressed();
}

traffic_counts connection::traffic() const noexcept
{
    return impl_->s.traffic();
}

queue_depths connection::queues() const noexcept
{
    return impl_->s.queues();
}

const disconnect_info& connection::last_disconnect() const noexcept
{
    return impl_->s.last_disconnect();
}

// ---------------------------------------------------------------------------------------
// server

struct server::impl final : detail::connection_observer, detail::budget_watch {
    impl(asio::any_io_executor ex, server_config cfg, handler_type handler)
        : ex_(ex), strand_(detail::serialized(std::move(ex))), cfg_(std::move(cfg)),
          session_cfg_(std::make_shared<const session_config>(cfg_.session)), handler_(std::move(handler)),
          all_done_(strand_),
          per_address_(cfg_.max_connections_per_address, cfg_.connects_per_address, cfg_.connect_window,
                       std::max(cfg_.max_connections, min_address_records)),
          budget_(std::make_shared<detail::memory_budget>(cfg_.memory_budget, cfg_.budget_grace)),
          budget_wake_(std::make_shared<detail::wakeup<asio::any_io_executor>>(strand_))
    {
    }

    /// Why a client is turned away: an HTTP status (0: it is not) and what to tell it.
    struct refusal {
        unsigned status = 0;
        std::chrono::milliseconds retry_after{0};
        std::string reason;  // which limit, whose; the start of on_rejected's detail
    };
    refusal judge(const detail::address_key& from);

    error_code listen(std::string* detail);
    error_code load_tls(std::string* detail);

    // The accept loop and the end of run(), on strand_.
    asio::awaitable<error_code> run_op();
    asio::awaitable<error_code> accept_loop();
    void admit(connection_ptr c, asio::ip::tcp::socket sock);
    asio::awaitable<void> drain(error_code& result);
    void count_rejection(const error_code& why);
    void cancel_all();
    void connection_done(bool refused, const detail::address_key& from);
    void stop_now();

    // The memory budget's watch, on strand_: woken when a connection finds the budget
    // short, it ends the heaviest holders if that lasts budget_grace.
    asio::awaitable<error_code> watch_budget();
    void evict_heaviest();
    void pressed() noexcept override
    {
        // Through a weak reference: a connection's news may arrive after run() returned and
        // the server was destroyed.
        asio::post(strand_, [wake = std::weak_ptr(budget_wake_)] {
            if (auto w = wake.lock())
                w->notify();
        });
    }

    // Each connection's life, on its own executor.
    asio::awaitable<bool> connection_main(connection_ptr c, asio::ip::tcp::socket sock, refusal no);
    void start_arms(const connection_ptr& c);
    void session_over(const connection_ptr& c);
    void arm_done(const connection_ptr& c);
    asio::awaitable<void> handler_arm(connection_ptr c);
    asio::awaitable<void> handler_call(connection_ptr c);
    asio::awaitable<void> handler_grace(connection_ptr c);
    asio::awaitable<void> shutdown_one(connection_ptr c);

    // The exception policy of every vigil event (session_events): a handler that throws
    // stops the server, and run() rethrows it. From any executor.
    template <class Handler, class... Args>
    void emit(const Handler& h, Args&&... args)
    {
        if (auto e = detail::notify(h, std::forward<Args>(args)...))
            handler_threw(std::move(e));
    }
    void handler_threw(std::exception_ptr e)
    {
        {
            std::lock_guard lock(mu_);
            if (!handler_exception_)
                handler_exception_ = std::move(e);
        }
        asio::dispatch(strand_, [this] { stop_now(); });
    }

    // A stall of the event loop shows at every connection whose timer was due meanwhile:
    // reported once, by the first that saw it. From any connection's executor.
    void stalled(std::chrono::steady_clock::duration lateness, std::chrono::steady_clock::time_point now) noexcept override
    {
        {
            std::lock_guard lock(mu_);
            const bool seen = now - lateness < stall_reported_until_;
            stall_reported_until_ = std::max(stall_reported_until_, now);
            if (seen)
                return;
            ++counters_.stalls;
        }
        emit(events_.on_stall, std::chrono::duration_cast<std::chrono::milliseconds>(lateness));
    }

    void round_trip(std::chrono::microseconds rtt) noexcept override
    {
        std::lock_guard lock(mu_);
        round_trips_.observe(rtt);
    }

    enum class activity { idle, running };

    asio::any_io_executor ex_;  // each connection gets a strand of its own over this
    asio::any_io_executor strand_;  // the accept loop and shutdown
    server_config cfg_;
    std::shared_ptr<const session_config> session_cfg_;  // one copy for every connection
    handler_type handler_;
    server_events events_;
    std::shared_ptr<asio::ssl::context> tls_;
    std::optional<asio::ip::tcp::acceptor> acceptor_;
    std::mutex listen_mu_;
    std::atomic<std::uint16_t> port_{0};

    // On strand_.
    activity activity_ = activity::idle;
    std::size_t live_ = 0;  // connection coroutines alive, refusals included
    std::size_t open_ = 0;  // of which counted against max_connections
    std::size_t refusing_ = 0;  // of which answering 503 or 429
    std::uint64_t next_id_ = 0;
    detail::wakeup<asio::any_io_executor> all_done_;
    detail::address_limits per_address_;  // open and recent connections per client address

    // Shared with the connections' executors and with callers on any thread.
    mutable std::mutex mu_;
    enum class accepting { yes, stopping } state_ = accepting::yes;
    std::map<std::uint64_t, connection_ptr> conns_;  // upgraded
    std::map<std::uint64_t, connection_ptr> pending_;  // still in their handshake
    server_counters counters_;
    reason_counts disconnects_;  // see server_metrics
    reason_counts rejections_;
    traffic_counts ended_traffic_;  // of the connections no longer in conns_
    duration_histogram round_trips_;
    std::exception_ptr handler_exception_;
    std::chrono::steady_clock::time_point stall_reported_until_{};

    // Shared with the connections: one may outlive the server.
    std::shared_ptr<detail::memory_budget> budget_;
    std::shared_ptr<detail::wakeup<asio::any_io_executor>> budget_wake_;

    // Channels and the fan-out. Members by channel under mu_, as each connection's own list.
    std::unordered_map<std::string, std::map<std::uint64_t, connection_ptr>> channels_;
    detail::origin_tracker origins_;  // under mu_: the other nodes' sequence numbers
    const std::string node_id_ = random_node_id();
    // Numbers this node's broadcasts and keeps local delivery and the hand-over to the
    // fan-out in one order. Recursive: a fan-out may complete inside publish(), and the
    // event that reports it may broadcast again.
    std::recursive_mutex publish_mu_;
    std::uint64_t seq_ = 0;
    /// What a fan-out's completion reaches: this server, until it is destroyed (a completion
    /// may come later, from another thread). Recursive for the same reason.
    struct fanout_guard {
        std::recursive_mutex mu;
        impl* owner = nullptr;
    };
    std::shared_ptr<fanout_guard> guard_;

    static std::string random_node_id();
    std::size_t deliver_local(const std::string& channel, const std::shared_ptr<const std::string>& data,
                              message_type type);
    std::size_t publish_channel(std::string_view channel, std::string data, message_type type,
                                std::function<void(error_code)> then);
    void fanout_done(std::string_view channel, const error_code& ec);
    void from_fanout(std::string_view bytes);
    void fanout_invalid(const std::string& why);
    void leave_all(connection::impl& ci);  // under mu_
    /// Under mu_: `c` is one of this server's open connections.
    bool is_mine(const connection_ptr& c) const
    {
        if (!c)
            return false;
        auto it = conns_.find(c->id());
        return it != conns_.end() && it->second == c;
    }
    void attach_fanout();
    void detach_fanout();
    ~impl() { detach_fanout(); }
};

std::string server::impl::random_node_id()
{
    std::random_device rd;
    const std::uint64_t v = (std::uint64_t{rd()} << 32) ^ rd();
    char out[17];
    std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(v));
    return out;
}

void server::impl::attach_fanout()
{
    if (!cfg_.fanout)
        return;
    guard_ = std::make_shared<fanout_guard>();
    guard_->owner = this;
    cfg_.fanout->set_receiver([this](std::string_view bytes) { from_fanout(bytes); });
}

void server::impl::detach_fanout()
{
    if (!cfg_.fanout)
        return;
    // No message arrives once set_receiver returns; a completion still to come finds no owner.
    cfg_.fanout->set_receiver({});
    std::lock_guard lock(guard_->mu);
    guard_->owner = nullptr;
}

std::size_t server::impl::deliver_local(const std::string& channel, const std::shared_ptr<const std::string>& data,
                                        message_type type)
{
    auto it = channels_.find(channel);
    if (it == channels_.end())
        return 0;
    for (auto& [id, c] : it->second)
        detail::session_access::send_shared(c->impl_->s, c->impl_, data, type);
    return it->second.size();
}

std::size_t server::impl::publish_channel(std::string_view channel, std::string data, message_type type,
                                          std::function<void(error_code)> then)
{
    if (channel.empty() || channel.size() > max_channel_name) {
        // No connection can have joined it, here or on another node: nothing to carry.
        if (then)
            then(asio::error::invalid_argument);
        return 0;
    }
    auto shared = std::make_shared<const std::string>(std::move(data));
    const std::string name(channel);
    if (!cfg_.fanout) {
        std::lock_guard lock(mu_);
        return deliver_local(name, shared, type);
    }
    std::lock_guard order(publish_mu_);
    std::size_t here = 0;
    {
        std::lock_guard lock(mu_);
        here = deliver_local(name, shared, type);
    }
    auto bytes = detail::encode_envelope({node_id_, ++seq_, type, name, *shared});
    cfg_.fanout->publish(std::move(bytes), [guard = guard_, name, then = std::move(then)](error_code ec) {
        {
            std::lock_guard lock(guard->mu);
            if (guard->owner)
                guard->owner->fanout_done(name, ec);
        }
        if (then)
            then(ec);
    });
    return here;
}

void server::impl::fanout_done(std::string_view channel, const error_code& ec)
{
    {
        std::lock_guard lock(mu_);
        ++(ec ? counters_.fanout_failed : counters_.fanout_published);
    }
    if (ec)
        emit(events_.on_fanout_error, channel, ec, std::string("the fan-out did not carry a broadcast to channel \"") +
                                                       detail::printable(channel, 80, true) + "\": " + ec.message());
}

void server::impl::fanout_invalid(const std::string& why)
{
    {
        std::lock_guard lock(mu_);
        ++counters_.fanout_invalid;
    }
    emit(events_.on_fanout_error, std::string_view(), error_code(error::fanout_message_invalid), why);
}

void server::impl::from_fanout(std::string_view bytes)
{
    std::string why;
    auto e = detail::decode_envelope(bytes, &why);
    if (!e)
        return fanout_invalid(why);
    if (e->node == node_id_)
        return;  // delivered here when it was published
    auto data = std::make_shared<const std::string>(e->data);
    const std::string channel(e->channel);
    detail::origin_tracker::verdict v;
    {
        std::lock_guard lock(mu_);
        v = origins_.observe(e->node, e->seq);
        if (v.what != detail::origin_tracker::verdict::kind::repeated) {
            counters_.fanout_missed += v.missed;
            ++counters_.fanout_received;
            deliver_local(channel, data, e->type);
        }
    }
    if (v.what == detail::origin_tracker::verdict::kind::repeated)
        return fanout_invalid("fan-out message: broadcast " + std::to_string(e->seq) + " of node " +
                              detail::printable(e->node, 64, false) + " arrived again or out of order; dropped");
    if (v.missed > 0)
        emit(events_.on_fanout_gap, e->node, v.missed);
}

void server::impl::leave_all(connection::impl& ci)
{
    for (const auto& name : ci.channels) {
        auto it = channels_.find(name);
        if (it == channels_.end())
            continue;
        it->second.erase(ci.id);
        if (it->second.empty())
            channels_.erase(it);
    }
    ci.channels.clear();
}

error_code server::impl::load_tls(std::string* detail)
{
    if (cfg_.tls.context) {
        tls_ = cfg_.tls.context;
        return {};
    }
    if (cfg_.tls.cert_file.empty())
        return {};
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    auto fail = [detail](std::string message) {
        if (detail)
            *detail = std::move(message);
        return error_code(error::invalid_config);
    };
    error_code ec;
    ctx->use_certificate_chain_file(cfg_.tls.cert_file, ec);
    if (ec)
        return fail(with_context("tls.cert_file \"" + detail::printable(cfg_.tls.cert_file, 128, false) + "\"", ec));
    ctx->use_private_key_file(cfg_.tls.key_file, asio::ssl::context::pem, ec);
    if (ec)
        return fail(with_context("tls.key_file \"" + detail::printable(cfg_.tls.key_file, 128, false) + "\"", ec));
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
        return fail("tls.key_file \"" + detail::printable(cfg_.tls.key_file, 128, false) +
                    "\" does not match the certificate in tls.cert_file");
    tls_ = std::move(ctx);
    return {};
}

error_code server::impl::listen(std::string* detail)
{
    std::lock_guard lock(listen_mu_);
    if (acceptor_)
        return {};
    if (auto ec = validate(cfg_, detail))
        return ec;
    if (auto ec = load_tls(detail))
        return ec;
    error_code ec;
    const auto addr = asio::ip::make_address(cfg_.bind, ec);
    const asio::ip::tcp::endpoint ep(addr, cfg_.port);
    asio::ip::tcp::acceptor acceptor(strand_);
    auto fail = [&](const char* step) {
        if (detail)
            *detail = with_context(std::string(step) + " " + endpoint_string(ep), ec);
        return ec;
    };
    if (acceptor.open(ep.protocol(), ec); ec)
        return fail("opening a socket for");
    // A restarted server must be able to bind while its old connections sit in TIME_WAIT.
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (acceptor.bind(ep, ec); ec)
        return fail("binding to");
    if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec)
        return fail("listening on");
    port_ = acceptor.local_endpoint(ec).port();
    acceptor_.emplace(std::move(acceptor));
    return {};
}

asio::awaitable<error_code> server::impl::run_op()
{
    co_await detail::enter_operation();
    if (activity_ == activity::running)
        co_return error::already_running;
    if (auto ec = listen(nullptr))
        co_return ec;
    activity_ = activity::running;
    using namespace asio::experimental::awaitable_operators;
    auto first = co_await (accept_loop() || watch_budget());
    // The watch returns only when cancelled: then so is run(). A cancellation that arrived
    // while the watch was winding down after a stop() was taken by the `||`: look for it.
    error_code result = first.index() == 0 ? std::get<0>(first) : error_code(asio::error::operation_aborted);
    if (detail::cancelled(co_await asio::this_coro::cancellation_state))
        result = asio::error::operation_aborted;
    {
        error_code ignored;
        acceptor_->close(ignored);
    }
    if (result == asio::error::operation_aborted)
        cancel_all();  // cancelled: no time for goodbyes
    co_await drain(result);
    activity_ = activity::idle;
    std::exception_ptr e;
    {
        std::lock_guard lock(mu_);
        e = std::exchange(handler_exception_, nullptr);
    }
    if (e)
        std::rethrow_exception(e);
    co_return result;
}

asio::awaitable<error_code> server::impl::accept_loop()
{
    asio::steady_timer pause_timer(strand_);
    for (;;) {
        auto stopping = [this] {
            std::lock_guard lock(mu_);
            return state_ == accepting::stopping;
        };
        if (stopping())
            co_return error_code{};
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        auto c = std::allocate_shared<connection>(detail::connection_allocator<connection>{},
                                                  std::make_shared<connection::impl>(ex_, session_cfg_, next_id_ + 1));
        asio::ip::tcp::socket sock(c->get_executor());
        auto [ec] = co_await acceptor_->async_accept(sock, asio::as_tuple(asio::use_awaitable));
        if (stopping())
            co_return error_code{};
        if (ec == asio::error::operation_aborted || detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
        if (!ec) {
            admit(std::move(c), std::move(sock));
            continue;
        }
        // Out of file descriptors, most likely: retrying at once would spin. The clients
        // wait in the listen backlog meanwhile.
        emit(events_.on_accept_error, ec);
        pause_timer.expires_after(std::chrono::milliseconds(100));
        auto [pec] = co_await pause_timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (pec && detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return asio::error::operation_aborted;
    }
}

asio::awaitable<error_code> server::impl::watch_budget()
{
    co_await detail::enter_operation();
    // Looked at again this often while short, so that the pressure's end is noticed.
    constexpr auto recheck = std::chrono::milliseconds(100);
    asio::steady_timer timer(strand_);
    for (;;) {
        if (!budget_->pressed()) {
            co_await budget_wake_->async_wait(asio::as_tuple(asio::use_awaitable));
        } else {
            const auto now = std::chrono::steady_clock::now();
            if (budget_->verdict(now))
                evict_heaviest();
            timer.expires_at(std::min(budget_->due(), now + recheck));
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return error_code{};  // the accept loop ended (only it does)
    }
}

void server::impl::evict_heaviest()
{
    std::vector<detail::holder> holders;
    std::map<std::uint64_t, connection_ptr> by_id;
    {
        std::lock_guard lock(mu_);
        for (auto& [id, c] : conns_) {
            auto* account = detail::session_access::budget(c->impl_->s);
            if (!account || account->evicted() || account->total() == 0)
                continue;
            holders.push_back({id, account->total()});
            by_id.emplace(id, c);
        }
    }
    const auto chosen = budget_->choose(std::move(holders));
    for (auto id : chosen) {
        auto& c = by_id.at(id);
        detail::session_access::budget(c->impl_->s)->mark_evicted();
        detail::session_access::evict(c->impl_->s, c->impl_);
    }
    std::lock_guard lock(mu_);
    counters_.budget_evictions += chosen.size();
}

// The limits, in order: max_connections, then those per address (which count the
// connection only when they let it in).
server::impl::refusal server::impl::judge(const detail::address_key& from)
{
    refusal no;
    if (open_ >= cfg_.max_connections) {
        no.status = 503;
        no.retry_after = cfg_.retry_after;
        no.reason = "at max_connections";
        return no;
    }
    using verdict = detail::address_limits::verdict;
    const auto v = per_address_.admit(from, std::chrono::steady_clock::now());
    switch (v.what) {
    case verdict::kind::accept:
        break;
    case verdict::kind::too_many_open:
        no.status = 503;
        no.retry_after = cfg_.retry_after;
        no.reason = from.to_string() + " at max_connections_per_address (" + std::to_string(v.count) + " open)";
        break;
    case verdict::kind::too_fast:
        no.status = 429;
        no.retry_after = v.retry_after;
        no.reason = from.to_string() + " at connects_per_address (" + std::to_string(v.count) + " in " +
                    std::to_string(cfg_.connect_window.count()) + " ms)";
        break;
    }
    return no;
}

void server::impl::admit(connection_ptr c, asio::ip::tcp::socket sock)
{
    ++next_id_;
    {
        error_code rec;
        const auto ep = sock.remote_endpoint(rec);
        c->impl_->remote = endpoint_string(ep);
        c->impl_->from = detail::address_key::of(ep.address());
    }
    auto no = judge(c->impl_->from);
    const bool refuse = no.status != 0;
    const bool unanswered = refuse && refusing_ >= max_refusing;
    {
        std::lock_guard lock(mu_);
        ++counters_.accepted;
        if (!refuse)
            ++counters_.open;
        if (unanswered)
            count_rejection(make_http_status_error(no.status));
    }
    if (unanswered) {
        error_code ignored;
        sock.close(ignored);
        emit(events_.on_rejected, c->remote(), make_http_status_error(no.status),
             no.reason + " and already answering 64 others: closed without an answer");
        return;
    }
    ++live_;
    ++(refuse ? refusing_ : open_);
    {
        // Known from the start, so that a cancelled run() can abort handshakes too.
        std::lock_guard lock(mu_);
        pending_.emplace(next_id_, c);
    }
    auto ex = c->get_executor();
    auto from = c->impl_->from;
    asio::co_spawn(ex, connection_main(std::move(c), std::move(sock), std::move(no)),
                   [this, refuse, from](std::exception_ptr e, bool handed_over) {
                       // An upgraded connection reports its own end, later (arm_done).
                       if (e || !handed_over)
                           connection_done(refuse, from);
                   });
}

// Under mu_.
void server::impl::count_rejection(const error_code& why)
{
    ++counters_.rejected;
    if (const auto status = http_status_of(why))
        ++rejections_["http_" + std::to_string(status)];
    else
        ++rejections_[disconnect_label(why)];
}

void server::impl::cancel_all()
{
    std::vector<connection_ptr> all;
    {
        std::lock_guard lock(mu_);
        state_ = accepting::stopping;
        for (auto& [id, c] : conns_)
            all.push_back(c);
        for (auto& [id, c] : pending_)
            all.push_back(c);
    }
    for (auto& c : all)
        c->cancel();
}

asio::awaitable<void> server::impl::drain(error_code& result)
{
    while (live_ > 0) {
        auto [ec] = co_await all_done_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec) {
            // Cancelled while draining: stop waiting for goodbyes.
            result = asio::error::operation_aborted;
            cancel_all();
        }
    }
}

void server::impl::connection_done(bool refused, const detail::address_key& from)
{
    // From the connection's executor to ours: live_ and friends are the accept loop's.
    asio::post(strand_, [this, refused, from] {
        --live_;
        --(refused ? refusing_ : open_);
        if (!refused && per_address_.enabled())
            per_address_.released(from, std::chrono::steady_clock::now());
        if (live_ == 0)
            all_done_.notify();
    });
}

// The upgrade, until the connection is registered; returns true once it is handed to its
// arms (start_arms), false when the client was turned away.
asio::awaitable<bool> server::impl::connection_main(connection_ptr c, asio::ip::tcp::socket sock, refusal no)
{
    const bool refuse = no.status != 0;
    auto& ci = *c->impl_;
    detail::accept_params params;
    params.tls = tls_.get();
    params.max_request_header = cfg_.max_request_header;
    // No handler, no one to receive: messages are dropped by the reader (no inbox).
    params.receive_queue_limit = handler_ ? cfg_.receive_queue_limit : 0;
    params.receive_queue_bytes = cfg_.receive_queue_bytes;
    if (cfg_.memory_budget > 0) {
        params.budget = budget_;
        params.watch = this;
    }
    params.server_name = cfg_.server_name;
    params.check = cfg_.check_upgrade ? &cfg_.check_upgrade : nullptr;
    params.subprotocols = &cfg_.subprotocols;
    if (params.check)
        params.remote = ci.remote;
    params.verdict = refuse ? detail::accept_params::answer::refuse : detail::accept_params::answer::accept;
    if (refuse) {
        params.retry_after = no.retry_after;
        params.refuse_status = no.status;
        params.refuse_reason = std::move(no.reason);
    }
    detail::session_access::observe(ci.s, this);
    auto accepted = co_await detail::session_access::accept(ci.s, std::move(sock), std::move(params));
    if (accepted.ec) {
        {
            std::lock_guard lock(mu_);
            pending_.erase(ci.id);
            count_rejection(accepted.ec);
            if (!refuse)
                --counters_.open;
        }
        emit(events_.on_rejected, ci.remote, accepted.ec, accepted.detail);
        co_return false;
    }
    ci.target = std::move(accepted.target);
    ci.user_data = std::move(accepted.user_data);
    bool stopping = false;
    {
        std::lock_guard lock(mu_);
        stopping = state_ == accepting::stopping;
        pending_.erase(ci.id);
        conns_.emplace(ci.id, c);
        ++counters_.connected;
    }
    emit(events_.on_connected, *c);
    // stop() took its snapshot of the connections before this one registered: close it here.
    if (stopping)
        asio::co_spawn(c->get_executor(), shutdown_one(c), asio::detached);
    start_arms(c);
    co_return true;
}

// The connection's life after the upgrade: its session's run() and, with a handler, the
// handler arm, each spawned on its own, whose completion counts down `arms`. Not a
// coroutine awaiting `run() && handler`: its frame and the `&&` machinery would be memory
// that every connection holds for as long as it lives.
void server::impl::start_arms(const connection_ptr& c)
{
    auto& ci = *c->impl_;
    const auto ex = c->get_executor();
    ci.arms = handler_ ? 2 : 1;
    if (handler_)
        ci.ended = std::make_unique<detail::wakeup<asio::any_io_executor>>(detail::session_access::executor(ci.s));
    // The session's run() without run()'s own frame, which every connection would hold.
    if (detail::session_access::begin_run(ci.s)) {
        asio::co_spawn(ex, detail::session_access::arms(ci.s), [this, c](std::exception_ptr, auto&&) {
            detail::session_access::finish_run(c->impl_->s);
            session_over(c);
        });
    } else {
        session_over(c);  // closed already (a shutdown that raced the upgrade)
    }
    if (handler_)
        asio::co_spawn(ex, handler_arm(c), [this, c](std::exception_ptr) { arm_done(c); });
}

void server::impl::session_over(const connection_ptr& c)
{
    c->impl_->now = connection::impl::stage::over;
    if (c->impl_->ended)
        c->impl_->ended->notify_later();
    arm_done(c);
}

void server::impl::arm_done(const connection_ptr& c)
{
    auto& ci = *c->impl_;
    if (--ci.arms > 0)
        return;
    auto why = disconnect_label(c->last_disconnect().reason);
    {
        std::lock_guard lock(mu_);
        conns_.erase(ci.id);
        leave_all(ci);
        ended_traffic_ += ci.s.traffic();  // in the same step: metrics() counts it once
        --counters_.open;
        ++counters_.disconnected;
        ++disconnects_[std::move(why)];
    }
    emit(events_.on_disconnected, *c);
    connection_done(false, ci.from);
}

asio::awaitable<void> server::impl::handler_arm(connection_ptr c)
{
    using namespace asio::experimental::awaitable_operators;
    auto& ci = *c->impl_;
    co_await (handler_call(c) || handler_grace(c));
    // The handler is done with the connection: close it (1011 if the handler failed).
    const bool failed = ci.handler == connection::impl::outcome::threw;
    if (ci.s.is_open())
        co_await ci.s.close(failed ? 1011 : 1000, failed ? "internal error" : "");
}

asio::awaitable<void> server::impl::handler_call(connection_ptr c)
{
    auto call = handler_(c);
    auto result = connection::impl::outcome::returned;
    try {
        co_await std::move(call);
    } catch (...) {
        // The handler's own failure: its connection closes with 1011; the server goes on.
        result = connection::impl::outcome::threw;
    }
    c->impl_->handler = result;
}

asio::awaitable<void> server::impl::handler_grace(connection_ptr c)
{
    co_await detail::enter_operation();
    auto& ci = *c->impl_;
    if (ci.now == connection::impl::stage::live) {
        co_await ci.ended->async_wait(asio::as_tuple(asio::use_awaitable));
        if (detail::cancelled(co_await asio::this_coro::cancellation_state))
            co_return;  // the handler returned first
    }
    // The connection is over and receive() says so; a handler that still has not returned
    // after close_timeout is cancelled, so that it cannot hold the server's shutdown.
    asio::steady_timer grace(co_await asio::this_coro::executor, cfg_.session.close_timeout);
    co_await grace.async_wait(asio::as_tuple(asio::use_awaitable));
}

asio::awaitable<void> server::impl::shutdown_one(connection_ptr c)
{
    auto& s = c->impl_->s;
    detail::session_access::report_end_as(s, error::server_shutdown,
                                          "the server is shutting down (close code 1001 sent)");
    co_await detail::with_deadline(
        [](session& s) -> asio::awaitable<error_code> { co_return co_await s.close(1001, "server shutting down"); }(s),
        cfg_.session.close_timeout, error::close_timeout, [&s] { s.cancel(); });
}

void server::impl::stop_now()
{
    std::vector<connection_ptr> all;
    {
        std::lock_guard lock(mu_);
        if (state_ == accepting::stopping)
            return;
        state_ = accepting::stopping;
        for (auto& [id, c] : conns_)
            all.push_back(c);
    }
    if (acceptor_) {
        error_code ignored;
        acceptor_->cancel(ignored);
    }
    for (auto& c : all)
        asio::co_spawn(c->get_executor(), shutdown_one(c), asio::detached);
}

// ---------------------------------------------------------------------------------------

server::server(asio::any_io_executor ex, server_config cfg, handler_type handler)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(cfg), std::move(handler)))
{
    impl_->attach_fanout();
}

server::~server() = default;

server_events& server::events() noexcept
{
    return impl_->events_;
}

error_code server::listen(std::string* detail)
{
    return impl_->listen(detail);
}

std::uint16_t server::port() const noexcept
{
    return impl_->port_.load();
}

asio::awaitable<error_code> server::run()
{
    co_return co_await asio::co_spawn(impl_->strand_, impl_->run_op(), asio::use_awaitable);
}

void server::stop()
{
    asio::dispatch(impl_->strand_, [p = impl_.get()] { p->stop_now(); });
}

std::size_t server::broadcast(std::string data, message_type type)
{
    auto shared = std::make_shared<const std::string>(std::move(data));
    std::lock_guard lock(impl_->mu_);
    for (auto& [id, c] : impl_->conns_)
        detail::session_access::send_shared(c->impl_->s, c->impl_, shared, type);
    return impl_->conns_.size();
}

error_code server::join(const connection_ptr& c, std::string channel)
{
    if (channel.empty() || channel.size() > max_channel_name)
        return asio::error::invalid_argument;
    std::lock_guard lock(impl_->mu_);
    if (!impl_->is_mine(c))
        return error::not_connected;
    impl_->channels_[channel].emplace(c->id(), c);
    c->impl_->channels.insert(std::move(channel));
    return {};
}

bool server::leave(const connection_ptr& c, std::string_view channel)
{
    std::lock_guard lock(impl_->mu_);
    // Another server's connection is guarded by another mutex: never touch it. An ended one
    // has left every channel already.
    if (!impl_->is_mine(c))
        return false;
    auto& mine = c->impl_->channels;
    auto at = mine.find(std::string(channel));
    if (at == mine.end())
        return false;
    if (auto it = impl_->channels_.find(*at); it != impl_->channels_.end()) {
        it->second.erase(c->id());
        if (it->second.empty())
            impl_->channels_.erase(it);
    }
    mine.erase(at);
    return true;
}

std::vector<std::string> server::channels(const connection_ptr& c) const
{
    std::lock_guard lock(impl_->mu_);
    if (!impl_->is_mine(c))
        return {};
    return {c->impl_->channels.begin(), c->impl_->channels.end()};
}

std::size_t server::broadcast(std::string_view channel, std::string data, message_type type)
{
    return impl_->publish_channel(channel, std::move(data), type, {});
}

asio::awaitable<error_code> server::publish(std::string channel, std::string data, message_type type)
{
    error_code result;
    auto token = asio::redirect_error(asio::use_awaitable, result);
    // Named, not a temporary in the co_await expression (g++ 12 destroys those twice).
    auto initiate = [p = impl_.get()](auto handler, std::string ch, std::string d, message_type t) {
        // std::function wants a copyable callable; the handler is move-only.
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        p->publish_channel(ch, std::move(d), t, [h](error_code ec) {
            auto ex = asio::get_associated_executor(*h);
            asio::dispatch(ex, [h, ec]() mutable { std::move(*h)(ec); });
        });
        if (!p->cfg_.fanout && !ch.empty() && ch.size() <= max_channel_name) {
            auto ex = asio::get_associated_executor(*h);
            asio::post(ex, [h]() mutable { std::move(*h)(error_code()); });
        }
    };
    co_await asio::async_initiate<decltype(token), void(error_code)>(initiate, token, std::move(channel),
                                                                     std::move(data), type);
    co_return result;
}

const std::string& server::node_id() const noexcept
{
    return impl_->node_id_;
}

std::vector<server::connection_ptr> server::connections() const
{
    std::vector<connection_ptr> all;
    std::lock_guard lock(impl_->mu_);
    all.reserve(impl_->conns_.size());
    for (auto& [id, c] : impl_->conns_)
        all.push_back(c);
    return all;
}

server_counters server::counters() const
{
    std::lock_guard lock(impl_->mu_);
    auto out = impl_->counters_;
    out.held_bytes = impl_->budget_->total();
    out.held_bytes_peak = impl_->budget_->peak();
    return out;
}

server_metrics server::metrics() const
{
    server_metrics out;
    std::lock_guard lock(impl_->mu_);
    out.counters = impl_->counters_;
    out.counters.held_bytes = impl_->budget_->total();
    out.counters.held_bytes_peak = impl_->budget_->peak();
    out.disconnects = impl_->disconnects_;
    out.rejections = impl_->rejections_;
    out.round_trips = impl_->round_trips_;
    out.traffic = impl_->ended_traffic_;
    for (const auto& [id, c] : impl_->conns_) {
        out.traffic += c->traffic();
        out.queues += c->queues();
    }
    return out;
}

}  // namespace vigil
