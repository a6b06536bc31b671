// ReceivedPosition: markers move the position; what was handed on since is
// remembered until a position covers it.
#include "received_position.hpp"

#include <gtest/gtest.h>

namespace syncbus::detail {
namespace {

using namespace std::chrono_literals;
const auto t0 = ReceivedPosition::Clock::time_point{} + 1h;

TEST(ReceivedPosition, AnOriginBornAfterTheStartIsNew) {
  ReceivedPosition position;
  position.start(PgSnapshot::parse("100:105:101,103"), t0);
  EXPECT_FALSE(position.origin_is_new(99));
  EXPECT_FALSE(position.origin_is_new(102));
  EXPECT_TRUE(position.origin_is_new(101)) << "in progress when the bus started";
  EXPECT_TRUE(position.origin_is_new(105));
  EXPECT_FALSE(position.origin_is_new(std::nullopt)) << "a writer that does not say is older";
}

TEST(ReceivedPosition, AReturnedMarkerMovesThePositionAndAStaleOneDoesNot) {
  ReceivedPosition position;
  position.start(PgSnapshot::parse("10:10:"), t0);
  EXPECT_FALSE(position.marker_due(t0 + 500ms));
  position.handed_on("a", 1);
  EXPECT_TRUE(position.marker_due(t0 + 1s)) << "something was handed on";
  const std::string token = "a1b2c3";
  position.marker_sent(token, PgSnapshot::parse("20:22:21"), t0 + 1s);
  EXPECT_FALSE(position.marker_due(t0 + 30s)) << "one in flight at a time";
  position.marker_returned("not it");
  EXPECT_EQ(position.confirmed().text(), "10:10:");
  position.marker_returned(token);
  EXPECT_EQ(position.confirmed().text(), "20:22:21");
  EXPECT_FALSE(position.marker_due(t0 + 5s)) << "nothing handed on since";
  EXPECT_TRUE(position.marker_due(t0 + 11s)) << "idle: still now and then";
}

TEST(ReceivedPosition, RemembersWhatWasHandedOnUntilAPositionCoversIt) {
  ReceivedPosition position;
  position.start(PgSnapshot::parse("10:10:"), t0);
  position.handed_on("b", 5);
  const std::string token = "d4e5f6";
  position.marker_sent(token, PgSnapshot::parse("20:20:"), t0 + 1s);
  position.handed_on("a", 7);  // may be of a transaction the marker did not see
  EXPECT_TRUE(position.already_handed_on("b", 5));
  EXPECT_TRUE(position.already_handed_on("a", 7));
  EXPECT_TRUE(position.already_handed_on("a", 6)) << "per origin, everything up to the highest";
  EXPECT_FALSE(position.already_handed_on("a", 8));
  position.marker_returned(token);
  EXPECT_FALSE(position.already_handed_on("b", 5)) << "covered by the position";
  EXPECT_TRUE(position.already_handed_on("a", 7));
}

TEST(ReceivedPosition, ALostConnectionKeepsEverythingAndACatchUpCoversIt) {
  ReceivedPosition position;
  position.start(PgSnapshot::parse("10:10:"), t0);
  position.handed_on("a", 5);
  position.marker_sent("lost-one", PgSnapshot::parse("20:20:"), t0 + 1s);
  position.handed_on("a", 7);
  position.connection_lost();
  EXPECT_EQ(position.confirmed().text(), "10:10:") << "the marker never came back";
  EXPECT_TRUE(position.already_handed_on("a", 5));
  EXPECT_TRUE(position.already_handed_on("a", 7));
  position.caught_up(PgSnapshot::parse("30:31:30"));
  EXPECT_EQ(position.confirmed().text(), "30:31:30");
  EXPECT_FALSE(position.already_handed_on("a", 7));
}

}  // namespace
}  // namespace syncbus::detail
