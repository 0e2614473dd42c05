// Python bindings for the auth area. The public API is dclcomms.auth; these
// functions take plain values (bytes/str/int/dict) and return plain values.

#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/batch.hpp"
#include "dclcomms/auth/datetime.hpp"
#include "dclcomms/auth/eip1271.hpp"
#include "dclcomms/auth/jwt.hpp"
#include "dclcomms/auth/keys.hpp"
#include "dclcomms/auth/livekit.hpp"
#include "dclcomms/auth/signed_fetch.hpp"
#include "dclcomms/error.hpp"
#include "registration.hpp"

namespace py = pybind11;

namespace dclcomms::bindings {
namespace {

namespace auth = dclcomms::auth;
using ojson = nlohmann::ordered_json;

// (ok, signer, ephemeral, expires_ms, code, message); empty strings become None.
using ResultTuple = std::tuple<bool, std::optional<std::string>, std::optional<std::string>,
                               std::optional<int64_t>, std::optional<std::string>, std::string>;

std::optional<std::string> none_if_empty(std::string s) {
  if (s.empty()) return std::nullopt;
  return s;
}

ResultTuple to_tuple(auth::AuthResult r) {
  return {r.ok,         none_if_empty(std::move(r.signer)), none_if_empty(std::move(r.ephemeral)),
          r.expires_ms, none_if_empty(std::move(r.code)),   std::move(r.message)};
}

auth::PrivateKey to_key(const std::string& bytes) {
  if (bytes.size() != 32) {
    throw Error(ErrorKind::Auth, "bad_private_key", "a private key is exactly 32 bytes");
  }
  auth::PrivateKey key;
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return key;
}

py::bytes hash_bytes(const auth::Hash32& h) {
  return py::bytes(reinterpret_cast<const char*>(h.data()), h.size());
}

[[noreturn]] void bad_claims(const std::string& message) {
  throw Error(ErrorKind::Token, "bad_claims", message);
}

ojson to_json(const py::handle& obj, int depth = 0) {
  if (depth > 64) bad_claims("claims nested deeper than 64 levels");
  if (obj.is_none()) return nullptr;
  if (py::isinstance<py::bool_>(obj)) return obj.cast<bool>();
  if (py::isinstance<py::int_>(obj)) {
    try {
      return obj.cast<int64_t>();
    } catch (const py::cast_error&) {
      try {
        return obj.cast<uint64_t>();
      } catch (const py::cast_error&) {
        bad_claims("integer claim outside the 64-bit range");
      }
    }
  }
  if (py::isinstance<py::float_>(obj)) {
    const double v = obj.cast<double>();
    if (!std::isfinite(v)) bad_claims("non-finite number in claims");
    return v;
  }
  if (py::isinstance<py::str>(obj)) return obj.cast<std::string>();
  if (py::isinstance<py::dict>(obj)) {
    ojson out = ojson::object();
    for (const auto& item : obj.cast<py::dict>()) {
      if (!py::isinstance<py::str>(item.first)) bad_claims("claim names must be strings");
      out[item.first.cast<std::string>()] = to_json(item.second, depth + 1);
    }
    return out;
  }
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    ojson out = ojson::array();
    for (const auto& item : obj) out.push_back(to_json(item, depth + 1));
    return out;
  }
  bad_claims("unsupported claim value of type " +
             std::string(py::str(py::type::of(obj).attr("__name__"))));
}

py::object from_json(const ojson& j) {
  switch (j.type()) {
    case ojson::value_t::null:
      return py::none();
    case ojson::value_t::boolean:
      return py::bool_(j.get<bool>());
    case ojson::value_t::number_integer:
      return py::int_(j.get<int64_t>());
    case ojson::value_t::number_unsigned:
      return py::int_(j.get<uint64_t>());
    case ojson::value_t::number_float:
      return py::float_(j.get<double>());
    case ojson::value_t::string:
      return py::str(j.get_ref<const std::string&>());
    case ojson::value_t::array: {
      py::list out;
      for (const auto& item : j) out.append(from_json(item));
      return std::move(out);
    }
    case ojson::value_t::object: {
      py::dict out;
      for (const auto& [key, value] : j.items()) out[py::str(key)] = from_json(value);
      return std::move(out);
    }
    default:
      bad_claims("unsupported JSON value in claims");
  }
}

// Wraps a Python provider (contract, data_hex) -> result word hex as the C++
// Eip1271Check. Called with the GIL released, so it re-acquires it.
auth::Eip1271Check wrap_provider(const py::function* fn) {
  return [fn](std::string_view contract, const auth::Hash32& hash, std::string_view sig) {
    const std::string data = auth::eip1271_call_data(hash, sig);
    py::gil_scoped_acquire gil;
    try {
      py::object result = (*fn)(py::str(contract.data(), contract.size()), data);
      if (!py::isinstance<py::str>(result)) {
        throw std::runtime_error("provider returned a non-str result");
      }
      return auth::eip1271_result_ok(result.cast<std::string>());
    } catch (py::error_already_set& e) {
      throw std::runtime_error(e.what());
    }
  };
}

}  // namespace

void register_auth(py::module_& m) {
  m.def(
      "keccak256",
      [](const py::bytes& data) {
        std::string buf = data;
        auth::Hash32 h;
        {
          // buf is a C++ copy: no Python object is touched while hashing.
          py::gil_scoped_release release;
          h = auth::keccak256(buf);
        }
        return hash_bytes(h);
      },
      py::arg("data"), "Keccak-256 (Ethereum's, padding 0x01) of bytes.");

  m.def(
      "personal_message_hash",
      [](const py::bytes& message) { return hash_bytes(auth::personal_message_hash(message)); },
      py::arg("message"), "keccak256(0x19 'Ethereum Signed Message:\\n' len message).");

  m.def(
      "recover_address",
      [](const py::bytes& message, const std::string& signature) {
        std::string msg = message, code;
        std::optional<std::string> addr;
        {
          // Inputs are C++ copies: the recovery touches no Python object.
          py::gil_scoped_release release;
          addr = auth::recover_address(msg, signature, &code);
        }
        if (!addr) throw Error(ErrorKind::Auth, code, "signature recovery failed: " + code);
        return *addr;
      },
      py::arg("message"), py::arg("signature"),
      "personal_sign recovery: lowercase 0x address; raises AuthError with the code.");

  m.def("to_checksum_address", &auth::to_checksum_address, py::arg("address"),
        "EIP-55 checksummed form of a 0x + 40 hex address.");

  m.def(
      "verify_auth_chain",
      [](const py::bytes& auth_chain_json, const py::bytes& expected_payload, int64_t now_ms,
         std::optional<py::function> provider) {
        std::string chain = auth_chain_json, expected = expected_payload;
        std::optional<auth::Eip1271Check> check;
        if (provider) check = wrap_provider(&*provider);
        auth::AuthResult r;
        {
          // Inputs are C++ copies; the provider callback re-acquires the GIL
          // before touching the Python callable.
          py::gil_scoped_release release;
          r = auth::verify_auth_chain(chain, expected, now_ms, check ? &*check : nullptr);
        }
        return to_tuple(std::move(r));
      },
      py::arg("auth_chain_json"), py::arg("expected_payload"), py::arg("now_ms"),
      py::arg("provider") = py::none(),
      "Verify an auth chain; returns (ok, signer, ephemeral, expires_ms, code, message).");

  m.def(
      "verify_many",
      [](const std::vector<std::pair<std::string, std::string>>& items, int64_t now_ms,
         unsigned threads) {
        std::vector<auth::AuthResult> results;
        {
          // items was converted to C++ strings above; the worker threads never
          // see a Python object.
          py::gil_scoped_release release;
          results = auth::verify_many(items, now_ms, threads);
        }
        std::vector<ResultTuple> out;
        out.reserve(results.size());
        for (auto& r : results) out.push_back(to_tuple(std::move(r)));
        return out;
      },
      py::arg("items"), py::arg("now_ms"), py::arg("threads"),
      "Verify (chain, expected) pairs on a thread pool (0 = all cores).");

  m.def(
      "parse_signed_fetch",
      [](const std::vector<std::pair<std::string, std::string>>& headers, int64_t now_ms,
         int64_t window_ms, int64_t max_future_ms) {
        auth::SignedFetchHeaders h;
        {
          // headers was converted to C++ strings above.
          py::gil_scoped_release release;
          h = auth::parse_signed_fetch(headers, now_ms, window_ms, max_future_ms);
        }
        return std::make_tuple(none_if_empty(std::move(h.code)), std::move(h.message),
                               std::move(h.links), std::move(h.link_types), std::move(h.timestamp),
                               std::move(h.metadata), static_cast<int>(h.body_hash),
                               std::move(h.body_sha256), std::move(h.final_signature));
      },
      py::arg("headers"), py::arg("now_ms"), py::arg("window_ms"), py::arg("max_future_ms"),
      "Read the signed-fetch headers ((name, value) byte pairs): (code, message, links, "
      "link_types, timestamp, metadata, body_hash 0/1/2, body_sha256, final_signature).");

  m.def("random_challenge", &auth::random_challenge,
        "'dcl-' + 32 lowercase hex characters from OpenSSL's CSPRNG.");

  m.def(
      "is_valid_private_key",
      [](const py::bytes& key) {
        const std::string k = key;
        return k.size() == 32 && auth::is_valid_private_key(to_key(k));
      },
      py::arg("private_key"), "True for 32 bytes encoding 0 < key < n.");

  m.def(
      "address_of", [](const py::bytes& key) { return auth::address_of(to_key(key)); },
      py::arg("private_key"), "Lowercase 0x address of a 32-byte private key.");

  m.def(
      "sign_personal",
      [](const py::bytes& key, const py::bytes& message) {
        const auth::PrivateKey k = to_key(key);
        std::string msg = message, sig;
        {
          // C++ copies only; signing touches no Python object.
          py::gil_scoped_release release;
          sig = auth::sign_personal(k, msg);
        }
        return sig;
      },
      py::arg("private_key"), py::arg("message"),
      "personal_sign: RFC-6979, low-s, v = 27/28, as 0x + 130 hex.");

  m.def(
      "eip1271_call_data",
      [](const py::bytes& hash, const py::bytes& signature) {
        const std::string h = hash;
        if (h.size() != 32) throw Error(ErrorKind::Config, "invalid_parameter", "hash is 32 bytes");
        auth::Hash32 hh;
        std::copy(h.begin(), h.end(), hh.begin());
        return auth::eip1271_call_data(hh, signature);
      },
      py::arg("hash"), py::arg("signature"), "isValidSignature(bytes32,bytes) call data.");

  m.def("parse_timestamp_ms", &auth::parse_timestamp_ms, py::arg("text"),
        "Strict ISO-8601 / RFC-1123 timestamp in ms since the epoch, or None.");
  m.def("format_iso8601_ms", &auth::format_iso8601_ms, py::arg("ms"),
        "YYYY-MM-DDTHH:MM:SS.mmmZ of ms since the epoch.");

  m.def(
      "jwt_encode",
      [](const py::dict& claims, const py::bytes& secret, std::optional<py::dict> header) {
        const ojson c = to_json(claims);
        std::optional<ojson> h;
        if (header) h = to_json(*header);
        return auth::jwt_encode(c, std::string(secret), h ? &*h : nullptr);
      },
      py::arg("claims"), py::arg("secret"), py::arg("header") = py::none(),
      "HS256 compact JWT; claim order preserved.");

  m.def(
      "jwt_decode",
      [](const std::string& token, const py::bytes& secret, int64_t now_s, int64_t leeway_s,
         std::optional<std::string> issuer, bool require_exp) {
        const auth::JwtCheck check{now_s, leeway_s, std::move(issuer), require_exp};
        return from_json(auth::jwt_decode(token, std::string(secret), check));
      },
      py::arg("token"), py::arg("secret"), py::arg("now_s"), py::arg("leeway_s"), py::arg("issuer"),
      py::arg("require_exp"), "Verify an HS256 JWT and return its claims.");

  m.def(
      "livekit_token",
      [](const std::string& api_key, const py::bytes& api_secret, const std::string& identity,
         const std::string& room, int64_t ttl_s, int64_t now_s, std::optional<std::string> name,
         std::optional<std::string> metadata, std::optional<py::dict> grants) {
        auth::LiveKitTokenOptions o;
        o.identity = identity;
        o.room = room;
        o.ttl_s = ttl_s;
        o.now_s = now_s;
        o.name = std::move(name);
        o.metadata = std::move(metadata);
        std::optional<ojson> g;
        if (grants) g = to_json(*grants);
        o.grants = g ? &*g : nullptr;
        return auth::livekit_token(api_key, std::string(api_secret), o);
      },
      py::arg("api_key"), py::arg("api_secret"), py::arg("identity"), py::arg("room"),
      py::arg("ttl_s"), py::arg("now_s"), py::arg("name"), py::arg("metadata"), py::arg("grants"),
      "LiveKit access token with the island grant (header {\"alg\":\"HS256\"}).");
}

}  // namespace dclcomms::bindings
