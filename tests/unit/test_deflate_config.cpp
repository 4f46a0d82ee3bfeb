// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// session_config::deflate: its defaults, validate()'s rules for it, and the refusal of an
// extension offered through headers.

#include <vigil/config.hpp>
#include <vigil/server.hpp>

#include <doctest/doctest.h>

#include <string>

namespace {

std::string detail_of(const vigil::session_config& cfg)
{
    std::string detail;
    CHECK(vigil::validate(cfg, &detail) == vigil::error::invalid_config);
    return detail;
}

}  // namespace

TEST_CASE("deflate config: off by default on both sides; a server that enables it keeps no context")
{
    const vigil::session_config client;
    CHECK_FALSE(client.deflate.enabled);
    CHECK_FALSE(client.deflate.client_no_context_takeover);
    CHECK_FALSE(client.deflate.server_no_context_takeover);
    CHECK(client.deflate.client_max_window_bits == 15);
    CHECK(client.deflate.server_max_window_bits == 15);
    CHECK(client.deflate.level == 6);
    CHECK(client.deflate.threshold == 64);
    const auto server = vigil::server_session_defaults();
    CHECK_FALSE(server.deflate.enabled);
    CHECK(server.deflate.client_no_context_takeover);
    CHECK(server.deflate.server_no_context_takeover);
    CHECK_FALSE(vigil::validate(client));
    CHECK_FALSE(vigil::validate(server));
}

TEST_CASE("deflate config: window bits in [9, 15] and level in [0, 9], checked even when disabled")
{
    vigil::session_config cfg;
    cfg.deflate.client_max_window_bits = 8;
    CHECK(detail_of(cfg) == "deflate.client_max_window_bits (8) must be in [9, 15] (8 is not usable: zlib treats it as 9)");
    cfg.deflate.client_max_window_bits = 9;
    cfg.deflate.server_max_window_bits = 16;
    CHECK(detail_of(cfg).find("deflate.server_max_window_bits (16) must be in [9, 15]") == 0);
    cfg.deflate.server_max_window_bits = 15;
    cfg.deflate.level = 10;
    CHECK(detail_of(cfg) == "deflate.level (10) must be in [0, 9]");
    cfg.deflate.level = -1;
    CHECK(detail_of(cfg) == "deflate.level (-1) must be in [0, 9]");
    cfg.deflate.level = 0;
    cfg.deflate.enabled = true;
    cfg.deflate.threshold = 0;
    CHECK_FALSE(vigil::validate(cfg));
}

TEST_CASE("deflate config: Sec-WebSocket-Extensions in headers is refused, whatever its case")
{
    vigil::session_config cfg;
    cfg.headers = {{"Authorization", "Bearer s3cret"}, {"sec-websocket-EXTENSIONS", "permessage-deflate"}};
    const auto detail = detail_of(cfg);
    CHECK(detail.find("headers[1] (\"sec-websocket-EXTENSIONS\") cannot be set through headers") == 0);
    CHECK(detail.find("deflate.enabled = true") != std::string::npos);
    // The value is never echoed (headers may carry secrets).
    CHECK(detail.find("permessage-deflate") == std::string::npos);
}
