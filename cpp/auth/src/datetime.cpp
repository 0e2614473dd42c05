// Strict timestamp parsing for ephemeral expirations (authchain.md section 2).

#include "dclcomms/auth/datetime.hpp"

#include <cstdio>
#include <stdexcept>

namespace dclcomms::auth {
namespace {

constexpr int64_t kMsPerDay = 86'400'000;

bool is_leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

unsigned days_in_month(int64_t y, unsigned m) {
  static constexpr unsigned kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return (m == 2 && is_leap(y)) ? 29 : kDays[m - 1];
}

// Reads exactly n ASCII digits at pos; advances pos.
bool digits(std::string_view s, size_t& pos, size_t n, int64_t& out) {
  if (pos + n > s.size()) return false;
  int64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  pos += n;
  out = v;
  return true;
}

bool literal(std::string_view s, size_t& pos, char c) {
  if (pos >= s.size() || s[pos] != c) return false;
  ++pos;
  return true;
}

std::optional<int64_t> compose(int64_t y, int64_t mo, int64_t d, int64_t h, int64_t mi, int64_t sec,
                               int64_t ms, int64_t offset_min) {
  if (mo < 1 || mo > 12) return std::nullopt;
  if (d < 1 || d > days_in_month(y, static_cast<unsigned>(mo))) return std::nullopt;
  if (h > 23 || mi > 59 || sec > 59) return std::nullopt;
  const int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  return days * kMsPerDay + ((h * 60 + mi - offset_min) * 60 + sec) * 1000 + ms;
}

std::optional<int64_t> parse_iso8601(std::string_view s) {
  size_t p = 0;
  int64_t y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, ms = 0, offset_min = 0;
  if (!digits(s, p, 4, y) || !literal(s, p, '-') || !digits(s, p, 2, mo) || !literal(s, p, '-') ||
      !digits(s, p, 2, d) || !literal(s, p, 'T') || !digits(s, p, 2, h) || !literal(s, p, ':') ||
      !digits(s, p, 2, mi)) {
    return std::nullopt;
  }
  if (p < s.size() && s[p] == ':') {
    ++p;
    if (!digits(s, p, 2, sec)) return std::nullopt;
    if (p < s.size() && s[p] == '.') {
      ++p;
      size_t n = 0;
      while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
        if (n < 3) ms = ms * 10 + (s[p] - '0');
        ++n;
        ++p;
      }
      if (n == 0 || n > 9) return std::nullopt;
      for (size_t i = n; i < 3; ++i) ms *= 10;
    }
  }
  if (p < s.size()) {
    if (s[p] == 'Z') {
      ++p;
    } else if (s[p] == '+' || s[p] == '-') {
      const int64_t sign = s[p] == '+' ? 1 : -1;
      ++p;
      int64_t oh = 0, om = 0;
      if (!digits(s, p, 2, oh) || !literal(s, p, ':') || !digits(s, p, 2, om) || oh > 23 ||
          om > 59) {
        return std::nullopt;
      }
      offset_min = sign * (oh * 60 + om);
    } else {
      return std::nullopt;
    }
  }
  if (p != s.size()) return std::nullopt;
  return compose(y, mo, d, h, mi, sec, ms, offset_min);
}

std::optional<int64_t> parse_rfc1123(std::string_view s) {
  static constexpr std::string_view kDays[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  static constexpr std::string_view kMonths[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (s.size() < 5) return std::nullopt;
  bool day_ok = false;
  for (auto name : kDays) day_ok = day_ok || s.substr(0, 3) == name;
  if (!day_ok || s.substr(3, 2) != ", ") return std::nullopt;
  size_t p = 5;
  int64_t d = 0, y = 0, h = 0, mi = 0, sec = 0;
  // Day of month: one or two digits.
  if (!digits(s, p, 1, d)) return std::nullopt;
  if (p < s.size() && s[p] >= '0' && s[p] <= '9') d = d * 10 + (s[p++] - '0');
  if (!literal(s, p, ' ') || p + 3 > s.size()) return std::nullopt;
  int64_t mo = 0;
  for (int i = 0; i < 12; ++i) {
    if (s.substr(p, 3) == kMonths[i]) mo = i + 1;
  }
  if (mo == 0) return std::nullopt;
  p += 3;
  if (!literal(s, p, ' ') || !digits(s, p, 4, y) || !literal(s, p, ' ') || !digits(s, p, 2, h) ||
      !literal(s, p, ':') || !digits(s, p, 2, mi) || !literal(s, p, ':') || !digits(s, p, 2, sec) ||
      !literal(s, p, ' ')) {
    return std::nullopt;
  }
  const std::string_view zone = s.substr(p);
  if (zone != "GMT" && zone != "UTC") return std::nullopt;
  return compose(y, mo, d, h, mi, sec, 0, 0);
}

}  // namespace

int64_t days_from_civil(int64_t y, unsigned m, unsigned d) noexcept {
  // Howard Hinnant's days_from_civil: exact for the proleptic Gregorian calendar.
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

std::optional<int64_t> parse_timestamp_ms(std::string_view text) noexcept {
  if (text.size() >= 4 && text[0] >= '0' && text[0] <= '9') return parse_iso8601(text);
  return parse_rfc1123(text);
}

std::string format_iso8601_ms(int64_t ms) {
  // 0000-01-01 .. 9999-12-31 in ms since the epoch.
  if (ms < -62'167'219'200'000LL || ms > 253'402'300'799'999LL) {
    throw std::out_of_range("timestamp outside years 0..9999");
  }
  int64_t days = ms / kMsPerDay;
  int64_t rem = ms % kMsPerDay;
  if (rem < 0) {
    rem += kMsPerDay;
    --days;
  }
  // civil_from_days (Hinnant).
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ",
                static_cast<long long>(y), m, d, static_cast<long long>(rem / 3'600'000),
                static_cast<long long>(rem / 60'000 % 60), static_cast<long long>(rem / 1000 % 60),
                static_cast<long long>(rem % 1000));
  return buf;
}

}  // namespace dclcomms::auth
