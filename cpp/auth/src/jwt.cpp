// HS256 JWT encode/decode (RFC 7519 / RFC 7515 compact serialization).

#include "dclcomms/auth/jwt.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "dclcomms/error.hpp"
#include "internal.hpp"

namespace dclcomms::auth {
namespace detail {

std::string base64url_encode(std::string_view data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const size_t rest = data.size() % 3;
  std::string out((data.size() / 3) * 4 + (rest ? rest + 1 : 0), '\0');
  char* o = out.data();  // written through a pointer: one allocation, no push_back
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const uint32_t v = (p[i] << 16) | (p[i + 1] << 8) | p[i + 2];
    *o++ = kAlphabet[(v >> 18) & 63];
    *o++ = kAlphabet[(v >> 12) & 63];
    *o++ = kAlphabet[(v >> 6) & 63];
    *o++ = kAlphabet[v & 63];
  }
  if (rest == 1) {
    const uint32_t v = p[i] << 16;
    *o++ = kAlphabet[(v >> 18) & 63];
    *o++ = kAlphabet[(v >> 12) & 63];
  } else if (rest == 2) {
    const uint32_t v = (p[i] << 16) | (p[i + 1] << 8);
    *o++ = kAlphabet[(v >> 18) & 63];
    *o++ = kAlphabet[(v >> 12) & 63];
    *o++ = kAlphabet[(v >> 6) & 63];
  }
  return out;
}

// HMAC-SHA256 through a per-thread EVP_MAC_CTX whose digest was set once:
// the one-shot HMAC() re-fetches the algorithm from the provider on every
// call, which costs more than hashing a token.
std::string hmac_sha256(std::string_view key, std::string_view data) {
  struct Ctx {
    EVP_MAC* mac = nullptr;
    EVP_MAC_CTX* ctx = nullptr;
    Ctx() {
      mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
      ctx = mac ? EVP_MAC_CTX_new(mac) : nullptr;
      char digest[] = "SHA256";
      const OSSL_PARAM params[] = {
          OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
          OSSL_PARAM_construct_end()};
      if (ctx && EVP_MAC_CTX_set_params(ctx, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        ctx = nullptr;
      }
    }
    ~Ctx() {
      EVP_MAC_CTX_free(ctx);
      EVP_MAC_free(mac);
    }
  };
  thread_local Ctx c;
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t len = 0;
  // An empty key is legal for HMAC but EVP_MAC_init treats a null pointer as
  // "keep the previous key": always pass a valid pointer.
  static const unsigned char kEmpty = 0;
  const auto* k = key.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(key.data());
  if (c.ctx == nullptr || EVP_MAC_init(c.ctx, k, key.size(), nullptr) != 1 ||
      EVP_MAC_update(c.ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()) !=
          1 ||
      EVP_MAC_final(c.ctx, out, &len, sizeof out) != 1) {
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  return std::string(reinterpret_cast<const char*>(out), len);
}

namespace {
int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}
}  // namespace

bool base64url_decode(std::string_view text, std::string& out) {
  if (text.size() % 4 == 1) return false;
  out.clear();
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = b64_value(c);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // Canonical encodings leave the unused low bits zero.
  return (acc & ((1u << bits) - 1)) == 0;
}

}  // namespace detail

namespace {

[[noreturn]] void token_error(const char* code, const std::string& message) {
  throw Error(ErrorKind::Token, code, message);
}

std::string dump(const nlohmann::ordered_json& j, const char* what) {
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {
    token_error("bad_claims", std::string(what) + " cannot be serialised: " + e.what());
  }
}

// The JSON value of a decoded token part, discarded when it is not one JSON
// text. nlohmann's reader ends its input at a NUL byte, so "{...}\0anything"
// would parse as its prefix; JSON text never holds a raw NUL (inside strings
// it is escaped as \u0000), so a part with one is rejected whole.
nlohmann::ordered_json parse_part(const std::string& text) {
  if (text.find('\0') != std::string::npos) {
    return nlohmann::ordered_json(nlohmann::ordered_json::value_t::discarded);
  }
  return nlohmann::ordered_json::parse(text, nullptr, false);
}

// A NumericDate claim (RFC 7519: seconds, possibly fractional).
std::optional<double> numeric_date(const nlohmann::ordered_json& claims, const char* name) {
  const auto it = claims.find(name);
  if (it == claims.end()) return std::nullopt;
  if (!it->is_number() || !std::isfinite(it->get<double>())) {
    token_error("malformed", std::string("claim '") + name + "' is not a number");
  }
  return it->get<double>();
}

}  // namespace

std::string jwt_encode(const nlohmann::ordered_json& claims, std::string_view secret,
                       const nlohmann::ordered_json* header) {
  static const nlohmann::ordered_json kDefaultHeader = {{"alg", "HS256"}, {"typ", "JWT"}};
  if (header == nullptr) header = &kDefaultHeader;
  if (!header->is_object()) token_error("bad_header", "JWT header must be a JSON object");
  const auto alg = header->find("alg");
  if (alg == header->end() || !alg->is_string() || alg->get_ref<const std::string&>() != "HS256") {
    token_error("unsupported_alg", "only HS256 tokens can be encoded");
  }
  if (!claims.is_object()) token_error("bad_claims", "JWT claims must be a JSON object");
  std::string signing_input = detail::base64url_encode(dump(*header, "header"));
  signing_input.push_back('.');
  signing_input += detail::base64url_encode(dump(claims, "claims"));
  const std::string mac = detail::hmac_sha256(secret, signing_input);
  signing_input.push_back('.');
  signing_input += detail::base64url_encode(mac);
  return signing_input;
}

struct Hs256Signer::Impl {
  EVP_MD_CTX* inner = nullptr;  // SHA-256 state after (key ^ ipad)
  EVP_MD_CTX* outer = nullptr;  // SHA-256 state after (key ^ opad)
  EVP_MD_CTX* work = nullptr;
  std::string header_b64;
  ~Impl() {
    EVP_MD_CTX_free(inner);
    EVP_MD_CTX_free(outer);
    EVP_MD_CTX_free(work);
  }
};

Hs256Signer::Hs256Signer(std::string_view secret) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  constexpr size_t kBlock = 64;  // SHA-256 block size (RFC 2104: longer keys are hashed)
  unsigned char key[kBlock] = {};
  unsigned int key_len = 0;
  if (secret.size() > kBlock) {
    if (EVP_Digest(secret.data(), secret.size(), key, &key_len, EVP_sha256(), nullptr) != 1) {
      throw std::runtime_error("HMAC-SHA256 key setup failed");
    }
  } else {
    std::copy(secret.begin(), secret.end(), key);
  }
  unsigned char ipad[kBlock], opad[kBlock];
  for (size_t i = 0; i < kBlock; ++i) {
    ipad[i] = static_cast<unsigned char>(key[i] ^ 0x36);
    opad[i] = static_cast<unsigned char>(key[i] ^ 0x5c);
  }
  m.inner = EVP_MD_CTX_new();
  m.outer = EVP_MD_CTX_new();
  m.work = EVP_MD_CTX_new();
  if (m.inner == nullptr || m.outer == nullptr || m.work == nullptr ||
      EVP_DigestInit_ex(m.inner, EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(m.inner, ipad, kBlock) != 1 ||
      EVP_DigestInit_ex(m.outer, EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(m.outer, opad, kBlock) != 1) {
    throw std::runtime_error("HMAC-SHA256 key setup failed");
  }
  m.header_b64 = detail::base64url_encode(R"({"alg":"HS256","typ":"JWT"})");
}

Hs256Signer::~Hs256Signer() = default;

std::string Hs256Signer::mac(std::string_view data) {
  Impl& m = *impl_;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_MD_CTX_copy_ex(m.work, m.inner) != 1 ||
      EVP_DigestUpdate(m.work, data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(m.work, digest, &n) != 1 || EVP_MD_CTX_copy_ex(m.work, m.outer) != 1 ||
      EVP_DigestUpdate(m.work, digest, n) != 1 || EVP_DigestFinal_ex(m.work, digest, &n) != 1) {
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  return std::string(reinterpret_cast<const char*>(digest), n);
}

std::string Hs256Signer::token(std::string_view payload_json) {
  std::string out = impl_->header_b64;
  out.push_back('.');
  out += detail::base64url_encode(payload_json);
  const std::string sig = mac(out);
  out.push_back('.');
  out += detail::base64url_encode(sig);
  return out;
}

nlohmann::ordered_json jwt_decode(std::string_view token, std::string_view secret,
                                  const JwtCheck& check) {
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    token_error("malformed", "a JWT has exactly three dot-separated parts");
  }
  const std::string_view header_b64 = token.substr(0, dot1);
  const std::string_view claims_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view sig_b64 = token.substr(dot2 + 1);

  std::string header_text, claims_text, sig;
  if (!detail::base64url_decode(header_b64, header_text) ||
      !detail::base64url_decode(claims_b64, claims_text) ||
      !detail::base64url_decode(sig_b64, sig)) {
    token_error("malformed", "a JWT part is not canonical unpadded base64url");
  }
  const auto header = parse_part(header_text);
  if (header.is_discarded() || !header.is_object()) {
    token_error("bad_header", "the JWT header is not a JSON object");
  }
  const auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string()) token_error("bad_header", "no 'alg' in the header");
  if (alg->get_ref<const std::string&>() != "HS256") {
    token_error("unsupported_alg",
                "alg '" + alg->get_ref<const std::string&>() + "' rejected (HS256 only)");
  }
  const auto typ = header.find("typ");
  // RFC 7519 5.1: "JWT" is recommended; media types compare case-insensitively.
  if (typ != header.end() &&
      !(typ->is_string() && detail::ascii_lower(typ->get_ref<const std::string&>()) == "jwt")) {
    token_error("bad_header", "header 'typ' must be \"JWT\" when present");
  }
  if (header.contains("crit")) token_error("bad_header", "critical header extensions unsupported");

  const std::string expected =
      detail::hmac_sha256(secret, token.substr(0, dot2));  // the ASCII signing input
  if (sig.size() != expected.size() ||
      CRYPTO_memcmp(sig.data(), expected.data(), expected.size()) != 0) {
    token_error("bad_signature", "JWT signature does not match");
  }

  auto claims = parse_part(claims_text);
  if (claims.is_discarded() || !claims.is_object()) {
    token_error("malformed", "the JWT claims are not a JSON object");
  }
  const auto exp = numeric_date(claims, "exp");
  const auto nbf = numeric_date(claims, "nbf");
  if (!exp && check.require_exp) token_error("missing_exp", "the token has no 'exp' claim");
  const auto now = static_cast<double>(check.now_s);
  const auto leeway = static_cast<double>(check.leeway_s);
  if (exp && !(now - leeway < *exp)) {
    token_error("expired", "token expired at " + std::to_string(static_cast<int64_t>(*exp)));
  }
  if (nbf && now + leeway < *nbf) {
    token_error("not_yet_valid",
                "token not valid before " + std::to_string(static_cast<int64_t>(*nbf)));
  }
  if (check.issuer) {
    const auto iss = claims.find("iss");
    if (iss == claims.end() || !iss->is_string() ||
        iss->get_ref<const std::string&>() != *check.issuer) {
      token_error("bad_issuer", "'iss' does not name the expected issuer");
    }
  }
  return claims;
}

}  // namespace dclcomms::auth
