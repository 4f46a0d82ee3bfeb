// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Recognising OpenSSL's codes, for both error_name() and is_permanent().

#include <vigil/error.hpp>

#include <boost/asio/ssl/error.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstring>

namespace vigil::detail {

// Asio's categories are function-local statics of inline functions and carry no identifier,
// so a code made in another shared object may hold a different instance: match by name too.
inline bool in_category(const error_code& ec, const boost::system::error_category& cat) noexcept
{
    return ec.category() == cat || std::strcmp(ec.category().name(), cat.name()) == 0;
}

inline bool is_ssl_code(const error_code& ec) noexcept
{
    return in_category(ec, boost::asio::error::get_ssl_category());
}

inline bool is_ssl_stream_code(const error_code& ec) noexcept
{
    return in_category(ec, boost::asio::ssl::error::get_stream_category());
}

inline bool is_certificate_verify_failure(const error_code& ec) noexcept
{
    if (!is_ssl_code(ec))
        return false;
    const auto packed = static_cast<unsigned long>(static_cast<unsigned int>(ec.value()));
    return ERR_GET_LIB(packed) == ERR_LIB_SSL
        && ERR_GET_REASON(packed) == SSL_R_CERTIFICATE_VERIFY_FAILED;
}

}  // namespace vigil::detail
