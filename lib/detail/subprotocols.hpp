// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// Subprotocol lists (Sec-WebSocket-Protocol) as both sides read and write them, and the
// small text rules an admission check's answer must follow. No I/O: unit-tested.

#include <string>
#include <string_view>
#include <vector>

namespace vigil::detail {

/// An HTTP token (RFC 9110 5.6.2), which a subprotocol name and a header name must be.
bool is_http_token(std::string_view s) noexcept;

/// Appends the names of one `Sec-WebSocket-Protocol` value ("chat, superchat") to `out`,
/// trimmed; empty elements are skipped.
void split_subprotocols(std::string_view value, std::vector<std::string>& out);

/// `names` joined with ", ", for a header or a message.
std::string join_subprotocols(const std::vector<std::string>& names);

/// The first of `supported` (the server's preference order) that the client offered;
/// empty when none is.
std::string choose_subprotocol(const std::vector<std::string>& offered, const std::vector<std::string>& supported);

/// Whether `names` is a valid list to offer or support; otherwise `why` says which entry
/// is wrong, prefixed with `field` ("subprotocols[1] \"a b\" is not a token ...").
bool check_subprotocols(const std::vector<std::string>& names, const std::string& field, std::string& why);

}  // namespace vigil::detail
