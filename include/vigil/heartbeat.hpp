// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Application-level heartbeats: pings that are data messages (`{"type":"ping"}` answered by
// `{"type":"pong"}`), for servers that expect them and for paths where only data frames
// survive (some proxies, browser clients that cannot send protocol pings).

#include <vigil/message_type.hpp>

#include <concepts>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace vigil {

/// Recognises one kind of text message: by exact text, or by one field of a JSON object
/// (`type == "pong"`). Matching never throws and never allocates for a message that cannot
/// match: malformed JSON, binary data and messages that do not contain the expected value
/// are just "no".
class message_match {
public:
    /// Matches nothing (the default).
    message_match() = default;

    /// Matches a message whose text equals `text` byte for byte.
    static message_match exact(std::string text);

    /// Matches a JSON object whose member `field` equals `value`: a string member equal to
    /// `value`, or a number/bool/null member whose JSON text equals `value`
    /// (`json_field("seq", "42")`). `field` may be a JSON pointer (`"/meta/kind"`) for a
    /// nested member.
    static message_match json_field(std::string field, std::string value);

    /// Parses the command-line form: `field=value` gives `json_field`; anything without '='
    /// gives nullopt.
    static std::optional<message_match> parse_field_spec(std::string_view spec);

    /// True when `data` (a text message) is what this matcher looks for.
    bool matches(std::string_view data) const noexcept;

    /// True unless default-constructed.
    explicit operator bool() const noexcept { return kind_ != kind::none; }

    /// For logs: `exact "..."` or `json /type == "pong"`.
    std::string describe() const;

private:
    enum class kind { none, exact, json_field };
    kind kind_ = kind::none;
    std::string text_;   // exact text, or the JSON pointer
    std::string value_;  // json_field: the expected value
    bool prefilter_ = false;  // value_ appears verbatim in any JSON text that holds it
};

/// What a session needs from an application-level heartbeat. Users write their own (a ping
/// carrying a sequence number or a timestamp, matched on the pong) and put it in
/// `session_config::heartbeat`. Each session works on its own copy of the policy, so
/// per-connection state (a sequence counter) needs no locking.
///
/// - `make_ping()`: the text message to send as a ping now.
/// - `is_pong(data)`: does this incoming text message answer our ping? A pong is consumed
///   (not handed to the application unless `session_config::deliver_heartbeat_messages`).
/// - `answer(data)`: if this incoming text message is the *peer's* ping, the reply to send
///   (also consumed); nullopt for anything else.
///
/// The functions run on the session's executor for every incoming text message, so they must
/// be cheap. An exception from them ends the session with `error::handler_exception`.
template <class P>
concept heartbeat_policy = std::copy_constructible<P> && requires(P& p, std::string_view data) {
    { p.make_ping() } -> std::convertible_to<std::string>;
    { p.is_pong(data) } -> std::convertible_to<bool>;
    { p.answer(data) } -> std::convertible_to<std::optional<std::string>>;
};

/// The ready-made application-level heartbeat: a fixed ping text, a matcher for the pong,
/// and optionally the peer's pings to answer.
struct message_heartbeat {
    /// The ping we send, e.g. `{"type":"ping"}`.
    std::string ping;
    /// How to recognise the answer to our ping.
    message_match pong;
    /// How to recognise the peer's pings; empty: we do not answer any.
    message_match peer_ping;
    /// What we answer them with.
    std::string reply;

    /// `{"<field>":"<ping_value>"}` pings, pongs recognised by `field == pong_value`; the
    /// peer's pings of the same shape are answered with `{"<field>":"<pong_value>"}`.
    /// Default: `{"type":"ping"}` / `{"type":"pong"}`. Values are JSON-escaped. Throws
    /// `std::invalid_argument` when the field or a value is not valid UTF-8.
    static message_heartbeat json(std::string field = "type", std::string ping_value = "ping",
                                  std::string pong_value = "pong");

    /// Exact texts both ways: we send `ping` and expect `pong`; a peer's `ping` is
    /// answered with `pong`.
    static message_heartbeat text(std::string ping, std::string pong);

    std::string make_ping() const { return ping; }
    bool is_pong(std::string_view data) const noexcept { return pong.matches(data); }
    std::optional<std::string> answer(std::string_view data) const
    {
        if (peer_ping && peer_ping.matches(data))
            return reply;
        return std::nullopt;
    }
};

static_assert(heartbeat_policy<message_heartbeat>);

/// A copyable holder for any `heartbeat_policy` (type erasure), as kept in
/// `session_config::heartbeat`. Copying it copies the policy.
class any_heartbeat {
public:
    // The self-exclusion comes first: clang 14 would otherwise recurse through
    // std::optional<any_heartbeat>'s triviality checks while testing the concept.
    template <class P>
        requires(!std::same_as<std::remove_cvref_t<P>, any_heartbeat> && heartbeat_policy<P>)
    any_heartbeat(P policy) : impl_(std::make_unique<model<P>>(std::move(policy)))
    {
    }
    any_heartbeat(const any_heartbeat& other) : impl_(other.impl_->clone()) {}
    any_heartbeat(any_heartbeat&&) noexcept = default;
    any_heartbeat& operator=(const any_heartbeat& other)
    {
        if (this != &other)
            impl_ = other.impl_->clone();
        return *this;
    }
    any_heartbeat& operator=(any_heartbeat&&) noexcept = default;

    std::string make_ping() { return impl_->make_ping(); }
    bool is_pong(std::string_view data) { return impl_->is_pong(data); }
    std::optional<std::string> answer(std::string_view data) { return impl_->answer(data); }

private:
    struct concept_t {
        virtual ~concept_t() = default;
        virtual std::unique_ptr<concept_t> clone() const = 0;
        virtual std::string make_ping() = 0;
        virtual bool is_pong(std::string_view) = 0;
        virtual std::optional<std::string> answer(std::string_view) = 0;
    };
    template <class P>
    struct model final : concept_t {
        explicit model(P p) : policy(std::move(p)) {}
        std::unique_ptr<concept_t> clone() const override { return std::make_unique<model>(policy); }
        std::string make_ping() override { return policy.make_ping(); }
        bool is_pong(std::string_view d) override { return policy.is_pong(d); }
        std::optional<std::string> answer(std::string_view d) override { return policy.answer(d); }
        P policy;
    };
    std::unique_ptr<concept_t> impl_;
};

}  // namespace vigil
