#include <syncbus/cluster_bus.hpp>

#include <gtest/gtest.h>

namespace syncbus {
namespace {

TEST(Subscription, DefaultConstructedIsInactive) {
  Subscription subscription;
  EXPECT_FALSE(subscription.active());
  subscription.unsubscribe();  // harmless
}

TEST(Subscription, DestructorCancelsExactlyOnce) {
  int cancels = 0;
  {
    Subscription subscription([&] { ++cancels; });
    EXPECT_TRUE(subscription.active());
  }
  EXPECT_EQ(cancels, 1);
}

TEST(Subscription, UnsubscribeIsIdempotent) {
  int cancels = 0;
  Subscription subscription([&] { ++cancels; });
  subscription.unsubscribe();
  subscription.unsubscribe();
  EXPECT_FALSE(subscription.active());
  EXPECT_EQ(cancels, 1);
}

TEST(Subscription, MoveTransfersOwnership) {
  int cancels = 0;
  Subscription first([&] { ++cancels; });
  Subscription second(std::move(first));
  EXPECT_FALSE(first.active());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_TRUE(second.active());
  second.unsubscribe();
  EXPECT_EQ(cancels, 1);
}

TEST(Subscription, MoveAssignmentCancelsTheOverwrittenOne) {
  int first_cancels = 0;
  int second_cancels = 0;
  Subscription target([&] { ++first_cancels; });
  target = Subscription([&] { ++second_cancels; });
  EXPECT_EQ(first_cancels, 1);
  EXPECT_EQ(second_cancels, 0);
  target.unsubscribe();
  EXPECT_EQ(second_cancels, 1);
}

TEST(Subscription, AThrowingCancelDoesNotEscape) {
  Subscription subscription([] { throw std::runtime_error("boom"); });
  EXPECT_NO_THROW(subscription.unsubscribe());
}

}  // namespace
}  // namespace syncbus
