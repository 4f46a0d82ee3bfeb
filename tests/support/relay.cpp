// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <support/relay.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <future>
#include <thread>
#include <vector>

namespace vigil::test {

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

void abort_socket(tcp::socket& s)
{
    boost::system::error_code ec;
    s.set_option(asio::socket_base::linger(true, 0), ec);
    s.close(ec);
}

// Ping and pong frames counted in one direction, over every connection.
struct control_counts {
    std::atomic<std::size_t> pings{0};
    std::atomic<std::size_t> pongs{0};
};

// Follows the WebSocket frames of one direction of one connection as its bytes are
// forwarded: the HTTP head (request or response) up to its blank line, then frame headers,
// whose payloads it skips. Only headers are kept, so memory stays a few bytes whatever
// passes. TLS records are taken for an HTTP head that never ends: nothing is counted.
class frame_counter {
public:
    explicit frame_counter(control_counts& counts) : counts_(counts) {}

    void feed(const unsigned char* p, std::size_t n)
    {
        while (n > 0) {
            if (in_http_) {
                // Looks for "\r\n\r\n", keeping the last four bytes seen.
                tail_ = (tail_ << 8) | *p++;
                --n;
                if (tail_ == 0x0d0a0d0a)
                    in_http_ = false;
                continue;
            }
            if (skip_ > 0) {
                const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(skip_, n));
                p += k;
                n -= k;
                skip_ -= k;
                if (skip_ == 0)
                    frame_done();
                continue;
            }
            head_[have_++] = *p++;
            --n;
            if (have_ < head_size())
                continue;
            std::uint64_t len = head_[1] & 0x7f;
            if (len == 126)
                len = (std::uint64_t(head_[2]) << 8) | head_[3];
            else if (len == 127) {
                len = 0;
                for (std::size_t i = 2; i < 10; ++i)
                    len = (len << 8) | head_[i];
            }
            op_ = head_[0] & 0x0f;
            have_ = 0;
            skip_ = len;
            if (skip_ == 0)
                frame_done();
        }
    }

private:
    // Two bytes, then the extended length and the mask key as the second byte announces.
    std::size_t head_size() const
    {
        if (have_ < 2)
            return 2;
        const auto len7 = head_[1] & 0x7f;
        const std::size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        return 2 + ext + ((head_[1] & 0x80) ? 4 : 0);
    }

    void frame_done()
    {
        if (op_ == 0x9)
            ++counts_.pings;
        else if (op_ == 0xA)
            ++counts_.pongs;
    }

    control_counts& counts_;
    bool in_http_ = true;
    std::uint32_t tail_ = 0;
    std::array<unsigned char, 14> head_{};
    std::size_t have_ = 0;
    std::uint64_t skip_ = 0;
    unsigned op_ = 0;
};

struct link {
    link(tcp::socket client, std::atomic<std::size_t>& active, control_counts& to_target,
         control_counts& to_client)
        : client_(std::move(client)), server_(client_.get_executor()), active_(active),
          to_target_(to_target), to_client_(to_client)
    {
        ++active_;
    }
    ~link() { --active_; }

    void close_both()
    {
        boost::system::error_code ec;
        client_.close(ec);
        server_.close(ec);
    }

    tcp::socket client_;
    tcp::socket server_;
    int open_directions_ = 2;
    std::atomic<std::size_t>& active_;
    frame_counter to_target_;
    frame_counter to_client_;
};

}  // namespace

struct relay::impl {
    impl(std::uint16_t target_port, const std::string& target_host);
    ~impl();

    asio::awaitable<void> accept_loop();
    asio::awaitable<void> serve(tcp::socket client);
    asio::awaitable<void> pump(std::shared_ptr<link> l, tcp::socket& from, tcp::socket& to,
                               frame_counter& frames);
    asio::awaitable<void> wait_thawed();

    template <class F>
    void on_relay_thread(F f)
    {
        std::promise<void> done;
        auto finished = done.get_future();
        asio::post(ioc_, [&] {
            f();
            done.set_value();
        });
        finished.wait();
    }

    asio::io_context ioc_{1};
    tcp::acceptor acceptor_{ioc_};
    tcp::endpoint target_;
    std::uint16_t port_ = 0;
    // Written on the relay thread only; atomic so that `frozen()` may read it anywhere.
    std::atomic<bool> frozen_{false};
    // Never expires: pumps wait on it while frozen, and thaw() cancels it to wake them all.
    asio::steady_timer thawed_{ioc_};
    std::atomic<std::size_t> connections_{0};
    std::atomic<std::size_t> active_{0};
    control_counts to_target_;
    control_counts to_client_;
    std::vector<std::weak_ptr<link>> links_;
    std::thread thread_;
};

relay::impl::impl(std::uint16_t target_port, const std::string& target_host)
    : target_(asio::ip::make_address(target_host), target_port)
{
    tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(ioc_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
}

relay::impl::~impl()
{
    asio::post(ioc_, [this] {
        boost::system::error_code ec;
        acceptor_.close(ec);
        for (auto& w : links_)
            if (auto l = w.lock())
                l->close_both();
        thawed_.cancel();
        ioc_.stop();
    });
    thread_.join();
}

asio::awaitable<void> relay::impl::accept_loop()
{
    for (;;) {
        auto [ec, client] = co_await acceptor_.async_accept(use_tuple);
        if (ec) {
            if (!acceptor_.is_open() || ec == asio::error::operation_aborted)
                co_return;
            continue;
        }
        ++connections_;
        asio::co_spawn(ioc_, serve(std::move(client)), asio::detached);
    }
}

asio::awaitable<void> relay::impl::serve(tcp::socket client)
{
    auto l = std::make_shared<link>(std::move(client), active_, to_target_, to_client_);
    auto [ec] = co_await l->server_.async_connect(target_, use_tuple);
    if (ec) {
        abort_socket(l->client_);
        co_return;
    }
    // Heartbeat frames are tiny; Nagle would hold them back and distort every RTT.
    boost::system::error_code ignored;
    l->client_.set_option(tcp::no_delay(true), ignored);
    l->server_.set_option(tcp::no_delay(true), ignored);
    std::erase_if(links_, [](const std::weak_ptr<link>& w) { return w.expired(); });
    links_.push_back(l);
    asio::co_spawn(ioc_, pump(l, l->client_, l->server_, l->to_target_), asio::detached);
    asio::co_spawn(ioc_, pump(l, l->server_, l->client_, l->to_client_), asio::detached);
}

asio::awaitable<void> relay::impl::wait_thawed()
{
    while (frozen_.load())
        co_await thawed_.async_wait(use_tuple);
}

asio::awaitable<void> relay::impl::pump(std::shared_ptr<link> l, tcp::socket& from,
                                        tcp::socket& to, frame_counter& frames)
{
    std::array<char, 16 * 1024> buf;
    for (;;) {
        auto [ec, n] = co_await from.async_read_some(asio::buffer(buf), use_tuple);
        // Whatever happened on the way in, data or close, waits while frozen.
        co_await wait_thawed();
        if (ec == asio::error::eof) {
            boost::system::error_code ignored;
            to.shutdown(tcp::socket::shutdown_send, ignored);
            if (--l->open_directions_ == 0)
                l->close_both();
            co_return;
        }
        if (ec) {
            // A reset (or our own teardown) on one side becomes a reset on the other.
            abort_socket(to);
            l->close_both();
            co_return;
        }
        auto [wec, m] = co_await asio::async_write(to, asio::buffer(buf.data(), n), use_tuple);
        if (wec) {
            abort_socket(from);
            l->close_both();
            co_return;
        }
        frames.feed(reinterpret_cast<const unsigned char*>(buf.data()), n);
    }
}

relay::relay(std::uint16_t target_port, std::string target_host)
    : impl_(std::make_unique<impl>(target_port, target_host))
{
}

relay::~relay() = default;

std::uint16_t relay::port() const noexcept
{
    return impl_->port_;
}

std::string relay::url(std::string scheme, std::string host) const
{
    if (host.find(':') != std::string::npos)
        host = "[" + host + "]";
    return scheme + "://" + host + ":" + std::to_string(port()) + "/";
}

void relay::freeze()
{
    impl_->on_relay_thread([this] {
        impl_->frozen_.store(true);
        impl_->thawed_.expires_at(asio::steady_timer::time_point::max());
    });
}

void relay::thaw()
{
    impl_->on_relay_thread([this] {
        impl_->frozen_.store(false);
        impl_->thawed_.cancel();
    });
}

bool relay::frozen() const noexcept
{
    return impl_->frozen_.load();
}

std::size_t relay::connections() const noexcept
{
    return impl_->connections_.load();
}

std::size_t relay::active() const noexcept
{
    return impl_->active_.load();
}

std::size_t relay::pings_to_client() const noexcept
{
    return impl_->to_client_.pings.load();
}

std::size_t relay::pongs_to_client() const noexcept
{
    return impl_->to_client_.pongs.load();
}

std::size_t relay::pings_to_target() const noexcept
{
    return impl_->to_target_.pings.load();
}

std::size_t relay::pongs_to_target() const noexcept
{
    return impl_->to_target_.pongs.load();
}

void relay::reset_all()
{
    impl_->on_relay_thread([this] {
        auto links = impl_->links_;
        for (auto& w : links)
            if (auto l = w.lock()) {
                abort_socket(l->client_);
                abort_socket(l->server_);
            }
    });
}

}  // namespace vigil::test
