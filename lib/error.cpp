// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include <vigil/error.hpp>

#include "detail/tls_codes.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/websocket/error.hpp>
#include <boost/beast/zlib/error.hpp>

#include <span>
#include <string>

namespace vigil {

namespace {

namespace asio_error = boost::asio::error;
namespace beast_ws = boost::beast::websocket;
namespace beast_http = boost::beast::http;
namespace beast_zlib = boost::beast::zlib;

// Fixed identifiers make the categories compare equal even if this library is loaded twice
// (a static and a shared copy in one process), where addresses would differ.
constexpr unsigned long long vigil_category_id = 0xa6f3'1c2e'9d40'5b17ULL;
constexpr unsigned long long http_status_category_id = 0xa6f3'1c2e'9d40'5b18ULL;
constexpr unsigned long long close_code_category_id = 0xa6f3'1c2e'9d40'5b19ULL;

const char* vigil_error_name(int value) noexcept
{
    switch (static_cast<error>(value)) {
    case error::invalid_url: return "invalid_url";
    case error::unsupported_scheme: return "unsupported_scheme";
    case error::invalid_host: return "invalid_host";
    case error::invalid_port: return "invalid_port";
    case error::invalid_config: return "invalid_config";
    case error::connect_timeout: return "connect_timeout";
    case error::tls_handshake_timeout: return "tls_handshake_timeout";
    case error::handshake_timeout: return "handshake_timeout";
    case error::pong_timeout: return "pong_timeout";
    case error::idle_timeout: return "idle_timeout";
    case error::write_timeout: return "write_timeout";
    case error::close_timeout: return "close_timeout";
    case error::send_queue_full: return "send_queue_full";
    case error::not_connected: return "not_connected";
    case error::already_running: return "already_running";
    case error::handler_exception: return "handler_exception";
    case error::retries_exhausted: return "retries_exhausted";
    case error::message_expired: return "message_expired";
    case error::supervisor_stopped: return "supervisor_stopped";
    case error::slow_consumer: return "slow_consumer";
    case error::server_shutdown: return "server_shutdown";
    case error::prepare_timeout: return "prepare_timeout";
    case error::delivery_unconfirmed: return "delivery_unconfirmed";
    case error::proxy_auth_required: return "proxy_auth_required";
    case error::proxy_denied: return "proxy_denied";
    case error::proxy_target_unreachable: return "proxy_target_unreachable";
    case error::proxy_protocol_error: return "proxy_protocol_error";
    case error::local_address_unusable: return "local_address_unusable";
    case error::memory_budget_exceeded: return "memory_budget_exceeded";
    case error::message_timeout: return "message_timeout";
    case error::subprotocol_mismatch: return "subprotocol_mismatch";
    case error::redis_auth_failed: return "redis_auth_failed";
    case error::redis_error: return "redis_error";
    case error::redis_command_timeout: return "redis_command_timeout";
    case error::fanout_message_invalid: return "fanout_message_invalid";
    }
    return nullptr;
}

class vigil_category final : public boost::system::error_category {
public:
    constexpr vigil_category() noexcept : error_category(vigil_category_id) {}

    const char* name() const noexcept override { return "vigil"; }

    std::string message(int value) const override
    {
        if (const char* n = vigil_error_name(value))
            return n;
        return "vigil_" + std::to_string(value);
    }
};

class http_status_category_impl final : public boost::system::error_category {
public:
    constexpr http_status_category_impl() noexcept : error_category(http_status_category_id) {}

    const char* name() const noexcept override { return "vigil.http_status"; }

    std::string message(int value) const override
    {
        return "handshake rejected with HTTP " + std::to_string(value);
    }
};

class close_code_category_impl final : public boost::system::error_category {
public:
    constexpr close_code_category_impl() noexcept : error_category(close_code_category_id) {}

    const char* name() const noexcept override { return "vigil.close"; }

    std::string message(int value) const override
    {
        return "closed by peer with code " + std::to_string(value);
    }
};

// One table per category, each listing every value of its enum. Each is a function-local
// static so that error_name works when called from another file's static initialisation.
struct named_code {
    error_code code;
    const char* name;
};

using name_table = std::span<const named_code>;

// Asio's basic_errors (system category). On POSIX try_again and would_block are both EAGAIN;
// the first entry names it, the second is for platforms where they differ.
name_table asio_system_names()
{
    static const named_code table[] = {
        {asio_error::access_denied, "access_denied"},
        {asio_error::address_family_not_supported, "address_family_not_supported"},
        {asio_error::address_in_use, "address_in_use"},
        {asio_error::already_connected, "already_connected"},
        {asio_error::already_started, "already_started"},
        {asio_error::broken_pipe, "broken_pipe"},
        {asio_error::connection_aborted, "connection_aborted"},
        {asio_error::connection_refused, "connection_refused"},
        {asio_error::connection_reset, "connection_reset"},
        {asio_error::bad_descriptor, "bad_descriptor"},
        {asio_error::fault, "fault"},
        {asio_error::host_unreachable, "host_unreachable"},
        {asio_error::in_progress, "in_progress"},
        {asio_error::interrupted, "interrupted"},
        {asio_error::invalid_argument, "invalid_argument"},
        {asio_error::message_size, "message_size"},
        {asio_error::name_too_long, "name_too_long"},
        {asio_error::network_down, "network_down"},
        {asio_error::network_reset, "network_reset"},
        {asio_error::network_unreachable, "network_unreachable"},
        {asio_error::no_descriptors, "no_descriptors"},
        {asio_error::no_buffer_space, "no_buffer_space"},
        {asio_error::no_memory, "no_memory"},
        {asio_error::no_permission, "no_permission"},
        {asio_error::no_protocol_option, "no_protocol_option"},
        {asio_error::no_such_device, "no_such_device"},
        {asio_error::not_connected, "not_connected"},
        {asio_error::not_socket, "not_socket"},
        {asio_error::operation_aborted, "operation_aborted"},
        {asio_error::operation_not_supported, "operation_not_supported"},
        {asio_error::shut_down, "shut_down"},
        {asio_error::timed_out, "timed_out"},
        {asio_error::try_again, "try_again"},
        {asio_error::would_block, "would_block"},
    };
    return table;
}

name_table asio_netdb_names()
{
    static const named_code table[] = {
        {asio_error::host_not_found, "host_not_found"},
        {asio_error::host_not_found_try_again, "host_not_found_try_again"},
        {asio_error::no_data, "no_data"},
        {asio_error::no_recovery, "no_recovery"},
    };
    return table;
}

name_table asio_addrinfo_names()
{
    static const named_code table[] = {
        {asio_error::service_not_found, "service_not_found"},
        {asio_error::socket_type_not_supported, "socket_type_not_supported"},
    };
    return table;
}

name_table asio_misc_names()
{
    static const named_code table[] = {
        {asio_error::already_open, "already_open"},
        {asio_error::eof, "eof"},
        {asio_error::not_found, "not_found"},
        {asio_error::fd_set_failure, "fd_set_failure"},
    };
    return table;
}

name_table beast_core_names()
{
    static const named_code table[] = {
        {boost::beast::error::timeout, "timeout"},
    };
    return table;
}

// The names carry http_ so that a script can pick out the HTTP layer's failures by one prefix,
// and so that none reads like a WebSocket or deflate code (bad_method, bad_version,
// need_buffer ...). The first four predate that rule and keep their bare names.
name_table beast_http_names()
{
    static const named_code table[] = {
        {beast_http::error::end_of_stream, "end_of_stream"},
        {beast_http::error::partial_message, "partial_message"},
        {beast_http::error::header_limit, "header_limit"},
        {beast_http::error::body_limit, "body_limit"},
        {beast_http::error::need_more, "http_need_more"},
        {beast_http::error::unexpected_body, "http_unexpected_body"},
        {beast_http::error::need_buffer, "http_need_buffer"},
        {beast_http::error::end_of_chunk, "http_end_of_chunk"},
        {beast_http::error::buffer_overflow, "http_buffer_overflow"},
        {beast_http::error::bad_alloc, "http_bad_alloc"},
        {beast_http::error::bad_line_ending, "http_bad_line_ending"},
        {beast_http::error::bad_method, "http_bad_method"},
        {beast_http::error::bad_target, "http_bad_target"},
        {beast_http::error::bad_version, "http_bad_version"},
        {beast_http::error::bad_status, "http_bad_status"},
        {beast_http::error::bad_reason, "http_bad_reason"},
        {beast_http::error::bad_field, "http_bad_field"},
        {beast_http::error::bad_value, "http_bad_value"},
        {beast_http::error::bad_content_length, "http_bad_content_length"},
        {beast_http::error::bad_transfer_encoding, "http_bad_transfer_encoding"},
        {beast_http::error::bad_chunk, "http_bad_chunk"},
        {beast_http::error::bad_chunk_extension, "http_bad_chunk_extension"},
        {beast_http::error::bad_obs_fold, "http_bad_obs_fold"},
        {beast_http::error::multiple_content_length, "http_multiple_content_length"},
        {beast_http::error::stale_parser, "http_stale_parser"},
        {beast_http::error::short_read, "http_short_read"},
    };
    return table;
}

// unused1 and unused2 are values Beast retired and never returns; they are named only so that
// no value of the enum falls back.
name_table beast_websocket_names()
{
    static const named_code table[] = {
        {beast_ws::error::closed, "closed"},
        {beast_ws::error::unused1, "websocket_unused1"},
        {beast_ws::error::unused2, "websocket_unused2"},
        {beast_ws::error::buffer_overflow, "buffer_overflow"},
        {beast_ws::error::partial_deflate_block, "partial_deflate_block"},
        {beast_ws::error::message_too_big, "message_too_big"},
        {beast_ws::error::bad_http_version, "bad_http_version"},
        {beast_ws::error::bad_method, "bad_method"},
        {beast_ws::error::no_host, "no_host"},
        {beast_ws::error::no_connection, "no_connection"},
        {beast_ws::error::no_connection_upgrade, "no_connection_upgrade"},
        {beast_ws::error::no_upgrade, "no_upgrade"},
        {beast_ws::error::no_upgrade_websocket, "no_upgrade_websocket"},
        {beast_ws::error::no_sec_key, "no_sec_key"},
        {beast_ws::error::bad_sec_key, "bad_sec_key"},
        {beast_ws::error::no_sec_version, "no_sec_version"},
        {beast_ws::error::bad_sec_version, "bad_sec_version"},
        {beast_ws::error::no_sec_accept, "no_sec_accept"},
        {beast_ws::error::bad_sec_accept, "bad_sec_accept"},
        {beast_ws::error::upgrade_declined, "upgrade_declined"},
        {beast_ws::error::bad_opcode, "bad_opcode"},
        {beast_ws::error::bad_data_frame, "bad_data_frame"},
        {beast_ws::error::bad_continuation, "bad_continuation"},
        {beast_ws::error::bad_reserved_bits, "bad_reserved_bits"},
        {beast_ws::error::bad_control_fragment, "bad_control_fragment"},
        {beast_ws::error::bad_control_size, "bad_control_size"},
        {beast_ws::error::bad_unmasked_frame, "bad_unmasked_frame"},
        {beast_ws::error::bad_masked_frame, "bad_masked_frame"},
        {beast_ws::error::bad_size, "bad_size"},
        {beast_ws::error::bad_frame_payload, "bad_frame_payload"},
        {beast_ws::error::bad_close_code, "bad_close_code"},
        {beast_ws::error::bad_close_size, "bad_close_size"},
        {beast_ws::error::bad_close_payload, "bad_close_payload"},
    };
    return table;
}

// permessage-deflate's codec; the names carry deflate_ because several (end_of_stream,
// stream_error, general) would mean something else bare.
name_table beast_zlib_names()
{
    static const named_code table[] = {
        {beast_zlib::error::need_buffers, "deflate_need_buffers"},
        {beast_zlib::error::end_of_stream, "deflate_end_of_stream"},
        {beast_zlib::error::need_dict, "deflate_need_dict"},
        {beast_zlib::error::stream_error, "deflate_stream_error"},
        {beast_zlib::error::invalid_block_type, "deflate_invalid_block_type"},
        {beast_zlib::error::invalid_stored_length, "deflate_invalid_stored_length"},
        {beast_zlib::error::too_many_symbols, "deflate_too_many_symbols"},
        {beast_zlib::error::invalid_code_lengths, "deflate_invalid_code_lengths"},
        {beast_zlib::error::invalid_bit_length_repeat, "deflate_invalid_bit_length_repeat"},
        {beast_zlib::error::missing_eob, "deflate_missing_eob"},
        {beast_zlib::error::invalid_literal_length, "deflate_invalid_literal_length"},
        {beast_zlib::error::invalid_distance_code, "deflate_invalid_distance_code"},
        {beast_zlib::error::invalid_distance, "deflate_invalid_distance"},
        {beast_zlib::error::over_subscribed_length, "deflate_over_subscribed_length"},
        {beast_zlib::error::incomplete_length_set, "deflate_incomplete_length_set"},
        {beast_zlib::error::general, "deflate_general"},
    };
    return table;
}

// A generic-category errno (from std or hand-made codes) matches its system-category twin.
// Other categories' conditions are too coarse to name a code by (Beast maps dozens of codes
// to one condition), so they must match exactly.
bool matches(const error_code& ec, const error_code& known) noexcept
{
    if (ec == known)
        return true;
    return ec.category() == boost::system::generic_category()
        && known.default_error_condition()
        == boost::system::error_condition(ec.value(), boost::system::generic_category());
}

const char* mapped_name(const error_code& ec)
{
    using table_fn = name_table (*)();
    static constexpr table_fn tables[] = {
        asio_system_names, asio_netdb_names, asio_addrinfo_names, asio_misc_names,
        beast_core_names, beast_http_names, beast_websocket_names, beast_zlib_names,
    };
    for (const auto table : tables) {
        for (const auto& entry : table()) {
            if (matches(ec, entry.code))
                return entry.name;
        }
    }
    return nullptr;
}

std::string fallback_name(const error_code& ec)
{
    std::string out = ec.category().name();
    for (char& c : out) {
        const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum)
            c = '_';
    }
    out += '_';
    out += std::to_string(ec.value());
    return out;
}

}  // namespace

const boost::system::error_category& error_category() noexcept
{
    static const vigil_category instance;
    return instance;
}

const boost::system::error_category& http_status_category() noexcept
{
    static const http_status_category_impl instance;
    return instance;
}

const boost::system::error_category& close_code_category() noexcept
{
    static const close_code_category_impl instance;
    return instance;
}

error_code make_error_code(error e) noexcept
{
    return {static_cast<int>(e), error_category()};
}

error_code make_http_status_error(unsigned status) noexcept
{
    return {static_cast<int>(status), http_status_category()};
}

error_code make_close_error(unsigned code) noexcept
{
    return {static_cast<int>(code), close_code_category()};
}

unsigned http_status_of(const error_code& ec) noexcept
{
    if (ec.category() != http_status_category() || ec.value() < 0)
        return 0;
    return static_cast<unsigned>(ec.value());
}

unsigned close_code_of(const error_code& ec) noexcept
{
    if (ec.category() != close_code_category() || ec.value() < 0)
        return 0;
    return static_cast<unsigned>(ec.value());
}

std::string error_name(const error_code& ec)
{
    if (!ec.failed())
        return "ok";
    const auto& cat = ec.category();
    if (cat == error_category()) {
        if (const char* n = vigil_error_name(ec.value()))
            return n;
        return fallback_name(ec);
    }
    if (cat == http_status_category())
        return "handshake_rejected";
    if (cat == close_code_category())
        return "closed_by_peer";
    if (detail::is_certificate_verify_failure(ec))
        return "tls_certificate_verify_failed";
    if (detail::is_ssl_stream_code(ec)) {
        if (ec.value() == boost::asio::ssl::error::stream_truncated)
            return "tls_stream_truncated";
        return "tls_error";
    }
    if (detail::is_ssl_code(ec))
        return "tls_error";
    if (const char* n = mapped_name(ec))
        return n;
    return fallback_name(ec);
}

}  // namespace vigil
