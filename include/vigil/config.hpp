// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <vigil/error.hpp>
#include <vigil/heartbeat.hpp>
#include <vigil/message_type.hpp>
#include <vigil/proxy.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace vigil {

/// When the heartbeat sends protocol pings.
enum class ping_mode {
    /// Ping only when nothing at all has arrived for `ping_interval`: a busy connection
    /// proves itself alive with every frame and sends no pings.
    idle,
    /// Ping every `ping_interval` whatever arrives, for servers that expect client pings.
    fixed,
};

/// What happens when `send()` finds the send queue full.
enum class overflow_policy {
    /// The send fails with `error::send_queue_full`; the connection carries on. The client
    /// default: the application decides what to drop.
    reject,
    /// The connection is ended with `error::slow_consumer` (close code 1013 and a reason
    /// sent when the peer can still take it): a peer that cannot keep up must not make the
    /// server hold an unbounded backlog. The server default.
    disconnect,
};

/// TLS settings for `wss://` URLs. Ignored for `ws://`.
struct tls_config {
    /// PEM file with the CA certificate(s) to trust. Empty (default): the system store.
    std::string ca_file;

    /// Skips certificate and host name verification entirely. Default false. Anyone on
    /// the path can then read and change the traffic: use only against test servers.
    bool insecure_skip_verify = false;

    /// The caller's own context (client certificates, pinning, ciphers). When set,
    /// `ca_file` and `insecure_skip_verify` are not applied to it; vigil still sets SNI and
    /// verifies the host name unless `insecure_skip_verify` is true. The context must
    /// outlive every session that uses it (the shared_ptr sees to that).
    std::shared_ptr<boost::asio::ssl::context> context;
};

/// permessage-deflate (RFC 7692): messages compressed on the wire. Off by default on both
/// sides. A client offers it in its upgrade request; a server accepts a client's offer. It is
/// in use on a connection only when both sides enabled it (`session::compressed()`,
/// `connection::compressed()`); otherwise the connection works uncompressed. Limits such as
/// `max_message_size` apply to the decompressed size, so a small compressed message that
/// inflates beyond it ends the connection with `message_too_big` (close code 1009) and
/// never takes more memory than the limit.
struct deflate_config {
    /// Offers (client) or accepts (server) compression. Default false.
    bool enabled = false;

    /// Largest LZ77 window, as a power of two, that the client compresses with (client role:
    /// asked for in the offer; server role: the most the server allows, below 15 only if the
    /// client's offer says it can honour it, otherwise the offer is declined). 9..15,
    /// default 15 (32 KiB). 8 is not accepted: zlib silently treats it as 9.
    int client_max_window_bits = 15;

    /// Largest window the server compresses with (client role: asked for; server role: the
    /// most the server uses). 9..15, default 15.
    int server_max_window_bits = 15;

    /// The client starts every message with an empty dictionary: repeated keys across
    /// messages are no longer shared, but neither side keeps the client's history between
    /// messages. Default false (`server_session_defaults()`: true). Either side may ask for
    /// it; once asked, it holds for the connection.
    bool client_no_context_takeover = false;

    /// The same for the server's messages. Default false (`server_session_defaults()`: true,
    /// so that no message a server sends depends on the ones before it). It costs ratio on
    /// streams of small similar messages (a 92-byte JSON tick: 93% of its size instead of
    /// 19%) and, with Beast 1.81, saves no memory: the compression state is reset between
    /// messages, not freed (about 90 KiB per connection once it has sent a compressed
    /// message at 15 window bits, either way; bench/README.md).
    bool server_no_context_takeover = false;

    /// zlib compression level for the messages this side sends: 0 (store only) to 9
    /// (smallest, slowest). Default 6.
    int level = 6;

    /// Messages shorter than this many bytes are sent uncompressed (their compressed form
    /// would barely be shorter, and each costs CPU). Default 64. Zero compresses everything.
    std::size_t threshold = 64;
};

/// Everything a client session can be told. Durations are milliseconds; seconds convert
/// implicitly (`cfg.ping_interval = 5s`). `validate()` checks a config before use, and
/// `session::connect()` refuses an invalid one with `error::invalid_config`.
struct session_config {
    /// Heartbeat period. In `ping_mode::idle`, a ping is sent once nothing has arrived for
    /// this long. Default 20 s, below the 30 s after which common NATs and proxies drop idle
    /// flows (nginx `proxy_read_timeout` 60 s, some cloud LBs 45 s). Zero disables the
    /// heartbeat (then `pong_timeout` is unused). Must be shorter than `idle_timeout` if both
    /// are set.
    std::chrono::milliseconds ping_interval = std::chrono::seconds(20);

    /// How long after a ping the connection may stay silent before it is declared dead
    /// with `error::pong_timeout`. Any frame counts, not just the pong. Default 10 s. Must be
    /// positive and shorter than `ping_interval`, so that one ping is judged before the next.
    /// A dead peer is therefore detected at most `ping_interval + pong_timeout + 10 ms` after
    /// the last frame received (the session looks at its deadlines on a 10 ms grid), plus
    /// however late the event loop itself runs. A ping sent late because the loop was busy
    /// still leaves the peer at least half of `pong_timeout` to answer.
    std::chrono::milliseconds pong_timeout = std::chrono::seconds(10);

    /// How late a timer wake-up may run before it is reported as a stall of our own event
    /// loop (`session_events::on_stall`) and before a verdict that falls at such a wake-up is
    /// diagnosed `diagnosis::local_stall`. Zero (default): a quarter of `pong_timeout`.
    /// Must not be negative.
    std::chrono::milliseconds stall_threshold{0};
    /// Declares the path dead as soon as the kernel shows that what we sent after a ping was
    /// retransmitted and still not acknowledged (`session_events::on_suspect`), instead of
    /// waiting for `pong_timeout`: the session ends with `error::pong_timeout`, diagnosis
    /// `network`. A dead path is then detected within `ping_interval` + the first TCP
    /// retransmission timeout (200 ms at least on Linux, more on slow paths) +
    /// `max(pong_timeout / 10, 50 ms)` + 10 ms, and never later than without it. Linux only.
    /// Default false: a retransmission is a warning, the verdict waits for `pong_timeout`.
    bool end_on_suspect = false;
    /// When pings are sent. Default `ping_mode::idle`.
    ping_mode ping = ping_mode::idle;

    /// Spreads heartbeats out: each ping is sent up to this fraction of `ping_interval` early,
    /// drawn at random per ping, so that thousands of connections accepted in the same
    /// instant (a server after a restart) are not all pinged in the same tick. The mean
    /// interval is shorter by half the fraction (10% at 0.2); in exchange the early pings keep
    /// a server ahead of clients that ping at the same interval, whose idle timers then never
    /// run out, so only one side pings. Detection stays within `ping_interval + pong_timeout`.
    /// Default 0 (client); 0.2 in `server_config`. Must be in [0, 0.5].
    double ping_jitter = 0.0;

    /// Application-level heartbeat: when set, the heartbeat pings with this policy's text
    /// message instead of RFC 6455 ping frames, recognises its pong, and answers the peer's
    /// application-level pings (see `heartbeat_policy`, `message_heartbeat`). Protocol pings
    /// from the peer are still answered. `ping_interval`, `pong_timeout` and `ping_mode`
    /// apply unchanged; any incoming frame still counts as a sign of life. Default: none,
    /// protocol pings.
    std::optional<any_heartbeat> heartbeat;

    /// Hands the messages the application-level heartbeat consumed (our pongs, the peer's
    /// pings) to the application as well. Default false. Heartbeat messages never count as
    /// data for `idle_timeout`.
    bool deliver_heartbeat_messages = false;

    /// Staleness deadline: the session ends with `error::idle_timeout` when no data message
    /// (text or binary; control frames do not count) arrives for this long. Catches a feed
    /// that answers pings but stopped sending. Default zero: off.
    std::chrono::milliseconds idle_timeout{0};

    /// Which data messages satisfy `idle_timeout`: a feed whose updates stopped while the
    /// acks of our own requests still arrive on the same socket is stale all the same. Called
    /// on the session's executor with each data message while `idle_timeout` is set (before
    /// `on_message`); every message is still delivered and still proves the peer alive. An
    /// exception ends the connection with `error::handler_exception` (see `session_events`).
    /// Empty (default): every data message counts.
    std::function<bool(std::string_view data, message_type type)> is_fresh;

    /// DNS resolution plus TCP connect (all resolved addresses), and through a proxy also the
    /// proxy's own connection and its CONNECT or SOCKS5 exchange, `error::connect_timeout`.
    /// Default 10 s. Must be positive.
    std::chrono::milliseconds connect_timeout = std::chrono::seconds(10);

    /// TLS handshake, `error::tls_handshake_timeout`. Default 10 s. Must be positive.
    std::chrono::milliseconds tls_handshake_timeout = std::chrono::seconds(10);

    /// WebSocket upgrade request and response, `error::handshake_timeout`. Default 10 s.
    /// Must be positive.
    std::chrono::milliseconds handshake_timeout = std::chrono::seconds(10);

    /// Longest a message write may go without progress: a peer that stops reading fills the
    /// TCP buffers and the write stalls; after this the session ends with
    /// `error::write_timeout`. A message longer than 64 KiB is written in frames of 64 KiB,
    /// and each one written starts the count again: a 16 MB snapshot moving slowly over a
    /// thin link is not a stall, and a short message is bounded as a whole. Default 10 s.
    /// Zero disables it.
    std::chrono::milliseconds write_timeout = std::chrono::seconds(10);

    /// How long the close handshake may take, ours or an answer to the peer's. After it the
    /// socket is torn down and the close reports `error::close_timeout`. Default 5 s. Must be
    /// positive.
    std::chrono::milliseconds close_timeout = std::chrono::seconds(5);

    /// Most messages waiting to be written; `send()` beyond it fails at once with
    /// `error::send_queue_full` rather than growing memory. Default 1024. Must be positive.
    std::size_t send_queue_limit = 1024;

    /// What a send beyond `send_queue_limit` does. Default `overflow_policy::reject`.
    overflow_policy send_queue_overflow = overflow_policy::reject;

    /// Largest incoming message in bytes; a larger one ends the session with Beast's
    /// `message_too_big` (close code 1009 sent to the peer). Default 16 MiB. Must be positive.
    std::size_t max_message_size = 16 * 1024 * 1024;

    /// Most bytes of messages waiting to be written, the one being written included; a
    /// `send()` beyond it is handled as one beyond `send_queue_limit` (`send_queue_overflow`).
    /// A message longer than the limit is still taken when nothing else waits. A message
    /// shared between connections (`server::broadcast`) counts in full in each queue. Default
    /// 0: no limit in bytes (`server_session_defaults()` sets 4 MiB).
    std::size_t send_queue_bytes = 0;

    /// How long an incoming message may take, from its first bytes to its last: a peer that
    /// starts a message and then trickles it (or stops) would otherwise hold its buffer for
    /// as long as it answers pings. The allowance is `message_timeout` plus one second per
    /// `message_min_rate` bytes received of it so far, so a long message arriving steadily is
    /// never cut. Beyond it the session says goodbye with close code 1008 and ends with
    /// `error::message_timeout`. Time in which the session itself is not reading (see
    /// `max_receive_rate`, a server's budget and receive queue) is not counted. Default 0: no
    /// limit (`server_session_defaults()` sets 10 s).
    std::chrono::milliseconds message_timeout{0};

    /// See `message_timeout`. Bytes per second; default 0: the whole message within
    /// `message_timeout` (`server_session_defaults()` sets 64 KiB/s).
    std::size_t message_min_rate = 0;

    /// Most bytes per second read from the peer, with a burst of one second's worth. A peer
    /// that sends faster is not ended: the session stops reading until the peer is back
    /// within its rate, and TCP slows the peer down (its pings wait meanwhile, and its silence
    /// is not held against it). Default 0: no limit (`server_session_defaults()` sets 4 MiB/s,
    /// so that one fast sender cannot flood everyone it is broadcast to). At least 1024 when
    /// set.
    std::size_t max_receive_rate = 0;

    /// `User-Agent` of the upgrade request. Default `"vigil"`.
    std::string user_agent = "vigil";

    /// Extra headers for the upgrade request (authentication tokens, cookies). Not
    /// `Sec-WebSocket-Protocol`: offer subprotocols with `subprotocols`; not
    /// `Sec-WebSocket-Extensions`: compression is `deflate`.
    std::vector<std::pair<std::string, std::string>> headers;

    /// TLS settings for `wss://`.
    tls_config tls;

    /// The proxy to reach servers through, if any (see `proxy_config`). Default: none, and
    /// the environment is not read.
    proxy_config proxy;

    /// The local IP address to connect from (an IPv4 or IPv6 literal such as `10.0.1.7`), for
    /// hosts with several interfaces. Each connection (to the proxy, when one is used) is
    /// bound to it before connecting, and only server (or proxy) addresses of the same family
    /// are tried. Default empty: any address, chosen by the system's routing. Anything but an
    /// IP literal makes `validate()` fail with `error::invalid_config`; an address that is
    /// not on this host fails the connect with `error::local_address_unusable`, as does a
    /// server with no address of the same family.
    std::string local_address;

    /// The subprotocols to offer (`Sec-WebSocket-Protocol`), in order of preference; the
    /// one the server chose is `session::subprotocol()`. A server answering one that was not
    /// offered (or any when none was) fails the connect with `error::subprotocol_mismatch`
    /// (permanent). Default empty: none offered. **Errors:** `validate()` answers
    /// `invalid_config` for a name that is not an HTTP token, one listed twice, or a
    /// `Sec-WebSocket-Protocol` entry in `headers` (offer them here instead).
    std::vector<std::string> subprotocols;

    /// With `subprotocols` offered, whether a server that chooses none fails the connect
    /// (`error::subprotocol_mismatch`), as browsers and Node's `ws` do. Default true: an
    /// application that offered protocols cannot speak to a server that speaks none of
    /// them. False: the connection opens with `session::subprotocol()` empty, which RFC
    /// 6455 leaves to the client to accept.
    bool subprotocol_required = true;
    /// permessage-deflate; see `deflate_config`. Default off. Offering it through `headers`
    /// (`Sec-WebSocket-Extensions`) is refused by `validate()`: the session could not
    /// decode what the server would send.
    deflate_config deflate;
};

/// Checks `cfg`. Returns an empty code when it can be used; otherwise
/// `error::invalid_config`, with a message naming the field and the rule broken written to
/// `*detail` if given (for example "pong_timeout (20000 ms) must be shorter than
/// ping_interval (20000 ms)").
error_code validate(const session_config& cfg, std::string* detail = nullptr);

}  // namespace vigil
