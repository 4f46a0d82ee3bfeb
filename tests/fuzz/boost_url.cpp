// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

// Boost.URL compiled into the fuzz target instead of linked from libboost_url: instrumented
// for coverage, its parser is where parse_url's interesting branches are.
#include <boost/url/src.hpp>
