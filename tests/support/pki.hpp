// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

#include <string>

namespace vigil::test {

/// Certificates made fresh for one test run, so that no private key is ever committed and
/// none expires in the repository. The constructor generates (P-256 keys, valid from an
/// hour ago to a day ahead) and writes PEM files into a new private temporary directory
/// (under `$TMPDIR`, else `/tmp`); the destructor removes them.
///
/// - a CA (`ca_cert`; its key never leaves memory);
/// - a server certificate signed by the CA for DNS `localhost`, IP `127.0.0.1` and IP `::1`
///   (`server_cert`, `server_key`): trusted when `ca_cert` is the CA file;
/// - a self-signed certificate for the same names (`self_signed_cert`, `self_signed_key`):
///   fails verification against `ca_cert`;
/// - a certificate signed by the CA for DNS `wrong.example` only (`wrong_host_cert`,
///   `wrong_host_key`): chains to `ca_cert` but fails host name verification.
///
/// Throws `std::runtime_error` naming the OpenSSL call that failed.
struct test_pki {
    test_pki();
    ~test_pki();
    test_pki(const test_pki&) = delete;
    test_pki& operator=(const test_pki&) = delete;

    std::string dir;
    std::string ca_cert;
    std::string server_cert;
    std::string server_key;
    std::string self_signed_cert;
    std::string self_signed_key;
    std::string wrong_host_cert;
    std::string wrong_host_key;
};

}  // namespace vigil::test
