// libFuzzer target: the auth-chain JSON path (JSON gate, schema, structure,
// ephemeral text and timestamp parsing, signature decoding, recovery).
// Build: cmake -DDCLCOMMS_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ ...; run:
//   ./fuzz_auth_chain -max_len=4096 corpus/
// Input layout: the first line is the expected payload, the rest the chain.
// Invariants checked: never throws, a failure always has a code, success
// always has a lowercase signer, and the timestamp parser round-trips.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/datetime.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nl = input.find('\n');
  const std::string_view expected = nl == std::string_view::npos ? "" : input.substr(0, nl);
  const std::string_view chain = nl == std::string_view::npos ? input : input.substr(nl + 1);

  const auto r = dclcomms::auth::verify_auth_chain(chain, expected, 1748779200000);
  if (r.ok != r.code.empty()) std::abort();  // ok <=> no code
  if (r.ok) {
    for (char c : r.signer) {
      if (c >= 'A' && c <= 'Z') std::abort();
    }
  }

  if (const auto ms = dclcomms::auth::parse_timestamp_ms(input)) {
    if (*ms >= -62'167'219'200'000LL && *ms <= 253'402'300'799'999LL) {
      const auto again = dclcomms::auth::parse_timestamp_ms(dclcomms::auth::format_iso8601_ms(*ms));
      if (!again || *again != *ms) std::abort();
    }
  }
  return 0;
}
