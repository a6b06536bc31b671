#pragma once
// Things db tests do to the server behind the bus's back, over connections of
// their own.

#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "conninfo.hpp"
#include "test_support.hpp"

namespace syncbus::testing {

/// NOTIFYs `payload` on `channel`, as any client of the database could.
inline void raw_notify(const std::string& url, const std::string& channel,
                       const std::string& payload) {
  pqxx::connection connection(url);
  pqxx::nontransaction(connection).exec_params("SELECT pg_notify($1, $2)", channel, payload);
}

/// Makes spill table public.`name` if it is missing, as a bus makes it.
inline void make_spill_table(const std::string& url,
                             const std::string& name = PostgresBusOptions{}.spill_table) {
  PostgresBusOptions o;
  o.conninfo = url;
  o.listen = false;
  o.spill_table = name;
  PostgresClusterBus maker(o);
}

/// A spill table of a test's own, in schema public, made as the default
/// one is (by a bus) and dropped at the end: for a test that locks its
/// table, which would hold up every other test's buses on the shared one
/// (ctest runs two at a time: a bus being created under a 250 ms
/// query_timeout failed so, while another test held an ACCESS EXCLUSIVE
/// lock on the shared table).
class OwnSpillTable {
 public:
  OwnSpillTable(std::string url, const std::string& what)
      : url_(std::move(url)),
        name_("t_spill_" + what + "_" + std::to_string(::getpid()) + "_" + random_suffix()) {
    make_spill_table(url_, name_);
  }
  ~OwnSpillTable() {
    try {
      pqxx::connection admin(url_);
      pqxx::nontransaction(admin).exec("DROP TABLE IF EXISTS " + qualified());
    } catch (...) {
    }
  }
  OwnSpillTable(const OwnSpillTable&) = delete;
  OwnSpillTable& operator=(const OwnSpillTable&) = delete;

  /// For PostgresBusOptions::spill_table.
  const std::string& name() const { return name_; }
  /// public."name", for SQL.
  std::string qualified() const { return "public.\"" + name_ + "\""; }

 private:
  static std::string random_suffix() {
    static std::mt19937_64 random{std::random_device{}()};
    return std::to_string(random() % 1000000);
  }
  std::string url_;
  std::string name_;
};

/// Which of a bus's two connections to act on: the publisher's carries the
/// bus's application_name, the listener's the same followed by ":listen".
enum class BusConnection { listener, publisher };

/// Terminates the backend of a bus connection (by application_name); returns
/// how many were terminated.
inline int terminate_backend(const std::string& url, const std::string& application_name,
                             BusConnection which) {
  pqxx::connection admin(url);
  return pqxx::nontransaction(admin)
      .exec_params1(
          "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
          "WHERE application_name = $1",
          application_name + (which == BusConnection::listener ? ":listen" : ""))[0]
      .as<int>();
}

/// The application_name a bus gives its connections by default.
inline std::string application_name_of(const PostgresClusterBus& bus) {
  return "syncbus:" + bus.instance_id();
}

/// Terminates the backend of one of `bus`'s connections.
inline int terminate_backend(const std::string& url, const PostgresClusterBus& bus,
                             BusConnection which) {
  return terminate_backend(url, application_name_of(bus), which);
}

/// Number of sessions with this application_name.
inline int sessions_named(const std::string& url, const std::string& application_name) {
  pqxx::connection admin(url);
  return pqxx::nontransaction(admin)
      .exec_params1("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    application_name)[0]
      .as<int>();
}

/// A login role of a test's own, allowed what a bus needs on the default
/// spill table, that a test can keep out of the server for a while:
/// keep_out() forbids it to log in and ends its bus's listening session, so
/// that the bus's listener stays away (its attempts to reconnect fail) until
/// let_in(). Declare it before the buses that use it.
class RoleThatCanBeKeptOut {
 public:
  /// Allowed SELECT and INSERT on `table` (SQL, with its schema; the
  /// default one is made first if no bus has made it yet: on a new server,
  /// a test that runs first finds none).
  RoleThatCanBeKeptOut(std::string url, const std::string& tag,
                       const std::string& table = "public.sync_cluster_spill")
      : url_(std::move(url)), role_("syncbus_t_away_" + tag) {
    if (table == "public.sync_cluster_spill") make_spill_table(url_);
    admin("CREATE ROLE " + role_ + " LOGIN; GRANT USAGE ON SCHEMA public TO " + role_ +
          "; GRANT SELECT, INSERT ON " + table + " TO " + role_);
    // And SELECT on the default table's removal log, for positions.
    if (table == "public.sync_cluster_spill") {
      admin("GRANT SELECT ON public.sync_cluster_spill_removed TO " + role_);
    }
  }
  ~RoleThatCanBeKeptOut() {
    try {
      admin("DROP OWNED BY " + role_ + "; DROP ROLE " + role_);
    } catch (...) {
    }
  }
  RoleThatCanBeKeptOut(const RoleThatCanBeKeptOut&) = delete;
  RoleThatCanBeKeptOut& operator=(const RoleThatCanBeKeptOut&) = delete;

  /// `options` connecting as this role.
  PostgresBusOptions as_role(PostgresBusOptions options) const {
    options.conninfo = detail::with_connection_options(url_, {{"user", role_}}, {});
    return options;
  }
  void keep_out(const PostgresClusterBus& bus) {
    admin("ALTER ROLE " + role_ + " NOLOGIN");
    pqxx::connection connection(url_);
    pqxx::nontransaction(connection)
        .exec_params(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = $1",
            "syncbus:" + bus.instance_id() + ":listen");
  }
  void let_in() { admin("ALTER ROLE " + role_ + " LOGIN"); }
  /// A setting the role's sessions start with (ALTER ROLE ... SET).
  void set(const std::string& setting, const std::string& value) {
    admin("ALTER ROLE " + role_ + " SET " + setting + " = '" + value + "'");
  }

 private:
  void admin(const std::string& sql) {
    pqxx::connection connection(url_);
    pqxx::nontransaction(connection).exec(sql);
  }
  std::string url_;
  std::string role_;
};

/// True while a session waits for a lock on `table` (schema-qualified, as
/// SQL): what a test polls for before it counts on a statement being stuck.
inline bool a_session_waits_to_lock(const std::string& url, const std::string& table) {
  pqxx::connection connection(url);
  return pqxx::nontransaction(connection)
             .exec_params1(
                 "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = to_regclass($1)",
                 table)[0]
             .as<int>() > 0;
}

/// A publisher speaking the wire protocol over a plain connection, so that it
/// can hold a transaction open as long as it likes: its row takes its id
/// early and commits late.
inline void publish_slowly(const std::string& url, const std::string& channel,
                           const std::string& origin, std::uint64_t sequence,
                           std::chrono::milliseconds held_open) {
  pqxx::connection connection(url);
  pqxx::work transaction(connection);
  transaction.exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body) "
      "VALUES ($1, $2, $3, $4)",
      channel, origin, static_cast<std::int64_t>(sequence),
      "{\"slow\":" + std::to_string(sequence) + "}");
  transaction.exec_params("SELECT pg_notify($1, $2)", channel,
                          R"({"v":1,"origin":")" + origin + R"(","seq":)" +
                              std::to_string(sequence) + R"(,"spilled":true})");
  std::this_thread::sleep_for(held_open);
  transaction.commit();
}

/// The test server's conninfo: SYNCBUS_TEST_DATABASE_URL, else the file the
/// ctest fixture wrote (SYNCBUS_TEST_STATE_DIR/url); "" when neither exists.
inline std::string test_database_url() {
  if (const char* url = std::getenv("SYNCBUS_TEST_DATABASE_URL"); url && *url) {
    return url;
  }
  if (const char* dir = std::getenv("SYNCBUS_TEST_STATE_DIR"); dir && *dir) {
    std::ifstream file(std::string(dir) + "/url");
    std::string url;
    if (std::getline(file, url) && !url.empty()) return url;
  }
  return "";
}

/// A throwaway server of a test's own (tests/pg/test_server.sh), for tests
/// that freeze, stop or restart it, or stand other servers beside it.
class DedicatedServer {
 public:
  DedicatedServer() {
    char pattern[] = "/tmp/syncbus-test-server.XXXXXX";
    state_ = ::mkdtemp(pattern);
    started_ = control("start");
    if (started_) url_ = read_line("url");
  }
  ~DedicatedServer() {
    control("thaw");  // a frozen postmaster would not stop
    control("stop");
    std::system(("rm -rf '" + state_ + "'").c_str());
  }
  DedicatedServer(const DedicatedServer&) = delete;
  DedicatedServer& operator=(const DedicatedServer&) = delete;

  bool started() const { return started_; }
  const std::string& url() const { return url_; }
  void freeze() { ASSERT_TRUE(control("freeze")); }
  void thaw() { ASSERT_TRUE(control("thaw")); }
  void down(const std::string& mode) { ASSERT_TRUE(control("down", mode)); }
  void up() { ASSERT_TRUE(control("up")); }
  /// Starts a hot standby streaming from this server; returns its conninfo
  /// ("" when it could not be started).
  std::string start_replica() { return control("replica") ? read_line("replica_url") : ""; }
  /// Starts PgBouncer in `pool_mode` in front of this server; returns its
  /// conninfo ("" when it could not be started, e.g. not installed).
  std::string start_pgbouncer(const std::string& pool_mode) {
    return control("pgbouncer", pool_mode) ? read_line("pgbouncer_url") : "";
  }

 private:
  bool control(const std::string& action, const std::string& argument = "") {
    const std::string command = "env -u SYNCBUS_TEST_DATABASE_URL '" SYNCBUS_TEST_SERVER_SCRIPT
                                "' " +
                                action + " '" + state_ + "' " + argument + " > /dev/null";
    return std::system(command.c_str()) == 0;
  }
  std::string read_line(const std::string& file) const {
    std::ifstream in(state_ + "/" + file);
    std::string line;
    std::getline(in, line);
    return line;
  }
  std::string state_;
  std::string url_;
  bool started_ = false;
};

/// Base fixture of tests that need PostgreSQL. Without a server it skips,
/// except under CI=true, where it fails: CI never skips silently.
class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = test_database_url();
    if (url_.empty()) {
      if (running_in_ci()) {
        FAIL() << "No PostgreSQL for the db tests: run them through ctest (its "
                  "fixture starts a server) or set SYNCBUS_TEST_DATABASE_URL";
      }
      GTEST_SKIP() << "No PostgreSQL: set SYNCBUS_TEST_DATABASE_URL or run via ctest";
    }
  }
  const std::string& url() const { return url_; }

  /// Options of a bus on the test server.
  PostgresBusOptions options(const std::string& channel,
                             const std::string& instance_id = "") const {
    PostgresBusOptions o;
    o.conninfo = url_;
    o.channel = channel;
    o.instance_id = instance_id;
    return o;
  }

  /// Options of a durable bus (SpillMode::always) without heartbeats, whose
  /// promise is: every acknowledged message exactly once, in order per origin.
  PostgresBusOptions durable_options(const std::string& channel,
                                     const std::string& instance_id = "") const {
    auto o = options(channel, instance_id);
    o.spill = SpillMode::always;
    o.heartbeat_interval = std::chrono::milliseconds(0);
    return o;
  }

  void raw_notify(const std::string& channel, const std::string& payload) const {
    testing::raw_notify(url_, channel, payload);
  }

 private:
  std::string url_;
};

}  // namespace syncbus::testing
