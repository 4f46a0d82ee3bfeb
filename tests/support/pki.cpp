// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <support/pki.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <vector>

namespace vigil::test {

namespace {

struct pkey_free {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct x509_free {
    void operator()(X509* x) const { X509_free(x); }
};
struct file_close {
    void operator()(std::FILE* f) const { std::fclose(f); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;

void check(bool ok, const char* what)
{
    if (!ok)
        throw std::runtime_error(std::string("test_pki: ") + what + " failed");
}

pkey_ptr make_key()
{
    pkey_ptr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    check(key != nullptr, "EVP_PKEY_Q_keygen");
    return key;
}

void add_ext(X509* cert, X509V3_CTX* ctx, int nid, const char* value)
{
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
    check(ext != nullptr, "X509V3_EXT_conf_nid");
    int added = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    check(added == 1, "X509_add_ext");
}

struct cert_spec {
    const char* common_name;
    const char* subject_alt_names;  // null for the CA
    bool is_ca;
};

// Signs with issuer_key as issuer; a null issuer makes the certificate self-signed.
x509_ptr make_cert(const cert_spec& spec, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key)
{
    x509_ptr cert(X509_new());
    check(cert != nullptr, "X509_new");
    X509* x = cert.get();
    check(X509_set_version(x, X509_VERSION_3) == 1, "X509_set_version");

    // Random serials: two runs' certificates must never look like the same one to a cache.
    unsigned char serial[8];
    check(RAND_bytes(serial, sizeof serial) == 1, "RAND_bytes");
    serial[0] &= 0x7f;
    std::uint64_t value = 0;
    for (unsigned char b : serial)
        value = (value << 8) | b;
    check(ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), value) == 1, "ASN1_INTEGER_set");

    check(X509_gmtime_adj(X509_getm_notBefore(x), -60 * 60) != nullptr, "X509_gmtime_adj");
    check(X509_gmtime_adj(X509_getm_notAfter(x), 24 * 60 * 60) != nullptr, "X509_gmtime_adj");
    check(X509_set_pubkey(x, key) == 1, "X509_set_pubkey");

    X509_NAME* name = X509_get_subject_name(x);
    check(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                     reinterpret_cast<const unsigned char*>("vigil tests"), -1,
                                     -1, 0) == 1,
          "X509_NAME_add_entry");
    check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                     reinterpret_cast<const unsigned char*>(spec.common_name),
                                     -1, -1, 0) == 1,
          "X509_NAME_add_entry");
    check(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1,
          "X509_set_issuer_name");

    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, nullptr, nullptr, 0);
    add_ext(x, &ctx, NID_basic_constraints, spec.is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext(x, &ctx, NID_key_usage,
            spec.is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    add_ext(x, &ctx, NID_subject_key_identifier, "hash");
    if (issuer)
        add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
    if (!spec.is_ca)
        add_ext(x, &ctx, NID_ext_key_usage, "serverAuth");
    if (spec.subject_alt_names)
        add_ext(x, &ctx, NID_subject_alt_name, spec.subject_alt_names);

    check(X509_sign(x, issuer ? issuer_key : key, EVP_sha256()) > 0, "X509_sign");
    return cert;
}

void write_cert(const std::string& path, X509* cert)
{
    std::unique_ptr<std::FILE, file_close> f(std::fopen(path.c_str(), "w"));
    check(f != nullptr, "fopen");
    check(PEM_write_X509(f.get(), cert) == 1, "PEM_write_X509");
}

void write_key(const std::string& path, EVP_PKEY* key)
{
    std::unique_ptr<std::FILE, file_close> f(std::fopen(path.c_str(), "w"));
    check(f != nullptr, "fopen");
    check(PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
          "PEM_write_PrivateKey");
}

constexpr const char* good_names = "DNS:localhost,IP:127.0.0.1,IP:::1";

}  // namespace

test_pki::test_pki()
{
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/vigil-pki-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    check(::mkdtemp(buf.data()) != nullptr, "mkdtemp");
    dir = buf.data();

    try {
        ca_cert = dir + "/ca.pem";
        server_cert = dir + "/server.pem";
        server_key = dir + "/server.key";
        self_signed_cert = dir + "/self-signed.pem";
        self_signed_key = dir + "/self-signed.key";
        wrong_host_cert = dir + "/wrong-host.pem";
        wrong_host_key = dir + "/wrong-host.key";

        auto ca_key = make_key();
        auto ca = make_cert({"vigil test CA", nullptr, true}, ca_key.get(), nullptr, nullptr);
        write_cert(ca_cert, ca.get());

        auto key = make_key();
        auto cert = make_cert({"localhost", good_names, false}, key.get(), ca.get(), ca_key.get());
        write_cert(server_cert, cert.get());
        write_key(server_key, key.get());

        auto self_key = make_key();
        auto self = make_cert({"localhost", good_names, false}, self_key.get(), nullptr, nullptr);
        write_cert(self_signed_cert, self.get());
        write_key(self_signed_key, self_key.get());

        auto wrong_key = make_key();
        auto wrong = make_cert({"wrong.example", "DNS:wrong.example", false}, wrong_key.get(),
                               ca.get(), ca_key.get());
        write_cert(wrong_host_cert, wrong.get());
        write_key(wrong_host_key, wrong_key.get());
    } catch (...) {
        std::error_code ignored;
        std::filesystem::remove_all(dir, ignored);
        throw;
    }
}

test_pki::~test_pki()
{
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
}

}  // namespace vigil::test
