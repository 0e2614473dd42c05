// A libFuzzer-compatible driver for any compiler: runs LLVMFuzzerTestOneInput
// on each file given and on N seeded mutations of it (byte flips, truncation,
// duplication of a slice). Used by ctest so the targets keep building and
// their invariants hold in CI; real fuzzing uses libFuzzer (see README.md).
//   replay_main [--mutations N] [--seed S] file...

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

void run(const std::string& s) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

int main(int argc, char** argv) {
  long mutations = 2000;
  unsigned long seed = 1;
  int files = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--mutations") == 0 && i + 1 < argc) {
      mutations = std::strtol(argv[++i], nullptr, 10);
      continue;
    }
    if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = std::strtoul(argv[++i], nullptr, 10);
      continue;
    }
    std::ifstream in(argv[i], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", argv[i]);
      return 2;
    }
    std::stringstream buf;
    buf << in.rdbuf();
    const std::string input = buf.str();
    run(input);
    std::mt19937_64 rng(seed + static_cast<unsigned long>(i));
    for (long k = 0; k < mutations; ++k) {
      std::string m = input;
      switch (rng() % 4) {
        case 0:  // flip a few bytes
          for (int j = 0, n = 1 + static_cast<int>(rng() % 4); j < n && !m.empty(); ++j) {
            m[rng() % m.size()] = static_cast<char>(rng() & 0xff);
          }
          break;
        case 1:  // truncate
          if (!m.empty()) m.resize(rng() % m.size());
          break;
        case 2: {  // duplicate a slice
          if (m.empty()) break;
          const size_t a = rng() % m.size(), len = rng() % (m.size() - a + 1);
          m.insert(rng() % m.size(), m.substr(a, len));
          break;
        }
        default:  // flip one bit
          if (!m.empty()) m[rng() % m.size()] ^= static_cast<char>(1u << (rng() % 8));
      }
      run(m);
    }
    ++files;
  }
  std::printf("replayed %d file(s) with %ld mutations each (seed %lu)\n", files, mutations, seed);
  return files > 0 ? 0 : 2;
}
