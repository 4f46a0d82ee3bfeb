// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Not part of the API: the one initiation behind session, supervisor and connection's
// async_send.

#include <vigil/error.hpp>
#include <vigil/message_type.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>

#include <memory>
#include <string>
#include <utility>

namespace vigil::detail {

using send_handler = boost::asio::any_completion_handler<void(error_code)>;

/// Initiates a send for any completion token: `start(data, type, handler)` takes the message
/// (a string it owns, or a shared one) and a type-erased handler that it must complete
/// exactly once.
template <class CompletionToken, class Start, class Payload>
auto initiate_send(CompletionToken&& token, Start start, Payload data, message_type type)
{
    return boost::asio::async_initiate<CompletionToken, void(error_code)>(
        [start](auto handler, Payload data, message_type type) {
            start(std::move(data), type, send_handler(std::move(handler)));
        },
        token, std::move(data), type);
}

}  // namespace vigil::detail
