// verify_many: a short-lived pool of std::threads pulling chunks of work
// from an atomic cursor. Each result slot is written by exactly one thread.

#include "dclcomms/auth/batch.hpp"

#include <algorithm>
#include <atomic>
#include <system_error>
#include <thread>

namespace dclcomms::auth {
namespace {
constexpr size_t kMaxThreads = 256;
}  // namespace

std::vector<AuthResult> verify_many(const std::vector<std::pair<std::string, std::string>>& items,
                                    int64_t now_ms, unsigned threads) {
  std::vector<AuthResult> results(items.size());
  if (items.empty()) return results;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<size_t>({threads, items.size(), kMaxThreads}));

  constexpr size_t kChunk = 8;  // amortises the atomic; chains cost ~100 us each
  std::atomic<size_t> cursor{0};
  auto work = [&] {
    while (true) {
      const size_t begin = cursor.fetch_add(kChunk, std::memory_order_relaxed);
      if (begin >= items.size()) return;
      const size_t end = std::min(items.size(), begin + kChunk);
      for (size_t i = begin; i < end; ++i) {
        results[i] = verify_auth_chain(items[i].first, items[i].second, now_ms, nullptr);
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (unsigned t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // out of threads: the ones started (and this one) finish the work
    }
  }
  work();  // the calling thread is worker 0
  for (auto& th : pool) th.join();
  return results;
}

}  // namespace dclcomms::auth
