// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The error classifier: "must we stop, or may we retry?" for vigil's, Asio's, Beast's and
// OpenSSL's codes, HTTP statuses and close codes. The tables here are the one source of
// truth; include/vigil/error.hpp states them for users.

#include <vigil/error.hpp>

#include "detail/tls_codes.hpp"

#include <string>

namespace vigil {

namespace {

constexpr unsigned long long condition_category_id = 0xa6f3'1c2e'9d40'5b1aULL;

class condition_category_impl final : public boost::system::error_category {
public:
    constexpr condition_category_impl() noexcept : error_category(condition_category_id) {}

    const char* name() const noexcept override { return "vigil.condition"; }

    std::string message(int value) const override
    {
        switch (static_cast<condition>(value)) {
        case condition::transient: return "transient";
        case condition::permanent: return "permanent";
        }
        return "vigil_condition_" + std::to_string(value);
    }

    bool equivalent(const error_code& ec, int value) const noexcept override
    {
        switch (static_cast<condition>(value)) {
        case condition::permanent:
            return is_permanent(ec);
        case condition::transient:
            return ec.failed() && !is_permanent(ec)
                && ec != boost::system::errc::operation_canceled;
        }
        return false;
    }
};

bool http_status_is_permanent(int status) noexcept
{
    // 101 is the upgrade succeeding; it never arrives as an error, but is not a refusal.
    if (status == 101)
        return false;
    // Timeouts and rate limiting say "come back later"; 5xx is the server's trouble.
    if (status == 408 || status == 429 || (status >= 500 && status <= 599))
        return false;
    // Other 4xx reject the request itself, and we send the same request again. Redirects
    // (3xx) are final too: a WebSocket client does not follow them, and retrying will be
    // redirected the same way.
    return true;
}

bool close_code_is_permanent(int code) noexcept
{
    switch (code) {
    // The peer judged what we send, not the connection: another connection would send the
    // same frames, data or extension offer and be closed the same way.
    case 1002:  // protocol error
    case 1003:  // unsupported data type
    case 1007:  // invalid payload data
    case 1010:  // a mandatory extension was not negotiated
        return true;
    // 1008 (policy violation) is not here: exchanges send it for "too many requests", which
    // passes; the supervisor waits at least policy_violation_delay before the retry.
    default:
        return false;
    }
}

}  // namespace

const boost::system::error_category& condition_category() noexcept
{
    static const condition_category_impl instance;
    return instance;
}

boost::system::error_condition make_error_condition(condition c) noexcept
{
    return {static_cast<int>(c), condition_category()};
}

bool is_permanent(const error_code& ec) noexcept
{
    if (!ec.failed())
        return false;
    const auto& cat = ec.category();
    if (cat == error_category()) {
        switch (static_cast<error>(ec.value())) {
        case error::invalid_url:
        case error::unsupported_scheme:
        case error::invalid_host:
        case error::invalid_port:
        case error::invalid_config:
        // The same address, proxy credentials and request would fail the same way again;
        // a proxy that cannot reach the server now (proxy_target_unreachable) may later.
        case error::local_address_unusable:
        case error::proxy_auth_required:
        case error::proxy_denied:
        case error::proxy_protocol_error:
        // The server speaks none of the protocols offered, and will not start to by itself.
        case error::subprotocol_mismatch:
        // Redis refuses the password (or wants one) until someone changes the config.
        case error::redis_auth_failed:
            return true;
        default:
            return false;
        }
    }
    if (cat == http_status_category())
        return http_status_is_permanent(ec.value());
    if (cat == close_code_category())
        return close_code_is_permanent(ec.value());
    // An untrusted or mismatched certificate stays untrusted until someone changes the
    // server or the trust store.
    return detail::is_certificate_verify_failure(ec);
}

}  // namespace vigil
