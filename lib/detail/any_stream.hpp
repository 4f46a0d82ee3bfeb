// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// A byte stream that is plain TCP or TLS over TCP, chosen per connection at run time.
// One websocket::stream<any_stream> instantiation serves ws:// and wss://, which halves the
// Beast template code compiled into lib/ compared with templating the session on the stream.
//
// It is also where the session learns that Beast closes the connection on its own (the
// peer's close frame answered, or a protocol violation failed): Beast writes its close frame
// and then tears TCP down through this stream, so every write and the teardown tell the
// session's `closing` hook, and a teardown that the peer never lets finish can be cut short
// (`cut_teardown()`), after which Beast reports the close or the violation as usual.
//
// Two more things Beast cannot be told: bytes already received for it (what a client sent
// right behind its upgrade request, read into the request's buffer) are handed back with
// `unread()` and returned by the next reads before the socket's; and a close frame Beast
// is about to write can be made to carry another code (`answer_close_with()`), because
// Beast 1.81 echoes some close codes that RFC 6455 forbids on the wire.

#include <vigil/error.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace vigil::detail {

class any_stream {
public:
    using executor_type = boost::asio::any_io_executor;
    using tcp_socket = boost::asio::ip::tcp::socket;
    using tls_stream = boost::beast::ssl_stream<tcp_socket>;
    /// Returns true once the websocket stream is closing (no longer open).
    using closing_hook = bool (*)(void* owner);

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

    /// `hook(owner)` runs before every write and when the teardown begins; the owner looks
    /// whether the websocket stream is still open, and says whether it is closing.
    void watch_closing(closing_hook hook, void* owner) noexcept
    {
        hook_ = hook;
        owner_ = owner;
    }

    /// Ends a teardown in progress now, as if the peer had closed its side: the socket is
    /// closed and Beast's operation goes on with its own result. False when none is pending.
    bool cut_teardown() noexcept
    {
        if (!teardown_ || teardown_->how == teardown_state::ending::cut)
            return false;
        teardown_->how = teardown_state::ending::cut;
        boost::system::error_code ignored;
        socket().close(ignored);
        return true;
    }

    /// Bytes already taken from the connection (past the end of the upgrade request): the
    /// next reads return them, in order, before reading the connection again.
    void unread(std::string_view bytes)
    {
        if (bytes.empty())
            return;
        if (!unread_)
            unread_ = std::make_unique<pending_input>();
        unread_->bytes.append(bytes.data(), bytes.size());
    }

    /// The next close frame written once the websocket stream is closing (Beast's answer to
    /// the peer's close, or our own) carries `code` and no longer the code Beast chose, its
    /// reason kept. For a received close code that RFC 6455 forbids on the wire, which Beast
    /// 1.81 accepts and would echo (5000 and above).
    void answer_close_with(std::uint16_t code)
    {
        recode_ = std::make_unique<recoded_close>();
        recode_->code = code;
    }

    template <class MutableBufferSequence, class ReadHandler>
    auto async_read_some(const MutableBufferSequence& buffers, ReadHandler&& handler)
    {
        return boost::asio::async_initiate<ReadHandler, void(boost::system::error_code, std::size_t)>(
            [this](auto h, const MutableBufferSequence& b) {
                if (unread_)
                    read_unread(b, std::move(h));
                else if (tls_)
                    tls_->async_read_some(b, std::move(h));
                else
                    plain_->async_read_some(b, std::move(h));
            },
            handler, buffers);
    }

    template <class ConstBufferSequence, class WriteHandler>
    auto async_write_some(const ConstBufferSequence& buffers, WriteHandler&& handler)
    {
        const bool closing = hook_ && hook_(owner_);
        if (closing && recode_) {
            if (auto frame = recoded(buffers))
                return write_some(*frame, std::forward<WriteHandler>(handler));
        }
        return write_some(buffers, std::forward<WriteHandler>(handler));
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
        if (s.hook_)
            s.hook_(s.owner_);
        s.teardown_ = std::make_unique<teardown_state>(std::forward<TeardownHandler>(handler));
        auto done = [&s](boost::system::error_code ec) { s.teardown_done(ec); };
        if (s.tls_)
            async_teardown(role, *s.tls_, std::move(done));
        else
            async_teardown(role, *s.plain_, std::move(done));
    }

private:
    struct pending_input {
        std::string bytes;
        std::size_t taken = 0;
    };

    // A close frame rewritten with another code: the same length as Beast's, so that what
    // Beast counts as written stays true however the writes are split.
    struct recoded_close {
        std::uint16_t code = 0;
        std::array<unsigned char, 2 + 4 + 125> frame{};  // the largest close frame
        std::size_t size = 0;  // 0: not begun
    };

    template <class ConstBufferSequence, class WriteHandler>
    auto write_some(const ConstBufferSequence& buffers, WriteHandler&& handler)
    {
        if (tls_)
            return tls_->async_write_some(buffers, std::forward<WriteHandler>(handler));
        return plain_->async_write_some(buffers, std::forward<WriteHandler>(handler));
    }

    template <class MutableBufferSequence, class Handler>
    void read_unread(const MutableBufferSequence& buffers, Handler&& handler)
    {
        const auto n = boost::asio::buffer_copy(buffers, boost::asio::buffer(unread_->bytes.data() + unread_->taken,
                                                                             unread_->bytes.size() - unread_->taken));
        unread_->taken += n;
        if (unread_->taken == unread_->bytes.size())
            unread_.reset();
        // Completed as a read of the socket would be: never inside the initiating call.
        boost::asio::post(get_executor(),
                          boost::asio::append(std::forward<Handler>(handler), boost::system::error_code(), n));
    }

    // What to write instead of `buffers` when they are (the rest of) Beast's close frame:
    // the same bytes but for the code, from the first byte not yet written. Nothing for
    // anything else, which is written as it is.
    template <class ConstBufferSequence>
    std::optional<boost::asio::const_buffer> recoded(const ConstBufferSequence& buffers)
    {
        auto& r = *recode_;
        const auto left = boost::asio::buffer_size(buffers);
        if (r.size == 0) {
            const auto n = boost::asio::buffer_copy(boost::asio::buffer(r.frame), buffers);
            const bool masked = n >= 2 && (r.frame[1] & 0x80) != 0;
            const std::size_t header = masked ? 6 : 2;
            const std::size_t length = n >= 2 ? (r.frame[1] & 0x7f) : 0;
            if (n != left || r.frame[0] != 0x88 || length < 2 || length > 125 || n != header + length) {
                recode_.reset();  // not a close frame with a code: leave it alone
                return std::nullopt;
            }
            r.size = n;
            const unsigned char code[2] = {static_cast<unsigned char>(r.code >> 8),
                                           static_cast<unsigned char>(r.code & 0xff)};
            for (std::size_t i = 0; i < 2; ++i)
                r.frame[header + i] = masked ? static_cast<unsigned char>(code[i] ^ r.frame[2 + i]) : code[i];
        }
        if (left > r.size)
            return std::nullopt;
        return boost::asio::buffer(r.frame.data() + (r.size - left), left);
    }

    struct teardown_state {
        enum class ending { by_peer, cut };
        template <class H>
        explicit teardown_state(H&& h) : handler(std::forward<H>(h))
        {
        }
        boost::asio::any_completion_handler<void(boost::system::error_code)> handler;
        ending how = ending::by_peer;
    };

    void teardown_done(boost::system::error_code ec)
    {
        auto state = std::move(teardown_);
        // Cut short: the close itself went as far as it could; Beast reports what it was
        // closing for (the peer's close code, or the violation), not our socket's error.
        if (state->how == teardown_state::ending::cut)
            ec = {};
        std::move(state->handler)(ec);
    }

    std::optional<tcp_socket> plain_;
    std::optional<tls_stream> tls_;
    closing_hook hook_ = nullptr;
    void* owner_ = nullptr;
    std::unique_ptr<teardown_state> teardown_;
    std::unique_ptr<pending_input> unread_;
    std::unique_ptr<recoded_close> recode_;
};

}  // namespace vigil::detail
