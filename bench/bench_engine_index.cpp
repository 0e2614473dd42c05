// Spatial index choice for the archipelago engine: uniform grid vs nanoflann
// KD-tree (Debian's 1.4.3 API) on the engine's query, "all points within
// join distance (64 m) on X/Z", plus the per-tick cost of keeping the index
// current when 10 % of the points move. Built and run by
// bench/bench_engine_index.py, which prints the JSON.

#include <nanoflann.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <unordered_map>
#include <vector>

namespace {

struct Cloud {
  std::vector<float> xz;
  size_t kdtree_get_point_count() const { return xz.size() / 2; }
  float kdtree_get_pt(size_t i, size_t d) const { return xz[2 * i + d]; }
  template <class Box>
  bool kdtree_get_bbox(Box&) const {
    return false;
  }
};
using Tree = nanoflann::KDTreeSingleIndexAdaptor<nanoflann::L2_Simple_Adaptor<float, Cloud>, Cloud,
                                                 2, uint32_t>;

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

uint64_t key(float x, float z, double inv) {
  auto cx = static_cast<int32_t>(std::floor(x * inv));
  auto cz = static_cast<int32_t>(std::floor(z * inv));
  return (uint64_t(uint32_t(cx)) << 32) | uint32_t(cz);
}

struct Grid {
  double inv;
  std::unordered_map<uint64_t, std::vector<uint32_t>> cells;
  void build(const Cloud& c) {
    cells.clear();
    for (uint32_t i = 0; i < c.kdtree_get_point_count(); ++i) {
      cells[key(c.xz[2 * i], c.xz[2 * i + 1], inv)].push_back(i);
    }
  }
  void move(uint32_t i, float ox, float oz, float nx, float nz) {
    uint64_t a = key(ox, oz, inv), b = key(nx, nz, inv);
    if (a == b) return;
    auto& v = cells[a];
    v.erase(std::find(v.begin(), v.end(), i));
    cells[b].push_back(i);
  }
  size_t query(const Cloud& c, float x, float z, double r2) const {
    size_t n = 0;
    auto cx = static_cast<int32_t>(std::floor(x * inv));
    auto cz = static_cast<int32_t>(std::floor(z * inv));
    for (int dx = -1; dx <= 1; ++dx) {
      for (int dz = -1; dz <= 1; ++dz) {
        auto it = cells.find((uint64_t(uint32_t(cx + dx)) << 32) | uint32_t(cz + dz));
        if (it == cells.end()) continue;
        for (uint32_t j : it->second) {
          double ddx = double(c.xz[2 * j]) - x, ddz = double(c.xz[2 * j + 1]) - z;
          n += ddx * ddx + ddz * ddz <= r2;
        }
      }
    }
    return n;
  }
};

}  // namespace

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100000;
  const bool clustered = argc > 2 && argv[2][0] == 'c';
  const double join = 64.0;
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(-2400, 2400);
  Cloud cloud;
  cloud.xz.resize(2 * n);
  std::vector<std::pair<float, float>> hot(20);
  for (auto& h : hot) h = {u(rng), u(rng)};
  std::uniform_real_distribution<float> unit(0, 1);
  for (size_t i = 0; i < n; ++i) {
    if (clustered && unit(rng) < 0.9f) {
      auto& h = hot[rng() % 20];
      float r = 50 * std::sqrt(unit(rng)), a = 6.2831853f * unit(rng);
      cloud.xz[2 * i] = h.first + r * std::cos(a);
      cloud.xz[2 * i + 1] = h.second + r * std::sin(a);
    } else {
      cloud.xz[2 * i] = u(rng);
      cloud.xz[2 * i + 1] = u(rng);
    }
  }
  // Queries: a 10 % sample (the movers of a tick).
  std::vector<uint32_t> q(n);
  for (uint32_t i = 0; i < n; ++i) q[i] = i;
  std::shuffle(q.begin(), q.end(), rng);
  q.resize(n / 10);

  auto t0 = std::chrono::steady_clock::now();
  Grid grid{1.0 / join, {}};
  grid.build(cloud);
  double grid_build = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  size_t grid_hits = 0;
  for (uint32_t i : q)
    grid_hits += grid.query(cloud, cloud.xz[2 * i], cloud.xz[2 * i + 1], join * join);
  double grid_query = ms_since(t0);
  // Tick update: move the sample by up to 10 m.
  std::vector<float> moved = cloud.xz;
  for (uint32_t i : q) {
    moved[2 * i] += 10 * (unit(rng) - 0.5f);
    moved[2 * i + 1] += 10 * (unit(rng) - 0.5f);
  }
  t0 = std::chrono::steady_clock::now();
  for (uint32_t i : q) {
    grid.move(i, cloud.xz[2 * i], cloud.xz[2 * i + 1], moved[2 * i], moved[2 * i + 1]);
  }
  double grid_update = ms_since(t0);

  t0 = std::chrono::steady_clock::now();
  Tree tree(2, cloud, nanoflann::KDTreeSingleIndexAdaptorParams(10));
  tree.buildIndex();
  double kd_build = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  size_t kd_hits = 0;
  std::vector<std::pair<uint32_t, float>> matches;
  nanoflann::SearchParams params;
  params.sorted = false;
  for (uint32_t i : q) {
    const float pt[2] = {cloud.xz[2 * i], cloud.xz[2 * i + 1]};
    // L2_Simple_Adaptor compares squared distances in float.
    kd_hits += tree.radiusSearch(pt, static_cast<float>(join * join), matches, params);
  }
  double kd_query = ms_since(t0);
  cloud.xz = moved;
  t0 = std::chrono::steady_clock::now();
  Tree tree2(2, cloud, nanoflann::KDTreeSingleIndexAdaptorParams(10));
  tree2.buildIndex();  // a static KD-tree must be rebuilt after moves
  double kd_update = ms_since(t0);

  std::printf(
      "{\"peers\": %zu, \"layout\": \"%s\", \"queries\": %zu, \"grid\": {\"build_ms\": %.2f, "
      "\"query_ms\": %.2f, \"update_ms\": %.2f, \"hits\": %zu}, \"kdtree\": {\"build_ms\": %.2f, "
      "\"query_ms\": %.2f, \"update_ms\": %.2f, \"hits\": %zu}}\n",
      n, clustered ? "clustered" : "uniform", q.size(), grid_build, grid_query, grid_update,
      grid_hits, kd_build, kd_query, kd_update, kd_hits);
  return 0;
}
