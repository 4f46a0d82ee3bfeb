// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The integration suite runs twice: with the io_contexts of the test thread as Asio makes
// them by default (each session on a strand of its own, with a steady_timer of its own),
// and as a single-threaded server would make them (concurrency hint 1: sessions on the
// context's executor, sharing its timer wheel). VIGIL_TEST_ONE_THREAD=1 selects the second.

#include <boost/asio/io_context.hpp>

#include <cstdlib>
#include <string_view>

namespace vigil::test {

/// The concurrency hint for io_contexts that only the test thread runs.
inline int concurrency_hint()
{
    const char* v = std::getenv("VIGIL_TEST_ONE_THREAD");
    return v && std::string_view(v) == "1" ? 1 : BOOST_ASIO_CONCURRENCY_HINT_DEFAULT;
}

}  // namespace vigil::test
