// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <support/peer.hpp>

#include <algorithm>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <future>
#include <optional>
#include <thread>

namespace vigil::test {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Small enough that a client writing to a peer that does not read stalls after a few
// hundred KiB (the kernel doubles the value and enforces a floor).
constexpr int small_rcvbuf = 4096;

// Long enough never to matter in a test, short enough that a broken handshake does not pin
// a connection for the whole run.
constexpr auto beast_handshake_limit = std::chrono::seconds(5);

struct conn_base {
    virtual ~conn_base() = default;
    virtual void apply(peer_behaviour b) = 0;
    virtual void reset() = 0;
    virtual void shutdown() = 0;
};

void abort_fd(int fd)
{
    // Linger 0 turns close() into a reset, as a crashed process would produce.
    ::linger lg{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    ::close(fd);
}

}  // namespace

struct peer::impl {
    explicit impl(peer_options opts);
    ~impl();

    asio::awaitable<void> accept_loop();
    asio::awaitable<void> handle(tcp::socket sock);
    template <class Stream>
    asio::awaitable<void> serve(Stream stream);

    // Keeps a socket's kernel object open, unread and unwritten, until the peer is destroyed.
    void park(tcp::socket& sock, bool small_buffer);
    void track(const std::shared_ptr<conn_base>& c);

    // Runs f on the peer's thread and waits for it, so that a test that switches behaviour
    // knows the switch is done when the call returns.
    template <class F>
    void on_peer_thread(F f);

    peer_options opts_;
    // Declared before the io_context: TLS streams still queued in it are destroyed with it.
    std::optional<asio::ssl::context> ssl_;
    asio::io_context ioc_{1};
    tcp::acceptor acceptor_{ioc_};
    std::uint16_t port_ = 0;

    std::atomic<peer_behaviour> behaviour_;
    std::atomic<std::size_t> connections_{0};
    std::atomic<std::size_t> requests_{0};
    std::atomic<std::size_t> upgrades_{0};
    std::atomic<std::size_t> messages_{0};
    std::atomic<std::size_t> pings_{0};
    std::atomic<std::size_t> closes_{0};

    // Touched on the peer's thread only.
    std::vector<std::weak_ptr<conn_base>> live_;
    std::vector<int> parked_;

    std::thread thread_;
};

namespace {

template <class Stream>
class ws_conn final : public conn_base, public std::enable_shared_from_this<ws_conn<Stream>> {
public:
    ws_conn(peer::impl& owner, Stream&& stream)
        : owner_(owner), ws_(std::move(stream)), timer_(ws_.get_executor())
    {
    }

    asio::awaitable<void> run(http::request<http::string_body> req)
    {
        ws_.set_option(websocket::stream_base::timeout{
            beast_handshake_limit, websocket::stream_base::none(), false});
        ws_.set_option(websocket::stream_base::decorator(
            [](websocket::response_type& res) { res.set(http::field::server, "vigil-test-peer"); }));
        ws_.read_message_max(64 * 1024 * 1024);
        ws_.control_callback([this](websocket::frame_type kind, auto) { on_control(kind); });

        auto [ec] = co_await ws_.async_accept(req, use_tuple);
        if (ec)
            co_return;
        upgraded_ = true;
        ++owner_.upgrades_;
        if (owner_.behaviour_.load() == peer_behaviour::send_raw) {
            co_await asio::async_write(ws_.next_layer(), asio::buffer(owner_.opts_.raw_bytes), use_tuple);
            park(false);
            co_return;
        }
        apply(owner_.behaviour_.load());
        if (parked_ || closing_)
            co_return;
        co_await read_loop();
        done_ = true;
        timer_.cancel();
    }

    void apply(peer_behaviour b) override
    {
        if (!upgraded_ || parked_ || done_)
            return;
        switch (b) {
        case peer_behaviour::silent:
            park(false);
            break;
        case peer_behaviour::stop_reading:
            park(true);
            break;
        case peer_behaviour::stream:
            if (!streaming_ && !closing_) {
                streaming_ = true;
                asio::co_spawn(ws_.get_executor(), stream_loop(this->shared_from_this()),
                               asio::detached);
            }
            break;
        case peer_behaviour::close_with:
            if (!closing_) {
                closing_ = true;
                asio::co_spawn(ws_.get_executor(), close_loop(this->shared_from_this()),
                               asio::detached);
            }
            break;
        default:
            break;
        }
    }

    void reset() override
    {
        if (parked_ || done_)
            return;
        boost::system::error_code ec;
        auto& sock = beast::get_lowest_layer(ws_).socket();
        sock.set_option(asio::socket_base::linger(true, 0), ec);
        sock.close(ec);
        done_ = true;
        timer_.cancel();
    }

    void shutdown() override
    {
        boost::system::error_code ec;
        beast::get_lowest_layer(ws_).socket().close(ec);
        timer_.cancel();
        done_ = true;
    }

private:
    void on_control(websocket::frame_type kind)
    {
        if (kind == websocket::frame_type::ping) {
            ++owner_.pings_;
        } else if (kind == websocket::frame_type::close) {
            ++owner_.closes_;
            // Beast would answer the close right after this callback returns; taking the
            // socket away first makes that answer fail, and the client never sees it.
            if (owner_.behaviour_.load() == peer_behaviour::ignore_close)
                park(false);
        }
    }

    // Stops all reading and writing for good while the TCP connection stays open: the
    // descriptor moves to the owner, and every pending operation here ends with an error.
    void park(bool small_buffer)
    {
        if (parked_)
            return;
        parked_ = true;
        timer_.cancel();
        owner_.park(beast::get_lowest_layer(ws_).socket(), small_buffer);
    }

    // The spawned loops take a shared_ptr to this connection as an unnamed parameter: the
    // coroutine frame holds it, so the connection lives as long as any loop does.
    asio::awaitable<void> read_loop()
    {
        if (owner_.behaviour_.load() == peer_behaviour::slow_reading)
            co_return co_await slow_read_loop();
        beast::flat_buffer buf;
        for (;;) {
            auto [ec, n] = co_await ws_.async_read(buf, use_tuple);
            if (ec || parked_)
                co_return;
            ++owner_.messages_;
            auto b = owner_.behaviour_.load();
            if (b == peer_behaviour::echo || b == peer_behaviour::stream ||
                b == peer_behaviour::ignore_close)
                enqueue(beast::buffers_to_string(buf.data()), ws_.got_binary());
            buf.consume(buf.size());
        }
    }

    // slow_read_bytes of message data per stream_period, then a pause: a thin link.
    asio::awaitable<void> slow_read_loop()
    {
        beast::flat_buffer buf;
        for (;;) {
            std::size_t budget = owner_.opts_.slow_read_bytes;
            while (budget > 0) {
                auto [ec, n] = co_await ws_.async_read_some(buf, budget, use_tuple);
                if (ec || parked_ || done_)
                    co_return;
                budget -= std::min(budget, n);
                if (ws_.is_message_done())
                    ++owner_.messages_;
                buf.consume(buf.size());
            }
            timer_.expires_after(owner_.opts_.stream_period);
            co_await timer_.async_wait(use_tuple);
            if (parked_ || done_)
                co_return;
        }
    }

    void enqueue(std::string data, bool binary)
    {
        if (parked_ || closing_ || done_)
            return;
        out_.emplace_back(std::move(data), binary);
        if (!writing_) {
            writing_ = true;
            asio::co_spawn(ws_.get_executor(), write_loop(this->shared_from_this()),
                           asio::detached);
        }
    }

    asio::awaitable<void> write_loop(std::shared_ptr<ws_conn> /*keep_alive*/)
    {
        while (!out_.empty() && !parked_ && !closing_) {
            ws_.binary(out_.front().second);
            auto [ec, n] = co_await ws_.async_write(asio::buffer(out_.front().first), use_tuple);
            if (ec) {
                done_ = true;
                break;
            }
            out_.pop_front();
        }
        out_.clear();
        writing_ = false;
    }

    asio::awaitable<void> stream_loop(std::shared_ptr<ws_conn> /*keep_alive*/)
    {
        std::uint64_t seq = 0;
        for (;;) {
            timer_.expires_after(owner_.opts_.stream_period);
            auto [ec] = co_await timer_.async_wait(use_tuple);
            if (ec || parked_ || done_ || closing_ ||
                owner_.behaviour_.load() != peer_behaviour::stream)
                break;
            enqueue("stream " + std::to_string(seq++), false);
        }
        streaming_ = false;
    }

    asio::awaitable<void> close_loop(std::shared_ptr<ws_conn> /*keep_alive*/)
    {
        websocket::close_reason why(static_cast<websocket::close_code>(owner_.opts_.close_code),
                                    owner_.opts_.close_reason);
        co_await ws_.async_close(why, use_tuple);
        done_ = true;
        timer_.cancel();
    }

    peer::impl& owner_;
    websocket::stream<Stream> ws_;
    asio::steady_timer timer_;
    std::deque<std::pair<std::string, bool>> out_;
    bool upgraded_ = false;
    bool writing_ = false;
    bool streaming_ = false;
    bool closing_ = false;
    bool parked_ = false;
    bool done_ = false;
};

}  // namespace

peer::impl::impl(peer_options opts) : opts_(std::move(opts)), behaviour_(opts_.behaviour)
{
    if (opts_.tls) {
        ssl_.emplace(asio::ssl::context::tls_server);
        ssl_->use_certificate_chain_file(opts_.cert_file);
        ssl_->use_private_key_file(opts_.key_file, asio::ssl::context::pem);
    }
    tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), opts_.port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    // Accepted sockets inherit the listener's buffer size, and the TCP window is negotiated
    // from it, so a peer born not reading must shrink it before listening.
    if (opts_.behaviour == peer_behaviour::stop_reading)
        acceptor_.set_option(asio::socket_base::receive_buffer_size(small_rcvbuf));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(ioc_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
}

peer::impl::~impl()
{
    asio::post(ioc_, [this] {
        boost::system::error_code ec;
        acceptor_.close(ec);
        for (auto& w : live_)
            if (auto c = w.lock())
                c->shutdown();
        for (int fd : parked_)
            ::close(fd);
        parked_.clear();
        // Whatever is still in flight is destroyed with the io_context, unrun.
        ioc_.stop();
    });
    thread_.join();
}

template <class F>
void peer::impl::on_peer_thread(F f)
{
    if (ioc_.get_executor().running_in_this_thread()) {
        f();
        return;
    }
    std::promise<void> done;
    auto finished = done.get_future();
    asio::post(ioc_, [&] {
        f();
        done.set_value();
    });
    finished.wait();
}

void peer::impl::park(tcp::socket& sock, bool small_buffer)
{
    boost::system::error_code ec;
    if (!sock.is_open())
        return;
    if (small_buffer)
        sock.set_option(asio::socket_base::receive_buffer_size(small_rcvbuf), ec);
    int fd = sock.release(ec);
    if (!ec)
        parked_.push_back(fd);
}

void peer::impl::track(const std::shared_ptr<conn_base>& c)
{
    std::erase_if(live_, [](const std::weak_ptr<conn_base>& w) { return w.expired(); });
    live_.push_back(c);
}

asio::awaitable<void> peer::impl::accept_loop()
{
    for (;;) {
        auto [ec, sock] = co_await acceptor_.async_accept(use_tuple);
        if (ec) {
            if (!acceptor_.is_open() || ec == asio::error::operation_aborted)
                co_return;
            continue;
        }
        asio::co_spawn(ioc_, handle(std::move(sock)), asio::detached);
    }
}

asio::awaitable<void> peer::impl::handle(tcp::socket sock)
{
    ++connections_;
    boost::system::error_code opt_ec;
    // Without it, a small echo that follows a large one waits for the client's delayed ACK
    // (Nagle), and round trips measure 40 ms of kernel policy instead of the code under test.
    sock.set_option(tcp::no_delay(true), opt_ec);
    if (behaviour_.load() == peer_behaviour::stop_reading)
        sock.set_option(asio::socket_base::receive_buffer_size(small_rcvbuf), opt_ec);
    beast::tcp_stream plain(std::move(sock));
    if (!ssl_) {
        co_await serve(std::move(plain));
        co_return;
    }
    beast::ssl_stream<beast::tcp_stream> secure(std::move(plain), *ssl_);
    beast::get_lowest_layer(secure).expires_after(beast_handshake_limit);
    auto [ec] = co_await secure.async_handshake(asio::ssl::stream_base::server, use_tuple);
    if (ec)
        co_return;
    beast::get_lowest_layer(secure).expires_never();
    co_await serve(std::move(secure));
}

template <class Stream>
asio::awaitable<void> peer::impl::serve(Stream stream)
{
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    auto [ec, n] = co_await http::async_read(stream, buf, req, use_tuple);
    if (ec)
        co_return;
    ++requests_;

    auto b = behaviour_.load();
    if (b == peer_behaviour::no_upgrade_answer) {
        park(beast::get_lowest_layer(stream).socket(), false);
        co_return;
    }
    if (b == peer_behaviour::raw_upgrade_answer) {
        co_await asio::async_write(stream, asio::buffer(opts_.raw_bytes), use_tuple);
        park(beast::get_lowest_layer(stream).socket(), false);
        co_return;
    }
    if (b == peer_behaviour::reject || !websocket::is_upgrade(req)) {
        auto status = b == peer_behaviour::reject ? opts_.reject_status : 426u;
        http::response<http::string_body> res{static_cast<http::status>(status), req.version()};
        res.set(http::field::server, "vigil-test-peer");
        res.set(http::field::content_type, "text/plain");
        for (const auto& [name, value] : opts_.reject_headers)
            res.set(name, value);
        res.body() = "refused by the test peer\n";
        res.keep_alive(false);
        res.prepare_payload();
        co_await http::async_write(stream, res, use_tuple);
        boost::system::error_code ignored;
        beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ignored);
        co_return;
    }

    auto c = std::make_shared<ws_conn<Stream>>(*this, std::move(stream));
    track(c);
    co_await c->run(std::move(req));
}

peer::peer(peer_options opts) : impl_(std::make_unique<impl>(std::move(opts))) {}

peer::~peer() = default;

std::uint16_t peer::port() const noexcept
{
    return impl_->port_;
}

std::string peer::url(std::string host) const
{
    if (host.find(':') != std::string::npos)
        host = "[" + host + "]";
    return (impl_->opts_.tls ? "wss://" : "ws://") + host + ":" + std::to_string(port()) + "/";
}

void peer::set_behaviour(peer_behaviour b)
{
    impl_->behaviour_.store(b);
    impl_->on_peer_thread([this, b] {
        auto live = impl_->live_;
        for (auto& w : live)
            if (auto c = w.lock())
                c->apply(b);
    });
}

peer_behaviour peer::behaviour() const noexcept
{
    return impl_->behaviour_.load();
}

std::size_t peer::connections() const noexcept
{
    return impl_->connections_.load();
}

std::size_t peer::requests() const noexcept
{
    return impl_->requests_.load();
}

std::size_t peer::upgrades() const noexcept
{
    return impl_->upgrades_.load();
}

std::size_t peer::messages() const noexcept
{
    return impl_->messages_.load();
}

std::size_t peer::pings() const noexcept
{
    return impl_->pings_.load();
}

std::size_t peer::closes() const noexcept
{
    return impl_->closes_.load();
}

void peer::reset_all()
{
    impl_->on_peer_thread([this] {
        auto live = impl_->live_;
        for (auto& w : live)
            if (auto c = w.lock())
                c->reset();
        for (int fd : impl_->parked_)
            abort_fd(fd);
        impl_->parked_.clear();
    });
}

}  // namespace vigil::test
