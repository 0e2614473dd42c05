#pragma once
// Pure helpers of the WebSocket servers: input validation, backpressure policy,
// close reasons, per-session rate limits and the process-global alias counter.
// No sockets here; all functions are thread-safe (the rate-limit objects are
// per session, used under the server's lock).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dclcomms::ws {

// ^0x[0-9a-fA-F]{40}$
bool is_valid_address(std::string_view s) noexcept;
std::string to_lower_ascii(std::string_view s);

// [A-Za-z0-9._:@-]{1,128}: the RFC-5 room id, the raw (not percent-decoded)
// path segment after /rooms/.
bool is_valid_room_id(std::string_view s) noexcept;

// Percent-decodes one query parameter value; nullopt-like empty result with
// *found = false when the key is absent. '+' is kept (JWTs never contain it).
std::string query_param(std::string_view query, std::string_view key, bool* found);

// Number of Unicode code points of UTF-8 text (invalid bytes count as one).
size_t utf8_length(std::string_view s) noexcept;

// A WebSocket close reason is at most 123 bytes: truncates on a UTF-8
// character boundary.
std::string close_reason(std::string_view reason);

// Backpressure decision for one outbound message to one receiver.
//   queued: bytes already queued to that receiver (unsent).
//   Unreliable messages are dropped above soft_limit; anything that would
//   take the queue above hard_limit closes the receiver instead (4008).
// (Inline: a room broadcast asks it once per receiver.)
enum class SendDecision { Send, Drop, CloseSlow };
inline SendDecision send_decision(size_t queued, size_t message_bytes, bool unreliable,
                                  size_t soft_limit, size_t hard_limit) noexcept {
  if (unreliable && queued > soft_limit) return SendDecision::Drop;
  if (queued + message_bytes > hard_limit) return SendDecision::CloseSlow;
  return SendDecision::Send;
}

// Fixed one-second window: at most max_per_s accepted per window.
class RateWindow {
 public:
  // Returns true when an event at now_ms is within the limit.
  bool accept(int64_t now_ms, int max_per_s) noexcept;

 private:
  int64_t window_start_ms_ = INT64_MIN;
  int count_ = 0;
};

// Sliding one-second window: an event is accepted when fewer than max_per_s
// accepted events happened in the 1000 ms before it, i.e. never more than
// max_per_s within any 1 s span. Keeps the accepted timestamps of the last
// second in a ring that grows on demand (nothing is allocated before the first
// event; memory follows the peak rate, at most max_per_s entries). A clock
// going back restarts it.
class SlidingRateWindow {
 public:
  // Returns true (and records the event) when an event at now_ms is within
  // the limit; a rejected event is not recorded.
  bool accept(int64_t now_ms, int max_per_s);

 private:
  std::vector<int64_t> ring_;
  size_t head_ = 0;  // oldest entry
  size_t size_ = 0;
};

// Sender token bucket (transports.md 1.2): refills msgs_per_s messages and
// bytes_per_s bytes per second, holding at most one second's worth (the
// burst; full at the first event). take() spends one message and n bytes, or
// nothing when either does not fit. A rate <= 0 leaves that dimension
// unlimited. A clock going back refills nothing.
class TokenBucket {
 public:
  bool take(int64_t now_ms, double msgs_per_s, double bytes_per_s, size_t n) noexcept;

 private:
  int64_t last_ms_ = INT64_MIN;
  double msgs_ = 0;
  double bytes_ = 0;
};

// Process-global RFC-5 alias counter: 1, 2, 3, ... never reused.
uint32_t next_alias() noexcept;

// A server->client WebSocket frame header (FIN, the given opcode, no mask) for
// a payload of n bytes: 2, 4 or 10 bytes (RFC 6455 section 5.2).
std::string frame_header(uint8_t opcode, size_t n);
// frame_header(2, n): binary; frame_header(1, n) is a text frame.
std::string binary_frame_header(size_t n);

}  // namespace dclcomms::ws
