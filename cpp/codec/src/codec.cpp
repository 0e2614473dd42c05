#include "dclcomms/codec/codec.hpp"

#include <google/protobuf/descriptor.pb.h>

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <unordered_map>

#include "dclcomms/codec/descriptor_pool.hpp"
#include "dclcomms/codec/wire.hpp"
#include "dclcomms/error.hpp"
#include "dclcomms/proto_descriptors.hpp"
#include "internal.hpp"

namespace dclcomms::codec {

namespace {

namespace pb = google::protobuf;
using pb::Descriptor;
using pb::FieldDescriptor;
using wire::NestedWriter;
using wire::WireReader;

struct MessageInfo;

struct FieldInfo {
  const FieldDescriptor* fd = nullptr;
  uint32_t number = 0;
  FieldDescriptor::Type type = FieldDescriptor::TYPE_INT32;
  uint32_t wire_type = 0;  // wire type of one element
  bool repeated = false;
  bool is_map = false;
  bool is_message = false;
  bool packable = false;                 // repeated numeric: packed and unpacked both accepted
  bool packed = false;                   // written packed
  bool has_presence = false;             // singular message, `optional`, or oneof member
  bool is_64bit = false;                 // JSON mapping writes it as a decimal string
  int oneof = -1;                        // index of the (real) containing oneof
  const MessageInfo* message = nullptr;  // message type, or map entry type
  std::string json_name;
};

struct MessageInfo {
  const Descriptor* d = nullptr;
  std::vector<FieldInfo> fields;  // declaration order
  std::vector<int> by_number;     // field number -> index, -1 when unknown
  // json_name and proto name -> index; the views point into the descriptors,
  // which live as long as the registry.
  std::unordered_map<std::string_view, int> by_name;
  int oneof_count = 0;

  int find_number(uint32_t n) const { return n < by_number.size() ? by_number[n] : -1; }
};

uint32_t wire_type_of(FieldDescriptor::Type t) {
  switch (t) {
    case FieldDescriptor::TYPE_DOUBLE:
    case FieldDescriptor::TYPE_FIXED64:
    case FieldDescriptor::TYPE_SFIXED64:
      return wire::kFixed64;
    case FieldDescriptor::TYPE_FLOAT:
    case FieldDescriptor::TYPE_FIXED32:
    case FieldDescriptor::TYPE_SFIXED32:
      return wire::kFixed32;
    case FieldDescriptor::TYPE_STRING:
    case FieldDescriptor::TYPE_BYTES:
    case FieldDescriptor::TYPE_MESSAGE:
      return wire::kLen;
    case FieldDescriptor::TYPE_GROUP:
      return wire::kStartGroup;
    default:
      return wire::kVarint;
  }
}

class Registry {
 public:
  Registry() {
    pb::FileDescriptorSet set;
    const std::string_view bytes = proto::descriptor_set();
    if (!set.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      throw std::runtime_error("dclcomms: the embedded descriptor set does not parse");
    }
    for (const auto& file : set.file()) {
      if (pool_.BuildFile(file) == nullptr) {
        throw std::runtime_error("dclcomms: cannot build descriptors for " + file.name());
      }
    }
    for (const auto& file : set.file()) {
      const pb::FileDescriptor* fd = pool_.FindFileByName(file.name());
      for (int i = 0; i < fd->message_type_count(); ++i) add(fd->message_type(i));
    }
    for (auto& [name, info] : infos_) link(*info);
    std::sort(names_.begin(), names_.end());
  }

  const MessageInfo* find(std::string_view name) const {
    auto it = infos_.find(name);
    return it == infos_.end() ? nullptr : it->second.get();
  }
  const pb::DescriptorPool& pool() const { return pool_; }
  const std::vector<std::string>& names() const { return names_; }

 private:
  void add(const Descriptor* d) {
    auto info = std::make_unique<MessageInfo>();
    info->d = d;
    if (!d->options().map_entry()) names_.push_back(d->full_name());
    infos_.emplace(std::string_view(d->full_name()), std::move(info));
    for (int i = 0; i < d->nested_type_count(); ++i) add(d->nested_type(i));
  }

  void link(MessageInfo& mi) {
    const Descriptor* d = mi.d;
    mi.oneof_count = d->real_oneof_decl_count();
    uint32_t max_number = 0;
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* fd = d->field(i);
      FieldInfo f;
      f.fd = fd;
      f.number = static_cast<uint32_t>(fd->number());
      f.type = fd->type();
      f.wire_type = wire_type_of(f.type);
      f.repeated = fd->is_repeated();
      f.is_map = fd->is_map();
      f.is_message = f.type == FieldDescriptor::TYPE_MESSAGE;
      f.packable = fd->is_packable();
      f.packed = fd->is_packed();
      f.has_presence = !f.repeated && fd->has_presence();
      f.is_64bit = fd->cpp_type() == FieldDescriptor::CPPTYPE_INT64 ||
                   fd->cpp_type() == FieldDescriptor::CPPTYPE_UINT64;
      if (const pb::OneofDescriptor* o = fd->real_containing_oneof()) f.oneof = o->index();
      if (f.is_message) f.message = find(fd->message_type()->full_name());
      f.json_name = fd->json_name();
      max_number = std::max(max_number, f.number);
      mi.by_name.emplace(std::string_view(fd->json_name()), i);
      mi.by_name.emplace(std::string_view(fd->name()), i);
      mi.fields.push_back(std::move(f));
    }
    mi.by_number.assign(max_number + 1, -1);
    for (size_t i = 0; i < mi.fields.size(); ++i) {
      mi.by_number[mi.fields[i].number] = static_cast<int>(i);
    }
  }

  pb::DescriptorPool pool_;
  std::unordered_map<std::string_view, std::unique_ptr<MessageInfo>> infos_;  // views into the pool
  std::vector<std::string> names_;
};

const Registry& registry() {
  static const Registry r;  // C++11 magic static: built once, thread-safe
  return r;
}

const MessageInfo& find_type(std::string_view type_name) {
  const MessageInfo* mi = registry().find(type_name);
  if (mi == nullptr || mi->d->options().map_entry()) {
    throw Error(ErrorKind::UnknownType, "unknown_type",
                "unknown message type '" + std::string(type_name) + "'");
  }
  return *mi;
}

// --- encoding -------------------------------------------------------------------

// Where a value sits in the input, for error messages (built only on error).
struct Path {
  const Path* parent = nullptr;
  std::string_view name;
  long index = -1;  // list element index, or -1
};

std::string path_string(const Path* p) {
  std::vector<const Path*> chain;
  for (; p != nullptr; p = p->parent) chain.push_back(p);
  std::string out;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    if ((*it)->index >= 0) {
      out += "[" + std::to_string((*it)->index) + "]";
    } else {
      if (!out.empty()) out += ".";
      out += (*it)->name;
    }
  }
  return out;
}

[[noreturn]] void encode_fail(const char* code, const Path* path, const std::string& msg) {
  const std::string where = path_string(path);
  throw Error(ErrorKind::Encode, code, where.empty() ? msg : where + ": " + msg);
}

const char* kind_name(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Null:
      return "null";
    case Value::Kind::Bool:
      return "a bool";
    case Value::Kind::Int:
    case Value::Kind::UInt:
      return "an int";
    case Value::Kind::Double:
      return "a float";
    case Value::Kind::String:
      return "a string";
    case Value::Kind::Bytes:
      return "bytes";
    case Value::Kind::List:
      return "a list";
    case Value::Kind::Object:
      return "an object";
  }
  return "a value";
}

[[noreturn]] void bad_type(const Path* p, const char* expected, const Value& got) {
  encode_fail("bad_type", p, std::string("expected ") + expected + ", got " + kind_name(got));
}

// A 64-bit integer given as a decimal string (how JSON carries them): the whole
// string must be one, within T's range.
template <typename T>
T parse_decimal(const std::string& s, const Path* p) {
  T x = 0;
  const auto res = std::from_chars(s.data(), s.data() + s.size(), x);
  if (res.ec == std::errc::result_out_of_range) {
    encode_fail("out_of_range", p, "'" + s + "' is out of range");
  }
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || s.empty()) {
    encode_fail("bad_type", p, "'" + s + "' is not a decimal integer");
  }
  return x;
}

int64_t to_signed(const Value& v, int64_t lo, int64_t hi, const Path* p) {
  int64_t x = 0;
  switch (v.kind()) {
    case Value::Kind::Int:
      x = v.as_int();
      break;
    case Value::Kind::UInt:
      if (v.as_uint() > static_cast<uint64_t>(hi)) {
        encode_fail("out_of_range", p, std::to_string(v.as_uint()) + " is out of range");
      }
      x = static_cast<int64_t>(v.as_uint());
      break;
    case Value::Kind::Double: {
      const double d = v.as_double();
      if (!std::isfinite(d) || std::trunc(d) != d) bad_type(p, "an integer", v);
      if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
        encode_fail("out_of_range", p, "value is out of range");
      }
      x = static_cast<int64_t>(d);
      break;
    }
    case Value::Kind::String:
      x = parse_decimal<int64_t>(v.as_string(), p);
      break;
    default:
      bad_type(p, "an integer", v);
  }
  if (x < lo || x > hi) encode_fail("out_of_range", p, std::to_string(x) + " is out of range");
  return x;
}

uint64_t to_unsigned(const Value& v, uint64_t hi, const Path* p) {
  uint64_t x = 0;
  switch (v.kind()) {
    case Value::Kind::Int:
      if (v.as_int() < 0) {
        encode_fail("out_of_range", p, std::to_string(v.as_int()) + " is out of range");
      }
      x = static_cast<uint64_t>(v.as_int());
      break;
    case Value::Kind::UInt:
      x = v.as_uint();
      break;
    case Value::Kind::Double: {
      const double d = v.as_double();
      if (!std::isfinite(d) || std::trunc(d) != d) bad_type(p, "an integer", v);
      if (!(d >= 0 && d < 18446744073709551616.0)) {
        encode_fail("out_of_range", p, "value is out of range");
      }
      x = static_cast<uint64_t>(d);
      break;
    }
    case Value::Kind::String: {
      const std::string& s = v.as_string();
      if (!s.empty() && s[0] == '-') encode_fail("out_of_range", p, "'" + s + "' is out of range");
      x = parse_decimal<uint64_t>(s, p);
      break;
    }
    default:
      bad_type(p, "an integer", v);
  }
  if (x > hi) encode_fail("out_of_range", p, std::to_string(x) + " is out of range");
  return x;
}

double to_double(const Value& v, const Path* p) {
  switch (v.kind()) {
    case Value::Kind::Int:
      return static_cast<double>(v.as_int());
    case Value::Kind::UInt:
      return static_cast<double>(v.as_uint());
    case Value::Kind::Double:
      return v.as_double();
    case Value::Kind::String: {
      const std::string& s = v.as_string();
      if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
      if (s == "Infinity") return std::numeric_limits<double>::infinity();
      if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
      double d = 0;
      auto res = std::from_chars(s.data(), s.data() + s.size(), d);
      if (res.ec == std::errc::result_out_of_range) {
        encode_fail("out_of_range", p, "'" + s + "' is out of range");
      }
      if (res.ec != std::errc() || res.ptr != s.data() + s.size() || s.empty() ||
          !std::isfinite(d)) {
        encode_fail("bad_type", p, "'" + s + "' is not a number");
      }
      return d;
    }
    default:
      bad_type(p, "a number", v);
  }
}

int32_t to_enum(const FieldInfo& f, const Value& v, const Path* p) {
  if (v.kind() == Value::Kind::String) {
    const pb::EnumValueDescriptor* ev = f.fd->enum_type()->FindValueByName(v.as_string());
    if (ev == nullptr) {
      encode_fail("bad_enum", p,
                  "'" + v.as_string() + "' is not a value of " + f.fd->enum_type()->full_name());
    }
    return ev->number();
  }
  if (v.kind() == Value::Kind::Bool) bad_type(p, "an enum name or number", v);
  // proto3 enums are open: any int32 is a valid value.
  return static_cast<int32_t>(to_signed(v, INT32_MIN, INT32_MAX, p));
}

// Writes one scalar (with its tag unless packed). Returns false when skipped
// as an implicit default (E1).
bool encode_scalar(const FieldInfo& f, const Value& v, std::string& out, bool with_tag,
                   bool skip_default, const Path* p) {
  const uint32_t n = f.number;
  auto tag = [&](uint32_t wt) {
    if (with_tag) wire::write_tag(out, n, wt);
  };
  switch (f.type) {
    case FieldDescriptor::TYPE_INT32:
    case FieldDescriptor::TYPE_INT64: {
      const int64_t x = f.type == FieldDescriptor::TYPE_INT32
                            ? to_signed(v, INT32_MIN, INT32_MAX, p)
                            : to_signed(v, INT64_MIN, INT64_MAX, p);
      if (skip_default && x == 0) return false;
      tag(wire::kVarint);
      wire::write_varint(out, static_cast<uint64_t>(x));  // negative: 10 bytes
      return true;
    }
    case FieldDescriptor::TYPE_SINT32:
    case FieldDescriptor::TYPE_SINT64: {
      const bool is32 = f.type == FieldDescriptor::TYPE_SINT32;
      const int64_t x =
          is32 ? to_signed(v, INT32_MIN, INT32_MAX, p) : to_signed(v, INT64_MIN, INT64_MAX, p);
      if (skip_default && x == 0) return false;
      tag(wire::kVarint);
      wire::write_varint(
          out, is32 ? wire::zigzag_encode32(static_cast<int32_t>(x)) : wire::zigzag_encode64(x));
      return true;
    }
    case FieldDescriptor::TYPE_SFIXED32: {
      const int64_t x = to_signed(v, INT32_MIN, INT32_MAX, p);
      if (skip_default && x == 0) return false;
      tag(wire::kFixed32);
      wire::write_fixed32(out, static_cast<uint32_t>(static_cast<int32_t>(x)));
      return true;
    }
    case FieldDescriptor::TYPE_SFIXED64: {
      const int64_t x = to_signed(v, INT64_MIN, INT64_MAX, p);
      if (skip_default && x == 0) return false;
      tag(wire::kFixed64);
      wire::write_fixed64(out, static_cast<uint64_t>(x));
      return true;
    }
    case FieldDescriptor::TYPE_UINT32:
    case FieldDescriptor::TYPE_UINT64: {
      const uint64_t x =
          to_unsigned(v, f.type == FieldDescriptor::TYPE_UINT32 ? UINT32_MAX : UINT64_MAX, p);
      if (skip_default && x == 0) return false;
      tag(wire::kVarint);
      wire::write_varint(out, x);
      return true;
    }
    case FieldDescriptor::TYPE_FIXED32: {
      const uint64_t x = to_unsigned(v, UINT32_MAX, p);
      if (skip_default && x == 0) return false;
      tag(wire::kFixed32);
      wire::write_fixed32(out, static_cast<uint32_t>(x));
      return true;
    }
    case FieldDescriptor::TYPE_FIXED64: {
      const uint64_t x = to_unsigned(v, UINT64_MAX, p);
      if (skip_default && x == 0) return false;
      tag(wire::kFixed64);
      wire::write_fixed64(out, x);
      return true;
    }
    case FieldDescriptor::TYPE_BOOL: {
      if (v.kind() != Value::Kind::Bool) bad_type(p, "a bool", v);
      if (skip_default && !v.as_bool()) return false;
      tag(wire::kVarint);
      out.push_back(v.as_bool() ? '\1' : '\0');
      return true;
    }
    case FieldDescriptor::TYPE_ENUM: {
      const int32_t x = to_enum(f, v, p);
      if (skip_default && x == 0) return false;
      tag(wire::kVarint);
      wire::write_varint(out, static_cast<uint64_t>(static_cast<int64_t>(x)));
      return true;
    }
    case FieldDescriptor::TYPE_FLOAT: {
      const double d = to_double(v, p);
      const float x = static_cast<float>(d);
      if (std::isfinite(d) && !std::isfinite(x)) {
        encode_fail("out_of_range", p, "value is out of range for a float32");
      }
      if (skip_default && wire::is_default_float(x)) return false;
      tag(wire::kFixed32);
      wire::write_float(out, x);
      return true;
    }
    case FieldDescriptor::TYPE_DOUBLE: {
      const double x = to_double(v, p);
      if (skip_default && wire::is_default_double(x)) return false;
      tag(wire::kFixed64);
      wire::write_double(out, x);
      return true;
    }
    case FieldDescriptor::TYPE_STRING: {
      if (v.kind() != Value::Kind::String) bad_type(p, "a string", v);
      const std::string& s = v.as_string();
      if (!wire::is_valid_utf8(s)) encode_fail("bad_type", p, "string is not valid UTF-8");
      if (skip_default && s.empty()) return false;
      tag(wire::kLen);
      wire::write_varint(out, s.size());
      out += s;
      return true;
    }
    case FieldDescriptor::TYPE_BYTES: {
      std::string decoded;
      const std::string* data = nullptr;
      if (v.kind() == Value::Kind::Bytes) {
        data = &v.as_bytes().data;
      } else if (v.kind() == Value::Kind::String) {
        if (!base64_decode(v.as_string(), decoded)) {
          encode_fail("bad_base64", p, "not valid base64");
        }
        data = &decoded;
      } else {
        bad_type(p, "bytes or a base64 string", v);
      }
      if (skip_default && data->empty()) return false;
      tag(wire::kLen);
      wire::write_varint(out, data->size());
      out += *data;
      return true;
    }
    default:
      encode_fail("bad_type", p, "unsupported field type");
  }
}

void encode_message(const MessageInfo& mi, const Value& v, std::string& out, int depth,
                    const Path* path);

void encode_map(const FieldInfo& f, const Value& v, std::string& out, int depth, const Path* path) {
  if (v.kind() != Value::Kind::Object) bad_type(path, "an object (map)", v);
  const MessageInfo& entry = *f.message;
  const FieldInfo& kf = entry.fields[0];
  const FieldInfo& vf = entry.fields[1];
  for (const auto& [key, val] : v.as_object()) {
    const Path here{path, key};
    if (val.is_null()) bad_type(&here, "a map value", val);
    NestedWriter w(out, f.number);
    if (kf.type == FieldDescriptor::TYPE_BOOL) {
      if (key != "true" && key != "false") {
        encode_fail("bad_type", &here, "map key '" + key + "' is not true/false");
      }
      encode_scalar(kf, Value(key == "true"), out, true, true, &here);
    } else {
      encode_scalar(kf, Value(key), out, true, true, &here);
    }
    if (vf.is_message) {
      NestedWriter vw(out, vf.number);  // a present map value is always written
      encode_message(*vf.message, val, out, depth + 1, &here);
      vw.end();
    } else {
      encode_scalar(vf, val, out, true, true, &here);
    }
    w.end();
  }
}

void encode_field(const FieldInfo& f, const Value& v, std::string& out, int depth,
                  const Path* parent) {
  const Path path{parent, f.json_name};
  if (f.is_map) {
    encode_map(f, v, out, depth + 1, &path);
    return;
  }
  if (f.repeated) {
    if (v.kind() != Value::Kind::List) bad_type(&path, "a list", v);
    const List& items = v.as_list();
    if (f.packed) {
      if (items.empty()) return;
      NestedWriter w(out, f.number);
      for (size_t i = 0; i < items.size(); ++i) {
        const Path el{&path, {}, static_cast<long>(i)};
        if (items[i].is_null()) bad_type(&el, "a list element", items[i]);
        encode_scalar(f, items[i], out, false, false, &el);
      }
      w.end();
      return;
    }
    for (size_t i = 0; i < items.size(); ++i) {
      const Path el{&path, {}, static_cast<long>(i)};
      if (items[i].is_null()) bad_type(&el, "a list element", items[i]);
      if (f.is_message) {
        NestedWriter w(out, f.number);
        encode_message(*f.message, items[i], out, depth + 1, &el);
        w.end();
      } else {
        encode_scalar(f, items[i], out, true, false, &el);
      }
    }
    return;
  }
  if (f.is_message) {
    NestedWriter w(out, f.number);  // E3/E4: a set sub-message is written even empty
    encode_message(*f.message, v, out, depth + 1, &path);
    w.end();
    return;
  }
  encode_scalar(f, v, out, true, !f.has_presence, &path);  // E1/E2
}

void encode_message(const MessageInfo& mi, const Value& v, std::string& out, int depth,
                    const Path* path) {
  if (depth > wire::kMaxDepth) {
    encode_fail("too_deep", path, "nested deeper than " + std::to_string(wire::kMaxDepth));
  }
  if (v.kind() != Value::Kind::Object) bad_type(path, "an object", v);
  const size_t n = mi.fields.size();
  // Slots by declaration index; small messages avoid the heap.
  const Value* small[32] = {};
  std::vector<const Value*> large;
  const Value** slots = small;
  if (n > 32) {
    large.assign(n, nullptr);
    slots = large.data();
  }
  int oneof_small[8];
  std::vector<int> oneof_large;
  int* oneof_set = oneof_small;
  if (mi.oneof_count > 8) {
    oneof_large.resize(static_cast<size_t>(mi.oneof_count));
    oneof_set = oneof_large.data();
  }
  std::fill(oneof_set, oneof_set + mi.oneof_count, -1);

  for (const auto& [key, val] : v.as_object()) {
    auto it = mi.by_name.find(key);
    if (it == mi.by_name.end()) {
      encode_fail("unknown_field", path, "unknown field '" + key + "' for " + mi.d->full_name());
    }
    if (val.is_null()) continue;  // None = absent
    const int idx = it->second;
    const FieldInfo& f = mi.fields[static_cast<size_t>(idx)];
    if (slots[idx] != nullptr) {
      encode_fail("duplicate_field", path, "field '" + f.json_name + "' given twice");
    }
    slots[idx] = &val;
    if (f.oneof >= 0) {
      int& seen = oneof_set[f.oneof];
      if (seen >= 0) {
        encode_fail("oneof_conflict", path,
                    "'" + mi.fields[static_cast<size_t>(seen)].json_name + "' and '" + f.json_name +
                        "' are both members of oneof '" + f.fd->real_containing_oneof()->name() +
                        "'");
      }
      seen = idx;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (slots[i] != nullptr) encode_field(mi.fields[i], *slots[i], out, depth, path);
  }
}

// --- decoding -------------------------------------------------------------------

struct DecodeState {
  explicit DecodeState(const MessageInfo& m)
      : mi(&m), values(m.fields.size()), subs(m.fields.size()) {}
  const MessageInfo* mi;
  std::vector<Value> values;                       // Null = absent
  std::vector<std::unique_ptr<DecodeState>> subs;  // singular sub-messages
  std::vector<std::pair<int, std::unordered_map<std::string, size_t>>> map_index;
};

Value float_value(double d) {
  if (std::isnan(d)) return Value("NaN");
  if (std::isinf(d)) return Value(d > 0 ? "Infinity" : "-Infinity");
  return Value(d);
}

Value decode_scalar(WireReader& r, const FieldInfo& f) {
  switch (f.type) {
    case FieldDescriptor::TYPE_INT32:
      return Value(static_cast<int64_t>(static_cast<int32_t>(r.read_varint())));
    case FieldDescriptor::TYPE_INT64:
      return Value(std::to_string(static_cast<int64_t>(r.read_varint())));
    case FieldDescriptor::TYPE_UINT32:
      return Value(static_cast<int64_t>(static_cast<uint32_t>(r.read_varint())));
    case FieldDescriptor::TYPE_UINT64:
      return Value(std::to_string(r.read_varint()));
    case FieldDescriptor::TYPE_SINT32:
      return Value(
          static_cast<int64_t>(wire::zigzag_decode32(static_cast<uint32_t>(r.read_varint()))));
    case FieldDescriptor::TYPE_SINT64:
      return Value(std::to_string(wire::zigzag_decode64(r.read_varint())));
    case FieldDescriptor::TYPE_BOOL:
      return Value(r.read_varint() != 0);
    case FieldDescriptor::TYPE_ENUM: {
      const auto x = static_cast<int32_t>(r.read_varint());
      const pb::EnumValueDescriptor* ev = f.fd->enum_type()->FindValueByNumber(x);
      return ev != nullptr ? Value(ev->name()) : Value(static_cast<int64_t>(x));
    }
    case FieldDescriptor::TYPE_FIXED32:
      return Value(static_cast<int64_t>(r.read_fixed32()));
    case FieldDescriptor::TYPE_SFIXED32:
      return Value(static_cast<int64_t>(static_cast<int32_t>(r.read_fixed32())));
    case FieldDescriptor::TYPE_FIXED64:
      return Value(std::to_string(r.read_fixed64()));
    case FieldDescriptor::TYPE_SFIXED64:
      return Value(std::to_string(static_cast<int64_t>(r.read_fixed64())));
    case FieldDescriptor::TYPE_FLOAT:
      return float_value(float_to_json_double(wire::bits_to_float(r.read_fixed32())));
    case FieldDescriptor::TYPE_DOUBLE:
      return float_value(wire::bits_to_double(r.read_fixed64()));
    case FieldDescriptor::TYPE_STRING: {
      const size_t at = r.offset();
      const std::string_view s = r.read_length_delimited();
      if (!wire::is_valid_utf8(s)) {
        wire::throw_decode("invalid_utf8", "invalid UTF-8 in string field '" + f.json_name +
                                               "' at offset " + std::to_string(at));
      }
      return Value(s);
    }
    case FieldDescriptor::TYPE_BYTES:
      return Value(base64_encode(r.read_length_delimited()));
    default:
      wire::throw_decode("bad_wire_type", "unsupported field type");
  }
}

Value default_value(const FieldInfo& f) {
  if (f.is_map) return Value(Object{});
  if (f.repeated) return Value(List{});
  if (f.is_64bit) return Value("0");
  switch (f.type) {
    case FieldDescriptor::TYPE_BOOL:
      return Value(false);
    case FieldDescriptor::TYPE_FLOAT:
    case FieldDescriptor::TYPE_DOUBLE:
      return Value(0.0);
    case FieldDescriptor::TYPE_STRING:
    case FieldDescriptor::TYPE_BYTES:
      return Value("");
    case FieldDescriptor::TYPE_ENUM: {
      const pb::EnumValueDescriptor* ev = f.fd->enum_type()->FindValueByNumber(0);
      return ev != nullptr ? Value(ev->name()) : Value(0);
    }
    case FieldDescriptor::TYPE_MESSAGE:
      return Value(Object{});
    default:
      return Value(0);
  }
}

bool is_default(const FieldInfo& f, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Bool:
      return !v.as_bool();
    case Value::Kind::Int:
      return v.as_int() == 0;
    case Value::Kind::UInt:
      return v.as_uint() == 0;
    case Value::Kind::Double:
      return v.as_double() == 0.0;  // -0.0 too (E1)
    case Value::Kind::String:
      if (f.is_64bit) return v.as_string() == "0";
      if (f.type == FieldDescriptor::TYPE_ENUM) return v == default_value(f);
      return v.as_string().empty();
    default:
      return false;
  }
}

void decode_into(DecodeState& st, std::string_view data, const char* origin, int depth,
                 const DecodeOptions& opts);
Value finalize(const DecodeState& st, const DecodeOptions& opts);

std::string map_key_string(const FieldInfo& kf, const Value& k) {
  switch (k.kind()) {
    case Value::Kind::Bool:
      return k.as_bool() ? "true" : "false";
    case Value::Kind::Int:
      return std::to_string(k.as_int());
    case Value::Kind::UInt:
      return std::to_string(k.as_uint());
    case Value::Kind::String:
      return k.as_string();
    default:
      (void)kf;
      return {};
  }
}

// E7: an entry without a value gets the default; a duplicate key replaces the
// value and keeps the key's first position (like assigning to a dict).
void decode_map_entry(DecodeState& st, size_t idx, std::string_view span, const char* origin,
                      int depth, const DecodeOptions& opts) {
  const FieldInfo& f = st.mi->fields[idx];
  const MessageInfo& entry = *f.message;
  DecodeState es(entry);
  decode_into(es, span, origin, depth + 1, opts);
  const FieldInfo& kf = entry.fields[0];
  const FieldInfo& vf = entry.fields[1];
  std::string key = map_key_string(kf, es.values[0].is_null() ? default_value(kf) : es.values[0]);
  Value val;
  if (vf.is_message) {
    val = es.subs[1] ? finalize(*es.subs[1], opts) : finalize(DecodeState(*vf.message), opts);
  } else {
    val = es.values[1].is_null() ? default_value(vf) : std::move(es.values[1]);
  }
  Value& slot = st.values[idx];
  if (slot.is_null()) slot = Value(Object{});
  Object& obj = slot.as_object();
  // Linear search for small maps; an index once the map grows.
  constexpr size_t kLinear = 16;
  if (obj.size() < kLinear) {
    for (auto& [k, v] : obj) {
      if (k == key) {
        v = std::move(val);
        return;
      }
    }
    obj.emplace_back(std::move(key), std::move(val));
    return;
  }
  std::unordered_map<std::string, size_t>* index = nullptr;
  for (auto& [i, m] : st.map_index) {
    if (i == static_cast<int>(idx)) index = &m;
  }
  if (index == nullptr) {
    st.map_index.emplace_back(static_cast<int>(idx), std::unordered_map<std::string, size_t>{});
    index = &st.map_index.back().second;
    for (size_t i = 0; i < obj.size(); ++i) index->emplace(obj[i].first, i);
  }
  auto [it, inserted] = index->emplace(key, obj.size());
  if (inserted) {
    obj.emplace_back(std::move(key), std::move(val));
  } else {
    obj[it->second].second = std::move(val);
  }
}

void clear_other_oneof_members(DecodeState& st, size_t idx) {
  const auto& fields = st.mi->fields;
  const int oneof = fields[idx].oneof;
  for (size_t j = 0; j < fields.size(); ++j) {
    if (j != idx && fields[j].oneof == oneof) {
      st.values[j] = Value();
      st.subs[j].reset();
    }
  }
}

void decode_into(DecodeState& st, std::string_view data, const char* origin, int depth,
                 const DecodeOptions& opts) {
  if (depth > wire::kMaxDepth) {
    wire::throw_decode("too_deep", "messages nested deeper than " +
                                       std::to_string(wire::kMaxDepth) + " at offset " +
                                       std::to_string(data.data() - origin));
  }
  const MessageInfo& mi = *st.mi;
  WireReader r(data, origin);
  while (!r.at_end()) {
    uint32_t number = 0;
    uint32_t wt = 0;
    r.read_tag(number, wt);
    const int found = mi.find_number(number);
    if (found < 0) {
      r.skip(number, wt, depth);  // E5: unknown fields are skipped
      continue;
    }
    const auto idx = static_cast<size_t>(found);
    const FieldInfo& f = mi.fields[idx];
    if (f.packable && wt == wire::kLen) {  // packed repeated scalars
      const std::string_view span = r.read_length_delimited();
      WireReader pr(span, origin);
      Value& slot = st.values[idx];
      if (slot.is_null()) slot = Value(List{});
      while (!pr.at_end()) slot.as_list().push_back(decode_scalar(pr, f));
      continue;
    }
    if (wt != f.wire_type) {
      r.skip(number, wt, depth);  // like libprotobuf: a mismatched wire type is unknown
      continue;
    }
    if (f.oneof >= 0) clear_other_oneof_members(st, idx);  // E5: last member wins
    if (f.is_map) {
      decode_map_entry(st, idx, r.read_length_delimited(), origin, depth, opts);
    } else if (f.is_message) {
      const std::string_view span = r.read_length_delimited();
      if (f.repeated) {
        DecodeState es(*f.message);
        decode_into(es, span, origin, depth + 1, opts);
        Value& slot = st.values[idx];
        if (slot.is_null()) slot = Value(List{});
        slot.as_list().push_back(finalize(es, opts));
      } else {
        // A singular sub-message seen again is merged into the first.
        if (!st.subs[idx]) st.subs[idx] = std::make_unique<DecodeState>(*f.message);
        decode_into(*st.subs[idx], span, origin, depth + 1, opts);
      }
    } else if (f.repeated) {
      Value& slot = st.values[idx];
      if (slot.is_null()) slot = Value(List{});
      slot.as_list().push_back(decode_scalar(r, f));
    } else {
      st.values[idx] = decode_scalar(r, f);
    }
  }
}

Value finalize(const DecodeState& st, const DecodeOptions& opts) {
  Object out;
  const auto& fields = st.mi->fields;
  for (size_t i = 0; i < fields.size(); ++i) {
    const FieldInfo& f = fields[i];
    if (f.is_message && !f.repeated) {
      if (st.subs[i]) out.emplace_back(f.json_name, finalize(*st.subs[i], opts));
      continue;
    }
    const Value& v = st.values[i];
    if (f.repeated) {
      if (!v.is_null()) {
        out.emplace_back(f.json_name, v);
      } else if (opts.including_defaults) {
        out.emplace_back(f.json_name, default_value(f));
      }
      continue;
    }
    if (!v.is_null()) {
      if (f.has_presence || opts.including_defaults || !is_default(f, v)) {
        out.emplace_back(f.json_name, v);
      }
    } else if (!f.has_presence && opts.including_defaults) {
      out.emplace_back(f.json_name, default_value(f));
    }
  }
  return Value(std::move(out));
}

}  // namespace

const google::protobuf::DescriptorPool& descriptor_pool() {
  return registry().pool();
}

std::string_view descriptor_set() noexcept {
  return proto::descriptor_set();
}

std::vector<std::string> message_types() {
  return registry().names();
}

std::string encode(std::string_view type_name, const Value& message) {
  const MessageInfo& mi = find_type(type_name);
  std::string out;
  try {
    encode_message(mi, message, out, 0, nullptr);
  } catch (const Error& e) {
    wire::rethrow_with_type_name(e, mi.d->full_name());
  }
  return out;
}

Value decode(std::string_view type_name, std::string_view data, const DecodeOptions& options) {
  const MessageInfo& mi = find_type(type_name);
  try {
    DecodeState st(mi);
    decode_into(st, data, data.data(), 0, options);
    return finalize(st, options);
  } catch (const Error& e) {
    wire::rethrow_with_type_name(e, mi.d->full_name());
  }
}

namespace detail {

void validate_nested(std::string_view type_name, std::string_view data, const char* origin,
                     int depth) {
  const MessageInfo& mi = find_type(type_name);
  DecodeState st(mi);
  decode_into(st, data, origin, depth, DecodeOptions{});
}

}  // namespace detail

}  // namespace dclcomms::codec
