// Auth-chain verification (authchain.md section 4): JSON gate, schema,
// structure, link walk, final authority. Never throws.

#include <openssl/rand.h>

#include <algorithm>
#include <exception>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/datetime.hpp"
#include "dclcomms/auth/eip1271.hpp"
#include "dclcomms/auth/keys.hpp"
#include "internal.hpp"

namespace dclcomms::auth {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxLinks = 10;
constexpr size_t kMaxStringLength = 100'000;  // JavaScript string length (UTF-16 units)

enum class LinkType { Signer, Ephemeral, SignedEntity, Eip1654Ephemeral, Eip1654SignedEntity };

struct Link {
  LinkType type;
  const std::string* payload;
  std::string_view signature;  // "" for null or absent
};

std::optional<LinkType> link_type(const std::string& s) {
  if (s == "SIGNER") return LinkType::Signer;
  if (s == "ECDSA_EPHEMERAL") return LinkType::Ephemeral;
  if (s == "ECDSA_SIGNED_ENTITY") return LinkType::SignedEntity;
  if (s == "ECDSA_EIP_1654_EPHEMERAL") return LinkType::Eip1654Ephemeral;
  if (s == "ECDSA_EIP_1654_SIGNED_ENTITY") return LinkType::Eip1654SignedEntity;
  return std::nullopt;
}

// Length as JavaScript counts it (UTF-16 code units) of valid UTF-8.
size_t utf16_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++n;  // a lead byte starts a code point
    if ((c & 0xF8) == 0xF0) ++n;  // 4-byte sequences are surrogate pairs
  }
  return n;
}

AuthResult fail(AuthResult r, const char* code, std::string message) {
  r.ok = false;
  r.code = code;
  r.message = std::move(message);
  return r;
}

struct Ephemeral {
  std::string address;
  int64_t expires_ms = 0;
};

// authchain.md section 2, on the CR-stripped text.
std::optional<Ephemeral> parse_ephemeral_text(const std::string& stripped) {
  static constexpr std::string_view kAddress = "Ephemeral address: ";
  static constexpr std::string_view kExpiration = "Expiration: ";
  std::vector<std::string_view> lines;
  std::string_view rest = stripped;
  while (true) {
    const size_t nl = rest.find('\n');
    lines.push_back(rest.substr(0, nl));
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }
  if (lines.size() < 3) return std::nullopt;
  if (lines[1].substr(0, kAddress.size()) != kAddress) return std::nullopt;
  if (lines[2].substr(0, kExpiration.size()) != kExpiration) return std::nullopt;
  const auto expires = parse_timestamp_ms(lines[2].substr(kExpiration.size()));
  if (!expires) return std::nullopt;
  return Ephemeral{std::string(lines[1].substr(kAddress.size())), *expires};
}

std::string strip_cr(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c != '\r') out.push_back(c);
  }
  return out;
}

// Personal-sign link: true when the signature recovers to authority; else
// fills the failure.
bool check_personal(const std::string& message, std::string_view sig, const std::string& authority,
                    size_t index, AuthResult& r) {
  if (sig.empty()) {
    r = fail(std::move(r), "bad_signature_encoding",
             "link " + std::to_string(index) + ": empty signature");
    return false;
  }
  std::string code;
  const auto recovered = recover_address(message, sig, &code);
  if (!recovered) {
    r = fail(std::move(r), code.c_str(),
             "link " + std::to_string(index) + ": signature rejected (" + code + ")");
    return false;
  }
  if (*recovered != detail::ascii_lower(authority)) {
    r = fail(std::move(r), "signer_mismatch",
             "link " + std::to_string(index) + ": signed by " + *recovered + ", expected " +
                 detail::ascii_lower(authority));
    return false;
  }
  return true;
}

// EIP-1654/1271 link (section 7): H1 = keccak(m), then H2 = personal_hash(m).
bool check_eip1271(const std::string& message, std::string_view sig, const std::string& authority,
                   size_t index, const Eip1271Check* provider, AuthResult& r) {
  const std::string where = "link " + std::to_string(index) + ": ";
  std::optional<std::string> raw;
  if (sig.size() >= 2 && sig[0] == '0' && sig[1] == 'x') raw = from_hex(sig.substr(2));
  if (!raw) {
    r = fail(std::move(r), "bad_signature_encoding",
             where + "EIP-1654 signature is not even-length 0x hex");
    return false;
  }
  if (provider == nullptr || !*provider) {
    r = fail(std::move(r), "eip1271_no_provider",
             where + "EIP-1654 link needs a JSON-RPC provider; none configured");
    return false;
  }
  try {
    if ((*provider)(authority, keccak256(message), *raw) ||
        (*provider)(authority, personal_message_hash(message), *raw)) {
      return true;
    }
  } catch (const std::exception& e) {
    r = fail(std::move(r), "eip1271_rpc_error",
             where + "isValidSignature call failed: " + e.what());
    return false;
  } catch (...) {
    r = fail(std::move(r), "eip1271_rpc_error", where + "isValidSignature call failed");
    return false;
  }
  r = fail(std::move(r), "eip1271_invalid",
           where + "contract " + authority + " did not return the EIP-1271 magic value");
  return false;
}

AuthResult verify_impl(std::string_view chain_json, std::string_view expected, int64_t now_ms,
                       const Eip1271Check* provider) {
  AuthResult r;
  // 1. JSON. nlohmann skips a UTF-8 BOM silently; JSON.parse does not.
  if (chain_json.size() >= 3 && chain_json.substr(0, 3) == "\xEF\xBB\xBF") {
    return fail(std::move(r), "json_invalid", "leading UTF-8 byte order mark");
  }
  const json doc = json::parse(chain_json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return fail(std::move(r), "json_invalid", "auth chain is not valid JSON");

  // 2. Schema.
  if (!doc.is_array()) return fail(std::move(r), "schema_invalid", "auth chain is not an array");
  if (doc.empty() || doc.size() > kMaxLinks) {
    return fail(std::move(r), "schema_invalid",
                "auth chain has " + std::to_string(doc.size()) + " links (1..10 allowed)");
  }
  std::vector<Link> links;
  links.reserve(doc.size());
  for (size_t i = 0; i < doc.size(); ++i) {
    const json& item = doc[i];
    const std::string where = "link " + std::to_string(i) + ": ";
    if (!item.is_object()) return fail(std::move(r), "schema_invalid", where + "not an object");
    const auto t = item.find("type");
    const auto p = item.find("payload");
    const auto s = item.find("signature");
    if (t == item.end() || !t->is_string()) {
      return fail(std::move(r), "schema_invalid", where + "type missing or not a string");
    }
    const auto type = link_type(t->get_ref<const std::string&>());
    if (!type) return fail(std::move(r), "schema_invalid", where + "unknown link type");
    if (p == item.end() || !p->is_string()) {
      return fail(std::move(r), "schema_invalid", where + "payload missing or not a string");
    }
    const std::string& payload = p->get_ref<const std::string&>();
    if (utf16_length(payload) > kMaxStringLength) {
      return fail(std::move(r), "schema_invalid", where + "payload longer than 100000 characters");
    }
    std::string_view signature;
    if (s == item.end()) {
      if (*type != LinkType::Signer) {
        return fail(std::move(r), "schema_invalid", where + "signature missing");
      }
    } else if (s->is_string()) {
      const std::string& sig = s->get_ref<const std::string&>();
      if (utf16_length(sig) > kMaxStringLength) {
        return fail(std::move(r), "schema_invalid",
                    where + "signature longer than 100000 characters");
      }
      signature = sig;
    } else if (!s->is_null()) {
      return fail(std::move(r), "schema_invalid", where + "signature not a string or null");
    }
    if (*type == LinkType::Signer && !signature.empty()) {
      return fail(std::move(r), "schema_invalid", where + "SIGNER signature must be empty");
    }
    links.push_back(Link{*type, &payload, signature});
  }

  // 3. Structure.
  if (links[0].type != LinkType::Signer) {
    return fail(std::move(r), "malformed_chain", "link 0 is not SIGNER");
  }
  for (size_t i = 1; i < links.size(); ++i) {
    if (links[i].type == LinkType::Signer) {
      return fail(std::move(r), "malformed_chain",
                  "SIGNER at link " + std::to_string(i) + " (only link 0 may be SIGNER)");
    }
  }
  if (!detail::is_hex_address(*links[0].payload)) {
    return fail(std::move(r), "malformed_chain", "SIGNER payload is not a 0x + 40 hex address");
  }
  r.signer = detail::ascii_lower(*links[0].payload);

  // 4. Walk.
  std::string authority;
  for (size_t i = 0; i < links.size(); ++i) {
    const Link& link = links[i];
    switch (link.type) {
      case LinkType::Signer:
        authority = *link.payload;
        break;
      case LinkType::Ephemeral:
      case LinkType::Eip1654Ephemeral: {
        if (link.type == LinkType::Ephemeral && link.signature.empty()) {
          return fail(std::move(r), "bad_signature_encoding",
                      "link " + std::to_string(i) + ": empty signature");
        }
        const std::string text = strip_cr(*link.payload);
        const auto eph = parse_ephemeral_text(text);
        if (!eph) {
          return fail(std::move(r), "ephemeral_payload_invalid",
                      "link " + std::to_string(i) +
                          ": not 'Ephemeral address: ' / 'Expiration: <timestamp>' text");
        }
        r.ephemeral = eph->address;
        r.expires_ms = r.expires_ms ? std::min(*r.expires_ms, eph->expires_ms) : eph->expires_ms;
        if (!(eph->expires_ms > now_ms)) {
          return fail(std::move(r), "ephemeral_expired",
                      "link " + std::to_string(i) + ": ephemeral key expired at " +
                          std::to_string(eph->expires_ms) + " ms (now " + std::to_string(now_ms) +
                          ")");
        }
        const bool ok = link.type == LinkType::Ephemeral
                            ? check_personal(text, link.signature, authority, i, r)
                            : check_eip1271(text, link.signature, authority, i, provider, r);
        if (!ok) return r;
        authority = eph->address;
        break;
      }
      case LinkType::SignedEntity:
      case LinkType::Eip1654SignedEntity: {
        const bool ok =
            link.type == LinkType::SignedEntity
                ? check_personal(*link.payload, link.signature, authority, i, r)
                : check_eip1271(*link.payload, link.signature, authority, i, provider, r);
        if (!ok) return r;
        authority = *link.payload;
        break;
      }
    }
  }

  // 5. Final authority: exact bytes.
  if (authority != expected) {
    return fail(std::move(r), "final_authority_mismatch",
                "the chain authorizes a different payload than the expected one");
  }
  r.ok = true;
  r.code.clear();
  r.message = "ok";
  return r;
}

}  // namespace

AuthResult verify_auth_chain(std::string_view chain_json, std::string_view expected_payload,
                             int64_t now_ms, const Eip1271Check* provider) {
  try {
    return verify_impl(chain_json, expected_payload, now_ms, provider);
  } catch (const std::exception& e) {
    // Only allocation failure can get here; keep the never-throws contract.
    AuthResult r;
    r.code = "internal_error";
    r.message = e.what();
    return r;
  }
}

std::string random_challenge() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("RAND_bytes failed");
  return "dcl-" + to_hex(bytes, sizeof bytes);
}

std::string eip1271_call_data(const Hash32& hash, std::string_view sig) {
  std::string out = "0x";
  out.append(kEip1271Magic);
  out += to_hex(hash.data(), hash.size());
  uint8_t word[32] = {};
  word[31] = 0x40;
  out += to_hex(word, 32);
  uint64_t len = sig.size();
  for (int i = 0; i < 8; ++i) word[31 - i] = static_cast<uint8_t>(len >> (8 * i));
  out += to_hex(word, 32);
  out += to_hex(reinterpret_cast<const uint8_t*>(sig.data()), sig.size());
  out.append(2 * ((32 - sig.size() % 32) % 32), '0');
  return out;
}

bool eip1271_result_ok(std::string_view result_hex) noexcept {
  if (result_hex.size() >= 2 && result_hex[0] == '0' &&
      (result_hex[1] == 'x' || result_hex[1] == 'X')) {
    result_hex.remove_prefix(2);
  }
  if (result_hex.size() < kEip1271Magic.size()) return false;
  for (size_t i = 0; i < kEip1271Magic.size(); ++i) {
    const char c = result_hex[i];
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (lower != kEip1271Magic[i]) return false;
  }
  return true;
}

}  // namespace dclcomms::auth
