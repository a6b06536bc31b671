// libpqxx exceptions become syncbus ones, typed by what the caller can do.
#include <syncbus/errors.hpp>

#include <gtest/gtest.h>
#include <pqxx/except>

#include "pg_session.hpp"

namespace syncbus::detail {
namespace {

template <typename Thrown>
void translate(const Thrown& thrown) {
  try {
    throw thrown;
  } catch (...) {
    rethrow_as_syncbus_error("doing the thing");
  }
}

TEST(PgErrors, AFullNotifyQueueHasItsOwnType) {
  try {
    translate(pqxx::sql_error("ERROR:  too many notifications in the NOTIFY queue\n",
                              "SELECT pg_notify($1, $2)", "54000"));
    FAIL();
  } catch (const notify_queue_full& e) {
    EXPECT_EQ(e.sqlstate(), "54000");
    const std::string what = e.what();
    EXPECT_NE(what.find("doing the thing"), std::string::npos) << what;
    EXPECT_NE(what.find("pg_notification_queue_usage"), std::string::npos) << what;
  }
}

TEST(PgErrors, OtherProgramLimitsStayDatabaseErrors) {
  EXPECT_THROW(translate(pqxx::sql_error("ERROR:  row is too big", "", "54000")), database_error);
  try {
    translate(pqxx::sql_error("ERROR:  row is too big", "", "54000"));
  } catch (const notify_queue_full&) {
    FAIL() << "a different 54000 error was taken for a full NOTIFY queue";
  } catch (const database_error&) {
  }
}

TEST(PgErrors, ATerminatedSessionIsAConnectionError) {
  EXPECT_THROW(translate(pqxx::sql_error("FATAL:  terminating connection due to administrator "
                                         "command",
                                         "", "57P01")),
               connection_error);
  EXPECT_THROW(translate(pqxx::broken_connection("server closed the connection")),
               connection_error);
}

TEST(PgErrors, AMissingPrivilegeKeepsItsSqlstate) {
  try {
    translate(pqxx::sql_error("ERROR:  permission denied for table t", "", "42501"));
    FAIL();
  } catch (const database_error& e) {
    EXPECT_EQ(e.sqlstate(), "42501");
    EXPECT_NE(std::string(e.what()).find("42501"), std::string::npos);
  }
}

TEST(PgErrors, ASqlstateLibpqxxLeftOutIsRecoveredFromTheType) {
  // libpqxx 6.4 throws insufficient_privilege without its code.
  try {
    translate(pqxx::insufficient_privilege("ERROR:  permission denied for table t", "DELETE"));
    FAIL();
  } catch (const database_error& e) {
    EXPECT_EQ(e.sqlstate(), "42501");
    EXPECT_NE(std::string(e.what()).find("docs/OPERATIONS.md"), std::string::npos) << e.what();
  }
}

TEST(PgErrors, SyncbusErrorsPassThroughUnchanged) {
  EXPECT_THROW(translate(payload_too_large("x", 9000, 8000)), payload_too_large);
}

}  // namespace
}  // namespace syncbus::detail
