#include "dclcomms/codec/wire.hpp"

namespace dclcomms::codec::wire {

void throw_decode(const char* code, const std::string& message) {
  throw Error(ErrorKind::Decode, code, message);
}

void rethrow_with_type_name(const Error& e, std::string_view type_name) {
  std::string msg(type_name);
  msg += ": ";
  msg += e.what();
  throw Error(e.kind(), e.code(), msg);
}

uint64_t WireReader::read_varint_slow() {
  const size_t at = offset();
  uint64_t result = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (p_ >= end_) {
      throw_decode("truncated", "truncated varint at offset " + std::to_string(at));
    }
    const uint8_t b = static_cast<uint8_t>(*p_++);
    if (shift == 63 && b > 1) {
      // The tenth byte may only carry the top bit of a 64-bit value.
      throw_decode("bad_varint", "varint overflows 64 bits at offset " + std::to_string(at));
    }
    result |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (b < 0x80) return result;
  }
  throw_decode("bad_varint", "varint longer than 10 bytes at offset " + std::to_string(at));
}

void WireReader::throw_truncated(const char* what) const {
  throw_decode("truncated", std::string("truncated ") + what + " at offset " +
                                std::to_string(offset()) + " (" + std::to_string(end_ - p_) +
                                " bytes left)");
}

void WireReader::skip(uint32_t field_number, uint32_t wire_type, int depth) {
  switch (wire_type) {
    case kVarint:
      read_varint();
      return;
    case kFixed64:
      read_fixed64();
      return;
    case kLen:
      read_length_delimited();
      return;
    case kFixed32:
      read_fixed32();
      return;
    case kStartGroup: {
      if (depth + 1 > kMaxDepth) {
        throw_decode("too_deep", "groups nested deeper than " + std::to_string(kMaxDepth) +
                                     " at offset " + std::to_string(offset()));
      }
      for (;;) {
        if (at_end()) {
          throw_decode("truncated", "unterminated group " + std::to_string(field_number) +
                                        " at offset " + std::to_string(offset()));
        }
        const size_t at = offset();
        uint32_t num = 0;
        uint32_t wt = 0;
        read_tag(num, wt);
        if (wt == kEndGroup) {
          if (num != field_number) {
            throw_decode("bad_group", "end of group " + std::to_string(num) + " at offset " +
                                          std::to_string(at) + " closes group " +
                                          std::to_string(field_number));
          }
          return;
        }
        skip(num, wt, depth + 1);
      }
    }
    case kEndGroup:
    default:
      throw_decode("bad_group", "unexpected end of group " + std::to_string(field_number) +
                                    " at offset " + std::to_string(offset()));
  }
}

bool is_valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    // ASCII run, 8 bytes at a time.
    while (end - p >= 8) {
      uint64_t chunk;
      std::memcpy(&chunk, p, 8);
      if (chunk & 0x8080808080808080ULL) break;
      p += 8;
    }
    if (p >= end) break;
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
      min = 0x10000;
    } else {
      return false;
    }
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += n + 1;
  }
  return true;
}

}  // namespace dclcomms::codec::wire
