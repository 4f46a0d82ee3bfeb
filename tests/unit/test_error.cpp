// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/error.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/websocket/error.hpp>
#include <boost/beast/zlib/error.hpp>

#include <doctest/doctest.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <map>
#include <regex>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace {

namespace asio_error = boost::asio::error;
namespace beast_http = boost::beast::http;
namespace beast_ws = boost::beast::websocket;
namespace beast_zlib = boost::beast::zlib;
using vigil::error;
using vigil::error_code;
using code_list = std::vector<error_code>;

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

// Every value of each enum that error_name maps in full, listed from the Boost 1.81 headers.
code_list asio_basic_codes()
{
    return {
        asio_error::access_denied, asio_error::address_family_not_supported,
        asio_error::address_in_use, asio_error::already_connected, asio_error::already_started,
        asio_error::broken_pipe, asio_error::connection_aborted, asio_error::connection_refused,
        asio_error::connection_reset, asio_error::bad_descriptor, asio_error::fault,
        asio_error::host_unreachable, asio_error::in_progress, asio_error::interrupted,
        asio_error::invalid_argument, asio_error::message_size, asio_error::name_too_long,
        asio_error::network_down, asio_error::network_reset, asio_error::network_unreachable,
        asio_error::no_descriptors, asio_error::no_buffer_space, asio_error::no_memory,
        asio_error::no_permission, asio_error::no_protocol_option, asio_error::no_such_device,
        asio_error::not_connected, asio_error::not_socket, asio_error::operation_aborted,
        asio_error::operation_not_supported, asio_error::shut_down, asio_error::timed_out,
        asio_error::try_again, asio_error::would_block,
    };
}

code_list asio_netdb_codes()
{
    return {asio_error::host_not_found, asio_error::host_not_found_try_again, asio_error::no_data,
            asio_error::no_recovery};
}

code_list asio_addrinfo_codes()
{
    return {asio_error::service_not_found, asio_error::socket_type_not_supported};
}

code_list asio_misc_codes()
{
    return {asio_error::already_open, asio_error::eof, asio_error::not_found,
            asio_error::fd_set_failure};
}

code_list beast_core_codes()
{
    return {boost::beast::error::timeout};
}

code_list beast_http_codes()
{
    using e = beast_http::error;
    return {
        e::end_of_stream, e::partial_message, e::need_more, e::unexpected_body, e::need_buffer,
        e::end_of_chunk, e::buffer_overflow, e::header_limit, e::body_limit, e::bad_alloc,
        e::bad_line_ending, e::bad_method, e::bad_target, e::bad_version, e::bad_status,
        e::bad_reason, e::bad_field, e::bad_value, e::bad_content_length,
        e::bad_transfer_encoding, e::bad_chunk, e::bad_chunk_extension, e::bad_obs_fold,
        e::multiple_content_length, e::stale_parser, e::short_read,
    };
}

code_list beast_websocket_codes()
{
    using e = beast_ws::error;
    return {
        e::closed, e::unused1, e::unused2, e::buffer_overflow, e::partial_deflate_block,
        e::message_too_big, e::bad_http_version, e::bad_method, e::no_host, e::no_connection,
        e::no_connection_upgrade, e::no_upgrade, e::no_upgrade_websocket, e::no_sec_key,
        e::bad_sec_key, e::no_sec_version, e::bad_sec_version, e::no_sec_accept,
        e::bad_sec_accept, e::upgrade_declined, e::bad_opcode, e::bad_data_frame,
        e::bad_continuation, e::bad_reserved_bits, e::bad_control_fragment, e::bad_control_size,
        e::bad_unmasked_frame, e::bad_masked_frame, e::bad_size, e::bad_frame_payload,
        e::bad_close_code, e::bad_close_size, e::bad_close_payload,
    };
}

code_list beast_zlib_codes()
{
    using e = beast_zlib::error;
    return {
        e::need_buffers, e::end_of_stream, e::need_dict, e::stream_error, e::invalid_block_type,
        e::invalid_stored_length, e::too_many_symbols, e::invalid_code_lengths,
        e::invalid_bit_length_repeat, e::missing_eob, e::invalid_literal_length,
        e::invalid_distance_code, e::invalid_distance, e::over_subscribed_length,
        e::incomplete_length_set, e::general,
    };
}

// How error_name begins for a code it does not know: the category's name as an identifier.
std::string fallback_prefix(const error_code& ec)
{
    std::string out = ec.category().name();
    for (char& c : out) {
        const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum)
            c = '_';
    }
    return out + '_';
}

// Each code has a proper name, not the fallback, and no other code in `codes` has it.
void check_named_apart(const code_list& codes)
{
    static const std::regex identifier("^[a-z][a-z0-9_]*$");
    std::map<std::string, error_code> owner;
    for (const error_code& ec : codes) {
        const std::string name = vigil::error_name(ec);
        CAPTURE(ec.category().name());
        CAPTURE(ec.value());
        CAPTURE(name);
        CHECK(std::regex_match(name, identifier));
        CHECK_FALSE(name.starts_with(fallback_prefix(ec)));
        // Appended, not `"_" + std::string`: g++ 12 at -O3 misreads that as an overlapping
        // copy (-Wrestrict).
        std::string value_suffix(1, '_');
        value_suffix += std::to_string(ec.value());
        CHECK_FALSE(name.ends_with(value_suffix));
        // Two enumerators share a name only when they are one code: on POSIX try_again and
        // would_block are both EAGAIN.
        const auto inserted = owner.emplace(name, ec);
        CHECK((inserted.second || inserted.first->second == ec));
    }
}

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
        {error::prepare_timeout, "prepare_timeout"},
        {error::proxy_auth_required, "proxy_auth_required"},
        {error::proxy_denied, "proxy_denied"},
        {error::proxy_target_unreachable, "proxy_target_unreachable"},
        {error::proxy_protocol_error, "proxy_protocol_error"},
        {error::local_address_unusable, "local_address_unusable"},
        {error::memory_budget_exceeded, "memory_budget_exceeded"},
        {error::message_timeout, "message_timeout"},
        {error::subprotocol_mismatch, "subprotocol_mismatch"},
        {error::redis_auth_failed, "redis_auth_failed"},
        {error::redis_error, "redis_error"},
        {error::redis_command_timeout, "redis_command_timeout"},
        {error::fanout_message_invalid, "fanout_message_invalid"},
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

TEST_CASE("names that scripts match on never change")
{
    const std::pair<error_code, const char*> names[] = {
        // The ones scripts are known to match.
        {asio_error::eof, "eof"},
        {asio_error::connection_refused, "connection_refused"},
        {beast_ws::error::closed, "closed"},
        {beast_ws::error::message_too_big, "message_too_big"},
        {beast_ws::error::bad_reserved_bits, "bad_reserved_bits"},
        {boost::beast::error::timeout, "timeout"},
        // Every other name error_name gave before each enum was mapped in full.
        {asio_error::connection_reset, "connection_reset"},
        {asio_error::connection_aborted, "connection_aborted"},
        {asio_error::host_not_found, "host_not_found"},
        {asio_error::host_not_found_try_again, "host_not_found_try_again"},
        {asio_error::no_data, "no_data"},
        {asio_error::no_recovery, "no_recovery"},
        {asio_error::service_not_found, "service_not_found"},
        {asio_error::network_unreachable, "network_unreachable"},
        {asio_error::network_down, "network_down"},
        {asio_error::network_reset, "network_reset"},
        {asio_error::host_unreachable, "host_unreachable"},
        {asio_error::timed_out, "timed_out"},
        {asio_error::operation_aborted, "operation_aborted"},
        {asio_error::broken_pipe, "broken_pipe"},
        {asio_error::not_connected, "not_connected"},
        {asio_error::address_in_use, "address_in_use"},
        {asio_error::address_family_not_supported, "address_family_not_supported"},
        {asio_error::access_denied, "access_denied"},
        {asio_error::shut_down, "shut_down"},
        {asio_error::no_buffer_space, "no_buffer_space"},
        {asio_error::no_memory, "no_memory"},
        {asio_error::no_descriptors, "no_descriptors"},
        {asio_error::bad_descriptor, "bad_descriptor"},
        {asio_error::already_open, "already_open"},
        {asio_error::not_found, "not_found"},
        {beast_ws::error::buffer_overflow, "buffer_overflow"},
        {beast_ws::error::upgrade_declined, "upgrade_declined"},
        {beast_ws::error::bad_http_version, "bad_http_version"},
        {beast_ws::error::no_connection, "no_connection"},
        {beast_ws::error::no_connection_upgrade, "no_connection_upgrade"},
        {beast_ws::error::no_upgrade, "no_upgrade"},
        {beast_ws::error::no_upgrade_websocket, "no_upgrade_websocket"},
        {beast_ws::error::no_sec_accept, "no_sec_accept"},
        {beast_ws::error::bad_sec_accept, "bad_sec_accept"},
        {beast_ws::error::bad_opcode, "bad_opcode"},
        {beast_ws::error::bad_data_frame, "bad_data_frame"},
        {beast_ws::error::bad_continuation, "bad_continuation"},
        {beast_ws::error::bad_control_fragment, "bad_control_fragment"},
        {beast_ws::error::bad_control_size, "bad_control_size"},
        {beast_ws::error::bad_unmasked_frame, "bad_unmasked_frame"},
        {beast_ws::error::bad_masked_frame, "bad_masked_frame"},
        {beast_ws::error::bad_size, "bad_size"},
        {beast_ws::error::bad_frame_payload, "bad_frame_payload"},
        {beast_ws::error::bad_close_code, "bad_close_code"},
        {beast_ws::error::bad_close_size, "bad_close_size"},
        {beast_ws::error::bad_close_payload, "bad_close_payload"},
        {beast_http::error::end_of_stream, "end_of_stream"},
        {beast_http::error::partial_message, "partial_message"},
        {beast_http::error::header_limit, "header_limit"},
        {beast_http::error::body_limit, "body_limit"},
        {beast_http::error::buffer_overflow, "http_buffer_overflow"},
    };
    for (const auto& entry : names) {
        const error_code ec = entry.first;
        CAPTURE(ec.message());
        CHECK(vigil::error_name(ec) == entry.second);
    }
}

TEST_CASE("every Asio basic_errors value has a name of its own")
{
    check_named_apart(asio_basic_codes());
}

TEST_CASE("every Asio netdb_errors value has a name of its own")
{
    check_named_apart(asio_netdb_codes());
}

TEST_CASE("every Asio addrinfo_errors value has a name of its own")
{
    check_named_apart(asio_addrinfo_codes());
}

TEST_CASE("every Asio misc_errors value has a name of its own")
{
    check_named_apart(asio_misc_codes());
}

TEST_CASE("every beast::error value has a name of its own")
{
    check_named_apart(beast_core_codes());
}

TEST_CASE("every beast::http::error value has a name of its own")
{
    check_named_apart(beast_http_codes());
}

TEST_CASE("every beast::websocket::error value has a name of its own")
{
    check_named_apart(beast_websocket_codes());
}

TEST_CASE("every beast::zlib::error value has a name of its own")
{
    check_named_apart(beast_zlib_codes());
}

TEST_CASE("no two mapped Asio or Beast codes share a name, whatever their category")
{
    code_list all;
    for (const auto& codes : {asio_basic_codes(), asio_netdb_codes(), asio_addrinfo_codes(),
                              asio_misc_codes(), beast_core_codes(), beast_http_codes(),
                              beast_websocket_codes(), beast_zlib_codes()})
        all.insert(all.end(), codes.begin(), codes.end());
    check_named_apart(all);
}

TEST_CASE("the Beast lists hold every value of Boost 1.81's enums")
{
    // Beast numbers each enum from 1 without gaps, and gives any value past the end the
    // message of a value far past it. A value added by a newer Boost fails here.
    for (const auto& codes : {beast_core_codes(), beast_http_codes(), beast_websocket_codes(),
                              beast_zlib_codes()}) {
        const auto& category = codes.front().category();
        CAPTURE(category.name());
        for (std::size_t i = 0; i < codes.size(); ++i)
            CHECK(codes[i].value() == static_cast<int>(i + 1));
        const error_code next(static_cast<int>(codes.size() + 1), category);
        CHECK(next.message() == error_code(10000, category).message());
    }
}

TEST_CASE("a generic-category errno is named like its Asio twin")
{
    for (const error_code& ec : asio_basic_codes()) {
        const auto condition = ec.default_error_condition();
        CAPTURE(ec.value());
        // Every basic_errors value is an errno on POSIX; elsewhere some may not be.
        if (condition.category() != boost::system::generic_category())
            continue;
        const error_code twin(condition.value(), boost::system::generic_category());
        CHECK(vigil::error_name(twin) == vigil::error_name(ec));
    }
}

TEST_CASE("a garbage reply to the upgrade request is named after what is wrong with it")
{
    // What the client's HTTP parser makes of bytes that are not an HTTP response. It reads
    // the status line's version first, so most garbage is a bad version: before every HTTP
    // code was mapped, that was "beast_http_14".
    struct reply {
        std::string_view bytes;
        beast_http::error expected;
        const char* name;
    };
    const reply replies[] = {
        {"garbage\r\n\r\n", beast_http::error::bad_version, "http_bad_version"},
        {"SSH-2.0-OpenSSH_9.2p1\r\n", beast_http::error::bad_version, "http_bad_version"},
        {"HTTP/1.1 ok\r\n\r\n", beast_http::error::bad_status, "http_bad_status"},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade websocket\r\n\r\n",
         beast_http::error::bad_field, "http_bad_field"},
    };
    for (const auto& r : replies) {
        const std::string_view bytes = r.bytes;
        CAPTURE(bytes);
        beast_http::response_parser<beast_http::empty_body> parser;
        error_code ec;
        parser.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
        CHECK(ec == r.expected);
        CHECK(vigil::error_name(ec) == r.name);
    }
}

TEST_CASE("unknown codes are named after their category and value")
{
    CHECK(vigil::error_name(error_code(42, foreign)) == "acme_io_stack_42");
    CHECK(vigil::error_name(error_code(-3, foreign)) == "acme_io_stack_-3");
    // An errno that is none of Asio's basic_errors is not mapped, from either category.
    CHECK(vigil::error_name(error_code(ENOENT, boost::system::system_category()))
          == "system_" + std::to_string(ENOENT));
    CHECK(vigil::error_name(error_code(ENOENT, boost::system::generic_category()))
          == "generic_" + std::to_string(ENOENT));
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
        {error::prepare_timeout, transient},
        {error::send_queue_full, transient},
        // Proxies and the local address: our credentials, the proxy's policy, the wrong
        // protocol or address fail again; a target out of the proxy's reach may come back.
        {error::proxy_auth_required, permanent},
        {error::proxy_denied, permanent},
        {error::proxy_protocol_error, permanent},
        {error::local_address_unusable, permanent},
        {error::subprotocol_mismatch, permanent},
        // Redis: a refused password stays refused; an error reply or a slow Redis may pass.
        {error::redis_auth_failed, permanent},
        {error::redis_error, transient},
        {error::redis_command_timeout, transient},
        {error::fanout_message_invalid, transient},
        {error::proxy_target_unreachable, transient},
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
        {vigil::make_close_error(1008), transient},  // "too many requests" too; see policy_violation_delay
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
