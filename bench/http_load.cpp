// HTTP/1.1 load generator for bench/bench_gatekeeper.py (and any bench that
// replays pre-built requests). Standalone: POSIX sockets and epoll, no
// project library, so the bench compiles it in a second with the system
// compiler (c++ -O2 -std=c++17) instead of configuring a build tree.
//
//   http_load --port P [--host 127.0.0.1] --requests FILE --connections N [--rate R]
//
// FILE holds the raw requests, each as a 4-byte little-endian length and the
// bytes (request line, headers, body), sent in file order.
// Closed loop (no --rate): each of the N connections takes the next unsent
// request when its previous answer is complete, so N requests are in flight;
// the throughput is the server's maximum and the latency mostly queueing.
// Open loop (--rate R requests/s): request k is due at start + k/R whatever
// the answers do (a timerfd ticks every 1/R s); it goes out on an idle open
// connection, else on a new one, with at most N connections at once (past
// that it waits for one). Its latency counts from when it was due, so a
// server that falls behind shows it (no coordinated omission).
// An answer is read whole (status
// line, headers, Content-Length body). A connection is reused for the next
// request (HTTP/1.1 keep-alive) unless the answer said "Connection: close" or
// the server closed it; then the next request opens a new one, and its
// latency includes the TCP connect. A request whose connection fails before
// its answer is counted under status 0 and not retried.
//
// Output, one JSON object on stdout: requests, statuses (status -> count),
// seconds (first send to last answer), req_per_s (2xx answers / seconds),
// p50_ms p90_ms p99_ms p999_ms max_ms (every request's latency), connections
// opened, and client_cpu_s (this process's user+system CPU over the run).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Conn {
  int fd = -1;
  bool connecting = false;
  size_t req = SIZE_MAX;  // index of the request in flight
  size_t sent = 0;        // bytes of it written
  std::string in;         // answer bytes read so far
  Clock::time_point t0;
};

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string file;
  int connections = 16;
  double rate = 0;  // requests/s; 0: closed loop
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "http_load: %s\n", what.c_str());
  std::exit(2);
}

std::vector<std::string> read_requests(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) die("cannot open " + path);
  std::vector<std::string> out;
  for (;;) {
    unsigned char len[4];
    if (!f.read(reinterpret_cast<char*>(len), 4)) break;
    uint32_t n = len[0] | len[1] << 8 | len[2] << 16 | static_cast<uint32_t>(len[3]) << 24;
    std::string r(n, '\0');
    if (!f.read(r.data(), n)) die("truncated request file");
    out.push_back(std::move(r));
  }
  return out;
}

bool iequals_prefix(const char* p, const char* end, const char* lit) {
  for (; *lit; ++p, ++lit) {
    if (p == end || std::tolower(static_cast<unsigned char>(*p)) != *lit) return false;
  }
  return true;
}

// The answer's size when `in` holds all of it (else 0), its status and whether
// it closes the connection.
size_t complete(const std::string& in, int& status, bool& close) {
  size_t head = in.find("\r\n\r\n");
  if (head == std::string::npos) return 0;
  status = in.size() >= 12 ? std::atoi(in.c_str() + 9) : 0;
  size_t body = 0;
  close = false;
  const char* end = in.data() + head;
  for (const char* p = in.data(); p < end;) {
    const char* eol = static_cast<const char*>(std::memchr(p, '\n', end - p));
    const char* line = p;
    p = eol ? eol + 1 : end;
    if (iequals_prefix(line, end, "content-length:")) {
      body = std::strtoul(line + 15, nullptr, 10);
    } else if (iequals_prefix(line, end, "connection:")) {
      const char* v = line + 11;
      while (v < end && *v == ' ') ++v;
      close = iequals_prefix(v, end, "close");
    }
  }
  size_t total = head + 4 + body;
  return in.size() >= total ? total : 0;
}

double cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

class Load {
 public:
  Load(const Options& o, std::vector<std::string> reqs) : o_(o), reqs_(std::move(reqs)) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) die("epoll_create1");
    std::memset(&addr_, 0, sizeof addr_);
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(static_cast<uint16_t>(o.port));
    if (inet_pton(AF_INET, o.host.c_str(), &addr_.sin_addr) != 1) die("bad --host " + o.host);
    latency_.reserve(reqs_.size());
  }

  void run() {
    conns_.resize(static_cast<size_t>(std::max(1, o_.connections)));
    start_ = Clock::now();
    cpu0_ = cpu_s();
    int tfd = -1;
    if (o_.rate > 0) {
      tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
      if (tfd < 0) die("timerfd_create");
      long ns = static_cast<long>(1e9 / o_.rate);
      itimerspec its{};
      its.it_interval.tv_sec = ns / 1'000'000'000;
      its.it_interval.tv_nsec = ns % 1'000'000'000;
      its.it_value.tv_nsec = 1;  // the first tick at once
      timerfd_settime(tfd, 0, &its, nullptr);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = kTimer;
      epoll_ctl(ep_, EPOLL_CTL_ADD, tfd, &ev);
      interval_ = std::chrono::nanoseconds(ns);
    } else {
      for (size_t i = 0; i < conns_.size(); ++i) {
        if (next_req_ < reqs_.size()) start(i, next_req_++, Clock::now());
      }
    }
    std::vector<epoll_event> evs(256);
    while (done_ < reqs_.size()) {
      int n = epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), 10'000);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) die("no progress for 10 s");
      for (int k = 0; k < n; ++k) {
        if (evs[k].data.u32 == kTimer) {
          tick(tfd);
        } else {
          event(evs[k].data.u32, evs[k].events);
        }
      }
    }
    end_ = Clock::now();
    cpu1_ = cpu_s();
    for (Conn& c : conns_) drop(c);
    if (tfd >= 0) ::close(tfd);
  }

  void report() const {
    std::vector<double> lat = latency_;
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double q) {
      if (lat.empty()) return 0.0;
      size_t k = static_cast<size_t>(q * (lat.size() - 1) + 0.5);
      return lat[std::min(k, lat.size() - 1)];
    };
    double secs = std::chrono::duration<double>(end_ - start_).count();
    size_t ok = 0;
    std::string st;
    for (const auto& [code, count] : statuses_) {
      if (code >= 200 && code < 300) ok += count;
      st += (st.empty() ? "" : ", ") + std::string("\"") + std::to_string(code) +
            "\": " + std::to_string(count);
    }
    std::printf(
        "{\"requests\": %zu, \"ok\": %zu, \"statuses\": {%s}, \"seconds\": %.4f, "
        "\"req_per_s\": %.1f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, "
        "\"p999_ms\": %.3f, \"max_ms\": %.3f, \"connections_opened\": %zu, "
        "\"client_cpu_s\": %.4f}\n",
        lat.size(), ok, st.c_str(), secs, secs > 0 ? ok / secs : 0.0, pct(0.5), pct(0.9), pct(0.99),
        pct(0.999), lat.empty() ? 0.0 : lat.back(), opened_, cpu1_ - cpu0_);
  }

 private:
  static constexpr uint32_t kTimer = UINT32_MAX;

  // Open loop: the requests due by now join the queue, which is then served.
  void tick(int tfd) {
    uint64_t expirations = 0;
    if (::read(tfd, &expirations, sizeof expirations) != sizeof expirations) return;
    for (uint64_t e = 0; e < expirations && next_req_ < reqs_.size(); ++e) {
      queue_.push_back({next_req_, start_ + interval_ * next_req_});
      ++next_req_;
    }
    dispatch();
  }

  // Open loop: queued requests onto idle open connections first, then new ones.
  void dispatch() {
    while (!queue_.empty()) {
      size_t pick = SIZE_MAX;
      for (size_t i = 0; i < conns_.size(); ++i) {
        if (conns_[i].req != SIZE_MAX) continue;
        if (conns_[i].fd >= 0) {
          pick = i;
          break;
        }
        if (pick == SIZE_MAX) pick = i;
      }
      if (pick == SIZE_MAX) return;  // every connection busy: wait for an answer
      auto [req, due] = queue_.front();
      queue_.pop_front();
      start(pick, req, due);
    }
  }

  // After connection i's answer (or failure): its next request.
  void next(size_t i) {
    if (o_.rate > 0) {
      dispatch();
    } else if (next_req_ < reqs_.size()) {
      start(i, next_req_++, Clock::now());
    } else {
      drop(conns_[i]);
    }
  }

  // Connection i sends request req (opening a socket when it has none); its
  // latency counts from t0.
  void start(size_t i, size_t req, Clock::time_point t0) {
    Conn& c = conns_[i];
    c.req = req;
    c.sent = 0;
    c.in.clear();
    c.t0 = t0;
    if (c.fd < 0) {
      c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (c.fd < 0) die("socket");
      int one = 1;
      setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ++opened_;
      int r = connect(c.fd, reinterpret_cast<sockaddr*>(&addr_), sizeof addr_);
      if (r < 0 && errno != EINPROGRESS) die("connect: " + std::string(std::strerror(errno)));
      c.connecting = r < 0;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;  // edge: read/write to EAGAIN
      ev.data.u32 = static_cast<uint32_t>(i);
      epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
      if (c.connecting) return;
    }
    write_some(i);
  }

  void write_some(size_t i) {
    Conn& c = conns_[i];
    const std::string& r = reqs_[c.req];
    while (c.sent < r.size()) {
      ssize_t n = ::send(c.fd, r.data() + c.sent, r.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN) return;
        fail(i);
        return;
      }
      c.sent += static_cast<size_t>(n);
    }
  }

  void event(uint32_t i, uint32_t events) {
    Conn& c = conns_[i];
    if (c.fd < 0 || c.req == SIZE_MAX) return;
    if (c.connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        fail(i);
        return;
      }
      c.connecting = false;
    }
    if (events & EPOLLOUT) write_some(i);
    if (c.fd < 0) return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      char buf[16384];
      for (;;) {
        ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n > 0) {
          c.in.append(buf, static_cast<size_t>(n));
          int status = 0;
          bool close = false;
          if (size_t total = complete(c.in, status, close)) {
            finish(i, status);
            if (close || c.in.size() > total) drop(c);
            next(i);
            return;
          }
          continue;
        }
        if (n < 0 && errno == EAGAIN) return;
        fail(i);  // closed or reset before the answer was whole
        return;
      }
    }
  }

  void finish(size_t i, int status) {
    Conn& c = conns_[i];
    latency_.push_back(std::chrono::duration<double, std::milli>(Clock::now() - c.t0).count());
    ++statuses_[status];
    ++done_;
    c.req = SIZE_MAX;
  }

  void fail(size_t i) {
    finish(i, 0);
    drop(conns_[i]);
    next(i);
  }

  void drop(Conn& c) {
    if (c.fd >= 0) {
      epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
      ::close(c.fd);
    }
    c.fd = -1;
    c.connecting = false;
  }

  Options o_;
  std::vector<std::string> reqs_;
  int ep_ = -1;
  sockaddr_in addr_{};
  std::vector<Conn> conns_;
  size_t next_req_ = 0, done_ = 0, opened_ = 0;
  std::vector<double> latency_;
  std::map<int, size_t> statuses_;
  Clock::time_point start_, end_;
  std::chrono::nanoseconds interval_{0};
  std::deque<std::pair<size_t, Clock::time_point>> queue_;  // open loop: due, not sent
  double cpu0_ = 0, cpu1_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value of " + a);
      return argv[++i];
    };
    if (a == "--host") {
      o.host = val();
    } else if (a == "--port") {
      o.port = std::atoi(val().c_str());
    } else if (a == "--requests") {
      o.file = val();
    } else if (a == "--connections") {
      o.connections = std::atoi(val().c_str());
    } else if (a == "--rate") {
      o.rate = std::atof(val().c_str());
    } else {
      die("unknown argument " + a);
    }
  }
  if (o.port <= 0 || o.file.empty())
    die("usage: http_load --port P --requests FILE [--connections N] [--rate R]");
  Load load(o, read_requests(o.file));
  load.run();
  load.report();
  return 0;
}
