// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// permessage-deflate (RFC 7692): session_config::deflate handed to Beast's own extension,
// and what the handshake agreed read back from the 101 response (Beast does not say). The
// limits stay Beast's: read_message_max counts inflated bytes, and every read inflates into
// the buffer the reader gives it (at most read_piece on a server), so a compression bomb
// grows the message no faster and no further than an uncompressed one would.

#include "session_core.hpp"

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/websocket/option.hpp>

namespace vigil::detail {

namespace {

websocket::permessage_deflate to_beast(const deflate_config& d, beast::role_type role)
{
    websocket::permessage_deflate pmd;
    pmd.client_enable = role == beast::role_type::client;
    pmd.server_enable = role == beast::role_type::server;
    pmd.client_max_window_bits = d.client_max_window_bits;
    pmd.server_max_window_bits = d.server_max_window_bits;
    pmd.client_no_context_takeover = d.client_no_context_takeover;
    pmd.server_no_context_takeover = d.server_no_context_takeover;
    pmd.compLevel = d.level;
    pmd.msg_size_threshold = d.threshold;
    return pmd;
}

}  // namespace

void session_core::apply_deflate(beast::role_type role)
{
    deflate_.store(deflate_use::off, std::memory_order_relaxed);
    if (cfg_->deflate.enabled)
        ws_->set_option(to_beast(cfg_->deflate, role));  // validate() checked the ranges
}

void session_core::note_deflate(const websocket::response_type& res)
{
    // Beast opens the extension exactly when the 101 carries it and this side enabled it.
    if (!cfg_->deflate.enabled || res.result() != beast::http::status::switching_protocols)
        return;
    const auto it = res.find(beast::http::field::sec_websocket_extensions);
    if (it != res.end() && beast::http::ext_list{it->value()}.exists("permessage-deflate"))
        deflate_.store(deflate_use::on, std::memory_order_relaxed);
}

bool session_core::compressed() const noexcept
{
    return deflate_.load(std::memory_order_relaxed) == deflate_use::on;
}

}  // namespace vigil::detail
