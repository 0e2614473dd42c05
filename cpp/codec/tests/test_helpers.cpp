#include "test_helpers.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "dclcomms/codec/codec.hpp"
#include "dclcomms/codec/descriptor_pool.hpp"

namespace dclcomms::codec::testing {

namespace pb = google::protobuf;

std::vector<Vector> load_vectors() {
  std::ifstream in(DCLCOMMS_WIRE_VECTORS);
  if (!in) throw std::runtime_error("cannot open " DCLCOMMS_WIRE_VECTORS);
  const nlohmann::json doc = nlohmann::json::parse(in);
  std::vector<Vector> out;
  for (const auto& v : doc.at("vectors")) {
    out.push_back({v.at("package").get<std::string>() + "." + v.at("message").get<std::string>(),
                   v.at("description").get<std::string>(), v.at("json"),
                   unhex(v.at("hex").get<std::string>())});
  }
  return out;
}

Value from_json(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value();
    case nlohmann::json::value_t::boolean:
      return Value(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return Value(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float:
      return Value(j.get<double>());
    case nlohmann::json::value_t::string:
      return Value(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      List l;
      for (const auto& e : j) l.push_back(from_json(e));
      return Value(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Object o;
      for (const auto& [k, v] : j.items()) o.emplace_back(k, from_json(v));
      return Value(std::move(o));
    }
    default:
      throw std::runtime_error("unsupported JSON value");
  }
}

std::string unhex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::string hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    out.push_back(digits[static_cast<uint8_t>(c) >> 4]);
    out.push_back(digits[static_cast<uint8_t>(c) & 15]);
  }
  return out;
}

uint64_t test_seed() {
  const char* env = std::getenv("DCLCOMMS_TEST_SEED");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : 20261122;
}

std::vector<const pb::Descriptor*> all_message_types() {
  std::vector<const pb::Descriptor*> out;
  for (const auto& name : message_types()) {
    out.push_back(descriptor_pool().FindMessageTypeByName(name));
  }
  return out;
}

namespace {

std::string random_utf8(std::mt19937_64& rng) {
  static const char* pieces[] = {"a", "Z", "0", " ", "\n", "\"", "\\", "é", "€", "😀", "ñ", "x"};
  std::string s;
  const int n = static_cast<int>(rng() % 12) + 1;
  for (int i = 0; i < n; ++i) s += pieces[rng() % 12];
  return s;
}

Value random_scalar(const pb::FieldDescriptor* f, std::mt19937_64& rng) {
  using FD = pb::FieldDescriptor;
  switch (f->type()) {
    case FD::TYPE_INT32:
    case FD::TYPE_SINT32:
    case FD::TYPE_SFIXED32: {
      const int kind = static_cast<int>(rng() % 3);
      int32_t x = kind == 0   ? static_cast<int32_t>(rng())
                  : kind == 1 ? static_cast<int32_t>(rng() % 200) - 100
                              : INT32_MIN;
      return Value(static_cast<int64_t>(x));
    }
    case FD::TYPE_INT64:
    case FD::TYPE_SINT64:
    case FD::TYPE_SFIXED64: {
      const int64_t x = rng() % 2 ? static_cast<int64_t>(rng()) : static_cast<int64_t>(rng() % 100);
      return Value(std::to_string(x));
    }
    case FD::TYPE_UINT32:
    case FD::TYPE_FIXED32:
      return Value(static_cast<int64_t>(rng() % 2 ? static_cast<uint32_t>(rng()) : rng() % 300));
    case FD::TYPE_UINT64:
    case FD::TYPE_FIXED64:
      return Value(std::to_string(rng() % 2 ? rng() : rng() % 300));
    case FD::TYPE_BOOL:
      return Value(rng() % 2 == 0);
    case FD::TYPE_ENUM: {
      const pb::EnumDescriptor* e = f->enum_type();
      if (rng() % 5 == 0) return Value(static_cast<int64_t>(100 + rng() % 50));  // unknown
      return Value(e->value(static_cast<int>(rng() % e->value_count()))->name());
    }
    case FD::TYPE_FLOAT: {
      float x;
      if (rng() % 2) {
        const auto bits = static_cast<uint32_t>(rng());
        std::memcpy(&x, &bits, 4);
        if (!std::isfinite(x)) x = 1.5f;
      } else {
        x = static_cast<float>(static_cast<int>(rng() % 20000) - 10000) / 8.0f;
      }
      if (rng() % 20 == 0) return Value(rng() % 2 ? "Infinity" : "NaN");
      return Value(float_to_json_double(x));
    }
    case FD::TYPE_DOUBLE: {
      double x;
      const uint64_t bits = rng();
      std::memcpy(&x, &bits, 8);
      if (!std::isfinite(x)) x = -2.25;
      if (rng() % 20 == 0) return Value("-Infinity");
      return Value(x);
    }
    case FD::TYPE_STRING:
      return Value(random_utf8(rng));
    case FD::TYPE_BYTES: {
      std::string b;
      const int n = static_cast<int>(rng() % 20);
      for (int i = 0; i < n; ++i) b.push_back(static_cast<char>(rng()));
      return Value(base64_encode(b));
    }
    default:
      return Value();
  }
}

bool canonical_default(const pb::FieldDescriptor* f, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Bool:
      return !v.as_bool();
    case Value::Kind::Int:
      return v.as_int() == 0;
    case Value::Kind::Double:
      return v.as_double() == 0.0;
    case Value::Kind::String:
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT64 ||
          f->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT64) {
        return v.as_string() == "0";
      }
      if (f->type() == pb::FieldDescriptor::TYPE_ENUM) {
        return v.as_string() == f->enum_type()->FindValueByNumber(0)->name();
      }
      return v.as_string().empty();
    default:
      return false;
  }
}

std::string random_key(const pb::FieldDescriptor* kf, std::mt19937_64& rng) {
  switch (kf->type()) {
    case pb::FieldDescriptor::TYPE_STRING:
      return random_utf8(rng);
    case pb::FieldDescriptor::TYPE_BOOL:
      return rng() % 2 ? "true" : "false";
    default:
      return std::to_string(rng() % 1000);
  }
}

}  // namespace

Value random_message(const pb::Descriptor* d, std::mt19937_64& rng, int depth) {
  Object out;
  std::vector<bool> oneof_taken(static_cast<size_t>(d->oneof_decl_count()), false);
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (rng() % 2 == 0) continue;
    if (const pb::OneofDescriptor* o = f->real_containing_oneof()) {
      if (oneof_taken[static_cast<size_t>(o->index())]) continue;
      oneof_taken[static_cast<size_t>(o->index())] = true;
    }
    const bool msg = f->type() == pb::FieldDescriptor::TYPE_MESSAGE;
    if (f->is_map()) {
      const pb::Descriptor* entry = f->message_type();
      Object m;
      const int n = static_cast<int>(rng() % 4);
      for (int k = 0; k < n; ++k) {
        std::string key = random_key(entry->field(0), rng);
        bool dup = false;
        for (const auto& [existing, _] : m) dup = dup || existing == key;
        if (dup) continue;
        const pb::FieldDescriptor* vf = entry->field(1);
        Value val = vf->type() == pb::FieldDescriptor::TYPE_MESSAGE
                        ? random_message(vf->message_type(), rng, depth + 1)
                        : random_scalar(vf, rng);
        m.emplace_back(std::move(key), std::move(val));
      }
      if (!m.empty()) out.emplace_back(f->json_name(), Value(std::move(m)));
    } else if (f->is_repeated()) {
      List l;
      const int n = static_cast<int>(rng() % 4);
      for (int k = 0; k < n; ++k) {
        l.push_back(msg ? random_message(f->message_type(), rng, depth + 1)
                        : random_scalar(f, rng));
      }
      if (!l.empty()) out.emplace_back(f->json_name(), Value(std::move(l)));
    } else if (msg) {
      if (depth < 4)
        out.emplace_back(f->json_name(), random_message(f->message_type(), rng, depth + 1));
    } else {
      Value v = random_scalar(f, rng);
      if (!f->has_presence() && canonical_default(f, v)) continue;
      out.emplace_back(f->json_name(), std::move(v));
    }
  }
  return Value(std::move(out));
}

}  // namespace dclcomms::codec::testing
