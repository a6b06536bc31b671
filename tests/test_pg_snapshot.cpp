// PgSnapshot: parsing pg_current_snapshot()'s text and answering visibility,
// as pg_visible_in_snapshot() does (NotifyOrderTest checks it against a
// real server).
#include <syncbus/errors.hpp>

#include <gtest/gtest.h>

#include "pg_snapshot.hpp"

namespace syncbus::detail {
namespace {

TEST(PgSnapshot, ParsesAndPrintsTheServersTextForm) {
  for (const char* text :
       {"745:752:745,749", "10:10:", "1:1:", "5:9:5", "4294967296:4294967300:4294967297"}) {
    EXPECT_EQ(PgSnapshot::parse(text).text(), text);
  }
  const auto s = PgSnapshot::parse("745:752:745,749");
  EXPECT_EQ(s.xmin(), 745u);
  EXPECT_EQ(s.xmax(), 752u);
  EXPECT_EQ(s.in_progress(), (std::vector<std::uint64_t>{745, 749}));
}

TEST(PgSnapshot, VisibleMeansFinishedWhenTaken) {
  const auto s = PgSnapshot::parse("745:752:745,749");
  EXPECT_TRUE(s.visible(1));
  EXPECT_TRUE(s.visible(744));
  EXPECT_FALSE(s.visible(745));  // in progress
  EXPECT_TRUE(s.visible(746));
  EXPECT_FALSE(s.visible(749));
  EXPECT_TRUE(s.visible(751));
  EXPECT_FALSE(s.visible(752));  // not yet started
  EXPECT_FALSE(s.visible(1u << 31));
  EXPECT_FALSE(PgSnapshot().visible(1));
}

TEST(PgSnapshot, TheIdsNotVisibleBelowABoundComeAsRanges) {
  using Ranges = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  const auto snapshot = PgSnapshot::parse("100:105:101,103");
  EXPECT_EQ(snapshot.invisible_ranges(112, 4),
            (Ranges{{101, 102}, {103, 104}, {105, 109}, {109, 112}}));
  EXPECT_EQ(snapshot.invisible_ranges(103, 4), (Ranges{{101, 102}})) << "ids below the bound only";
  EXPECT_TRUE(PgSnapshot::parse("7:7:").invisible_ranges(7, 4).empty());
}

TEST(PgSnapshot, RejectsWhatIsNotASnapshot) {
  for (const char* text :
       {"", "1", "1:2", "a:2:", "2:1:", "1:5:0", "1:5:5", "1:5:3,2", "1:5:2,", "1:5:,2", "1:5:2,,3",
        "-1:5:", "1: 5:", "1:5:2 ", "99999999999999999999:1:"}) {
    EXPECT_THROW(PgSnapshot::parse(text), protocol_error) << text;
  }
  EXPECT_THROW(parse_xid(""), protocol_error);
  EXPECT_THROW(parse_xid("12a"), protocol_error);
  EXPECT_EQ(parse_xid("18446744073709551615"), 18446744073709551615u);
}

}  // namespace
}  // namespace syncbus::detail
