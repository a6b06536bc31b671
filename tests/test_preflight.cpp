#include "preflight.hpp"

#include <syncbus/errors.hpp>

#include <gtest/gtest.h>

namespace syncbus::detail {
namespace {

std::string refusal(const ServerFacts& facts) {
  try {
    check_server(facts);
  } catch (const configuration_error& e) {
    return e.what();
  }
  return "";
}

TEST(Preflight, APrimaryOfASupportedVersionPasses) {
  EXPECT_EQ(refusal({150004, "15.4", false}), "");
  EXPECT_EQ(refusal({100000, "10.0", false}), "");
}

TEST(Preflight, AnOldServerIsRefusedNamingBothVersions) {
  const auto why = refusal({90624, "9.6.24", false});
  EXPECT_NE(why.find("9.6.24"), std::string::npos) << why;
  EXPECT_NE(why.find("10 or later"), std::string::npos) << why;
}

TEST(Preflight, AStandbyIsRefusedWithTheWayOut) {
  const auto why = refusal({150004, "15.4", true});
  EXPECT_NE(why.find("standby"), std::string::npos) << why;
  EXPECT_NE(why.find("target_session_attrs=read-write"), std::string::npos) << why;
}

TEST(Preflight, MissingPrivilegesAreListedWithTheirGrants) {
  EXPECT_NO_THROW(check_privileges({}));
  try {
    check_privileges({{"INSERT on table t", "GRANT INSERT ON TABLE t TO app;"},
                      {"USAGE on sequence s", "GRANT USAGE ON SEQUENCE s TO app;"}});
    FAIL();
  } catch (const configuration_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("INSERT on table t, USAGE on sequence s"), std::string::npos) << what;
    EXPECT_NE(what.find("GRANT INSERT ON TABLE t TO app;"), std::string::npos) << what;
    EXPECT_NE(what.find("GRANT USAGE ON SEQUENCE s TO app;"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace syncbus::detail
