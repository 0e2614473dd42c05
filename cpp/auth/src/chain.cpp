// Auth-chain verification (authchain.md section 4): JSON gate, schema,
// structure, link walk, final authority. Never throws.

#include <openssl/rand.h>

#include <algorithm>
#include <array>
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

// SAX reader for step 1/2: keeps only what the schema and the walk need
// (type, payload, signature of the first kMaxLinks links) instead of building
// a DOM. Parsing always runs to the end, so invalid JSON is reported as
// json_invalid even after a schema problem. Duplicate keys: the last wins
// (JSON.parse semantics).
enum class Kind { Absent, String, Null, Other };

struct Field {
  Kind kind = Kind::Absent;
  std::string text;
};

struct RawLink {
  bool is_object = false;
  Field type, payload, signature;
};

class ChainReader final : public nlohmann::json_sax<json> {
 public:
  bool top_is_array = false;
  size_t count = 0;  // top-level items
  std::array<RawLink, kMaxLinks> links;

  bool null() override { return value(Kind::Null, nullptr); }
  bool boolean(bool) override { return value(Kind::Other, nullptr); }
  bool number_integer(number_integer_t) override { return value(Kind::Other, nullptr); }
  bool number_unsigned(number_unsigned_t) override { return value(Kind::Other, nullptr); }
  bool number_float(number_float_t, const string_t&) override {
    return value(Kind::Other, nullptr);
  }
  bool string(string_t& val) override { return value(Kind::String, &val); }
  bool binary(binary_t&) override { return value(Kind::Other, nullptr); }

  bool start_object(std::size_t) override {
    value(Kind::Other, nullptr);
    if (depth_ == 1 && top_is_array && count <= kMaxLinks) {
      in_link_ = true;
      if (count - 1 < kMaxLinks) links[count - 1].is_object = true;
    }
    ++depth_;
    return true;
  }
  bool end_object() override {
    --depth_;
    if (depth_ == 1) in_link_ = false;
    return true;
  }
  bool start_array(std::size_t) override {
    if (depth_ == 0) {
      top_is_array = true;
    } else {
      value(Kind::Other, nullptr);
    }
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool key(string_t& val) override {
    if (depth_ == 2 && in_link_) {
      current_ = val == "type"        ? &links[count - 1].type
                 : val == "payload"   ? &links[count - 1].payload
                 : val == "signature" ? &links[count - 1].signature
                                      : nullptr;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

 private:
  // A value (scalar or the start of a container) at the current depth.
  bool value(Kind kind, string_t* text) {
    if (depth_ == 1 && top_is_array) {
      ++count;  // an item of the chain (objects are marked in start_object)
    } else if (depth_ == 2 && in_link_ && current_ != nullptr) {
      current_->kind = kind;
      if (text != nullptr) {
        current_->text = std::move(*text);
      } else {
        current_->text.clear();
      }
      current_ = nullptr;
    }
    return true;
  }

  size_t depth_ = 0;
  bool in_link_ = false;
  Field* current_ = nullptr;
};

AuthResult verify_impl(std::string_view chain_json, std::string_view expected, int64_t now_ms,
                       const Eip1271Check* provider) {
  AuthResult r;
  // 1. JSON. nlohmann skips a UTF-8 BOM silently; JSON.parse does not.
  if (chain_json.size() >= 3 && chain_json.substr(0, 3) == "\xEF\xBB\xBF") {
    return fail(std::move(r), "json_invalid", "leading UTF-8 byte order mark");
  }
  // nlohmann's reader ends the input at a NUL byte, so "[...]\0<anything>"
  // would parse; JSON.parse rejects it, and JSON text never holds a raw NUL.
  if (chain_json.find('\0') != std::string_view::npos) {
    return fail(std::move(r), "json_invalid", "auth chain holds a NUL byte");
  }
  ChainReader reader;
  if (!json::sax_parse(chain_json, &reader, json::input_format_t::json, /*strict=*/true)) {
    return fail(std::move(r), "json_invalid", "auth chain is not valid JSON");
  }

  // 2. Schema.
  if (!reader.top_is_array) {
    return fail(std::move(r), "schema_invalid", "auth chain is not an array");
  }
  if (reader.count == 0 || reader.count > kMaxLinks) {
    return fail(std::move(r), "schema_invalid",
                "auth chain has " + std::to_string(reader.count) + " links (1..10 allowed)");
  }
  std::vector<Link> links;
  links.reserve(reader.count);
  for (size_t i = 0; i < reader.count; ++i) {
    const RawLink& item = reader.links[i];
    const std::string where = "link " + std::to_string(i) + ": ";
    if (!item.is_object) return fail(std::move(r), "schema_invalid", where + "not an object");
    if (item.type.kind != Kind::String) {
      return fail(std::move(r), "schema_invalid", where + "type missing or not a string");
    }
    const auto type = link_type(item.type.text);
    if (!type) return fail(std::move(r), "schema_invalid", where + "unknown link type");
    if (item.payload.kind != Kind::String) {
      return fail(std::move(r), "schema_invalid", where + "payload missing or not a string");
    }
    if (utf16_length(item.payload.text) > kMaxStringLength) {
      return fail(std::move(r), "schema_invalid", where + "payload longer than 100000 characters");
    }
    std::string_view signature;
    if (item.signature.kind == Kind::Absent) {
      if (*type != LinkType::Signer) {
        return fail(std::move(r), "schema_invalid", where + "signature missing");
      }
    } else if (item.signature.kind == Kind::String) {
      if (utf16_length(item.signature.text) > kMaxStringLength) {
        return fail(std::move(r), "schema_invalid",
                    where + "signature longer than 100000 characters");
      }
      signature = item.signature.text;
    } else if (item.signature.kind != Kind::Null) {
      return fail(std::move(r), "schema_invalid", where + "signature not a string or null");
    }
    if (*type == LinkType::Signer && !signature.empty()) {
      return fail(std::move(r), "schema_invalid", where + "SIGNER signature must be empty");
    }
    links.push_back(Link{*type, &item.payload.text, signature});
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
