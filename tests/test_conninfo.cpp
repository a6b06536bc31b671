#include "conninfo.hpp"
#include "pg_session.hpp"

#include <syncbus/errors.hpp>

#include <gtest/gtest.h>

namespace syncbus::detail {
namespace {

TEST(Conninfo, KeyValueStringGainsDefaultsAndOverrides) {
  const auto out =
      with_connection_options("host=db port=5433 dbname=app application_name=mine",
                              {{"application_name", "syncbus:x"}}, {{"connect_timeout", "5"}});
  EXPECT_EQ(out,
            "application_name='syncbus:x' connect_timeout='5' dbname='app' host='db' port='5433'");
}

TEST(Conninfo, UriIsUnderstoodToo) {
  const auto out = with_connection_options("postgresql://app@db:6000/appdb?sslmode=disable", {},
                                           {{"connect_timeout", "5"}});
  EXPECT_EQ(out,
            "connect_timeout='5' dbname='appdb' host='db' port='6000' sslmode='disable' "
            "user='app'");
}

TEST(Conninfo, TheUsersOwnConnectTimeoutWinsOverTheDefault) {
  const auto out =
      with_connection_options("host=db connect_timeout=30", {}, {{"connect_timeout", "5"}});
  EXPECT_EQ(out, "connect_timeout='30' host='db'");
}

TEST(Conninfo, QuotesAndBackslashesInValuesAreEscaped) {
  const auto out = with_connection_options(R"(password='it\'s \\ secret' host=h)", {}, {});
  EXPECT_EQ(out, R"(host='h' password='it\'s \\ secret')");
}

TEST(Conninfo, InvalidStringIsAConfigurationErrorThatDoesNotEchoIt) {
  try {
    with_connection_options("host=db password=hunter2secret bogus_option=1", {}, {});
    FAIL() << "an unknown option was accepted";
  } catch (const configuration_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("bogus_option"), std::string::npos) << what;
    EXPECT_EQ(what.find("hunter2secret"), std::string::npos) << what;
  }
}

TEST(Conninfo, APasswordQuotedByLibpqInAnErrorIsRedacted) {
  // libpq quotes the token it cannot decode: here, the password.
  for (const std::string conninfo :
       {"postgresql://app:pa%zzw0rd@db/app", "postgresql://app:pa%zzw0rd@db:5432/app?x=1"}) {
    try {
      with_connection_options(conninfo, {}, {});
      FAIL() << "an invalid URI was accepted";
    } catch (const configuration_error& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.find("zzw0rd"), std::string::npos) << what;
      EXPECT_NE(what.find("percent-encoded"), std::string::npos) << what;
    }
  }
  EXPECT_EQ(redacted("failed for hunter2 and hunter2", "host=db password=hunter2"),
            "failed for ******** and ********");
  EXPECT_EQ(redacted("x 's3cr t' y", "host=db password='s3cr t'"), "x '********' y");
  EXPECT_EQ(redacted("nothing to hide", "host=db"), "nothing to hide");
}

TEST(Conninfo, AnApplicationNameIsCutToWhatPostgresKeepsAtACharacterBoundary) {
  EXPECT_EQ(kept_application_name("syncbus:short"), "syncbus:short");
  EXPECT_EQ(kept_application_name(std::string(70, 'a')), std::string(63, 'a'));
  // 62 ASCII bytes then a 2-byte character: cut before it, not through it.
  EXPECT_EQ(kept_application_name(std::string(62, 'a') + "\xc3\xa9xyz"), std::string(62, 'a'));
}

}  // namespace
}  // namespace syncbus::detail
