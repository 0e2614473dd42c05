#pragma once
// A small JSON-like value tree: the C++ side of the protobuf JSON mapping used
// by the generic codec (wire.md rule E9). Objects keep insertion order (maps
// stay in wire order). Bytes is a distinct kind only for input: the decoder
// emits bytes fields as base64 strings, like the JSON mapping. Values are
// plain data: copyable, movable, no shared state.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace dclcomms::codec {

class Value;

using List = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;

// Raw bytes (input only; accepted wherever a bytes field is expected).
struct Bytes {
  std::string data;
  bool operator==(const Bytes& o) const { return data == o.data; }
};

class Value {
 public:
  enum class Kind { Null, Bool, Int, UInt, Double, String, Bytes, List, Object };

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : v_(b) {}
  Value(int v) : v_(static_cast<int64_t>(v)) {}
  Value(int64_t v) : v_(v) {}
  Value(uint32_t v) : v_(static_cast<int64_t>(v)) {}
  Value(uint64_t v) : v_(v) {}
  Value(double d) : v_(d) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(std::string_view s) : v_(std::string(s)) {}
  Value(codec::Bytes b) : v_(std::move(b)) {}
  Value(List l) : v_(std::move(l)) {}
  Value(Object o) : v_(std::move(o)) {}

  Kind kind() const noexcept { return static_cast<Kind>(v_.index()); }
  bool is_null() const noexcept { return kind() == Kind::Null; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  uint64_t as_uint() const { return std::get<uint64_t>(v_); }
  double as_double() const { return std::get<double>(v_); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const codec::Bytes& as_bytes() const { return std::get<codec::Bytes>(v_); }
  const List& as_list() const { return std::get<List>(v_); }
  List& as_list() { return std::get<List>(v_); }
  const Object& as_object() const { return std::get<Object>(v_); }
  Object& as_object() { return std::get<Object>(v_); }

  // Object lookup by key (linear: objects are small); nullptr when absent.
  const Value* find(std::string_view key) const;

  // Structural equality, like JSON/Python: numbers compare by value across
  // Int, UInt and Double (0 == 0.0), NaN equals NaN (tests compare trees),
  // objects ignore key order.
  bool operator==(const Value& o) const;
  bool operator!=(const Value& o) const { return !(*this == o); }

  // Compact JSON text (for diagnostics and tests; object order kept).
  std::string to_json() const;

 private:
  bool as_uint_eq(const Value& o) const;

  std::variant<std::monostate, bool, int64_t, uint64_t, double, std::string, codec::Bytes, List,
               Object>
      v_;
};

// The shortest decimal that reads back as the same float32, as a double:
// 16.5f -> 16.5, 0.1f -> 0.1 (not 0.10000000149011612). NaN/inf pass through.
double float_to_json_double(float f) noexcept;

// Standard base64 with padding.
std::string base64_encode(std::string_view data);
// Standard or URL-safe alphabet, padding optional; false on invalid input.
bool base64_decode(std::string_view text, std::string& out);

}  // namespace dclcomms::codec
