// Runs the libFuzzer entry point without libFuzzer (any compiler): on the
// files given as arguments, then on seeded random and mutated inputs. Built
// with the tests so the fuzz target keeps compiling and its oracle keeps
// holding; real fuzzing needs clang (docs/protocol.md, "Fuzzing").

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  std::vector<std::string> seeds;
  for (int i = 1; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const char* env = std::getenv("DCLCOMMS_TEST_SEED");
  const uint64_t seed = env != nullptr ? std::strtoull(env, nullptr, 10) : 20261122;
  std::printf("decode fuzz smoke: seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  // Frames shaped like the real ones (type byte + a plausible tag), then noise.
  seeds.push_back(std::string("\x00\x1a\x0c\x0a\x0a\x0d\x00\x00\x84\x41\x1d\x00\x00\x01\xc2", 15));
  seeds.push_back(std::string("\x03\x1a\x1a\x08\x07\x12\x14\x2a\x10\x0a\x05hello", 16));
  for (int i = 0; i < 100000; ++i) {
    std::string input;
    if (i % 2 == 0) {
      input = seeds[rng() % seeds.size()];
      for (uint64_t e = 0, n = 1 + rng() % 4; e < n && !input.empty(); ++e) {
        input[rng() % input.size()] = static_cast<char>(rng());
      }
      if (rng() % 3 == 0) input.resize(rng() % (input.size() + 1));
    } else {
      input.resize(rng() % 48);
      for (auto& c : input) c = static_cast<char>(rng());
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::puts("ok");
  return 0;
}
