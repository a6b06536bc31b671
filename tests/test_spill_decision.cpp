#include "spill_decision.hpp"

#include <syncbus/errors.hpp>

#include <gtest/gtest.h>

namespace syncbus::detail {
namespace {

constexpr std::size_t limit = PostgresClusterBus::notify_payload_limit;

TEST(SpillDecision, LimitIsPostgresNotifyPayloadLimit) { EXPECT_EQ(limit, 8000u); }

TEST(SpillDecision, OverflowSendsInlineStrictlyBelowTheLimit) {
  EXPECT_EQ(choose_route(SpillMode::overflow, 0), Route::inline_payload);
  EXPECT_EQ(choose_route(SpillMode::overflow, limit - 1), Route::inline_payload);
  EXPECT_EQ(choose_route(SpillMode::overflow, limit), Route::spill_table);
  EXPECT_EQ(choose_route(SpillMode::overflow, 50'000'000), Route::spill_table);
}

TEST(SpillDecision, AlwaysUsesTheTableForEveryMessage) {
  EXPECT_EQ(choose_route(SpillMode::always, 0), Route::spill_table);
  EXPECT_EQ(choose_route(SpillMode::always, limit - 1), Route::spill_table);
  EXPECT_EQ(choose_route(SpillMode::always, limit), Route::spill_table);
}

TEST(SpillDecision, NeverSendsSmallOnesAndRefusesOversizedWithSizeAndLimit) {
  EXPECT_EQ(choose_route(SpillMode::never, limit - 1), Route::inline_payload);
  try {
    choose_route(SpillMode::never, limit);
    FAIL() << "an oversized message was accepted under SpillMode::never";
  } catch (const payload_too_large& e) {
    EXPECT_EQ(e.size(), limit);
    EXPECT_EQ(e.limit(), limit);
    const std::string what = e.what();
    EXPECT_NE(what.find("8000 bytes"), std::string::npos) << what;
    EXPECT_NE(what.find("SpillMode::overflow"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace syncbus::detail
