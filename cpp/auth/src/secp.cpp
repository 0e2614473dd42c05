// secp256k1 recovery and signing, hex helpers and addresses.

#include <secp256k1.h>
#include <secp256k1_recovery.h>

#include <openssl/rand.h>

#include <cstring>
#include <stdexcept>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/keys.hpp"
#include "dclcomms/error.hpp"
#include "internal.hpp"

namespace dclcomms::auth {
namespace {

// The curve order n, big-endian.
constexpr uint8_t kOrder[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48,
                                0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};

// Created once and randomized (side-channel blinding for signing), read-only
// afterwards: libsecp256k1 allows concurrent use of a const context.
const secp256k1_context* context() {
  static const secp256k1_context* ctx = [] {
    secp256k1_context* c = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    unsigned char seed[32];
    if (RAND_bytes(seed, sizeof seed) == 1) {
      if (!secp256k1_context_randomize(c, seed)) {
        throw std::runtime_error("secp256k1_context_randomize failed");
      }
    }
    return c;
  }();
  return ctx;
}

// 0 < x < n for a 32-byte big-endian scalar.
bool scalar_in_range(const uint8_t* x) {
  bool zero = true;
  for (int i = 0; i < 32; ++i) zero = zero && x[i] == 0;
  if (zero) return false;
  return std::memcmp(x, kOrder, 32) < 0;
}

void set_code(std::string* code, const char* value) {
  if (code) *code = value;
}

std::string address_of_pubkey(const secp256k1_pubkey& pubkey) {
  uint8_t out[65];
  size_t len = sizeof out;
  secp256k1_ec_pubkey_serialize(context(), out, &len, &pubkey, SECP256K1_EC_UNCOMPRESSED);
  const Hash32 h = keccak256(std::string_view(reinterpret_cast<const char*>(out + 1), 64));
  return "0x" + to_hex(h.data() + 12, 20);
}

}  // namespace

std::string to_hex(const uint8_t* data, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * size, '\0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2) return std::nullopt;
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = detail::hex_value(hex[2 * i]);
    const int lo = detail::hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return out;
}

std::string to_checksum_address(std::string_view address) {
  if (!detail::is_hex_address(address)) {
    throw Error(ErrorKind::Auth, "bad_address", "not a 0x + 40 hex digit address");
  }
  std::string lower = detail::ascii_lower(address.substr(2));
  const Hash32 h = keccak256(lower);
  std::string out = "0x";
  for (size_t i = 0; i < 40; ++i) {
    const uint8_t nibble = (i % 2 == 0) ? (h[i / 2] >> 4) : (h[i / 2] & 0xf);
    const char c = lower[i];
    out.push_back((c >= 'a' && c <= 'f' && nibble >= 8) ? static_cast<char>(c - 'a' + 'A') : c);
  }
  return out;
}

bool is_valid_private_key(const PrivateKey& key) noexcept {
  return secp256k1_ec_seckey_verify(context(), key.data()) == 1;
}

std::string address_of(const PrivateKey& key) {
  secp256k1_pubkey pubkey;
  if (!secp256k1_ec_pubkey_create(context(), &pubkey, key.data())) {
    throw Error(ErrorKind::Auth, "bad_private_key", "private key out of range (0 < key < n)");
  }
  return address_of_pubkey(pubkey);
}

Signature65 sign_hash(const PrivateKey& key, const Hash32& hash) {
  secp256k1_ecdsa_recoverable_signature sig;
  // nullptr nonce function = RFC-6979; libsecp256k1 always emits low-s.
  if (!secp256k1_ecdsa_sign_recoverable(context(), &sig, hash.data(), key.data(), nullptr,
                                        nullptr)) {
    throw Error(ErrorKind::Auth, "bad_private_key", "private key out of range (0 < key < n)");
  }
  Signature65 out;
  int recid = 0;
  secp256k1_ecdsa_recoverable_signature_serialize_compact(context(), out.data(), &recid, &sig);
  out[64] = static_cast<uint8_t>(27 + recid);
  return out;
}

std::string sign_personal(const PrivateKey& key, std::string_view message) {
  const Signature65 sig = sign_hash(key, personal_message_hash(message));
  return "0x" + to_hex(sig.data(), sig.size());
}

std::optional<std::string> recover_address_from_hash(const Hash32& hash,
                                                     std::string_view signature_hex,
                                                     std::string* code) {
  // S1: lowercase 0x prefix, then one or more hex digits of any case.
  if (signature_hex.size() < 3 || signature_hex[0] != '0' || signature_hex[1] != 'x') {
    set_code(code, "bad_signature_encoding");
    return std::nullopt;
  }
  const std::string_view digits = signature_hex.substr(2);
  for (char c : digits) {
    if (detail::hex_value(c) < 0) {
      set_code(code, "bad_signature_encoding");
      return std::nullopt;
    }
  }
  // S2: exactly 65 bytes (odd digit counts included here).
  if (digits.size() != 130) {
    set_code(code, "bad_signature_length");
    return std::nullopt;
  }
  uint8_t raw[65];
  for (size_t i = 0; i < 65; ++i) {
    raw[i] = static_cast<uint8_t>((detail::hex_value(digits[2 * i]) << 4) |
                                  detail::hex_value(digits[2 * i + 1]));
  }
  // S3: v in {0, 1, 27, 28}.
  unsigned v = raw[64];
  if (v < 2) v += 27;
  if (v != 27 && v != 28) {
    set_code(code, "bad_recovery_id");
    return std::nullopt;
  }
  // S4: 0 < r, s < n. S5: high-s accepted (no normalisation).
  if (!scalar_in_range(raw) || !scalar_in_range(raw + 32)) {
    set_code(code, "signature_range");
    return std::nullopt;
  }
  secp256k1_ecdsa_recoverable_signature sig;
  secp256k1_pubkey pubkey;
  if (!secp256k1_ecdsa_recoverable_signature_parse_compact(context(), &sig, raw,
                                                           static_cast<int>(v - 27)) ||
      !secp256k1_ecdsa_recover(context(), &pubkey, &sig, hash.data())) {
    set_code(code, "signer_mismatch");
    return std::nullopt;
  }
  return address_of_pubkey(pubkey);
}

std::optional<std::string> recover_address(std::string_view message, std::string_view signature_hex,
                                           std::string* code) {
  return recover_address_from_hash(personal_message_hash(message), signature_hex, code);
}

}  // namespace dclcomms::auth
