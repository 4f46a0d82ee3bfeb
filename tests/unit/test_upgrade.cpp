// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// The admission parts without sockets: the Origin matcher, the token a request presents,
// subprotocol lists, and the configs that offer or support them.

#include <vigil/config.hpp>
#include <vigil/server.hpp>
#include <vigil/upgrade.hpp>

#include "detail/subprotocols.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace {

vigil::upgrade_request request(std::string target, std::vector<std::pair<std::string, std::string>> headers = {})
{
    vigil::upgrade_request r;
    r.target = std::move(target);
    r.headers = std::move(headers);
    return r;
}

template <class Config>
std::string detail_of(const Config& cfg)
{
    std::string detail;
    CHECK(vigil::validate(cfg, &detail) == vigil::error::invalid_config);
    return detail;
}

}  // namespace

TEST_CASE("origin_allowed: scheme, host in any case and port (the scheme's default filled in) must all match")
{
    const std::vector<std::string> allowed = {"https://chat.example", "http://localhost:8080", "https://[::1]:8443"};
    CHECK(vigil::origin_allowed("https://chat.example", allowed));
    CHECK(vigil::origin_allowed("HTTPS://Chat.Example", allowed));
    CHECK(vigil::origin_allowed("https://chat.example:443", allowed));
    CHECK(vigil::origin_allowed("http://localhost:8080", allowed));
    CHECK(vigil::origin_allowed("https://[::1]:8443", allowed));

    CHECK_FALSE(vigil::origin_allowed("http://chat.example", allowed));  // another scheme
    CHECK_FALSE(vigil::origin_allowed("https://chat.example:8443", allowed));  // another port
    CHECK_FALSE(vigil::origin_allowed("https://evil.chat.example", allowed));
    CHECK_FALSE(vigil::origin_allowed("https://chat.example.evil.example", allowed));
    CHECK_FALSE(vigil::origin_allowed("http://localhost", allowed));
    CHECK_FALSE(vigil::origin_allowed("https://[::1]", allowed));
    // Not origins at all: nothing matches them, not even an equal string.
    for (const char* bad : {"null", "", "chat.example", "https://", "https://chat.example/", "https://a@chat.example",
                            "https://chat.example:", "https://chat.example:99999", "https://chat.example:x"}) {
        CAPTURE(bad);
        CHECK_FALSE(vigil::origin_allowed(bad, {bad}));
    }
    CHECK_FALSE(vigil::origin_allowed("https://chat.example", {}));
}

TEST_CASE("allow_origins and require_token refuse to be built from what cannot work")
{
    CHECK_THROWS_AS(vigil::allow_origins({"chat.example"}, vigil::missing_origin::allow), std::invalid_argument);
    CHECK_THROWS_WITH(vigil::allow_origins({"https://a.example", "https://b.example/app"}, vigil::missing_origin::allow),
                      doctest::Contains("allowed[1] \"https://b.example/app\" is not an origin"));
    CHECK_NOTHROW(vigil::allow_origins({}, vigil::missing_origin::allow));
    CHECK_THROWS_AS(vigil::require_token(""), std::invalid_argument);
}

TEST_CASE("presented_token: Authorization Bearer first, then ?token=, percent-decoded")
{
    CHECK(vigil::presented_token(request("/", {{"authorization", "Bearer abc"}})) == "abc");
    CHECK(vigil::presented_token(request("/", {{"Authorization", "bearer   abc  "}})) == "abc");
    CHECK(vigil::presented_token(request("/?token=q", {{"Authorization", "Bearer h"}})) == "h");
    CHECK(vigil::presented_token(request("/chat?room=1&token=a%2Bb%3D")) == "a+b=");
    CHECK(vigil::presented_token(request("/?token=")) == "");
    // Another scheme is not a bearer token; the query is then looked at.
    CHECK(vigil::presented_token(request("/?token=q", {{"Authorization", "Basic dXNlcjpwYXNz"}})) == "q");
    CHECK_FALSE(vigil::presented_token(request("/", {{"Authorization", "Basic dXNlcjpwYXNz"}})).has_value());
    CHECK_FALSE(vigil::presented_token(request("/", {{"Authorization", "Bearer "}})).has_value());
    CHECK_FALSE(vigil::presented_token(request("/?tokens=x&mytoken=y")).has_value());
    CHECK_FALSE(vigil::presented_token(request("/#token=x")).has_value());
}

TEST_CASE("upgrade_request: header lookup ignores case and returns the first; refusals default their reason")
{
    const auto r = request("/", {{"X-One", "1"}, {"x-one", "2"}});
    CHECK(r.header("X-ONE") == "1");
    CHECK_FALSE(r.header("X-Two").has_value());
    const auto d = vigil::upgrade_decision::refuse(403, "go away");
    CHECK(d.what == vigil::upgrade_decision::verdict::refuse);
    CHECK(d.reason == "go away");
    CHECK(vigil::upgrade_decision::accept().what == vigil::upgrade_decision::verdict::accept);
}

TEST_CASE("subprotocol lists: split, joined, chosen in the server's order")
{
    std::vector<std::string> offered;
    vigil::detail::split_subprotocols(" chat.v1 ,, chat.v2\t", offered);
    vigil::detail::split_subprotocols("mqtt", offered);
    CHECK(offered == std::vector<std::string>{"chat.v1", "chat.v2", "mqtt"});
    CHECK(vigil::detail::join_subprotocols(offered) == "chat.v1, chat.v2, mqtt");
    CHECK(vigil::detail::choose_subprotocol(offered, {"chat.v2", "chat.v1"}) == "chat.v2");
    CHECK(vigil::detail::choose_subprotocol(offered, {"stomp"}).empty());
    CHECK(vigil::detail::choose_subprotocol({}, {"stomp"}).empty());
}

TEST_CASE("subprotocols in configs: tokens, listed once, and never a hand-made Sec-WebSocket-Protocol header")
{
    vigil::session_config cfg;
    cfg.subprotocols = {"chat.v1", "chat v2"};
    CHECK(detail_of(cfg).find("subprotocols[1] \"chat v2\" is not a token") == 0);
    cfg.subprotocols = {"chat.v1", "chat.v1"};
    CHECK(detail_of(cfg) == "subprotocols[1] \"chat.v1\" is listed twice");
    cfg.subprotocols = {""};
    CHECK(detail_of(cfg).find("subprotocols[0] \"\" is not a token") == 0);
    cfg.subprotocols = {"chat.v1"};
    CHECK(!vigil::validate(cfg));
    cfg.headers = {{"sec-websocket-protocol", "chat.v1"}};
    CHECK(detail_of(cfg).find("headers[0] is Sec-WebSocket-Protocol: offer subprotocols with "
                              "session_config::subprotocols") == 0);

    vigil::server_config scfg;
    scfg.subprotocols = {"a", "b", "a"};
    CHECK(detail_of(scfg) == "subprotocols[2] \"a\" is listed twice");
    scfg.subprotocols = {"a", "b"};
    CHECK(!vigil::validate(scfg));
}
