#pragma once
// Low-level protobuf wire primitives shared by the generic codec and the typed
// fast paths (one implementation of varints, tags and lengths).
//
// WireReader reads from a caller-owned buffer (it never copies; views it hands
// out are valid while that buffer lives) and throws
// dclcomms::Error{ErrorKind::Decode, code} with one of the codes truncated,
// bad_varint, bad_length, bad_wire_type, bad_group, too_deep. Messages carry
// the absolute offset in the top-level buffer; callers prefix the type name
// (see with_type_name). Writers append to a std::string. Everything here is
// stateless apart from the reader's cursor: thread-safe per instance.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "dclcomms/error.hpp"

namespace dclcomms::codec::wire {

enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLen = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

// Nesting limit for messages and groups (wire.md: deeper input is rejected
// with too_deep instead of exhausting the stack).
inline constexpr int kMaxDepth = 100;

[[noreturn]] void throw_decode(const char* code, const std::string& message);

// Rethrows a Decode error with "<type_name>: " in front of its message.
[[noreturn]] void rethrow_with_type_name(const Error& e, std::string_view type_name);

class WireReader {
 public:
  // `origin` is the start of the top-level buffer, used for absolute offsets
  // in error messages; it defaults to the start of `data`.
  explicit WireReader(std::string_view data, const char* origin = nullptr)
      : p_(data.data()), end_(data.data() + data.size()), origin_(origin ? origin : data.data()) {}

  bool at_end() const noexcept { return p_ >= end_; }
  size_t offset() const noexcept { return static_cast<size_t>(p_ - origin_); }
  const char* origin() const noexcept { return origin_; }

  uint64_t read_varint() {
    // Fast path: one byte.
    if (p_ < end_ && static_cast<uint8_t>(*p_) < 0x80) {
      return static_cast<uint8_t>(*p_++);
    }
    return read_varint_slow();
  }

  // Reads a tag; field number 0 and wire types 6/7 are rejected.
  void read_tag(uint32_t& field_number, uint32_t& wire_type) {
    const size_t at = offset();
    const uint64_t tag = read_varint();
    wire_type = static_cast<uint32_t>(tag & 7);
    const uint64_t number = tag >> 3;
    if (wire_type > 5) {
      throw_decode("bad_wire_type",
                   "wire type " + std::to_string(wire_type) + " at offset " + std::to_string(at));
    }
    if (number == 0 || number > 0x1FFFFFFF) {
      throw_decode("bad_wire_type", "invalid field number " + std::to_string(number) +
                                        " at offset " + std::to_string(at));
    }
    field_number = static_cast<uint32_t>(number);
  }

  uint32_t read_fixed32() {
    if (end_ - p_ < 4) throw_truncated("fixed32");
    uint32_t v;
    std::memcpy(&v, p_, 4);  // little-endian hosts only (x86-64, aarch64)
    p_ += 4;
    return v;
  }

  uint64_t read_fixed64() {
    if (end_ - p_ < 8) throw_truncated("fixed64");
    uint64_t v;
    std::memcpy(&v, p_, 8);
    p_ += 8;
    return v;
  }

  // A length-delimited payload: a view into the buffer.
  std::string_view read_length_delimited() {
    const size_t at = offset();
    const uint64_t len = read_varint();
    if (len > static_cast<uint64_t>(end_ - p_)) {
      throw_decode("bad_length", "length " + std::to_string(len) + " at offset " +
                                     std::to_string(at) + " exceeds the " +
                                     std::to_string(end_ - p_) + " remaining bytes");
    }
    std::string_view out(p_, static_cast<size_t>(len));
    p_ += len;
    return out;
  }

  // Skips a field whose tag was just read. `depth` is the current nesting
  // depth (groups count towards the limit).
  void skip(uint32_t field_number, uint32_t wire_type, int depth);

 private:
  uint64_t read_varint_slow();
  [[noreturn]] void throw_truncated(const char* what) const;

  const char* p_;
  const char* end_;
  const char* origin_;
};

// --- writers ------------------------------------------------------------------

inline size_t varint_size(uint64_t v) noexcept {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

inline void write_varint(std::string& out, uint64_t v) {
  char buf[10];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>(static_cast<uint8_t>(v) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out.append(buf, n);
}

inline void write_tag(std::string& out, uint32_t field_number, uint32_t wire_type) {
  write_varint(out, (static_cast<uint64_t>(field_number) << 3) | wire_type);
}

inline void write_fixed32(std::string& out, uint32_t v) {
  char buf[4];
  std::memcpy(buf, &v, 4);
  out.append(buf, 4);
}

inline void write_fixed64(std::string& out, uint64_t v) {
  char buf[8];
  std::memcpy(buf, &v, 8);
  out.append(buf, 8);
}

inline void write_float(std::string& out, float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  write_fixed32(out, bits);
}

inline void write_double(std::string& out, double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  write_fixed64(out, bits);
}

inline float bits_to_float(uint32_t bits) noexcept {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline double bits_to_double(uint64_t bits) noexcept {
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

inline void write_bytes_field(std::string& out, uint32_t field_number, std::string_view bytes) {
  write_tag(out, field_number, kLen);
  write_varint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

// A length-delimited field whose payload is written in place: begin() writes
// the tag and reserves one length byte; end() patches the length, shifting the
// payload when it needs a longer varint (rare: payloads of 128 bytes or more).
class NestedWriter {
 public:
  NestedWriter(std::string& out, uint32_t field_number) : out_(out) {
    write_tag(out_, field_number, kLen);
    len_pos_ = out_.size();
    out_.push_back('\0');
  }
  void end() {
    const size_t len = out_.size() - len_pos_ - 1;
    const size_t n = varint_size(len);
    if (n > 1) out_.insert(len_pos_ + 1, n - 1, '\0');
    uint64_t v = len;
    for (size_t i = 0; i < n; ++i) {
      uint8_t b = static_cast<uint8_t>(v & 0x7F);
      v >>= 7;
      if (i + 1 < n) b |= 0x80;
      out_[len_pos_ + i] = static_cast<char>(b);
    }
  }

 private:
  std::string& out_;
  size_t len_pos_;
};

// --- raw writers ----------------------------------------------------------------
// For the fast paths, which compute the exact output size first and then write
// through a pointer: no per-field capacity checks or out-of-line appends.

inline size_t tag_size(uint32_t field_number) noexcept {
  return varint_size(static_cast<uint64_t>(field_number) << 3);
}

// Size of a length-delimited field with a payload of `len` bytes.
inline size_t len_field_size(uint32_t field_number, size_t len) noexcept {
  return tag_size(field_number) + varint_size(len) + len;
}

inline char* put_varint(char* p, uint64_t v) noexcept {
  while (v >= 0x80) {
    *p++ = static_cast<char>(static_cast<uint8_t>(v) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

inline char* put_tag(char* p, uint32_t field_number, uint32_t wire_type) noexcept {
  return put_varint(p, (static_cast<uint64_t>(field_number) << 3) | wire_type);
}

inline char* put_float_field(char* p, uint32_t field_number, float f) noexcept {
  p = put_tag(p, field_number, kFixed32);
  std::memcpy(p, &f, 4);
  return p + 4;
}

inline char* put_len_field(char* p, uint32_t field_number, std::string_view bytes) noexcept {
  p = put_tag(p, field_number, kLen);
  p = put_varint(p, bytes.size());
  if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
  return p + bytes.size();
}

inline uint32_t zigzag_encode32(int32_t v) noexcept {
  return (static_cast<uint32_t>(v) << 1) ^ static_cast<uint32_t>(v >> 31);
}
inline uint64_t zigzag_encode64(int64_t v) noexcept {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int32_t zigzag_decode32(uint32_t v) noexcept {
  return static_cast<int32_t>((v >> 1) ^ (~(v & 1) + 1));
}
inline int64_t zigzag_decode64(uint64_t v) noexcept {
  return static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1));
}

// E1: -0.0 and 0.0 are both defaults; NaN compares unequal, so it is written.
inline bool is_default_float(float f) noexcept {
  return f == 0.0f;
}
inline bool is_default_double(double d) noexcept {
  return d == 0.0;
}

// UTF-8 validation (strict: no overlongs, no surrogates, max U+10FFFF).
bool is_valid_utf8(std::string_view s) noexcept;

}  // namespace dclcomms::codec::wire
