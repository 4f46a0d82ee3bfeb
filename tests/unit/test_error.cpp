// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/websocket/error.hpp>

#include <doctest/doctest.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <string>
#include <type_traits>

namespace {

namespace asio_error = boost::asio::error;
namespace beast_ws = boost::beast::websocket;
using vigil::error;
using vigil::error_code;

// The codes a real failed handshake carries: OpenSSL's packed error in Asio's ssl category.
error_code ssl_code(int reason)
{
    return {static_cast<int>(ERR_PACK(ERR_LIB_SSL, 0, reason)), asio_error::get_ssl_category()};
}

class foreign_category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "acme.io-stack"; }
    std::string message(int) const override { return "foreign"; }
};

const foreign_category foreign;

// Only vigil's enum converts implicitly; the condition is for comparisons, never a code.
static_assert(boost::system::is_error_code_enum<vigil::error>::value);
static_assert(boost::system::is_error_condition_enum<vigil::condition>::value);
static_assert(std::is_convertible_v<vigil::error, error_code>);
static_assert(!std::is_constructible_v<error_code, vigil::condition>);
static_assert(!std::is_convertible_v<int, error_code>);
static_assert(!std::is_convertible_v<vigil::error, int>);

}  // namespace

TEST_CASE("vigil codes are named by their snake_case enumerator")
{
    const std::pair<error, const char*> all[] = {
        {error::invalid_url, "invalid_url"},
        {error::unsupported_scheme, "unsupported_scheme"},
        {error::invalid_host, "invalid_host"},
        {error::invalid_port, "invalid_port"},
        {error::invalid_config, "invalid_config"},
        {error::connect_timeout, "connect_timeout"},
        {error::tls_handshake_timeout, "tls_handshake_timeout"},
        {error::handshake_timeout, "handshake_timeout"},
        {error::pong_timeout, "pong_timeout"},
        {error::idle_timeout, "idle_timeout"},
        {error::write_timeout, "write_timeout"},
        {error::close_timeout, "close_timeout"},
        {error::send_queue_full, "send_queue_full"},
        {error::not_connected, "not_connected"},
        {error::already_running, "already_running"},
        {error::handler_exception, "handler_exception"},
        {error::retries_exhausted, "retries_exhausted"},
        {error::message_expired, "message_expired"},
        {error::supervisor_stopped, "supervisor_stopped"},
        {error::slow_consumer, "slow_consumer"},
        {error::server_shutdown, "server_shutdown"},
        {error::delivery_unconfirmed, "delivery_unconfirmed"},
    };
    // Plain members, not structured bindings: clang 14 cannot capture those in CAPTURE.
    for (const auto& entry : all) {
        const char* name = entry.second;
        CAPTURE(name);
        const error_code ec = entry.first;
        const error e = entry.first;
        CHECK(ec.failed());
        CHECK(ec.category() == vigil::error_category());
        CHECK(ec == vigil::make_error_code(e));
        CHECK(ec.message() == name);
        CHECK(vigil::error_name(ec) == name);
    }
    CHECK(std::string(vigil::error_category().name()) == "vigil");
    CHECK(error_code(error::pong_timeout) != error_code(error::idle_timeout));
}

TEST_CASE("an empty code is ok")
{
    CHECK(vigil::error_name(error_code()) == "ok");
    CHECK_FALSE(vigil::is_permanent(error_code()));
    CHECK(error_code() != vigil::condition::transient);
    CHECK(error_code() != vigil::condition::permanent);
}

TEST_CASE("HTTP statuses travel in their own category")
{
    const auto ec = vigil::make_http_status_error(401);
    CHECK(ec.failed());
    CHECK(std::string(ec.category().name()) == "vigil.http_status");
    CHECK(ec.category() == vigil::http_status_category());
    CHECK(ec.message() == "handshake rejected with HTTP 401");
    CHECK(vigil::error_name(ec) == "handshake_rejected");
    CHECK(vigil::http_status_of(ec) == 401);
    CHECK(vigil::close_code_of(ec) == 0);
    CHECK(vigil::http_status_of(error::pong_timeout) == 0);
    CHECK(vigil::http_status_of(error_code(401, foreign)) == 0);
}

TEST_CASE("close codes travel in their own category")
{
    const auto ec = vigil::make_close_error(1008);
    CHECK(ec.failed());
    CHECK(std::string(ec.category().name()) == "vigil.close");
    CHECK(ec.category() == vigil::close_code_category());
    CHECK(ec.message() == "closed by peer with code 1008");
    CHECK(vigil::error_name(ec) == "closed_by_peer");
    CHECK(vigil::close_code_of(ec) == 1008);
    CHECK(vigil::http_status_of(ec) == 0);
    CHECK(vigil::close_code_of(vigil::make_http_status_error(1008)) == 0);
}

TEST_CASE("common Asio, Beast and SSL codes get stable names")
{
    const std::pair<error_code, const char*> names[] = {
        {asio_error::connection_refused, "connection_refused"},
        {asio_error::connection_reset, "connection_reset"},
        {asio_error::connection_aborted, "connection_aborted"},
        {asio_error::eof, "eof"},
        {asio_error::host_not_found, "host_not_found"},
        {asio_error::host_not_found_try_again, "host_not_found_try_again"},
        {asio_error::network_unreachable, "network_unreachable"},
        {asio_error::host_unreachable, "host_unreachable"},
        {asio_error::timed_out, "timed_out"},
        {asio_error::operation_aborted, "operation_aborted"},
        {asio_error::broken_pipe, "broken_pipe"},
        {asio_error::not_connected, "not_connected"},
        {asio_error::address_in_use, "address_in_use"},
        // The same errno from the generic category (std or hand-made) gets the same name.
        {make_error_code(boost::system::errc::connection_refused), "connection_refused"},
        {make_error_code(boost::system::errc::operation_canceled), "operation_aborted"},
        {beast_ws::error::closed, "closed"},
        {beast_ws::error::message_too_big, "message_too_big"},
        {beast_ws::error::upgrade_declined, "upgrade_declined"},
        {beast_ws::error::bad_opcode, "bad_opcode"},
        {beast_ws::error::bad_frame_payload, "bad_frame_payload"},
        {boost::beast::http::error::end_of_stream, "end_of_stream"},
        {boost::beast::http::error::partial_message, "partial_message"},
        {boost::beast::error::timeout, "timeout"},
        {ssl_code(SSL_R_CERTIFICATE_VERIFY_FAILED), "tls_certificate_verify_failed"},
        {boost::asio::ssl::error::stream_truncated, "tls_stream_truncated"},
        {ssl_code(SSL_R_WRONG_VERSION_NUMBER), "tls_error"},
        {boost::asio::ssl::error::unexpected_result, "tls_error"},
    };
    for (const auto& entry : names) {
        const error_code ec = entry.first;
        CAPTURE(ec.message());
        CHECK(vigil::error_name(ec) == entry.second);
    }
}

TEST_CASE("unknown codes are named after their category and value")
{
    CHECK(vigil::error_name(error_code(42, foreign)) == "acme_io_stack_42");
    CHECK(vigil::error_name(error_code(-3, foreign)) == "acme_io_stack_-3");
    // Beast codes that never reach a client (server-side handshake checks) are not mapped.
    const error_code bad_method = beast_ws::error::bad_method;
    CHECK(vigil::error_name(bad_method) == "boost_beast_websocket_" + std::to_string(bad_method.value()));
    // A vigil value outside the enum must not crash or alias a real name.
    CHECK(vigil::error_name(error_code(999, vigil::error_category())) == "vigil_999");
}

TEST_CASE("is_permanent and the conditions classify every kind of code alike")
{
    enum kind { transient, permanent, cancelled };
    struct row {
        error_code ec;
        kind expected;
    };
    const row table[] = {
        // vigil's own codes: bad input is permanent, every deadline is transient.
        {error::invalid_url, permanent},
        {error::unsupported_scheme, permanent},
        {error::invalid_host, permanent},
        {error::invalid_port, permanent},
        {error::invalid_config, permanent},
        {error::connect_timeout, transient},
        {error::tls_handshake_timeout, transient},
        {error::handshake_timeout, transient},
        {error::pong_timeout, transient},
        {error::idle_timeout, transient},
        {error::write_timeout, transient},
        {error::close_timeout, transient},
        {error::send_queue_full, transient},
        {error::not_connected, transient},
        // The network.
        {asio_error::connection_refused, transient},
        {asio_error::connection_reset, transient},
        {asio_error::connection_aborted, transient},
        {asio_error::eof, transient},
        {asio_error::host_not_found, transient},
        {asio_error::host_not_found_try_again, transient},
        {asio_error::network_unreachable, transient},
        {asio_error::timed_out, transient},
        {asio_error::broken_pipe, transient},
        {make_error_code(boost::system::errc::connection_refused), transient},
        {beast_ws::error::closed, transient},
        {beast_ws::error::bad_opcode, transient},
        {boost::beast::error::timeout, transient},
        // HTTP statuses of a refused upgrade.
        {vigil::make_http_status_error(400), permanent},
        {vigil::make_http_status_error(401), permanent},
        {vigil::make_http_status_error(403), permanent},
        {vigil::make_http_status_error(404), permanent},
        {vigil::make_http_status_error(426), permanent},
        {vigil::make_http_status_error(301), permanent},
        {vigil::make_http_status_error(200), permanent},
        {vigil::make_http_status_error(408), transient},
        {vigil::make_http_status_error(429), transient},
        {vigil::make_http_status_error(500), transient},
        {vigil::make_http_status_error(502), transient},
        {vigil::make_http_status_error(503), transient},
        {vigil::make_http_status_error(599), transient},
        // Close codes the peer sent.
        {vigil::make_close_error(1000), transient},
        {vigil::make_close_error(1001), transient},
        {vigil::make_close_error(1002), permanent},
        {vigil::make_close_error(1003), permanent},
        {vigil::make_close_error(1005), transient},
        {vigil::make_close_error(1006), transient},
        {vigil::make_close_error(1007), permanent},
        {vigil::make_close_error(1008), permanent},
        {vigil::make_close_error(1009), transient},
        {vigil::make_close_error(1010), permanent},
        {vigil::make_close_error(1011), transient},
        {vigil::make_close_error(1012), transient},
        {vigil::make_close_error(1013), transient},
        {vigil::make_close_error(1014), transient},
        {vigil::make_close_error(4000), transient},
        // TLS: only an untrusted certificate is final.
        {ssl_code(SSL_R_CERTIFICATE_VERIFY_FAILED), permanent},
        {ssl_code(SSL_R_WRONG_VERSION_NUMBER), transient},
        {boost::asio::ssl::error::stream_truncated, transient},
        {error_code(1, foreign), transient},
        // Cancellation is neither: the caller asked to stop.
        {asio_error::operation_aborted, cancelled},
        {make_error_code(boost::system::errc::operation_canceled), cancelled},
    };
    for (const auto& r : table) {
        const error_code ec = r.ec;
        const kind expected = r.expected;
        CAPTURE(ec.category().name());
        CAPTURE(ec.value());
        CHECK(vigil::is_permanent(ec) == (expected == permanent));
        CHECK((ec == vigil::condition::permanent) == (expected == permanent));
        CHECK((ec != vigil::condition::permanent) == (expected != permanent));
        CHECK((ec == vigil::condition::transient) == (expected == transient));
    }
}

TEST_CASE("the condition category describes itself")
{
    const auto permanent = vigil::make_error_condition(vigil::condition::permanent);
    CHECK(std::string(permanent.category().name()) == "vigil.condition");
    CHECK(permanent.category() == vigil::condition_category());
    CHECK(permanent.message() == "permanent");
    CHECK(vigil::make_error_condition(vigil::condition::transient).message() == "transient");
    CHECK(permanent != vigil::make_error_condition(vigil::condition::transient));
}
