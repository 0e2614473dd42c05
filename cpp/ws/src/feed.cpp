// /map/feed sessions (docs/map.md): no handshake; the embedder publishes one
// text frame per tick (a delta, and a key frame when some page needs one).
// Bounded per page: a frame that would take a page's outbound queue past
// feed_max_queued_bytes is skipped for it (the page resyncs from the next key
// frame), and map_feed_max_skipped skips without the page taking a delta in
// between close it 4008 (a page that only ever fits the next key frame is not
// keeping up).

#include <string>
#include <vector>

#include "hub.hpp"

namespace dclcomms::ws {

void Hub::open_feed(const SessionPtr& s) {
  if (feed_.size() >= cfg_.map_feed_max_pages) {
    ++fc_.rejected_full;
    close_session(s, 1013,
                  "too many map pages: at most " + std::to_string(cfg_.map_feed_max_pages));
    return;
  }
  s->stage = Stage::Completed;
  ++fc_.welcomed;
  feed_.push_back(s);
}

bool Hub::feed_wants_key() const {
  for (const auto& s : feed_) {
    if (!s->feed_synced) return true;
  }
  return false;
}

void Hub::publish_feed(std::string delta, std::string key) {
  if (feed_.empty()) return;
  FramePtr delta_frame = env_.frame(std::move(delta), FrameType::Text);
  FramePtr key_frame = key.empty() ? nullptr : env_.frame(std::move(key), FrameType::Text);
  std::vector<SessionPtr> too_slow;
  for (const auto& s : feed_) {
    const FramePtr& f = s->feed_synced ? delta_frame : key_frame;
    if (!f) continue;  // waits for a key frame
    // A page with nothing queued takes any frame (a key frame may be larger than
    // the limit): the server holds at most the limit plus one frame per page.
    size_t queued = s->link->buffered_amount();
    if (queued > 0 && queued + f->size() > cfg_.map_feed_max_queued_bytes) {
      ++fc_.frames_skipped;
      s->feed_synced = false;
      if (++s->feed_skipped >= cfg_.map_feed_max_skipped) too_slow.push_back(s);
      continue;
    }
    s->link->send(f);
    ++fc_.frames_sent;
    fc_.bytes_sent += f->size();
    if (f == key_frame) {
      ++fc_.key_frames_sent;
      s->feed_synced = true;
    } else {
      s->feed_skipped = 0;  // kept up for a whole tick (a key frame alone does not count)
    }
  }
  for (const auto& s : too_slow) {
    ++fc_.closed_slow;
    close_session(
        s, 4008,
        "receiver too slow: " + std::to_string(cfg_.map_feed_max_skipped) + " map frames skipped");
  }
}

}  // namespace dclcomms::ws
