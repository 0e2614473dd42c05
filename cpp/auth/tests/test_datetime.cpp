// Strict ISO-8601 / RFC-1123 expiration parsing (authchain.md section 2).

#include <gtest/gtest.h>

#include "dclcomms/auth/datetime.hpp"

namespace {

using dclcomms::auth::format_iso8601_ms;
using dclcomms::auth::parse_timestamp_ms;

constexpr int64_t k2025_06_02_noon = 1748865600000;  // 2025-06-02T12:00:00.000Z

TEST(Timestamp, IsoForms) {
  EXPECT_EQ(parse_timestamp_ms("2025-06-02T12:00:00.000Z"), k2025_06_02_noon);
  EXPECT_EQ(parse_timestamp_ms("2025-06-02T12:00:00Z"), k2025_06_02_noon);
  EXPECT_EQ(parse_timestamp_ms("2025-06-02T12:00Z"), k2025_06_02_noon);
  EXPECT_EQ(parse_timestamp_ms("2025-06-02T12:00:00"), k2025_06_02_noon);  // no zone => UTC
  EXPECT_EQ(parse_timestamp_ms("2025-06-02T14:00:00.000+02:00"), k2025_06_02_noon);
  EXPECT_EQ(parse_timestamp_ms("2025-06-02T09:30:00-02:30"), k2025_06_02_noon);
  EXPECT_EQ(parse_timestamp_ms("2025-06-02T12:00:00.1Z"), k2025_06_02_noon + 100);
  EXPECT_EQ(parse_timestamp_ms("2025-06-02T12:00:00.123456789Z"), k2025_06_02_noon + 123);
  EXPECT_EQ(parse_timestamp_ms("1970-01-01T00:00:00.000Z"), 0);
  EXPECT_EQ(parse_timestamp_ms("1969-12-31T23:59:59.999Z"), -1);
  EXPECT_EQ(parse_timestamp_ms("2024-02-29T00:00:00Z"), 1709164800000);
  EXPECT_EQ(parse_timestamp_ms("2000-02-29T00:00:00Z"), 951782400000);
}

TEST(Timestamp, IsoRejects) {
  for (const char* bad : {
           "",
           "2025-06-02",
           "2025-06-02 12:00:00Z",
           "2025-06-02t12:00:00Z",
           "2025-6-02T12:00:00Z",
           "2025-06-02T12:00:00.Z",
           "2025-06-02T12:00:00.1234567890Z",
           "2025-06-02T12:00:00z",
           "2025-06-02T12:00:00+0200",
           "2025-06-02T12:00:00+02",
           "2025-13-02T12:00:00Z",
           "2025-00-02T12:00:00Z",
           "2025-02-29T12:00:00Z",
           "1900-02-29T12:00:00Z",
           "2025-04-31T12:00:00Z",
           "2025-06-00T12:00:00Z",
           "2025-06-02T24:00:00Z",
           "2025-06-02T12:60:00Z",
           "2025-06-02T12:00:60Z",
           "2025-06-02T12:00:00+24:00",
           " 2025-06-02T12:00:00Z",
           "2025-06-02T12:00:00Z ",
           "2025-06-02T12:00:00ZZ",
           "+2025-06-02T12:00:00Z",
           "2025-06-02T12:00:00.000Z\n",
           "1748865600000",
       }) {
    EXPECT_FALSE(parse_timestamp_ms(bad).has_value()) << '"' << bad << '"';
  }
}

TEST(Timestamp, Rfc1123) {
  EXPECT_EQ(parse_timestamp_ms("Mon, 02 Jun 2025 12:00:00 GMT"), k2025_06_02_noon);
  EXPECT_EQ(parse_timestamp_ms("Mon, 2 Jun 2025 12:00:00 GMT"), k2025_06_02_noon);
  EXPECT_EQ(parse_timestamp_ms("Mon, 02 Jun 2025 12:00:00 UTC"), k2025_06_02_noon);
  for (const char* bad : {"Mon, 02 Jun 2025 12:00:00", "mon, 02 Jun 2025 12:00:00 GMT",
                          "Mon, 02 jun 2025 12:00:00 GMT", "Mon 02 Jun 2025 12:00:00 GMT",
                          "Mon, 31 Jun 2025 12:00:00 GMT", "Mon, 02 Jun 25 12:00:00 GMT",
                          "Mon, 02 Jun 2025 12:00:00 +0000", "Xyz, 02 Jun 2025 12:00:00 GMT",
                          "Mon, 002 Jun 2025 12:00:00 GMT"}) {
    EXPECT_FALSE(parse_timestamp_ms(bad).has_value()) << '"' << bad << '"';
  }
}

TEST(Timestamp, FormatRoundTrip) {
  EXPECT_EQ(format_iso8601_ms(k2025_06_02_noon), "2025-06-02T12:00:00.000Z");
  EXPECT_EQ(format_iso8601_ms(-1), "1969-12-31T23:59:59.999Z");
  for (int64_t ms : {int64_t{0}, int64_t{951782400123}, int64_t{253402300799999}, int64_t{-5}}) {
    EXPECT_EQ(parse_timestamp_ms(format_iso8601_ms(ms)), ms);
  }
  EXPECT_THROW(format_iso8601_ms(253402300800000), std::out_of_range);
}

}  // namespace
