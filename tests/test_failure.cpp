// Failure: what failed, kept as a value and thrown again as the same type,
// with the same message and details, by each caller on its own thread.
#include <syncbus/errors.hpp>

#include <gtest/gtest.h>

#include "failure.hpp"

namespace syncbus::detail {
namespace {

template <typename Error>
void expect_kept(const Error& original) {
  const auto failure = Failure::of(std::make_exception_ptr(original));
  try {
    failure.raise();
  } catch (const Error& e) {
    EXPECT_EQ(typeid(e), typeid(Error)) << "sliced: " << typeid(e).name();
    EXPECT_STREQ(e.what(), original.what());
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "raised " << typeid(e).name() << " for " << typeid(Error).name();
    return;
  }
}

TEST(Failure, EveryErrorTypeIsRaisedAgainAsItselfWithItsDetails) {
  expect_kept(error("plain"));
  expect_kept(configuration_error("configuration"));
  expect_kept(connection_error("connection"));
  expect_kept(timeout_error("timeout"));
  expect_kept(database_error("database", "42501"));
  expect_kept(notify_queue_full("queue", "54000"));
  expect_kept(payload_too_large("large", 9000, 8000));
  expect_kept(invalid_message("invalid"));
  expect_kept(protocol_error("protocol"));
  expect_kept(closed_error("closed"));
  try {
    Failure::of(std::make_exception_ptr(database_error("d", "23505"))).raise();
  } catch (const database_error& e) {
    EXPECT_EQ(e.sqlstate(), "23505");
  }
  try {
    Failure::of(std::make_exception_ptr(payload_too_large("p", 9000, 8000))).raise();
  } catch (const payload_too_large& e) {
    EXPECT_EQ(e.size(), 9000u);
    EXPECT_EQ(e.limit(), 8000u);
  }
}

TEST(Failure, AnythingElseBecomesAPlainSyncbusError) {
  try {
    Failure::of(std::make_exception_ptr(std::runtime_error("elsewhere"))).raise();
  } catch (const error& e) {
    EXPECT_EQ(typeid(e), typeid(error));
    EXPECT_STREQ(e.what(), "elsewhere");
  }
  EXPECT_THROW(Failure::of(std::make_exception_ptr(42)).raise(), error);
  EXPECT_THROW(std::rethrow_exception(
                   Failure::of(std::make_exception_ptr(closed_error("c"))).as_exception_ptr()),
               closed_error);
}

}  // namespace
}  // namespace syncbus::detail
