// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

namespace vigil::detail {

/// The executor a session or supervisor runs all its work on: the caller's own if it is
/// already a strand, else a strand over it, as concrete as we can make it. A strand over a
/// plain io_context executor is of the concrete type, because a strand of any_io_executor
/// pays a heap allocation in several executor queries per operation.
///
/// A supervisor hands its own (already serialized) executor to its session, so both share
/// one strand: Boost 1.81's co_spawn forwards a cancellation to a *different* executor by
/// posting an emit that holds a raw pointer into the operation, which is freed if the
/// operation completes first. On one strand the emit runs inline and that race cannot occur.
inline boost::asio::any_io_executor serialized(boost::asio::any_io_executor ex)
{
    using io_executor = boost::asio::io_context::executor_type;
    if (const auto* io = ex.target<io_executor>())
        return boost::asio::make_strand(*io);
    if (ex.target<boost::asio::strand<io_executor>>() || ex.target<boost::asio::strand<boost::asio::any_io_executor>>())
        return ex;
    return boost::asio::make_strand(std::move(ex));
}

}  // namespace vigil::detail
