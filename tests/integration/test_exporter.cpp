// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The Prometheus exporter's own contract: several servers and supervisors, each under its
// label, one family per name, add/remove, and a port it cannot have. Scraped over a real
// socket. Skipped (and counted so) where prometheus-cpp was not found.

#include "integration_config.h"

#include <doctest/doctest.h>

#ifdef VIGIL_HAS_PROMETHEUS

#include <support/scrape.hpp>

#include <vigil/prometheus.hpp>
#include <vigil/server.hpp>
#include <vigil/supervisor.hpp>

#include <boost/asio/io_context.hpp>

#include <string>

namespace {

std::size_t occurrences(const std::string& text, const std::string& what)
{
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size()))
        ++n;
    return n;
}

}  // namespace

TEST_CASE("prometheus_exporter: servers and supervisors under their labels, one family per name, add and remove")
{
    boost::asio::io_context ioc;
    vigil::server_config scfg;
    scfg.port = 0;
    vigil::server srv(ioc.get_executor(), scfg, nullptr);
    vigil::supervisor a(ioc.get_executor(), "ws://127.0.0.1:1/a");
    vigil::supervisor b(ioc.get_executor(), "ws://127.0.0.1:1/b");

    std::string why;
    auto exporter = vigil::prometheus_exporter::start("127.0.0.1", 0, &why);
    INFO("why: ", why);
    REQUIRE(exporter);
    CHECK(exporter->port() != 0);

    CHECK(exporter->add(srv));
    CHECK_FALSE(exporter->add(srv, "again"));  // the same server twice
    CHECK(exporter->add(a, "a"));
    CHECK(exporter->add(b, "b"));
    CHECK_FALSE(exporter->add(b, "b2"));  // the same supervisor twice
    CHECK_FALSE(exporter->add(a, "b"));  // a name taken

    auto text = vigil::test::scrape(exporter->port());
    INFO("scraped:\n", text);
    CHECK(vigil::test::sample(text, "vigil_server_connections_open") == 0);
    CHECK(vigil::test::sample(text, "vigil_server_round_trip_seconds_count") == 0);
    CHECK(vigil::test::sample(text, "vigil_supervisor_up{supervisor=\"a\"}") == 0);
    CHECK(vigil::test::sample(text, "vigil_supervisor_up{supervisor=\"b\"}") == 0);
    CHECK(vigil::test::sample(text, "vigil_supervisor_attempts_total{supervisor=\"b\"}") == 0);
    CHECK(vigil::test::sample(text, "vigil_supervisor_backoff_wait_seconds_bucket{supervisor=\"a\",le=\"+Inf\"}") == 0);
    // Two supervisors, one family: a name is described once.
    CHECK(occurrences(text, "# TYPE vigil_supervisor_up gauge") == 1);
    CHECK(occurrences(text, "# TYPE vigil_supervisor_round_trip_seconds histogram") == 1);

    CHECK(exporter->remove(b));
    CHECK_FALSE(exporter->remove(b));
    text = vigil::test::scrape(exporter->port());
    CHECK(vigil::test::sample(text, "vigil_supervisor_up{supervisor=\"a\"}") == 0);
    CHECK(vigil::test::sample(text, "vigil_supervisor_up{supervisor=\"b\"}") == -1);
    CHECK(exporter->add(b, "b"));  // its name is free again

    // A port that is taken: null, and the detail names the address; nothing throws.
    std::string taken;
    auto second = vigil::prometheus_exporter::start("127.0.0.1", exporter->port(), &taken);
    CHECK_FALSE(second);
    CHECK_MESSAGE(taken.find("cannot listen for metrics on 127.0.0.1:" + std::to_string(exporter->port())) !=
                      std::string::npos,
                  taken);
}

#else

TEST_CASE("prometheus_exporter: not built (no prometheus-cpp)" * doctest::skip(true)) {}

#endif
