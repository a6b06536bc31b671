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
  EXPECT_EQ(refusal({130000, "13.0", false}), "");
}

TEST(Preflight, AnOldServerIsRefusedNamingBothVersions) {
  // PostgreSQL 13 brought xid8 and pg_current_snapshot(), which the spill
  // table and catching up stand on.
  for (const ServerFacts old :
       {ServerFacts{90624, "9.6.24", false}, ServerFacts{120022, "12.22", false}}) {
    const auto why = refusal(old);
    EXPECT_NE(why.find(old.version), std::string::npos) << why;
    EXPECT_NE(why.find("13 or later"), std::string::npos) << why;
    EXPECT_NE(why.find("pg_current_snapshot"), std::string::npos) << why;
  }
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
