// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A byte stream that is plain TCP or TLS over TCP, chosen per connection at run time.
// One websocket::stream<any_stream> instantiation serves ws:// and wss://, which halves the
// Beast template code compiled into lib/ compared with templating the session on the stream.

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <optional>
#include <utility>

namespace vigil::detail {

class any_stream {
public:
    using executor_type = boost::asio::any_io_executor;
    using tcp_socket = boost::asio::ip::tcp::socket;
    using tls_stream = boost::beast::ssl_stream<tcp_socket>;

    /// Plain TCP when `ctx` is null, TLS over TCP otherwise.
    any_stream(executor_type ex, boost::asio::ssl::context* ctx)
    {
        if (ctx)
            tls_.emplace(std::move(ex), *ctx);
        else
            plain_.emplace(std::move(ex));
    }

    /// Adopts an accepted socket (the server side); TLS over it when `ctx` is not null.
    any_stream(tcp_socket sock, boost::asio::ssl::context* ctx)
    {
        if (ctx)
            tls_.emplace(std::move(sock), *ctx);
        else
            plain_.emplace(std::move(sock));
    }

    executor_type get_executor() noexcept { return socket().get_executor(); }

    tcp_socket& socket() noexcept { return tls_ ? tls_->next_layer() : *plain_; }
    tls_stream* tls() noexcept { return tls_ ? &*tls_ : nullptr; }

    template <class MutableBufferSequence, class ReadHandler>
    auto async_read_some(const MutableBufferSequence& buffers, ReadHandler&& handler)
    {
        if (tls_)
            return tls_->async_read_some(buffers, std::forward<ReadHandler>(handler));
        return plain_->async_read_some(buffers, std::forward<ReadHandler>(handler));
    }

    template <class ConstBufferSequence, class WriteHandler>
    auto async_write_some(const ConstBufferSequence& buffers, WriteHandler&& handler)
    {
        if (tls_)
            return tls_->async_write_some(buffers, std::forward<WriteHandler>(handler));
        return plain_->async_write_some(buffers, std::forward<WriteHandler>(handler));
    }

    /// Beast closes the lowest layer on its own timeouts and failures.
    friend void beast_close_socket(any_stream& s)
    {
        boost::system::error_code ignored;
        s.socket().close(ignored);
    }

    friend void teardown(boost::beast::role_type role, any_stream& s, boost::system::error_code& ec)
    {
        using boost::beast::websocket::teardown;
        if (s.tls_)
            teardown(role, *s.tls_, ec);
        else
            teardown(role, *s.plain_, ec);
    }

    template <class TeardownHandler>
    friend void async_teardown(boost::beast::role_type role, any_stream& s, TeardownHandler&& handler)
    {
        using boost::beast::websocket::async_teardown;
        if (s.tls_)
            async_teardown(role, *s.tls_, std::forward<TeardownHandler>(handler));
        else
            async_teardown(role, *s.plain_, std::forward<TeardownHandler>(handler));
    }

private:
    std::optional<tcp_socket> plain_;
    std::optional<tls_stream> tls_;
};

}  // namespace vigil::detail
