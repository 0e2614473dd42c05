#pragma once
// Strict, locale-free parsing and formatting of the ephemeral link's
// "Expiration:" timestamp (authchain.md section 2). Pure functions; no time
// zone database, no timegm: civil dates are converted with days_from_civil.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dclcomms::auth {

// Milliseconds since the Unix epoch of one of:
//   ISO-8601  YYYY-MM-DDTHH:MM[:SS[.f{1,9}]][Z|+HH:MM|-HH:MM]  (no zone => UTC;
//             fractions beyond milliseconds are truncated, like JavaScript)
//   RFC-1123  Www, DD Mon YYYY HH:MM:SS GMT  (also "UTC"; day 1 or 2 digits)
// Every field is range-checked (month length and leap years included); any
// other text, surrounding whitespace included, gives nullopt.
std::optional<int64_t> parse_timestamp_ms(std::string_view text) noexcept;

// "YYYY-MM-DDTHH:MM:SS.mmmZ" (JavaScript's Date.prototype.toISOString) for
// years 0..9999; throws std::out_of_range outside.
std::string format_iso8601_ms(int64_t ms);

// Days since 1970-01-01 of a proleptic Gregorian date (month 1..12).
int64_t days_from_civil(int64_t year, unsigned month, unsigned day) noexcept;

}  // namespace dclcomms::auth
