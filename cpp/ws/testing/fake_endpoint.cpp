#include "fake_endpoint.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <stdexcept>
#include <utility>

namespace dclcomms::ws::testing {

namespace {

struct FakeFrame final : OutFrame {
  FakeFrame(FrameType t, std::string p) : type(t), payload(std::move(p)) {}
  size_t size() const noexcept override { return payload.size(); }
  FrameType type;
  std::string payload;
};

int64_t sweep_period(const Config& cfg) {
  return std::max<int64_t>(cfg.idle_timeout_ms / 6, 10);
}

}  // namespace

int64_t real_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class FakeEndpoint::Link final : public ws::Link {
 public:
  Link(FakeEndpoint& ep, Conn c) : ep_(ep), c_(std::move(c)) {}
  void send(const FramePtr& frame) override {
    const auto& f = static_cast<const FakeFrame&>(*frame);
    if (!c_->open()) {
      ++c_->undelivered;
      return;
    }
    c_->sent.push_back({f.type, f.payload});
    if (!c_->reading) c_->buffered += f.payload.size();
  }
  void close(int code, const std::string& reason) override {
    if (!c_->open()) return;
    c_->close_code = code;
    c_->close_reason = reason;
    ep_.closing_.push_back(c_);
  }
  void ping() override { ++c_->pings; }
  size_t buffered_amount() const override { return c_->buffered; }
  void arm_timer(int64_t ms, std::function<void()> fire) override {
    c_->timer_armed = true;
    c_->timer_due_ms = ep_.steady_ms_ + ms;
    c_->timer_fire = std::move(fire);
  }
  void cancel_timer() override {
    c_->timer_armed = false;
    c_->timer_fire = nullptr;
  }
  void authenticated() override { ++c_->authenticated; }

 private:
  FakeEndpoint& ep_;
  Conn c_;
};

FakeEndpoint::FakeEndpoint(const Config& cfg, std::optional<int64_t> start_unix_ms)
    : cfg_((validate(cfg), cfg)), hub_(std::make_unique<Hub>(cfg_, *this)) {
  unix_ms_ = start_unix_ms.value_or(real_unix_ms());
  steady_ms_ = 1'000'000;  // arbitrary origin: only differences matter
  next_sweep_ms_ = steady_ms_ + sweep_period(cfg_);
}

FakeEndpoint::~FakeEndpoint() {
  verifications_.clear();
  hub_.reset();  // sessions (and their links) go before the connections
}

Conn FakeEndpoint::connect(const std::string& resource) {
  auto q = resource.find('?');
  std::string path = resource.substr(0, q);
  std::string query = q == std::string::npos ? "" : resource.substr(q + 1);
  auto kind = hub_->kind_of(path);
  if (!kind) return nullptr;
  auto c = std::make_shared<FakeConnection>();
  c->path = path;
  c->query = query;
  c->kind = *kind;
  conns_.push_back(c);
  hub_->open(c.get(), std::make_unique<Link>(*this, c), path, query);
  settle();
  return c;
}

void FakeEndpoint::receive(const Conn& c, std::string data, FrameType type) {
  if (!c->open()) return;
  if (data.size() > hub_->frame_limit(c->kind)) {
    // websocketpp's own check: close 1009, the frame never reaches the hub.
    c->close_code = 1009;
    c->close_reason = "message too big";
    c->reported_closed = true;
    hub_->closed(c.get(), 1009);
    settle();
    return;
  }
  hub_->message(c.get(), type, std::move(data));
  settle();
}

void FakeEndpoint::pong(const Conn& c) {
  if (!c->open()) return;
  hub_->pong(c.get());
  settle();
}

void FakeEndpoint::disconnect(const Conn& c) {
  if (c->reported_closed) return;
  c->client_gone = true;
  c->reported_closed = true;
  hub_->closed(c.get(), 0);
  settle();
}

void FakeEndpoint::advance(int64_t ms) {
  const int64_t target = steady_ms_ + ms;
  for (;;) {
    // The earliest due timer (connections in order), else the idle sweep.
    Conn next;
    int64_t due = std::numeric_limits<int64_t>::max();
    for (const auto& c : conns_) {
      if (c->timer_armed && c->timer_due_ms <= target && c->timer_due_ms < due) {
        next = c;
        due = c->timer_due_ms;
      }
    }
    bool sweep = cfg_.idle_timeout_ms > 0 && next_sweep_ms_ <= target && next_sweep_ms_ < due;
    if (sweep) due = next_sweep_ms_;
    if (!next && !sweep) break;
    unix_ms_ += due - steady_ms_;
    steady_ms_ = due;
    if (sweep) {
      next_sweep_ms_ += sweep_period(cfg_);
      hub_->idle_sweep();
    } else {
      auto fire = std::move(next->timer_fire);
      next->timer_armed = false;
      next->timer_fire = nullptr;
      if (fire) fire();
    }
    settle();
  }
  unix_ms_ += target - steady_ms_;
  steady_ms_ = target;
}

void FakeEndpoint::finish_verifications() {
  while (!verifications_.empty()) {
    Verification v = std::move(verifications_.front());
    verifications_.pop_front();
    v.done(auth::verify_auth_chain(v.chain, v.challenge, unix_ms_), 0);
    settle();
  }
}

std::vector<Event> FakeEndpoint::events() {
  return hub_->poll(std::numeric_limits<size_t>::max());
}

void FakeEndpoint::send_connector(const std::string& address, std::string payload) {
  hub_->send_connector(address, std::move(payload));
  settle();
}

void FakeEndpoint::relay(RelayItem item) {
  hub_->relay(item);
  settle();
}

void FakeEndpoint::kick(const std::string& address, int code, const std::string& reason) {
  hub_->kick(address, code, reason);
  settle();
}

void FakeEndpoint::kick_room_member(const std::string& address, uint32_t alias) {
  hub_->kick_room_member(address, alias);
  settle();
}

void FakeEndpoint::kick_room_member(bool scene, const std::string& room, const std::string& address,
                                    const std::string& reason, int64_t bar_ms) {
  hub_->kick_room_member(scene, room, address, reason, bar_ms);
  settle();
}

void FakeEndpoint::unbar_room_member(bool scene, const std::string& room,
                                     const std::string& address) {
  hub_->unbar_room_member(scene, room, address);
  settle();
}

void FakeEndpoint::send_bus(const std::string& address, std::string text) {
  hub_->send_bus(address, std::move(text));
  settle();
}

void FakeEndpoint::close_bus(const std::string& address, int code, const std::string& reason) {
  hub_->close_bus(address, code, reason);
  settle();
}

void FakeEndpoint::accept_bridge(uint64_t id) {
  hub_->accept_bridge(id);
  settle();
}

void FakeEndpoint::send_bridge(uint64_t id, std::string text) {
  hub_->send_bridge(id, std::move(text));
  settle();
}

void FakeEndpoint::close_bridge(uint64_t id, int code, const std::string& reason) {
  hub_->close_bridge(id, code, reason);
  settle();
}

void FakeEndpoint::set_room_tap(const std::string& room, bool on, bool scene) {
  hub_->set_room_tap(room, on, scene);
  settle();
}

void FakeEndpoint::inject_room(const std::string& room, const std::string& identity,
                               std::string body, bool unreliable, bool scene) {
  hub_->inject_room(room, identity, std::move(body), unreliable, scene);
  settle();
}

void FakeEndpoint::release_room_identity(const std::string& room, const std::string& identity,
                                         bool scene) {
  hub_->release_room_identity(room, identity, scene);
  settle();
}

void FakeEndpoint::set_deny_list(const std::vector<std::string>& addresses) {
  std::unordered_set<std::string> lowercase;
  for (const auto& a : addresses) lowercase.insert(to_lower_ascii(a));
  hub_->set_deny_list(std::move(lowercase));
}

void FakeEndpoint::publish_feed(std::string delta, std::string key) {
  hub_->publish_feed(std::move(delta), std::move(key));
  settle();
}

void FakeEndpoint::shutdown() {
  hub_->shutdown();
  settle();
}

uint64_t FakeEndpoint::counter(const std::string& area, const std::string& name) const {
  Stats st = hub_->stats();
  const auto& list = area == "connector" ? st.connector
                     : area == "rooms"   ? st.rooms
                     : area == "bridge"  ? st.bridge
                     : area == "feed"    ? st.feed
                                         : st.bus;
  if (area != "connector" && area != "rooms" && area != "bus" && area != "bridge" &&
      area != "feed") {
    throw std::out_of_range("no stats area " + area);
  }
  for (const auto& [k, v] : list) {
    if (k == name) return v;
  }
  throw std::out_of_range("no counter " + area + "." + name);
}

FramePtr FakeEndpoint::frame(std::string payload, FrameType type) {
  return std::make_shared<const FakeFrame>(type, std::move(payload));
}

void FakeEndpoint::verify(std::string chain_json, std::string challenge, VerifyDone done) {
  verifications_.push_back({std::move(chain_json), std::move(challenge), std::move(done)});
}

void FakeEndpoint::settle() {
  while (!closing_.empty()) {
    Conn c = std::move(closing_.front());
    closing_.pop_front();
    if (c->reported_closed) continue;
    c->reported_closed = true;
    hub_->closed(c.get(), 0);
  }
}

}  // namespace dclcomms::ws::testing
