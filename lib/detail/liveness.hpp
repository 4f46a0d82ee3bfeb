// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The rules of time of one connection, with no socket and no clock of its own: when the
// heartbeat pings, and when the watchdog ends the connection. The session feeds it what
// happened and when (`now` is always an argument), and asks what is due; unit tests step it
// with a fake clock (tests/unit/test_liveness.cpp). docs/design.md shows where it sits.

#include "tcp_view.hpp"

#include <vigil/config.hpp>
#include <vigil/diagnosis.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

namespace vigil::detail {

using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;
using duration = clock_type::duration;

/// Every wake-up of a session is rounded up to this grid, so that the timers of many
/// connections fall due together and one event-loop turn serves them all.
inline constexpr std::chrono::milliseconds timer_grain{10};

/// `t` rounded up to the grid; `time_point::max()` and the epoch stay as they are.
time_point on_grid(time_point t) noexcept;

/// Whether written messages must be confirmed by a pong (delivery_guarantee::confirmed):
/// then a ping goes out as soon as a write completes, one in flight at a time, so that a
/// confirmation costs one round trip and a steady stream of sends is confirmed in batches
/// (every message written while a ping is in flight waits for the next one).
enum class write_confirmation { off, on };

/// The deadline that passed, as `liveness::expired()` reports it (the first in this order).
enum class expiry {
    none,
    pong,  ///< nothing at all arrived within pong_timeout of a ping
    idle,  ///< no data message for idle_timeout: say goodbye (the close deadline follows)
    message,  ///< a message in progress is later than message_timeout allows: say goodbye
    write,  ///< a message write made no progress for write_timeout
    close,  ///< the close handshake took longer than close_timeout
};

/// Whether the session reads the kernel's view of the path while a pong is awaited, to warn
/// early (on_suspect) or end early (end_on_suspect) when what we sent is being retransmitted.
enum class path_watch { off, on };

/// Linux's lower bound on TCP's retransmission timeout (TCP_RTO_MIN): before it, silence
/// after a ping says nothing about the path.
inline constexpr std::chrono::milliseconds shortest_rto{200};

/// What a look at the kernel's view of the path found (see `liveness::path_checked`).
enum class path_news {
    quiet,  ///< nothing wrong, or already reported for this ping
    suspect,  ///< what we sent was retransmitted and is still unacknowledged: warn
    dead,  ///< the same, and end_on_suspect is on: end the connection now
};

/// How a ping travels: a control frame written on its own (no second one is stacked
/// behind it while it is in flight), or a data message through the send queue.
enum class ping_carrier { control_frame, message };

/// What a pong that answers our last ping tells.
struct pong_news {
    duration rtt{};  ///< from the ping's send to its pong
    std::uint64_t confirmed{};  ///< application messages written before that ping
};

class liveness {
public:
    /// A connection that opened at `now`; forgets the previous one. `cfg` gives the
    /// intervals and deadlines and must outlive the connection; `seed` seeds the draws of
    /// `ping_jitter`.
    void start(const session_config& cfg, write_confirmation confirm, path_watch watch, time_point now,
               std::uint64_t seed) noexcept;

    // ---- what happened ----

    /// Any frame arrived (data, control, heartbeat message): proof of life.
    void frame_received(time_point now) noexcept;
    /// A data message arrived that the application gets (heartbeat messages are not data).
    void data_received(time_point now) noexcept;
    /// The pong that answers our last ping arrived (also a frame). Nullopt when no ping
    /// waits for one (a late or repeated pong).
    std::optional<pong_news> pong_received(time_point now) noexcept;
    /// The heartbeat handed a ping to the transport at `now`.
    void ping_sent(time_point now, ping_carrier carrier) noexcept;
    /// A protocol ping's write completed (no second ping is stacked behind one in flight).
    void ping_write_done() noexcept;
    /// A message write began / ended (the write deadline runs in between).
    void write_started(time_point now) noexcept;
    /// Part of the message in progress was written: the write deadline counts from `now`
    /// (write_timeout bounds a write without progress, not a whole long message).
    void write_progressed(time_point now) noexcept;
    void write_finished() noexcept;
    /// An application message was written whole (counted for delivery confirmation).
    void message_written() noexcept;
    /// The close handshake began (ours, a goodbye, or the peer's being answered): no more
    /// pings, no idle verdict, and the close deadline runs from `now`. Later calls change
    /// nothing.
    void close_started(time_point now) noexcept;
    /// The application stopped taking messages, so we stopped reading: the peer cannot be
    /// heard, and its silence is not held against it until reading resumes. A message in
    /// progress gets its allowance afresh from the resumption.
    void reading_paused() noexcept;
    void reading_resumed(time_point now) noexcept;
    /// The first bytes of a message arrived at `now` and the rest did not (yet): its
    /// deadline (message_timeout, message_min_rate) runs until `message_finished()`.
    void message_begun(time_point now) noexcept;
    /// `bytes` of the message in progress have arrived so far.
    void message_grew(std::size_t bytes) noexcept;
    void message_finished() noexcept;
    /// When the message in progress must be complete (`time_point::max()`: no deadline).
    time_point message_deadline() const noexcept;

    /// A pong or idle verdict fell due at `now` but the peer's bytes wait unread, so it is
    /// held back (they may hold the proof of life). True once that has lasted
    /// `write_timeout` with no frame read meanwhile: our read is stuck behind a write the
    /// peer does not take (Beast writes its answers to pings from inside the read), so the
    /// peer floods us and reads nothing back.
    bool unread_held(time_point now) noexcept;

    /// A wake-up meant for `due` ran at `now`. Returns how late it ran when that is more
    /// than the stall threshold (a stall of our own loop, to report).
    std::optional<duration> woke(time_point due, time_point now) noexcept;
    /// The kernel's view of the path, read at `path_check_due()`: whether it shows trouble
    /// (reported once per ping).
    path_news path_checked(time_point now, const tcp_view& view) noexcept;

    // ---- what is due ----

    /// When the heartbeat should send the next ping; `time_point::max()` for never (no
    /// heartbeat, closing, paused, or a ping still being written). Confirming writes, it is
    /// at once (the last ping's time) while written messages wait for a ping and none is in
    /// flight: the session then sends it without waiting for the grid.
    time_point ping_due() const noexcept;
    /// Whether a ping is due now only to confirm writes (see `write_confirmation`).
    bool confirmation_due() const noexcept;
    /// The first deadline that has passed at `now`, in the order of `expiry`.
    expiry expired(time_point now) const noexcept;
    /// The earliest deadline still running (`time_point::max()` for none).
    time_point next_deadline() const noexcept;
    /// When to read the kernel's view of the path next: every `path_step()` after a ping
    /// while its pong is awaited, if watching; else `time_point::max()`.
    time_point path_check_due() const noexcept;
    /// When the session must look again: the earliest of the three above.
    time_point next_wakeup() const noexcept;

    // ---- whose fault ----

    /// Whose fault a verdict falling at `now` is, given the kernel's view then: our own
    /// loop when the wake-up that found it ran later than the stall threshold; else the
    /// path when what we sent is unacknowledged and was retransmitted, or waits to be sent
    /// or acknowledged with no ACK at all since our last ping (for at least shortest_rto);
    /// else the peer's process; `unknown` without a view.
    vigil::diagnosis diagnose(time_point now, const tcp_view& view) const noexcept;
    /// `session_config::stall_threshold`, or a quarter of `pong_timeout` when zero.
    duration stall_threshold() const noexcept;
    /// Time between two looks at the path: a tenth of `pong_timeout`, at least 50 ms.
    duration path_step() const noexcept;

    // ---- what it knows ----

    time_point last_received() const noexcept { return last_rx_; }
    /// Application messages written whole on this connection.
    std::uint64_t written() const noexcept { return written_; }
    /// The pong deadline of the ping awaiting proof of life, else `time_point::max()`.
    time_point pong_deadline() const noexcept;

private:
    enum class pong_wait { none, awaited };
    enum class reading { on, paused };
    enum class ping_write { idle, in_flight };
    enum class writing { idle, busy };
    enum class closing { no, yes };
    enum class suspicion { none, reported };  // for the ping awaiting its pong
    enum class incoming { none, partial };  // a message in progress

    duration draw_early() noexcept;
    bool path_unanswered(time_point now, const tcp_view& view) const noexcept;
    bool heartbeat_on() const noexcept { return cfg_ && cfg_->ping_interval > duration::zero(); }
    bool awaiting_proof() const noexcept;
    bool idle_watched() const noexcept;

    const session_config* cfg_ = nullptr;
    write_confirmation confirm_ = write_confirmation::off;
    std::uint64_t rng_ = 0;

    time_point last_rx_{};  // any frame
    time_point last_data_{};  // data messages only

    time_point ping_due_at_{};  // when the last ping was due (not rounded, not late)
    time_point ping_sent_at_{};  // when it was handed over
    time_point next_fixed_{};  // ping_mode::fixed: the next ping's slot
    duration early_{};  // ping_jitter: how early the next ping goes
    pong_wait pong_ = pong_wait::none;
    ping_write ping_write_ = ping_write::idle;

    std::uint64_t written_ = 0;  // application messages written, this connection
    std::uint64_t ping_covers_ = 0;  // written_ when the last ping was sent

    reading reading_ = reading::on;
    writing writing_ = writing::idle;
    time_point write_progress_at_{};
    closing closing_ = closing::no;
    incoming incoming_ = incoming::none;
    time_point held_since_ = never_held;  // the first verdict held back by unread bytes
    static constexpr time_point never_held = time_point::max();
    time_point message_started_{};
    std::size_t message_bytes_ = 0;
    time_point close_started_at_{};

    duration late_{};  // how late the last wake-up ran
    time_point last_wake_{};  // lateness counts from no earlier than this
    path_watch watch_ = path_watch::off;
    std::uint64_t path_checks_ = 0;  // looks at the path since the last ping
    suspicion suspect_ = suspicion::none;
};

}  // namespace vigil::detail
