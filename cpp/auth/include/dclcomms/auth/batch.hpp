#pragma once
// Batch verification on a pool of std::threads (no Python, no GIL).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dclcomms/auth/auth.hpp"

namespace dclcomms::auth {

// Verifies every (auth_chain_json, expected_payload) pair at now_ms; results
// are in input order. threads = 0 uses std::thread::hardware_concurrency();
// the pool never exceeds the number of items nor 256 threads; if the system
// refuses a thread, the ones already running (and the caller) do the work.
// EIP-1654 links fail with eip1271_no_provider (no provider in batch mode).
// Never throws except std::bad_alloc.
std::vector<AuthResult> verify_many(const std::vector<std::pair<std::string, std::string>>& items,
                                    int64_t now_ms, unsigned threads = 0);

}  // namespace dclcomms::auth
