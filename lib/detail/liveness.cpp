// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "liveness.hpp"

#include <algorithm>

namespace vigil::detail {

namespace {

constexpr time_point never = time_point::max();

// splitmix64: small, fast and seedable; jitter needs no more.
std::uint64_t next_random(std::uint64_t& state) noexcept
{
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

}  // namespace

time_point on_grid(time_point t) noexcept
{
    const auto since = t.time_since_epoch();
    const auto grain = duration(timer_grain);
    if (t == never || since <= duration::zero())
        return t;
    if (t > never - grain)
        return never;
    const auto rest = since % grain;
    return rest == duration::zero() ? t : t - rest + grain;
}

void liveness::start(const session_config& cfg, write_confirmation confirm, path_watch watch, time_point now,
                     std::uint64_t seed) noexcept
{
    *this = liveness{};
    cfg_ = &cfg;
    confirm_ = confirm;
    watch_ = watch;
    rng_ = seed;
    last_rx_ = last_data_ = now;
    ping_due_at_ = ping_sent_at_ = now;
    next_fixed_ = now + cfg.ping_interval;
    early_ = draw_early();
}

duration liveness::draw_early() noexcept
{
    if (cfg_->ping_jitter <= 0.0 || !heartbeat_on())
        return {};
    // 53 random bits as a fraction in [0, 1).
    const double unit = static_cast<double>(next_random(rng_) >> 11) * 0x1.0p-53;
    const auto span = std::chrono::duration<double, duration::period>(cfg_->ping_interval) * cfg_->ping_jitter;
    return std::chrono::duration_cast<duration>(span * unit);
}

void liveness::frame_received(time_point now) noexcept
{
    last_rx_ = std::max(last_rx_, now);
    held_since_ = never_held;  // the read moves
}

bool liveness::unread_held(time_point now) noexcept
{
    if (held_since_ == never_held)
        held_since_ = now;
    return cfg_->write_timeout > duration::zero() && now - held_since_ >= cfg_->write_timeout;
}

void liveness::data_received(time_point now) noexcept
{
    frame_received(now);
    last_data_ = std::max(last_data_, now);
}

std::optional<pong_news> liveness::pong_received(time_point now) noexcept
{
    frame_received(now);
    if (pong_ != pong_wait::awaited)
        return std::nullopt;
    pong_ = pong_wait::none;
    return pong_news{now - ping_sent_at_, ping_covers_};
}

void liveness::ping_sent(time_point now, ping_carrier carrier) noexcept
{
    // The deadline counts from when the ping was due, not from when a late tick sent it
    // (the grid, a busy loop): that is what keeps detection within interval + timeout.
    ping_due_at_ = std::min(ping_due(), now);
    ping_sent_at_ = now;
    pong_ = pong_wait::awaited;
    if (carrier == ping_carrier::control_frame)
        ping_write_ = ping_write::in_flight;
    ping_covers_ = written_;
    path_checks_ = 0;
    suspect_ = suspicion::none;
    if (cfg_->ping == ping_mode::fixed)
        next_fixed_ =
            next_fixed_ + cfg_->ping_interval > now ? next_fixed_ + cfg_->ping_interval : now + cfg_->ping_interval;
    early_ = draw_early();
}

void liveness::ping_write_done() noexcept
{
    ping_write_ = ping_write::idle;
}

void liveness::write_started(time_point now) noexcept
{
    writing_ = writing::busy;
    write_progress_at_ = now;
}

void liveness::write_progressed(time_point now) noexcept
{
    if (writing_ == writing::busy)
        write_progress_at_ = std::max(write_progress_at_, now);
}

void liveness::write_finished() noexcept
{
    writing_ = writing::idle;
}

void liveness::message_written() noexcept
{
    ++written_;
}

void liveness::close_started(time_point now) noexcept
{
    if (closing_ == closing::yes)
        return;
    closing_ = closing::yes;
    close_started_at_ = now;
}

void liveness::reading_paused() noexcept
{
    reading_ = reading::paused;
}

void liveness::reading_resumed(time_point now) noexcept
{
    if (reading_ == reading::on)
        return;
    reading_ = reading::on;
    // Both clocks start afresh: the silence while paused was ours, not the peer's.
    last_rx_ = last_data_ = now;
    message_started_ = now;
}

void liveness::message_begun(time_point now) noexcept
{
    incoming_ = incoming::partial;
    message_started_ = now;
    message_bytes_ = 0;
}

void liveness::message_grew(std::size_t bytes) noexcept
{
    message_bytes_ = bytes;
}

void liveness::message_finished() noexcept
{
    incoming_ = incoming::none;
}

time_point liveness::message_deadline() const noexcept
{
    if (incoming_ == incoming::none || reading_ == reading::paused || closing_ == closing::yes ||
        cfg_->message_timeout <= duration::zero())
        return never;
    // A steady long message earns time as it arrives; a stalled or trickling one does not.
    duration earned{};
    if (cfg_->message_min_rate > 0)
        earned = std::chrono::duration_cast<duration>(std::chrono::duration<double>(
            static_cast<double>(message_bytes_) / static_cast<double>(cfg_->message_min_rate)));
    return message_started_ + cfg_->message_timeout + earned;
}

time_point liveness::ping_due() const noexcept
{
    if (!heartbeat_on() || closing_ == closing::yes || reading_ == reading::paused ||
        ping_write_ == ping_write::in_flight)
        return never;
    // idle: once nothing has arrived for the interval since the later of the last frame
    // and the last ping; fixed: on a steady schedule. Either way `early_` (ping_jitter)
    // spreads the pings of connections that started together.
    const time_point base =
        cfg_->ping == ping_mode::idle ? std::max(last_rx_, ping_sent_at_) + cfg_->ping_interval : next_fixed_;
    // Confirming delivery: a ping right after writes, one in flight at a time, whatever
    // arrives meanwhile (only its pong proves the peer read them).
    return confirmation_due() ? std::min(base - early_, ping_sent_at_) : base - early_;
}

bool liveness::confirmation_due() const noexcept
{
    return confirm_ == write_confirmation::on && written_ > ping_covers_ && pong_ == pong_wait::none &&
           heartbeat_on() && closing_ == closing::no && reading_ == reading::on && ping_write_ == ping_write::idle;
}

bool liveness::awaiting_proof() const noexcept
{
    // Any frame after the ping proves the peer alive, not only the pong.
    return heartbeat_on() && reading_ == reading::on && ping_sent_at_ > last_rx_;
}

bool liveness::idle_watched() const noexcept
{
    return cfg_->idle_timeout > duration::zero() && reading_ == reading::on && closing_ == closing::no;
}

time_point liveness::pong_deadline() const noexcept
{
    if (!awaiting_proof())
        return never;
    // From when the ping was due, so that neither the grid nor a few milliseconds of our
    // own lateness in sending it stretch the bound; but a ping our loop sent much later
    // than due (it was stalled) still leaves the peer half its timeout to answer.
    const auto from = std::max(ping_due_at_, ping_sent_at_ - cfg_->pong_timeout / 2);
    return from + cfg_->pong_timeout;
}

expiry liveness::expired(time_point now) const noexcept
{
    if (now >= pong_deadline())
        return expiry::pong;
    if (idle_watched() && now >= last_data_ + cfg_->idle_timeout)
        return expiry::idle;
    if (now >= message_deadline())
        return expiry::message;
    if (writing_ == writing::busy && cfg_->write_timeout > duration::zero() &&
        now >= write_progress_at_ + cfg_->write_timeout)
        return expiry::write;
    if (closing_ == closing::yes && now >= close_started_at_ + cfg_->close_timeout)
        return expiry::close;
    return expiry::none;
}

time_point liveness::next_deadline() const noexcept
{
    time_point next = pong_deadline();
    if (idle_watched())
        next = std::min(next, last_data_ + cfg_->idle_timeout);
    next = std::min(next, message_deadline());
    if (writing_ == writing::busy && cfg_->write_timeout > duration::zero())
        next = std::min(next, write_progress_at_ + cfg_->write_timeout);
    if (closing_ == closing::yes)
        next = std::min(next, close_started_at_ + cfg_->close_timeout);
    return next;
}

time_point liveness::next_wakeup() const noexcept
{
    return std::min({ping_due(), next_deadline(), path_check_due()});
}

duration liveness::stall_threshold() const noexcept
{
    return cfg_->stall_threshold > duration::zero() ? duration(cfg_->stall_threshold) : duration(cfg_->pong_timeout) / 4;
}

duration liveness::path_step() const noexcept
{
    return std::max(duration(cfg_->pong_timeout) / 10, duration(std::chrono::milliseconds(50)));
}

std::optional<duration> liveness::woke(time_point due, time_point now) noexcept
{
    duration late{};
    if (due <= last_wake_) {
        // A deadline looked at again (something was unread): late only by what passed since
        // the last wake-up, and the lateness of that one still stands for the verdict.
        late = now > last_wake_ ? now - last_wake_ : duration::zero();
        late_ = std::max(late_, late);
    } else {
        late = now > due ? now - due : duration::zero();
        late_ = late;
    }
    last_wake_ = std::max(last_wake_, now);
    if (late > stall_threshold())
        return late;
    return std::nullopt;
}

time_point liveness::path_check_due() const noexcept
{
    if (watch_ == path_watch::off || suspect_ == suspicion::reported || closing_ == closing::yes || !awaiting_proof())
        return never;
    // The pong deadline's own wake-up looks at the path then: no look is due at or after it.
    const auto due = ping_sent_at_ + path_step() * static_cast<duration::rep>(path_checks_ + 1);
    return due < pong_deadline() ? due : never;
}

path_news liveness::path_checked(time_point now, const tcp_view& view) noexcept
{
    if (now < ping_sent_at_ || path_check_due() == never)
        return path_news::quiet;
    // Counted from the ping, so that a late wake-up does not bring a burst of looks.
    path_checks_ = static_cast<std::uint64_t>((now - ping_sent_at_) / path_step());
    if (!path_unanswered(now, view))
        return path_news::quiet;
    suspect_ = suspicion::reported;
    return cfg_->end_on_suspect ? path_news::dead : path_news::suspect;
}

bool liveness::path_unanswered(time_point now, const tcp_view& view) const noexcept
{
    if (view.from != tcp_view::source::kernel)
        return false;
    // Retransmitted and still unacknowledged: what TCP itself calls a lost segment.
    if (view.unacked > 0 && view.retransmits > 0)
        return true;
    // Something waits to be sent or acknowledged and no ACK at all came since the ping, for
    // longer than TCP's shortest retransmission timeout: our own host cannot send (its
    // packets dropped on the way out count as neither sent nor retransmitted), or the first
    // retransmission is still to come on a slow path.
    const auto since_ping = now - ping_sent_at_;
    return (view.unacked > 0 || view.queued > 0) && since_ping >= shortest_rto && view.since_ack >= since_ping;
}

vigil::diagnosis liveness::diagnose(time_point now, const tcp_view& view) const noexcept
{
    if (late_ > stall_threshold())
        return vigil::diagnosis::local_stall;
    if (view.from != tcp_view::source::kernel)
        return vigil::diagnosis::unknown;
    return path_unanswered(now, view) ? vigil::diagnosis::network : vigil::diagnosis::peer_unresponsive;
}

}  // namespace vigil::detail
