// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/detail/concurrency_hint.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

namespace vigil::detail {

/// Whether `ctx` was constructed with a concurrency hint that promises one thread (1, or a
/// hint that turns the scheduler's locking off). Asio's hint is the application's promise
/// that one thread runs the context; everything on it is then serialized already.
inline bool single_threaded(boost::asio::io_context& ctx)
{
    const int hint = boost::asio::use_service<boost::asio::detail::io_context_impl>(ctx).concurrency_hint();
    return hint == 1 || !BOOST_ASIO_CONCURRENCY_HINT_IS_LOCKING(SCHEDULER, hint);
}

/// The executor a session or supervisor runs all its work on: the caller's own if it is
/// already a strand, else a strand over it, as concrete as we can make it. A strand over a
/// plain io_context executor is of the concrete type, because a strand of any_io_executor
/// pays a heap allocation in several executor queries per operation.
///
/// An io_context that one thread runs (concurrency hint 1, the usual "one io_context per
/// core" server) needs no strand: its executor is used as it is. A strand there would cost a
/// lock and a second trip through the scheduler on every completion, which is most of what
/// a heartbeat costs beyond plain Beast's (bench/scale).
///
/// A supervisor hands its own (already serialized) executor to its session, so both share
/// one strand: Boost 1.81's co_spawn forwards a cancellation to a *different* executor by
/// posting an emit that holds a raw pointer into the operation, which is freed if the
/// operation completes first. On one strand the emit runs inline and that race cannot occur.
inline boost::asio::any_io_executor serialized(boost::asio::any_io_executor ex)
{
    using io_executor = boost::asio::io_context::executor_type;
    if (const auto* io = ex.target<io_executor>()) {
        if (single_threaded(io->context()))
            return ex;
        return boost::asio::make_strand(*io);
    }
    if (ex.target<boost::asio::strand<io_executor>>() || ex.target<boost::asio::strand<boost::asio::any_io_executor>>())
        return ex;
    return boost::asio::make_strand(std::move(ex));
}

}  // namespace vigil::detail
