// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// Proxy URLs, the choice of proxy from config and environment (as curl makes it), and the
// bytes of HTTP CONNECT and SOCKS5, without sockets. The proxy suite runs real proxies.

#include <vigil/config.hpp>
#include <vigil/proxy.hpp>

#include "detail/proxy_codec.hpp"

#include <support/testing.hpp>

#include <doctest/doctest.h>

#include <map>
#include <string>

namespace {

using vigil::error;
using vigil::error_code;
using vigil::proxy_config;
using vigil::proxy_endpoint;
using vigil::proxy_scheme;
namespace vd = vigil::detail;

// A fake environment: only what the case sets.
vigil::env_lookup env_of(std::map<std::string, std::string> vars)
{
    return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
        if (auto it = vars.find(std::string(name)); it != vars.end())
            return it->second;
        return std::nullopt;
    };
}

proxy_endpoint parsed(const std::string& url)
{
    proxy_endpoint p;
    std::string why;
    const auto ec = vigil::parse_proxy_url(url, p, &why);
    REQUIRE_MESSAGE(!ec, why);
    return p;
}

std::string parse_error(const std::string& url)
{
    proxy_endpoint p;
    std::string why;
    CHECK_CODE(vigil::parse_proxy_url(url, p, &why), error::invalid_config);
    return why;
}

std::string bytes(std::initializer_list<int> b)
{
    std::string s;
    for (int c : b)
        s += static_cast<char>(c);
    return s;
}

}  // namespace

TEST_CASE("proxy URLs: schemes, hosts, ports and credentials")
{
    auto p = parsed("http://user:p%40ss%3Aword@proxy.example:3128");
    CHECK(p.scheme == proxy_scheme::http);
    CHECK(p.host == "proxy.example");
    CHECK(p.port == 3128);
    CHECK(p.username == "user");
    CHECK(p.password == "p@ss:word");  // percent-decoded
    CHECK(p.where() == "proxy.example:3128");

    p = parsed("socks5h://127.0.0.1");
    CHECK(p.scheme == proxy_scheme::socks5h);
    CHECK(p.port == 1080);  // curl's default for every proxy
    CHECK(p.username.empty());

    p = parsed("SOCKS5://[::1]:9050/");
    CHECK(p.scheme == proxy_scheme::socks5);
    CHECK(p.host == "::1");
    CHECK(p.where() == "[::1]:9050");

    p = parsed("proxy.local:8080");  // no scheme: HTTP, as curl reads it
    CHECK(p.scheme == proxy_scheme::http);
    CHECK(p.host == "proxy.local");
    CHECK(p.port == 8080);
}

TEST_CASE("proxy URLs that cannot be used say why, and never show the password")
{
    CHECK(parse_error("https://proxy:443").find("not supported") != std::string::npos);
    CHECK(parse_error("socks4://proxy:1080").find("SOCKS4") != std::string::npos);
    CHECK(parse_error("ftp://proxy:21").find("unsupported scheme") != std::string::npos);
    CHECK(parse_error("http://proxy:0").find("1..65535") != std::string::npos);
    CHECK(parse_error("http://proxy:99999").find("1..65535") != std::string::npos);
    CHECK(parse_error("http://proxy:80x").find("proxy URL") != std::string::npos);
    CHECK(parse_error("http://proxy:3128/path").find("path") != std::string::npos);
    CHECK(parse_error("http://:3128").find("host") != std::string::npos);
    CHECK(parse_error("").find("empty") != std::string::npos);
    CHECK(parse_error("http://pro xy").find("space") != std::string::npos);
    CHECK(parse_error("http://a%3Ab:pw@proxy").find("':'") != std::string::npos);
    CHECK(parse_error("socks5://" + std::string(256, 'u') + ":pw@proxy").find("255") != std::string::npos);

    const auto why = parse_error("https://alice:s3cret@proxy:443");
    CHECK(why.find("s3cret") == std::string::npos);
    CHECK(why.find("alice") == std::string::npos);
    CHECK(why.find("***@proxy") != std::string::npos);
}

TEST_CASE("validate() checks proxy.url and local_address, naming the field")
{
    vigil::session_config cfg;
    std::string why;
    cfg.proxy.url = "https://bob:hunter2@proxy:443";
    CHECK_CODE(vigil::validate(cfg, &why), error::invalid_config);
    CHECK(why.rfind("proxy.url: ", 0) == 0);
    CHECK(why.find("hunter2") == std::string::npos);

    cfg.proxy.url = "socks5h://127.0.0.1:1080";
    CHECK_FALSE(vigil::validate(cfg, &why));

    for (const char* good : {"127.0.0.2", "::1", "10.0.1.7", "fe80::1"}) {
        cfg.local_address = good;
        CAPTURE(good);
        CHECK_FALSE(vigil::validate(cfg, &why));
    }
    for (const char* bad : {"localhost", "eth0", "10.0.0.256", "1.2.3.4:80"}) {
        cfg.local_address = bad;
        CAPTURE(bad);
        CHECK_CODE(vigil::validate(cfg, &why), error::invalid_config);
        CHECK(why.rfind("local_address", 0) == 0);
    }
}

TEST_CASE("choose_proxy: the config's URL, else the environment as curl reads it")
{
    proxy_config cfg;
    const auto everything = env_of({{"http_proxy", "http://h:1"},
                                    {"HTTP_PROXY", "http://H:1"},
                                    {"https_proxy", "http://s:1"},
                                    {"HTTPS_PROXY", "http://S:1"},
                                    {"all_proxy", "socks5h://a:1"},
                                    {"ALL_PROXY", "socks5h://A:1"}});

    SUBCASE("opt-in: without from_environment the environment is not read")
    {
        auto c = vigil::choose_proxy(cfg, true, "example.com", everything);
        CHECK(c.url.empty());
        CHECK(c.source.empty());
    }
    SUBCASE("an explicit URL wins over the environment")
    {
        cfg.url = "http://explicit:3128";
        cfg.from_environment = true;
        auto c = vigil::choose_proxy(cfg, false, "example.com", everything);
        CHECK(c.url == "http://explicit:3128");
        CHECK(c.source == "proxy.url");
    }
    SUBCASE("ws:// reads http_proxy, lower case only; wss:// https_proxy then HTTPS_PROXY")
    {
        cfg.from_environment = true;
        CHECK(vigil::choose_proxy(cfg, false, "x", everything).source == "http_proxy");
        CHECK(vigil::choose_proxy(cfg, true, "x", everything).source == "https_proxy");
        auto upper_only = env_of({{"HTTP_PROXY", "http://H:1"}, {"HTTPS_PROXY", "http://S:1"}});
        CHECK(vigil::choose_proxy(cfg, false, "x", upper_only).url.empty());  // HTTP_PROXY is never read
        auto c = vigil::choose_proxy(cfg, true, "x", upper_only);
        CHECK(c.url == "http://S:1");
        CHECK(c.source == "HTTPS_PROXY");
    }
    SUBCASE("all_proxy, then ALL_PROXY, for both; empty variables count as unset")
    {
        cfg.from_environment = true;
        auto env = env_of({{"http_proxy", ""}, {"https_proxy", ""}, {"all_proxy", ""}, {"ALL_PROXY", "socks5h://A:1"}});
        CHECK(vigil::choose_proxy(cfg, false, "x", env).source == "ALL_PROXY");
        CHECK(vigil::choose_proxy(cfg, true, "x", env).source == "ALL_PROXY");
        env = env_of({{"all_proxy", "socks5://a:1"}, {"ALL_PROXY", "socks5h://A:1"}});
        CHECK(vigil::choose_proxy(cfg, true, "x", env).url == "socks5://a:1");
    }
    SUBCASE("no_proxy from the environment, lower case first; the config's list replaces it")
    {
        cfg.from_environment = true;
        auto env = env_of({{"http_proxy", "http://h:1"}, {"no_proxy", "internal.example"}, {"NO_PROXY", "*"}});
        auto c = vigil::choose_proxy(cfg, false, "feed.internal.example", env);
        CHECK(c.url.empty());
        CHECK(c.source == "no_proxy");
        CHECK(vigil::choose_proxy(cfg, false, "example.com", env).url == "http://h:1");
        cfg.no_proxy = "example.com";
        c = vigil::choose_proxy(cfg, false, "example.com", env);
        CHECK(c.url.empty());
        CHECK(c.source == "proxy.no_proxy");
        CHECK(vigil::choose_proxy(cfg, false, "feed.internal.example", env).url == "http://h:1");
    }
    SUBCASE("an explicit URL with the config's no_proxy")
    {
        cfg.url = "http://p:1";
        cfg.no_proxy = "localhost,127.0.0.1";
        CHECK(vigil::choose_proxy(cfg, false, "127.0.0.1", {}).url.empty());
        CHECK(vigil::choose_proxy(cfg, false, "127.0.0.2", {}).url == "http://p:1");
    }
}

TEST_CASE("no_proxy matching: names and their subdomains, exact addresses, '*', ports ignored")
{
    using vigil::no_proxy_matches;
    CHECK(no_proxy_matches("example.com", "example.com"));
    CHECK(no_proxy_matches("example.com", "feed.example.com"));
    CHECK(no_proxy_matches(".example.com", "feed.example.com"));
    CHECK(no_proxy_matches(".example.com", "example.com"));
    CHECK_FALSE(no_proxy_matches("example.com", "badexample.com"));
    CHECK_FALSE(no_proxy_matches("feed.example.com", "example.com"));
    CHECK(no_proxy_matches("EXAMPLE.com", "Feed.Example.COM."));
    CHECK(no_proxy_matches(" a.test , example.com:443 ,b.test", "example.com"));
    CHECK(no_proxy_matches("*", "anything.at.all"));
    CHECK(no_proxy_matches("a.test,*", "10.1.2.3"));
    CHECK_FALSE(no_proxy_matches("", "example.com"));
    CHECK_FALSE(no_proxy_matches(",,", "example.com"));
    CHECK_FALSE(no_proxy_matches("*.example.com", "feed.example.com"));  // no globs, as curl
    // Addresses match only themselves, never as a suffix.
    CHECK(no_proxy_matches("10.0.0.1", "10.0.0.1"));
    CHECK_FALSE(no_proxy_matches("0.0.1", "10.0.0.1"));
    CHECK(no_proxy_matches("::1", "::1"));
    CHECK(no_proxy_matches("[::1]", "::1"));
    CHECK(no_proxy_matches("[::1]:8080", "[::1]"));
    CHECK_FALSE(no_proxy_matches("::1", "::2"));
}

TEST_CASE("HTTP CONNECT: the request, Basic credentials, and the verdict on each status")
{
    auto p = parsed("http://Aladdin:open%20sesame@proxy:3128");
    CHECK(vd::base64("Aladdin:open sesame") == "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");  // RFC 7617's example
    CHECK(vd::base64("") == "");
    CHECK(vd::base64("f") == "Zg==");
    CHECK(vd::base64("fo") == "Zm8=");
    CHECK(vd::base64("foo") == "Zm9v");
    CHECK(vd::http_connect_request(p, "example.com", 443, "vigil")
          == "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: vigil\r\n"
             "Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n");
    CHECK(vd::http_connect_request(parsed("http://proxy"), "::1", 80, "")
          == "CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");

    CHECK_FALSE(vd::connect_status_error(200));
    CHECK_FALSE(vd::connect_status_error(204));
    CHECK_CODE(vd::connect_status_error(407), error::proxy_auth_required);
    CHECK_CODE(vd::connect_status_error(401), error::proxy_auth_required);  // tinyproxy, wrong credentials
    CHECK_CODE(vd::connect_status_error(403), error::proxy_denied);
    CHECK_CODE(vd::connect_status_error(400), error::proxy_denied);
    CHECK_CODE(vd::connect_status_error(301), error::proxy_denied);
    CHECK_CODE(vd::connect_status_error(502), error::proxy_target_unreachable);
    CHECK_CODE(vd::connect_status_error(503), error::proxy_target_unreachable);
    CHECK_CODE(vd::connect_status_error(504), error::proxy_target_unreachable);
    CHECK_CODE(vd::connect_status_error(429), error::proxy_target_unreachable);
}

TEST_CASE("SOCKS5: greeting, method choice, username/password, CONNECT and the reply")
{
    const auto anonymous = parsed("socks5h://proxy");
    const auto alice = parsed("socks5h://alice:pw@proxy");
    CHECK(vd::socks5_greeting(anonymous) == bytes({5, 1, 0}));
    CHECK(vd::socks5_greeting(alice) == bytes({5, 2, 0, 2}));

    std::string why;
    vd::socks5_method m{};
    CHECK_FALSE(vd::socks5_check_method(bytes({5, 0}), anonymous, m, why));
    CHECK(m == vd::socks5_method::none);
    CHECK_FALSE(vd::socks5_check_method(bytes({5, 2}), alice, m, why));
    CHECK(m == vd::socks5_method::password);
    CHECK_CODE(vd::socks5_check_method(bytes({5, 0xff}), anonymous, m, why), error::proxy_auth_required);
    CHECK(why.find("credentials") != std::string::npos);
    CHECK_CODE(vd::socks5_check_method(bytes({5, 2}), anonymous, m, why), error::proxy_protocol_error);
    CHECK_CODE(vd::socks5_check_method(bytes({'H', 'T'}), anonymous, m, why), error::proxy_protocol_error);
    CHECK(why.find("0x48") != std::string::npos);

    CHECK(vd::socks5_auth_request(alice) == bytes({1, 5, 'a', 'l', 'i', 'c', 'e', 2, 'p', 'w'}));
    CHECK_FALSE(vd::socks5_check_auth(bytes({1, 0}), why));
    CHECK_CODE(vd::socks5_check_auth(bytes({1, 1}), why), error::proxy_auth_required);
    CHECK_CODE(vd::socks5_check_auth(bytes({5, 0}), why), error::proxy_protocol_error);

    std::string req;
    CHECK_FALSE(vd::socks5_connect_request("example.com", 443, req, why));
    CHECK(req == bytes({5, 1, 0, 3, 11}) + "example.com" + bytes({1, 0xbb}));
    CHECK_FALSE(vd::socks5_connect_request("10.1.2.3", 80, req, why));
    CHECK(req == bytes({5, 1, 0, 1, 10, 1, 2, 3, 0, 80}));
    CHECK_FALSE(vd::socks5_connect_request("::1", 80, req, why));
    CHECK(req == bytes({5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80}));
    CHECK_CODE(vd::socks5_connect_request(std::string(256, 'a'), 80, req, why), error::invalid_host);

    std::size_t rest = 0;
    CHECK_FALSE(vd::socks5_check_reply_head(bytes({5, 0, 0, 1, 127}), rest, why));
    CHECK(rest == 5);
    CHECK_FALSE(vd::socks5_check_reply_head(bytes({5, 0, 0, 4, 0}), rest, why));
    CHECK(rest == 17);
    CHECK_FALSE(vd::socks5_check_reply_head(bytes({5, 0, 0, 3, 9}), rest, why));
    CHECK(rest == 11);
    CHECK_CODE(vd::socks5_check_reply_head(bytes({5, 0, 0, 9, 0}), rest, why), error::proxy_protocol_error);
    CHECK_CODE(vd::socks5_check_reply_head(bytes({4, 0, 0, 1, 0}), rest, why), error::proxy_protocol_error);
    CHECK_CODE(vd::socks5_check_reply_head(bytes({5, 2, 0, 1, 0}), rest, why), error::proxy_denied);
    CHECK(why.find("not allowed") != std::string::npos);
    for (int rep : {1, 3, 4, 5, 6, 9}) {
        CAPTURE(rep);
        CHECK_CODE(vd::socks5_check_reply_head(bytes({5, rep, 0, 1, 0}), rest, why), error::proxy_target_unreachable);
    }
    CHECK_CODE(vd::socks5_check_reply_head(bytes({5, 7, 0, 1, 0}), rest, why), error::proxy_denied);
    CHECK_CODE(vd::socks5_check_reply_head(bytes({5, 8, 0, 1, 0}), rest, why), error::proxy_denied);
}
