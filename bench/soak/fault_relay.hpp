// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace soak {

/// A TCP relay from an ephemeral port on 127.0.0.1 to a target port, with the faults the soak
/// injects. Unlike the test rig's relay, which freezes everything at once, this one silences
/// chosen connections: to both ends a silenced connection is a network path that died
/// without a FIN or a reset. It also stops accepting for a while (clients queue in the listen
/// backlog and their handshakes time out), and opens slow consumers directly to the server.
///
/// Runs its own io_context on its own thread; every member function may be called from any
/// thread.
class fault_relay {
public:
    explicit fault_relay(std::uint16_t target_port);
    ~fault_relay();
    fault_relay(const fault_relay&) = delete;
    fault_relay& operator=(const fault_relay&) = delete;

    std::uint16_t port() const noexcept;

    /// Silences `fraction` of the relayed connections (at least one when there are any),
    /// chosen at random: nothing is forwarded either way for `duration`. Then they resume
    /// (`reset_after` false: held bytes are delivered) or are reset on both sides (true: what
    /// both ends see when a NAT entry expired and is gone). Returns how many.
    std::size_t silence(double fraction, std::chrono::milliseconds duration, bool reset_after);

    /// Resets `fraction` of the relayed connections on both sides now. Returns how many.
    std::size_t reset_some(double fraction);

    /// Accepts nothing for `duration`.
    void pause_accept(std::chrono::milliseconds duration);

    /// Opens `n` connections straight to `server_port` that upgrade at `/slow` and then never
    /// read; each is closed after `hold`.
    void open_slow_consumers(std::uint16_t server_port, int n, std::chrono::milliseconds hold);

    /// Ends every silence as it was meant to end (resumed, or reset on both sides), and
    /// resumes accepting.
    void restore();

    struct counters {
        std::size_t accepted = 0;           ///< client connections accepted
        std::size_t upstream_refused = 0;   ///< the server was down: client reset
        std::size_t active = 0;             ///< relayed now
        std::size_t silenced_brief = 0;     ///< silenced, then resumed
        std::size_t silenced_dead = 0;      ///< silenced, then reset
        std::size_t reset = 0;              ///< reset outright
        std::size_t accept_pauses = 0;
        std::size_t slow_opened = 0;        ///< slow consumers whose upgrade succeeded
        std::size_t slow_failed = 0;        ///< slow consumers that could not upgrade
    };
    counters stats() const;

    struct impl;

private:
    std::shared_ptr<impl> impl_;
};

}  // namespace soak
