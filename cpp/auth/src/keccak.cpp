// Keccak-256 as used by Ethereum: the original Keccak submission (padding
// byte 0x01), not FIPS-202 SHA3-256 (0x06). OpenSSL 3.0 ships only the latter.

#include <cstring>

#include "dclcomms/auth/auth.hpp"

namespace dclcomms::auth {
namespace {

constexpr size_t kRate = 136;  // bytes: 1600 - 2 * 256 bits

constexpr uint64_t kRoundConstants[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

inline uint64_t rotl(uint64_t x, unsigned n) {
  return n == 0 ? x : (x << n) | (x >> (64 - n));
}

void keccak_f1600(uint64_t a[25]) {
  // Rotation offsets and the pi permutation, in the order of the lane walk
  // starting at (1, 0) (the "rho-pi" combined step).
  static constexpr unsigned kRho[24] = {1,  3,  6,  10, 15, 21, 28, 36, 45, 55, 2,  14,
                                        27, 41, 56, 8,  25, 43, 62, 18, 39, 61, 20, 44};
  static constexpr unsigned kPi[24] = {10, 7,  11, 17, 18, 3, 5,  16, 8,  21, 24, 4,
                                       15, 23, 19, 13, 12, 2, 20, 14, 22, 9,  6,  1};
  for (int round = 0; round < 24; ++round) {
    uint64_t c[5];
    for (int x = 0; x < 5; ++x) c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
    for (int x = 0; x < 5; ++x) {
      const uint64_t d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1);
      for (int y = 0; y < 25; y += 5) a[y + x] ^= d;
    }
    uint64_t cur = a[1];
    for (int i = 0; i < 24; ++i) {
      const unsigned j = kPi[i];
      const uint64_t tmp = a[j];
      a[j] = rotl(cur, kRho[i]);
      cur = tmp;
    }
    for (int y = 0; y < 25; y += 5) {
      const uint64_t r0 = a[y], r1 = a[y + 1], r2 = a[y + 2], r3 = a[y + 3], r4 = a[y + 4];
      a[y] = r0 ^ (~r1 & r2);
      a[y + 1] = r1 ^ (~r2 & r3);
      a[y + 2] = r2 ^ (~r3 & r4);
      a[y + 3] = r3 ^ (~r4 & r0);
      a[y + 4] = r4 ^ (~r0 & r1);
    }
    a[0] ^= kRoundConstants[round];
  }
}

inline uint64_t load_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void absorb_block(uint64_t state[25], const uint8_t* block) {
  for (size_t i = 0; i < kRate / 8; ++i) state[i] ^= load_le64(block + 8 * i);
  keccak_f1600(state);
}

}  // namespace

Hash32 keccak256(std::string_view data) noexcept {
  uint64_t state[25] = {};
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size();
  while (n >= kRate) {
    absorb_block(state, p);
    p += kRate;
    n -= kRate;
  }
  uint8_t last[kRate] = {};
  if (n) std::memcpy(last, p, n);
  last[n] ^= 0x01;  // Keccak padding (pad10*1 with domain bit 0x01)
  last[kRate - 1] ^= 0x80;
  absorb_block(state, last);
  Hash32 out;
  for (size_t i = 0; i < 4; ++i) {
    for (size_t b = 0; b < 8; ++b) out[8 * i + b] = static_cast<uint8_t>(state[i] >> (8 * b));
  }
  return out;
}

Hash32 personal_message_hash(std::string_view message) noexcept {
  // keccak256(0x19 "Ethereum Signed Message:\n" <decimal byte length> message)
  static constexpr std::string_view kPrefix =
      "\x19"
      "Ethereum Signed Message:\n";
  std::string buf;
  const std::string len = std::to_string(message.size());
  buf.reserve(kPrefix.size() + len.size() + message.size());
  buf.append(kPrefix).append(len).append(message);
  return keccak256(buf);
}

}  // namespace dclcomms::auth
