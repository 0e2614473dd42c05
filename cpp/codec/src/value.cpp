#include "dclcomms/codec/value.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace dclcomms::codec {

const Value* Value::find(std::string_view key) const {
  for (const auto& [k, v] : as_object()) {
    if (k == key) return &v;
  }
  return nullptr;
}

bool Value::operator==(const Value& o) const {
  const Kind a = kind();
  const Kind b = o.kind();
  if (a != b) {
    // Numbers compare by value across kinds (JSON has one number type).
    if (a == Kind::Int && b == Kind::UInt) return as_int() >= 0 && as_uint_eq(o);
    if (a == Kind::UInt && b == Kind::Int) return o == *this;
    if (a == Kind::Double && (b == Kind::Int || b == Kind::UInt)) return o == *this;
    if (b == Kind::Double && a == Kind::Int) return static_cast<double>(as_int()) == o.as_double();
    if (b == Kind::Double && a == Kind::UInt) {
      return static_cast<double>(as_uint()) == o.as_double();
    }
    return false;
  }
  switch (a) {
    case Kind::Null:
      return true;
    case Kind::Bool:
      return as_bool() == o.as_bool();
    case Kind::Int:
      return as_int() == o.as_int();
    case Kind::UInt:
      return as_uint() == o.as_uint();
    case Kind::Double:
      return (std::isnan(as_double()) && std::isnan(o.as_double())) || as_double() == o.as_double();
    case Kind::String:
      return as_string() == o.as_string();
    case Kind::Bytes:
      return as_bytes() == o.as_bytes();
    case Kind::List:
      return as_list() == o.as_list();
    case Kind::Object: {
      // Order-insensitive, like JSON objects and Python dicts.
      const Object& x = as_object();
      const Object& y = o.as_object();
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x) {
        const Value* w = o.find(k);
        if (w == nullptr || *w != v) return false;
      }
      return true;
    }
  }
  return false;
}

bool Value::as_uint_eq(const Value& o) const {
  return static_cast<uint64_t>(as_int()) == o.as_uint();
}

namespace {

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

void append_json(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Null:
      out += "null";
      break;
    case Value::Kind::Bool:
      out += v.as_bool() ? "true" : "false";
      break;
    case Value::Kind::Int:
      out += std::to_string(v.as_int());
      break;
    case Value::Kind::UInt:
      out += std::to_string(v.as_uint());
      break;
    case Value::Kind::Double: {
      const double d = v.as_double();
      if (std::isnan(d)) {
        out += "\"NaN\"";
      } else if (std::isinf(d)) {
        out += d > 0 ? "\"Infinity\"" : "\"-Infinity\"";
      } else {
        char buf[32];
        auto res = std::to_chars(buf, buf + sizeof buf, d);
        out.append(buf, res.ptr);
      }
      break;
    }
    case Value::Kind::String:
      append_json_string(out, v.as_string());
      break;
    case Value::Kind::Bytes:
      append_json_string(out, base64_encode(v.as_bytes().data));
      break;
    case Value::Kind::List: {
      out.push_back('[');
      bool first = true;
      for (const auto& item : v.as_list()) {
        if (!first) out.push_back(',');
        first = false;
        append_json(out, item);
      }
      out.push_back(']');
      break;
    }
    case Value::Kind::Object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [k, item] : v.as_object()) {
        if (!first) out.push_back(',');
        first = false;
        append_json_string(out, k);
        out.push_back(':');
        append_json(out, item);
      }
      out.push_back('}');
      break;
    }
  }
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

}  // namespace

std::string Value::to_json() const {
  std::string out;
  append_json(out, *this);
  return out;
}

double float_to_json_double(float f) noexcept {
  if (!std::isfinite(f)) return static_cast<double>(f);
  // std::to_chars(float, scientific) gives the fewest significant digits that
  // round-trip as float32 (plain to_chars would print 68978928 in full where
  // 6.897893e7 suffices); reading it back as a double gives the "intended"
  // decimal.
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof buf - 1, f, std::chars_format::scientific);
  *res.ptr = '\0';
  double d = 0;
  std::from_chars(buf, res.ptr, d);
  return d;
}

std::string base64_encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const uint32_t n = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
    out.push_back(kB64[(n >> 18) & 63]);
    out.push_back(kB64[(n >> 12) & 63]);
    out.push_back(kB64[(n >> 6) & 63]);
    out.push_back(kB64[n & 63]);
  }
  const size_t rest = data.size() - i;
  if (rest == 1) {
    const uint32_t n = uint32_t{p[i]} << 16;
    out.push_back(kB64[(n >> 18) & 63]);
    out.push_back(kB64[(n >> 12) & 63]);
    out += "==";
  } else if (rest == 2) {
    const uint32_t n = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8);
    out.push_back(kB64[(n >> 18) & 63]);
    out.push_back(kB64[(n >> 12) & 63]);
    out.push_back(kB64[(n >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

bool base64_decode(std::string_view text, std::string& out) {
  out.clear();
  size_t len = text.size();
  // Up to two '=' of padding, only at the end and only to complete a quad.
  size_t pad = 0;
  while (len > 0 && text[len - 1] == '=' && pad < 2) {
    --len;
    ++pad;
  }
  if (pad > 0 && (len + pad) % 4 != 0) return false;
  if (len % 4 == 1) return false;
  out.reserve(len * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; ++i) {
    const int v = b64_value(static_cast<unsigned char>(text[i]));
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  // Like Python's base64 module, non-zero leftover bits are ignored.
  return true;
}

}  // namespace dclcomms::codec
