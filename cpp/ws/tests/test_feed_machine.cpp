// The map feed (/map/feed) without sockets: who gets the delta, who the key
// frame, and the bound on what a slow page can make the server hold.

#include <gtest/gtest.h>

#include <string>

#include "fake_endpoint.hpp"

namespace dclcomms::ws::testing {
namespace {

Config feed_config() {
  Config c;
  c.connector = false;
  c.rooms = false;
  c.map_feed = true;
  c.map_feed_max_pages = 3;
  c.map_feed_max_queued_bytes = 100;
  c.map_feed_max_skipped = 4;
  return c;
}

class Feed : public ::testing::Test {
 protected:
  FakeEndpoint ep{feed_config()};
};

TEST_F(Feed, NotServedUnlessEnabled) {
  Config c;
  FakeEndpoint off{c};
  EXPECT_EQ(off.connect("/map/feed"), nullptr);
  EXPECT_NE(ep.connect("/map/feed"), nullptr);
  EXPECT_EQ(ep.connect("/map/feedx"), nullptr);
}

TEST_F(Feed, NewPageWaitsForAKeyFrameThenGetsDeltas) {
  Conn page = ep.connect("/map/feed");
  ASSERT_TRUE(page->open());
  EXPECT_TRUE(ep.hub().feed_wants_key());
  ep.publish_feed("d1", "");
  EXPECT_TRUE(page->sent.empty());  // no key frame yet: nothing it could apply
  ep.publish_feed("d2", "k2");
  ep.publish_feed("d3", "");
  ASSERT_EQ(page->sent.size(), 2u);
  EXPECT_EQ(page->sent[0].payload, "k2");
  EXPECT_EQ(page->sent[0].type, FrameType::Text);
  EXPECT_EQ(page->sent[1].payload, "d3");
  EXPECT_FALSE(ep.hub().feed_wants_key());
  EXPECT_EQ(ep.counter("feed", "pages"), 1u);
  EXPECT_EQ(ep.counter("feed", "frames_sent"), 2u);
  EXPECT_EQ(ep.counter("feed", "key_frames_sent"), 1u);
  EXPECT_EQ(ep.counter("feed", "bytes_sent"), 4u);
}

TEST_F(Feed, SyncedPagesGetTheDeltaWhileANewOneGetsTheKey) {
  Conn a = ep.connect("/map/feed");
  ep.publish_feed("d1", "k1");
  Conn b = ep.connect("/map/feed");
  ep.publish_feed("d2", "k2");
  ASSERT_EQ(a->sent.size(), 2u);
  EXPECT_EQ(a->sent[1].payload, "d2");
  ASSERT_EQ(b->sent.size(), 1u);
  EXPECT_EQ(b->sent[0].payload, "k2");
}

TEST_F(Feed, SlowPageIsSkippedForwardAndResyncsFromAKeyFrame) {
  Conn slow = ep.connect("/map/feed");
  Conn fast = ep.connect("/map/feed");
  std::string delta(40, 'd'), key(60, 'k');
  ep.publish_feed(delta, key);
  slow->reading = false;
  slow->buffered = 0;
  ep.publish_feed(delta, "");  // 40 queued
  EXPECT_EQ(slow->buffered, 40u);
  ep.publish_feed(delta, "");  // 80 queued
  ep.publish_feed(delta, "");  // 120 > 100: skipped
  EXPECT_EQ(slow->buffered, 80u);
  EXPECT_EQ(ep.counter("feed", "frames_skipped"), 1u);
  EXPECT_TRUE(ep.hub().feed_wants_key());
  // Out of sync: later deltas are not sent even when they would fit.
  slow->drain();
  slow->reading = true;
  size_t before = slow->sent.size();
  ep.publish_feed(delta, "");
  EXPECT_EQ(slow->sent.size(), before);
  ep.publish_feed(delta, key);
  ASSERT_EQ(slow->sent.size(), before + 1);
  EXPECT_EQ(slow->sent.back().payload, key);
  EXPECT_FALSE(ep.hub().feed_wants_key());
  // The fast page never noticed.
  EXPECT_EQ(fast->sent.size(), 6u);
  EXPECT_EQ(fast->sent.back().payload, delta);
  EXPECT_TRUE(slow->open());
}

TEST_F(Feed, PageThatNeverReadsIsBoundedThenClosed4008) {
  Conn page = ep.connect("/map/feed");
  page->reading = false;
  std::string frame(30, 'x');
  for (int i = 0; i < 100 && page->open(); ++i) {
    ep.publish_feed(frame, frame);
    EXPECT_LE(page->buffered, 100u);  // never more than the limit
  }
  ASSERT_FALSE(page->open());
  EXPECT_EQ(*page->close_code, 4008);
  EXPECT_EQ(page->close_reason, "receiver too slow: 4 map frames skipped");
  EXPECT_EQ(ep.counter("feed", "closed_slow"), 1u);
  EXPECT_EQ(ep.counter("feed", "frames_skipped"), 4u);
  EXPECT_EQ(ep.counter("feed", "pages"), 0u);
}

TEST_F(Feed, PageThatOnlyEverFitsTheKeyFrameIsClosedToo) {
  // Small key frames keep fitting while every delta is skipped: resyncing is not
  // keeping up, so the skips add up.
  Conn page = ep.connect("/map/feed");
  page->reading = false;
  std::string key(10, 'k'), delta(60, 'd');
  for (int i = 0; i < 20 && page->open(); ++i) ep.publish_feed(delta, key);
  ASSERT_FALSE(page->open());
  EXPECT_EQ(*page->close_code, 4008);
  EXPECT_LE(page->buffered, 100u);
  EXPECT_EQ(ep.counter("feed", "frames_skipped"), 4u);
}

TEST_F(Feed, AFrameLargerThanTheLimitStillReachesAPageWithNothingQueued) {
  Conn page = ep.connect("/map/feed");
  page->reading = false;
  std::string big(300, 'k');
  ep.publish_feed(big, big);  // 300 > 100, but nothing is queued
  ASSERT_EQ(page->sent.size(), 1u);
  EXPECT_EQ(page->buffered, 300u);
  ep.publish_feed(std::string(10, 'd'), "");  // now it is behind: skipped
  EXPECT_EQ(page->sent.size(), 1u);
  EXPECT_EQ(ep.counter("feed", "frames_skipped"), 1u);
  page->drain();
  ep.publish_feed(big, big);  // drained: resyncs from the (large) key frame
  EXPECT_EQ(page->sent.size(), 2u);
}

TEST_F(Feed, MorePagesThanTheLimitAreClosed1013) {
  Conn a = ep.connect("/map/feed");
  Conn b = ep.connect("/map/feed");
  Conn c = ep.connect("/map/feed");
  Conn d = ep.connect("/map/feed");
  EXPECT_TRUE(c->open());
  ASSERT_FALSE(d->open());
  EXPECT_EQ(*d->close_code, 1013);
  EXPECT_EQ(d->close_reason, "too many map pages: at most 3");
  EXPECT_EQ(ep.counter("feed", "rejected_full"), 1u);
  ep.disconnect(a);
  EXPECT_EQ(ep.counter("feed", "pages"), 2u);
  Conn e = ep.connect("/map/feed");
  EXPECT_TRUE(e->open());
}

TEST_F(Feed, InboundFramesAreIgnoredAndOversizedOnesClosed1009) {
  Conn page = ep.connect("/map/feed");
  ep.receive(page, "hello", FrameType::Text);
  EXPECT_TRUE(page->open());
  EXPECT_EQ(ep.counter("feed", "messages_ignored"), 1u);
  ep.receive(page, std::string(2000, 'x'), FrameType::Text);
  ASSERT_FALSE(page->open());
  EXPECT_EQ(*page->close_code, 1009);
}

TEST_F(Feed, ShutdownClosesPages1001) {
  Conn page = ep.connect("/map/feed");
  ep.shutdown();
  ASSERT_FALSE(page->open());
  EXPECT_EQ(*page->close_code, 1001);
  ep.publish_feed("d", "k");  // nobody left: nothing happens
  EXPECT_TRUE(page->sent.empty());
}

}  // namespace
}  // namespace dclcomms::ws::testing
