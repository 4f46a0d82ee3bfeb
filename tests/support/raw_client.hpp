// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vigil::test {

/// RFC 6455 opcodes.
namespace opcode {
inline constexpr std::uint8_t continuation = 0x0;
inline constexpr std::uint8_t text = 0x1;
inline constexpr std::uint8_t binary = 0x2;
inline constexpr std::uint8_t close = 0x8;
inline constexpr std::uint8_t ping = 0x9;
inline constexpr std::uint8_t pong = 0xA;
}  // namespace opcode

/// One frame as the server sent it.
struct raw_frame {
    bool fin = true;
    std::uint8_t rsv = 0;  ///< the three RSV bits, shifted down
    std::uint8_t op = 0;
    bool masked = false;   ///< a server must never mask
    std::string payload;   ///< unmasked

    /// Of a close frame: its code, 1005 when it carries none; 0 for other frames.
    std::uint16_t close_code() const;
    std::string close_reason() const;
};

/// An HTTP response head (and the body its Content-Length announced).
struct raw_http_response {
    unsigned status = 0;
    std::string status_line;
    std::vector<std::pair<std::string, std::string>> headers{};
    std::string body;

    /// The first header named `name` (any case); empty when absent.
    std::string header(std::string_view name) const;
    bool has_header(std::string_view name) const;
};

/// How `raw_client::frame` builds a client frame. Every member has an initializer, so
/// designated initializers compile warning-free.
struct frame_options {
    bool fin = true;
    bool mask = true;
    std::uint8_t rsv = 0;
    std::array<std::uint8_t, 4> key{{0x37, 0xfa, 0x21, 0x3d}};
};

/// A WebSocket client written by hand over a bare TCP socket, for what a well-behaved client
/// never does: garbage instead of an upgrade request, a request dribbled byte by byte, an
/// oversized header, unmasked or malformed frames, a client that stops reading, a client that
/// watches the server's pings. Frames and HTTP are built and parsed here, without Beast, so
/// that nothing tidies up what the test sends.
///
/// Every operation is an awaitable bounded by a timeout (`asio::error::timed_out` when it
/// passes); await them from coroutines on the executor given to the constructor.
class raw_client {
public:
    using milliseconds = std::chrono::milliseconds;

    explicit raw_client(boost::asio::any_io_executor ex);
    ~raw_client();
    raw_client(const raw_client&) = delete;
    raw_client& operator=(const raw_client&) = delete;

    /// Connects to 127.0.0.1:`port`. A positive `receive_buffer` sets SO_RCVBUF before the
    /// connect, so that the TCP window is small and a client that stops reading pushes back
    /// on the server quickly.
    boost::asio::awaitable<error_code> connect(std::uint16_t port, int receive_buffer = 0,
                                               milliseconds timeout = milliseconds(2000));

    /// Connects to 127.0.0.1:`port` from `local_address` (any of 127/8 on loopback): a client
    /// at another address, as the server sees it.
    boost::asio::awaitable<error_code> connect_from(std::string local_address, std::uint16_t port,
                                                    milliseconds timeout = milliseconds(2000));

    /// Writes all of `bytes`.
    boost::asio::awaitable<error_code> write(std::string bytes, milliseconds timeout = milliseconds(2000));

    /// Reads an HTTP response head and the body its Content-Length announces.
    boost::asio::awaitable<error_code> read_http(raw_http_response& out, milliseconds timeout = milliseconds(2000));

    /// Sends `upgrade_request(target)` and reads the answer into `*out` if given. Empty code
    /// for `101 Switching Protocols`; otherwise the HTTP status as `make_http_status_error`,
    /// or the network error.
    boost::asio::awaitable<error_code> upgrade(std::string target = "/", raw_http_response* out = nullptr,
                                               milliseconds timeout = milliseconds(2000));

    /// Reads the next frame.
    boost::asio::awaitable<error_code> read_frame(raw_frame& out, milliseconds timeout = milliseconds(2000));

    /// Reads (and discards) until the server closes the TCP connection; returns how it ended
    /// (`eof`, `connection_reset`), or `timed_out`.
    boost::asio::awaitable<error_code> wait_closed(milliseconds timeout = milliseconds(2000));

    /// Reads whatever arrives within `timeout` into the pending input; returns the read's
    /// error (`timed_out` when nothing came).
    boost::asio::awaitable<error_code> read_some(milliseconds timeout);

    /// Bytes received but not yet taken by `read_http` or `read_frame`.
    const std::string& pending() const noexcept { return in_; }

    /// Closes the socket at once with a TCP reset.
    void abort();

    std::uint16_t local_port() const;
    /// "<local address>:<local port>", as the server names this client.
    std::string local_name() const;
    boost::asio::ip::tcp::socket& socket() noexcept { return sock_; }

    /// A valid upgrade request for `target`, with `extra` header lines ("Name: value") added.
    static std::string upgrade_request(std::string_view target = "/", std::string_view extra = {});

    /// A client frame: masked unless told otherwise.
    static std::string frame(std::uint8_t op, std::string_view payload, frame_options o = {});

    /// A masked close frame with `code` and `reason`.
    static std::string close_frame(std::uint16_t code, std::string_view reason = {});

private:
    boost::asio::awaitable<error_code> open_and_connect(std::string local_address, std::uint16_t port,
                                                        int receive_buffer, milliseconds timeout);
    boost::asio::awaitable<error_code> fill(std::chrono::steady_clock::time_point deadline);

    boost::asio::ip::tcp::socket sock_;
    std::string in_;
};

}  // namespace vigil::test
