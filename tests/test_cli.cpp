// The installed `syncbus` program, run as a user would run it, against a
// real PostgreSQL. ctest installs the build into a prefix of its own first
// (test cli.install, SYNCBUS_INSTALLED_CLI); SYNCBUS_CLI overrides the path.
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <atomic>
#include <cstdlib>
#include <map>
#include <sstream>
#include <thread>

#include "conninfo.hpp"
#include "pg_helpers.hpp"
#include "test_support.hpp"

extern char** environ;

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using testing::unique_channel;

// A child process with pipes on stdin, stdout and stderr.
class Process {
 public:
  explicit Process(const std::vector<std::string>& args,
                   const std::map<std::string, std::string>& env = {}) {
    int in[2], out[2], err[2];
    if (::pipe(in) != 0 || ::pipe(out) != 0 || ::pipe(err) != 0) std::abort();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) ::close(fd);
      for (const auto& [name, value] : env) {
        if (value.empty()) {
          ::unsetenv(name.c_str());
        } else {
          ::setenv(name.c_str(), value.c_str(), 1);
        }
      }
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    stderr_ = err[0];
  }
  ~Process() {
    if (pid_ > 0 && !waited_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    for (int fd : {stdin_, stdout_, stderr_}) {
      if (fd >= 0) ::close(fd);
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  void write_stdin(const std::string& text) {
    if (!text.empty()) [[maybe_unused]]
      auto n = ::write(stdin_, text.data(), text.size());
    ::close(stdin_);
    stdin_ = -1;
  }
  void signal(int number) { ::kill(pid_, number); }

  // Reads what is available from stdout and stderr for up to `wait`; stops
  // early once `until` holds.
  void read_for(std::chrono::milliseconds wait, const std::function<bool()>& until = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline && !(until && until())) {
      pollfd fds[2] = {{stdout_, POLLIN, 0}, {stderr_, POLLIN, 0}};
      if (::poll(fds, 2, 20) <= 0) continue;
      char buffer[4096];
      for (int i = 0; i < 2; ++i) {
        if (fds[i].revents == 0) continue;
        const auto n = ::read(fds[i].fd, buffer, sizeof buffer);
        if (n > 0) (i == 0 ? out_ : err_).append(buffer, static_cast<std::size_t>(n));
        if (n == 0) {
          ::close(fds[i].fd);
          (i == 0 ? stdout_ : stderr_) = -1;
        }
      }
      if (stdout_ < 0 && stderr_ < 0) return;
    }
  }
  std::vector<std::string> stdout_lines() const {
    std::vector<std::string> lines;
    std::size_t start = 0;
    for (auto end = out_.find('\n'); end != std::string::npos; end = out_.find('\n', start)) {
      lines.push_back(out_.substr(start, end - start));
      start = end + 1;
    }
    return lines;
  }
  // Waits for the process to end; returns its exit code (-1 when killed).
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    waited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  // True once the process has ended (then wait() returns at once), false if
  // it still runs after `timeout`.
  bool ended_within(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      // WNOWAIT: left for wait() to reap. si_pid stays 0 while it runs.
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == pid_) {
        return true;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(10ms);
    }
  }
  pid_t pid() const { return pid_; }
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  pid_t pid_ = -1;
  bool waited_ = false;
  int stdin_ = -1, stdout_ = -1, stderr_ = -1;
  std::string out_, err_;
};

struct Outcome {
  int exit_code;
  std::string out;
  std::string err;
};

class CliTest : public testing::PostgresTest {
 protected:
  void SetUp() override {
    testing::PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    const char* cli = std::getenv("SYNCBUS_CLI");
    if (cli == nullptr) cli = SYNCBUS_INSTALLED_CLI;
    if (::access(cli, X_OK) != 0) {
      FAIL() << cli << " is not the installed syncbus program: run through ctest, which "
             << "installs it first (or set SYNCBUS_CLI)";
    }
    cli_ = cli;
  }
  std::vector<std::string> command(std::vector<std::string> args) const {
    args.insert(args.begin(), cli_);
    return args;
  }
  Outcome run(std::vector<std::string> args, const std::string& input = "",
              const std::map<std::string, std::string>& env = {}) const {
    const std::string name = args.empty() ? "" : args[0];
    Process p(command(std::move(args)), env);
    p.write_stdin(input);
    p.read_for(60s);
    if (!p.ended_within(5s)) {
      // A hang, shown where it is rather than as ctest's timeout.
      testing::print_stacks(p.pid());
      ADD_FAILURE() << "`syncbus " << name << "` still runs after 60 s (its stacks are on "
                    << "stderr); it printed:\n"
                    << p.out() << p.err();
      p.signal(SIGKILL);
    }
    const int code = p.wait();
    return {code, p.out(), p.err()};
  }
  static bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  }

  std::string cli_;
};

TEST_F(CliTest, HelpUsageErrorsAndExitCodes) {
  const auto help = run({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const auto* command : {"tail", "publish", "vacuum", "status", "doctor", "bench"}) {
    EXPECT_TRUE(contains(help.out, command)) << command;
    const auto sub = run({command, "--help"});
    EXPECT_EQ(sub.exit_code, 0) << command << ": " << sub.err;
    EXPECT_TRUE(contains(sub.out, "usage: syncbus " + std::string(command))) << sub.out;
  }
  EXPECT_EQ(run({}).exit_code, 2);
  const auto unknown = run({"frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_TRUE(contains(unknown.err, "unknown command \"frobnicate\"")) << unknown.err;
  const auto bad_option = run({"tail", "--db", url(), "--bogus"});
  EXPECT_EQ(bad_option.exit_code, 2);
  EXPECT_TRUE(contains(bad_option.err, "unknown option --bogus")) << bad_option.err;
  const auto bad_db = run({"status", "--db", "host=localhost port"});
  EXPECT_EQ(bad_db.exit_code, 2) << "the command line is at fault";
  EXPECT_TRUE(contains(bad_db.err, "--db is not a valid libpq connection string")) << bad_db.err;
  const auto bad_age = run({"vacuum", "--db", url(), "--older-than", "soon"});
  EXPECT_EQ(bad_age.exit_code, 2);
  EXPECT_TRUE(contains(bad_age.err, "not a duration")) << bad_age.err;
  EXPECT_EQ(run({"--version"}).exit_code, 0);
}

// Like every PostgreSQL tool: with neither --db nor DATABASE_URL, libpq's
// environment says where; and what goes wrong is said in the command
// line's terms (--db, not PostgresBusOptions::conninfo).
TEST_F(CliTest, WithoutDbOrDatabaseUrlLibpqsEnvironmentIsUsedAndErrorsNameTheFlags) {
  const std::map<std::string, std::string> pg_environment = {
      {"DATABASE_URL", ""},
      {"PGHOST", detail::connection_option(url(), "host")},
      {"PGPORT", detail::connection_option(url(), "port")},
      {"PGDATABASE", detail::connection_option(url(), "dbname")},
      {"PGUSER", detail::connection_option(url(), "user")}};
  const auto vacuum = run({"vacuum", "--older-than", "1h"}, "", pg_environment);
  EXPECT_EQ(vacuum.exit_code, 0) << vacuum.err;
  const auto doctor = run({"doctor", "--jobs", "listen"}, "", pg_environment);
  EXPECT_EQ(doctor.exit_code, 0) << doctor.out << doctor.err;
  const auto help = run({"tail", "--help"});
  EXPECT_TRUE(contains(help.out, "PGHOST")) << help.out;

  // Nowhere to connect: the error names the flag, and reads as sentences.
  for (const auto* command : {"tail", "publish"}) {
    std::vector<std::string> args{command, "--db", "host=127.0.0.1 port=1 connect_timeout=2"};
    if (std::string(command) == "publish") args.emplace_back("{}");
    const auto down = run(args);
    EXPECT_EQ(down.exit_code, 1) << command;
    EXPECT_TRUE(contains(down.err, "Check --db")) << down.err;
    EXPECT_FALSE(contains(down.err, "PostgresBusOptions")) << down.err;
    EXPECT_FALSE(contains(down.err, "?.")) << down.err;
  }
}

// Found from outside: `--name 'my tail'` exited 1 naming `instance_id`, and
// `--max-bytes 1e3` was read as 1. A bad value is the command line's fault:
// exit 2, naming the flag, before anything connects.
TEST_F(CliTest, ABadNameOrNumberIsRefusedByItsFlag) {
  const std::string nowhere = "host=127.0.0.1 port=1 connect_timeout=2";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"tail", "--db", nowhere, "--name", "my tail"},
        std::vector<std::string>{"publish", "--db", nowhere, "--name", "my tail", "{}"},
        std::vector<std::string>{"tail", "--db", nowhere, "--max-bytes", "1e3"},
        std::vector<std::string>{"tail", "--db", nowhere, "--max-bytes", "-1"},
        std::vector<std::string>{"tail", "--db", nowhere, "--max-bytes", "99999999999999999999999"},
        std::vector<std::string>{"tail", "--db", nowhere, "--max-bytes", "0"},
        std::vector<std::string>{"tail", "--db", nowhere, "--count", "two"}}) {
    const auto outcome = run(args);
    const auto flag = args[3];
    EXPECT_EQ(outcome.exit_code, 2)
        << args[0] << " " << flag << " " << args[4] << ": " << outcome.err;
    EXPECT_TRUE(contains(outcome.err, flag)) << outcome.err;
    EXPECT_FALSE(contains(outcome.err, "PostgresBusOptions")) << outcome.err;
    EXPECT_FALSE(contains(outcome.err, "instance_id")) << outcome.err;
  }
}

TEST_F(CliTest, ANameTooLongForPostgresIsRefusedByItsFlagBeforeConnecting) {
  // A CLI user set --table, not PostgresBusOptions::spill_table: the error
  // names what they typed. The conninfo points nowhere, so a command that
  // connected first would fail differently.
  const std::string nowhere = "host=127.0.0.1 port=1 connect_timeout=2";
  const std::string long_name(70, 't');
  for (const auto* flag : {"--channel", "--schema", "--table"}) {
    for (const auto* command : {"tail", "publish", "vacuum", "status", "doctor"}) {
      std::vector<std::string> args{command, "--db", nowhere, flag, long_name};
      if (std::string(command) == "publish") args.emplace_back("{}");
      if (std::string(command) == "vacuum") args.insert(args.end(), {"--older-than", "60s"});
      const auto outcome = run(args);
      const auto said = outcome.out + outcome.err;  // doctor reports on stdout
      EXPECT_EQ(outcome.exit_code, 2) << command << " " << flag << ": the command line's fault";
      EXPECT_TRUE(contains(said, std::string(flag) + " is invalid: it is 70 bytes"))
          << command << " " << flag << ": " << said;
      EXPECT_FALSE(contains(said, "PostgresBusOptions")) << said;
      EXPECT_FALSE(contains(said, "connect")) << said;
    }
  }
}

TEST_F(CliTest, TailSeesWhatPublishSentInlineAndSpilledAndStopsOnCtrlC) {
  const auto channel = unique_channel("cli_tail");
  Process tail(command({"tail", "--channel", channel}), {{"DATABASE_URL", url()}});
  tail.read_for(10s, [&] { return contains(tail.err(), "listening on channel"); });
  ASSERT_TRUE(contains(tail.err(), "listening on channel")) << tail.err();

  const std::string big(9000, 'b');
  EXPECT_EQ(run({"publish", "--db", url(), "--channel", channel, R"({"n":1})"}).exit_code, 0);
  EXPECT_EQ(run({"publish", "--db", url(), "--channel", channel, '"' + big + '"'}).exit_code, 0);
  const auto lines =
      run({"publish", "--db", url(), "--channel", channel, "--lines"}, "1\n\n\"two\"\n[3]\n");
  EXPECT_EQ(lines.exit_code, 0) << lines.err;
  tail.read_for(10s, [&] { return tail.stdout_lines().size() >= 5; });
  const auto printed = tail.stdout_lines();
  ASSERT_EQ(printed.size(), 5u) << tail.out() << tail.err();

  std::vector<nlohmann::json> seen;
  for (const auto& line : printed) seen.push_back(nlohmann::json::parse(line));
  EXPECT_EQ(seen[0]["body"], nlohmann::json({{"n", 1}}));
  EXPECT_EQ(seen[0]["spilled"], false);
  EXPECT_EQ(seen[0]["sequence"], 1);
  EXPECT_EQ(seen[0]["size"], 7);
  EXPECT_EQ(seen[1]["body"], big);
  EXPECT_EQ(seen[1]["spilled"], true) << "followed into the spill table";
  EXPECT_EQ(seen[1]["size"], big.size() + 2);
  EXPECT_EQ(seen[2]["body"], 1);
  EXPECT_EQ(seen[3]["body"], "two");
  EXPECT_EQ(seen[4]["body"], nlohmann::json::array({3}));
  // --lines published three messages from one bus, in order.
  EXPECT_EQ(seen[2]["origin"], seen[4]["origin"]);
  EXPECT_EQ(seen[2]["sequence"], 1);
  EXPECT_EQ(seen[4]["sequence"], 3);
  for (const auto& s : seen)
    EXPECT_TRUE(s["origin"].get<std::string>().rfind("syncbus-cli.", 0) == 0);

  const auto stopping = std::chrono::steady_clock::now();
  tail.signal(SIGINT);
  tail.read_for(5s);
  EXPECT_EQ(tail.wait(), 0) << "Ctrl-C is a clean stop";
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, 2s);
}

// tail hears the channel through a bus's own listener: a lost session is
// regained by itself (and the possible loss said on stderr), and heartbeats
// and a closing bus's goodbye are shown on request.
TEST_F(CliTest, TailRegainsALostSessionAndShowsHeartbeatsAndGoodbyes) {
  const auto channel = unique_channel("cli_tail_lost");
  const auto name = "tail-" + std::to_string(::getpid());  // other tests run tails too
  Process tail(
      command({"tail", "--heartbeats", "--db", url(), "--channel", channel, "--name", name}));
  tail.read_for(10s, [&] { return contains(tail.err(), "listening on channel"); });
  ASSERT_TRUE(contains(tail.err(), "listening on channel")) << tail.err();

  // Found by what it is: a syncbus listening session, named as a bus's.
  pqxx::connection admin(url());
  const auto killed = [&] {
    return pqxx::nontransaction(admin)
        .exec_params1(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'syncbus:' || $1 || '.%:listen'",
            name)[0]
        .as<int>();
  };
  ASSERT_EQ(killed(), 1);
  // Said on stderr, and as a gap line on stdout.
  tail.read_for(10s, [&] { return contains(tail.out(), R"("gap":"unknown")"); });
  EXPECT_TRUE(contains(tail.err(), "may be missed")) << tail.err();
  ASSERT_FALSE(tail.stdout_lines().empty()) << tail.err();
  EXPECT_EQ(nlohmann::json::parse(tail.stdout_lines().front())["gap"], "unknown") << tail.out();

  {
    auto o = options(channel, "tail-goodbye");
    o.heartbeat_interval = 0ms;
    PostgresClusterBus publisher(o);
    // Sent until the tail has its session back (a NOTIFY reaches only
    // sessions listening when it commits).
    int sent = 0;
    ASSERT_TRUE(testing::eventually(
        [&] {
          publisher.publish(nlohmann::json{{"n", ++sent}});
          tail.read_for(200ms);
          return contains(tail.out(), R"("sequence")");
        },
        15s))
        << tail.err();
  }  // closing: its goodbye
  tail.read_for(10s, [&] { return contains(tail.out(), "\"goodbye\":true"); });
  const auto printed = tail.stdout_lines();
  ASSERT_GE(printed.size(), 2u) << tail.out() << tail.err();
  const auto last = nlohmann::json::parse(printed.back());
  EXPECT_EQ(last["goodbye"], true) << tail.out();
  const auto before = nlohmann::json::parse(printed[printed.size() - 2]);
  EXPECT_EQ(last["heartbeat"], before["sequence"]) << "the goodbye names the last message";
  EXPECT_TRUE(last["origin"].get<std::string>().rfind("tail-goodbye.", 0) == 0) << last;

  tail.signal(SIGINT);
  tail.read_for(5s);
  EXPECT_EQ(tail.wait(), 0);
}

// What an operator wants first comes first: the time, then origin,
// sequence, size, spilled, and the body last (or not at all); --count
// stops by itself.
TEST_F(CliTest, TailPutsTheMetadataFirstLeavesTheBodyOutOnRequestAndStopsAfterCount) {
  const auto channel = unique_channel("cli_tail_count");
  Process tail(command({"tail", "--db", url(), "--channel", channel, "--count", "2"}));
  Process bare(command({"tail", "--db", url(), "--channel", channel, "--no-body"}));
  for (auto* t : {&tail, &bare}) {
    t->read_for(10s, [&] { return contains(t->err(), "listening on channel"); });
    ASSERT_TRUE(contains(t->err(), "listening on channel")) << t->err();
  }
  const auto lines = run({"publish", "--db", url(), "--channel", channel, "--lines"},
                         "{\"n\":1}\n\"" + std::string(9000, 'c') + "\"\n[3]\n");
  ASSERT_EQ(lines.exit_code, 0) << lines.err;
  tail.read_for(10s);
  ASSERT_TRUE(tail.ended_within(5s)) << "--count 2: done after two messages\n"
                                     << tail.out() << tail.err();
  EXPECT_EQ(tail.wait(), 0);
  const auto printed = tail.stdout_lines();
  ASSERT_EQ(printed.size(), 2u) << tail.out();
  EXPECT_EQ(printed[0].rfind(R"({"time":")", 0), 0u) << printed[0];
  EXPECT_NE(printed[0].find(R"(,"origin":")"), std::string::npos) << printed[0];
  EXPECT_LT(printed[1].find(R"("spilled":true)"), printed[1].find(R"("body":)")) << printed[1];
  const auto first = nlohmann::json::parse(printed[0]);
  EXPECT_EQ(first["body"], nlohmann::json({{"n", 1}}));
  EXPECT_EQ(first["time"].get<std::string>().size(), 24u) << "2026-11-29T10:00:00.123Z";

  bare.read_for(10s, [&] { return bare.stdout_lines().size() >= 3; });
  const auto shown = bare.stdout_lines();
  ASSERT_EQ(shown.size(), 3u) << bare.out() << bare.err();
  for (const auto& l : shown) {
    const auto j = nlohmann::json::parse(l);
    EXPECT_FALSE(j.contains("body")) << l;
    EXPECT_TRUE(j.contains("size") && j.contains("sequence")) << l;
  }
  EXPECT_EQ(nlohmann::json::parse(shown[1])["size"], 9002);
  bare.signal(SIGINT);
  bare.read_for(5s);
  EXPECT_EQ(bare.wait(), 0);
}

// Found from outside: a tail whose output could not be written (a full
// disk, a closed stdout, a reader gone with SIGPIPE ignored) lost every
// message silently and exited 0. It stops, says why, and exits 1.
TEST_F(CliTest, TailThatCannotWriteItsOutputStopsAndSaysSo) {
  const auto channel = unique_channel("cli_tail_full");
  Process tail(
      {"/bin/sh", "-c",
       "exec '" + cli_ + "' tail --db '" + url() + "' --channel " + channel + " > /dev/full"});
  tail.read_for(10s, [&] { return contains(tail.err(), "listening on channel"); });
  ASSERT_TRUE(contains(tail.err(), "listening on channel")) << tail.err();
  EXPECT_EQ(run({"publish", "--db", url(), "--channel", channel, R"({"n":1})"}).exit_code, 0);
  tail.read_for(10s);
  ASSERT_TRUE(tail.ended_within(5s)) << tail.err();
  EXPECT_EQ(tail.wait(), 1);
  EXPECT_TRUE(contains(tail.err(), "cannot write to standard output")) << tail.err();
}

TEST_F(CliTest, BenchRunsAndStopsCleanlyOnCtrlC) {
  // A short run with --check: every message once, in order.
  const auto short_run = run({"bench", "--db", url(), "--seconds", "0.3", "--sizes", "200",
                              "--threads", "1", "--blocking", "none", "--rate", "0", "--check"});
  EXPECT_EQ(short_run.exit_code, 0) << short_run.out << short_run.err;
  EXPECT_TRUE(contains(short_run.out, "raw libpq")) << short_run.out;
  EXPECT_TRUE(contains(short_run.out, "syncbus, 1 thread")) << short_run.out;
  // A long one, interrupted: it stops sending, drains, cleans up, exits 0.
  Process bench(command({"bench", "--db", url(), "--seconds", "60", "--sizes", "200", "--threads",
                         "1", "--blocking", "none", "--rate", "0"}));
  bench.read_for(3s);
  const auto stopping = std::chrono::steady_clock::now();
  bench.signal(SIGINT);
  bench.read_for(20s);
  EXPECT_EQ(bench.wait(), 0) << bench.out() << bench.err();
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, 15s);
  EXPECT_TRUE(contains(bench.err(), "interrupted")) << bench.err();
  EXPECT_TRUE(contains(bench.out(), "raw libpq")) << "the interrupted run is reported";
}

// Figures people can keep: with --json, each run is one JSON object on a
// line of its own, with its figures and the configuration that made them,
// and nothing else is on stdout.
TEST_F(CliTest, BenchWithJsonPrintsOneObjectPerRunWithItsConfiguration) {
  const auto r = run({"bench", "--db", url(), "--seconds", "0.3", "--sizes", "200", "--threads",
                      "2", "--blocking", "none", "--rate", "200", "--rounds", "1", "--receivers",
                      "1", "--json", "--check"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::vector<nlohmann::json> rows;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    ASSERT_NO_THROW(rows.push_back(nlohmann::json::parse(line))) << line;
  }
  // raw, syncbus (2 threads), the hand-batched ceiling, raw and syncbus at 200/s.
  ASSERT_EQ(rows.size(), 5u) << r.out;
  std::map<std::string, int> kinds;
  for (const auto& row : rows) {
    ++kinds[row.at("kind").get<std::string>()];
    EXPECT_EQ(row.at("size"), 200) << row;
    EXPECT_TRUE(row.at("ok").get<bool>()) << row;
    EXPECT_GT(row.at("msg_per_s").get<double>(), 0) << row;
    EXPECT_GT(row.at("delivered").get<std::size_t>(), 0u) << row;
    EXPECT_TRUE(row.at("latency_us").contains("p99")) << row;
    EXPECT_EQ(row.at("config").at("receivers"), 1) << row;
    EXPECT_EQ(row.at("config").at("spill"), "overflow") << row;
    EXPECT_EQ(row.at("config").at("seconds"), 0.3) << row;
    EXPECT_EQ(row.at("kind") == "syncbus", row.contains("vs_raw")) << row;
  }
  EXPECT_EQ(kinds["raw"], 2);
  EXPECT_EQ(kinds["syncbus"], 2);
  EXPECT_EQ(kinds["ceiling"], 1);
  EXPECT_EQ(rows[1].at("name"), "syncbus, 2 threads");
  EXPECT_EQ(rows[3].at("load"), "200/s");
  EXPECT_GT(rows[2].at("best_syncbus").at("fraction").get<double>(), 0);
}

// Where a message's time goes at low load (issue 18, section 4): --stages
// times each stage of the paced runs' messages, from the publish call, on
// both sides; each later stage of a receiving bus after the one before.
TEST_F(CliTest, BenchWithStagesTimesEachStageOfAPacedMessage) {
  const auto r = run({"bench", "--db", url(), "--seconds", "0.4", "--sizes", "200,20000",
                      "--threads", "1", "--blocking", "none", "--rate", "200", "--rounds", "1",
                      "--stages", "--json", "--check"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::istringstream in(r.out);
  std::size_t paced = 0;
  for (std::string line; std::getline(in, line);) {
    const auto row = nlohmann::ordered_json::parse(line);  // the stages in their order
    EXPECT_TRUE(row.at("config").at("stages").get<bool>()) << row;
    if (row.at("load") == "saturation") {
      EXPECT_FALSE(row.contains("stages_us")) << "paced runs only: " << row;
      continue;
    }
    ++paced;
    ASSERT_TRUE(row.contains("stages_us")) << row;
    const auto& stages = row.at("stages_us");
    std::vector<std::string> names;
    for (const auto& [name, times] : stages.items()) names.push_back(name);
    if (row.at("kind") == "raw") {
      EXPECT_EQ(names, (std::vector<std::string>{"committed", "read"})) << row;
      continue;
    }
    ASSERT_EQ(names, (std::vector<std::string>{"committed", "read by the listener",
                                               "on the delivery thread", "in the handler"}))
        << row;
    const auto p50 = [&](const char* stage) { return stages.at(stage).at("p50").get<double>(); };
    EXPECT_GT(p50("committed"), 0) << row;
    EXPECT_LE(p50("on the delivery thread"), p50("in the handler")) << row;
    if (row.at("size") == 200) {
      EXPECT_LE(p50("read by the listener"), p50("on the delivery thread")) << row;
    } else {
      // A spill pointer carries no body: the listener cannot see its time.
      EXPECT_TRUE(stages.at("read by the listener").is_null()) << row;
    }
  }
  EXPECT_EQ(paced, 4u) << r.out;  // raw and syncbus at 200/s, for each size

  const auto refused = run({"bench", "--db", url(), "--stages", "--receiver-processes"});
  EXPECT_EQ(refused.exit_code, 2) << refused.out << refused.err;
  EXPECT_TRUE(contains(refused.err, "--stages")) << refused.err;
}

// Fan-out as a cluster has it: each receiver a process of its own, each
// getting every message once and in order (--check), on both sides.
TEST_F(CliTest, BenchWithReceiverProcessesDeliversEveryMessageToEach) {
  const auto r =
      run({"bench",     "--db",      url(), "--seconds",   "0.3",  "--sizes",
           "200,20000", "--threads", "2",   "--blocking",  "none", "--rate",
           "200",       "--rounds",  "1",   "--receivers", "3",    "--receiver-processes",
           "--json",    "--check"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::istringstream in(r.out);
  std::size_t rows = 0;
  for (std::string line; std::getline(in, line); ++rows) {
    const auto row = nlohmann::json::parse(line);
    EXPECT_TRUE(row.at("ok").get<bool>()) << row;
    EXPECT_TRUE(row.at("config").at("receiver_processes").get<bool>()) << row;
    EXPECT_GT(row.at("cpu_s_per_1000").get<double>(), 0) << "the receivers' CPU counts: " << row;
  }
  EXPECT_EQ(rows, 9u) << r.out;  // 200 B: 5 rows; 20 KB (no ceiling): 4
}

TEST_F(CliTest, BenchEndsWithTheErrorWhenTheServerGoesAway) {
  // The server stops during the raw baseline (4 s, first), then, in a second
  // run, during syncbus's: either way the bench says what failed and exits
  // 1, neither aborting (an exception escaping one of its threads) nor
  // waiting for receivers that will never catch up.
  for (const auto down_after : {1500ms, 5500ms}) {
    testing::DedicatedServer server;
    ASSERT_TRUE(server.started());
    Process bench(command({"bench", "--db", server.url(), "--seconds", "4", "--sizes", "200",
                           "--threads", "4", "--blocking", "none", "--rate", "0"}));
    bench.read_for(down_after);
    server.down("immediate");
    const auto stopped = std::chrono::steady_clock::now();
    bench.read_for(45s);
    ASSERT_TRUE(bench.ended_within(5s)) << "still running 50 s after the server stopped:\n"
                                        << bench.out() << bench.err();
    EXPECT_EQ(bench.wait(), 1) << bench.out() << bench.err();
    EXPECT_LT(std::chrono::steady_clock::now() - stopped, 30s) << bench.err();
    EXPECT_FALSE(contains(bench.err(), "terminate called")) << bench.err();
    EXPECT_TRUE(contains(bench.err(), "syncbus_bench: ")) << bench.err();
  }
}

// tail creates nothing, yet on a database no bus has used (no spill table
// yet) it starts, says so, and reads spilled messages once a bus has made
// the table. (A tail that refused to start there failed the README's own
// commands, which start a tail first.)
TEST_F(CliTest, TailStartsBeforeTheSpillTableExistsAndReadsItOnceMade) {
  const auto channel = unique_channel("cli_tail_no_table");
  const auto table = "tail_later_" + std::to_string(::getpid());
  Process tail(command({"tail", "--db", url(), "--channel", channel, "--table", table}));
  tail.read_for(10s, [&] { return contains(tail.err(), "listening on channel"); });
  ASSERT_TRUE(contains(tail.err(), "listening on channel")) << tail.err();
  EXPECT_TRUE(contains(tail.err(), "does not exist yet")) << tail.err();

  auto o = options(channel);
  o.spill_table = table;
  PostgresClusterBus bus(o);  // makes the table
  bus.publish(nlohmann::json(std::string(9000, 't')));
  tail.read_for(10s, [&] { return !tail.stdout_lines().empty(); });
  ASSERT_EQ(tail.stdout_lines().size(), 1u) << tail.out() << tail.err();
  EXPECT_EQ(nlohmann::json::parse(tail.stdout_lines()[0])["spilled"], true);
  tail.signal(SIGINT);
  tail.read_for(5s);
  EXPECT_EQ(tail.wait(), 0);
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec("DROP TABLE public." + admin.quote_name(table));
}

TEST_F(CliTest, TailRawShowsTheEnvelopesAsSent) {
  const auto channel = unique_channel("cli_raw");
  Process tail(command({"tail", "--raw", "--db", url(), "--channel", channel}));
  tail.read_for(10s, [&] { return contains(tail.err(), "listening on channel"); });
  raw_notify(channel, R"({"v":1,"origin":"hand-made","seq":4,"body":"x"})");
  raw_notify(channel, "not an envelope at all");
  tail.read_for(10s, [&] { return tail.stdout_lines().size() >= 2; });
  tail.signal(SIGTERM);
  tail.read_for(5s);
  EXPECT_EQ(tail.wait(), 0);
  EXPECT_EQ(tail.stdout_lines(),
            (std::vector<std::string>{R"({"v":1,"origin":"hand-made","seq":4,"body":"x"})",
                                      "not an envelope at all"}));
}

TEST_F(CliTest, PublishRefusesABodyThatIsNotJsonAndSendsNothing) {
  const auto channel = unique_channel("cli_bad_body");
  PostgresClusterBus receiver(options(channel));
  testing::Collector seen;
  auto s = receiver.subscribe(seen.handler());
  const auto bad =
      run({"publish", "--db", url(), "--channel", channel, "--lines"}, "{\"ok\":1}\n{not json\n");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(contains(bad.err, "line 2 is not valid JSON")) << bad.err;
  EXPECT_FALSE(seen.wait_for_count(1, 300ms)) << "nothing is sent when any line is bad";
}

// Found from outside: publish sent 12345678901234567890123 as
// 1.2345678901234568e+22, and {"a":1,"a":2} as {"a":2}, exit 0. The body
// sent is the body given, or nothing is sent.
TEST_F(CliTest, PublishRefusesABodyItWouldSendChanged) {
  for (const auto* body : {R"({"n":12345678901234567890123})", R"({"n":-9223372036854775809})",
                           R"({"a":1,"a":2})", R"([{"x":{"k":1,"k":1}}])"}) {
    const auto outcome =
        run({"publish", "--db", url(), "--channel", unique_channel("cli_fidelity"), body});
    EXPECT_EQ(outcome.exit_code, 2) << body << ": " << outcome.err;
    EXPECT_TRUE(contains(outcome.err, "does not fit in 64 bits") ||
                contains(outcome.err, "is given twice"))
        << outcome.err;
  }
  const auto fine = run({"publish", "--db", url(), "--channel", unique_channel("cli_fidelity"),
                         R"({"n":18446744073709551615,"m":-9223372036854775808,"f":1.5e300,)"
                         R"("a":{"k":1},"b":{"k":2}})"});
  EXPECT_EQ(fine.exit_code, 0) << fine.err;
}

TEST_F(CliTest, VacuumPrintsTheCountOfRowsItRemoved) {
  const auto channel = unique_channel("cli_vacuum");
  const auto publish =
      run({"publish", "--db", url(), "--channel", channel, "--spill", "always", "--lines"},
          "1\n2\n3\n");
  ASSERT_EQ(publish.exit_code, 0) << publish.err;
  pqxx::connection admin(url());
  const auto rows = [&] {
    return pqxx::nontransaction(admin)
        .exec_params1("SELECT count(*) FROM public.sync_cluster_spill WHERE channel = $1",
                      channel)[0]
        .as<int>();
  };
  ASSERT_EQ(rows(), 3);
  const auto young = run({"vacuum", "--db", url(), "--channel", channel, "--older-than", "1h"});
  EXPECT_EQ(young.exit_code, 0) << young.err;
  EXPECT_EQ(young.out, "0\n");
  EXPECT_EQ(rows(), 3);
  const auto all = run({"vacuum", "--db", url(), "--channel", channel, "--older-than", "0s"});
  EXPECT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(all.out, "3\n");
  EXPECT_EQ(rows(), 0);
}

// A backlog goes in batches, each committed and each under --timeout: a
// short --timeout no longer means nothing deleted.
TEST_F(CliTest, VacuumDeletesABacklogInBatchesEachUnderTheTimeout) {
  const auto channel = unique_channel("cli_vacuum_batches");
  pqxx::connection admin(url());
  pqxx::nontransaction(admin).exec_params(
      "INSERT INTO public.sync_cluster_spill (channel, origin, sequence, body, created_at) "
      "SELECT $1, 'backlog', n, '1', now() - interval '2 hours' "
      "FROM generate_series(1, 25000) n",
      channel);
  const auto vacuum =
      run({"vacuum", "--db", url(), "--channel", channel, "--older-than", "1h", "--timeout", "2s"});
  EXPECT_EQ(vacuum.exit_code, 0) << vacuum.err;
  EXPECT_EQ(vacuum.out, "25000\n");
}

// An operator's command never hangs behind someone else's lock: past
// --timeout the server cancels the statement and the command says so.
TEST_F(CliTest, AStatementStuckBehindALockEndsAtTimeout) {
  const auto channel = unique_channel("cli_timeout");
  const auto table = "cli_timeout_spill_" + std::to_string(::getpid());
  {
    auto o = options(channel);
    o.spill_table = table;
    PostgresClusterBus owner(o);  // creates the table
  }
  pqxx::connection admin(url());
  const auto quoted = "public." + admin.quote_name(table);
  {
    pqxx::work hold(admin);
    hold.exec("LOCK TABLE " + quoted + " IN ACCESS EXCLUSIVE MODE");
    const auto start = std::chrono::steady_clock::now();
    const auto out = run({"vacuum", "--db", url(), "--channel", channel, "--table", table,
                          "--older-than", "0s", "--timeout", "500ms"});
    EXPECT_LT(std::chrono::steady_clock::now() - start, 15s);
    EXPECT_EQ(out.exit_code, 1) << out.out << out.err;
    EXPECT_TRUE(contains(out.err, "statement timeout")) << out.err;
    EXPECT_TRUE(contains(out.err, "past --timeout")) << out.err;
    hold.abort();
  }
  const auto bad = run({"status", "--db", url(), "--timeout", "soon"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(contains(bad.err, "--timeout \"soon\" is not a duration")) << bad.err;
  pqxx::nontransaction(admin).exec("DROP TABLE " + quoted);
}

TEST_F(CliTest, StatusListsTheChannelsListenersAndFailsOnAWrongChannel) {
  const auto channel = unique_channel("cli_status");
  auto o = options(channel, "status-node");
  o.spill = SpillMode::always;
  PostgresClusterBus bus(o);
  bus.publish(nlohmann::json("one row"));
  // Found at once, busy or idle: every statement of its listening session
  // names the channel.
  const auto json = run({"status", "--db", url(), "--channel", channel, "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.out << json.err;
  const auto report = nlohmann::json::parse(json.out);
  EXPECT_EQ(report["channel"], channel);
  ASSERT_EQ(report["listeners"].size(), 1u) << json.out;
  EXPECT_EQ(report["listeners"][0]["application_name"], "syncbus:" + bus.instance_id() + ":listen");
  EXPECT_EQ(report["spill_table"]["rows_on_channel"], 1);
  EXPECT_TRUE(report["problems"].empty());

  const auto text = run({"status", "--db", url(), "--channel", channel});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_TRUE(contains(text.out, bus.instance_id())) << text.out;

  // The same, for a scraper.
  const auto metrics = run({"status", "--db", url(), "--channel", channel, "--prometheus"});
  EXPECT_EQ(metrics.exit_code, 0) << metrics.err;
  const auto labels = "{channel=\"" + channel + "\"";
  EXPECT_TRUE(contains(metrics.out, "syncbus_status_up" + labels + "} 1\n")) << metrics.out;
  EXPECT_TRUE(contains(metrics.out, "syncbus_channel_listeners" + labels + "} 1\n")) << metrics.out;
  EXPECT_TRUE(contains(
      metrics.out,
      "syncbus_spill_rows" + labels + ",table=\"\\\"public\\\".\\\"sync_cluster_spill\\\"\"} 1\n"))
      << metrics.out;
  EXPECT_TRUE(contains(metrics.out, "# TYPE syncbus_spill_oldest_row_age_seconds gauge\n"))
      << metrics.out;

  const auto wrong = run({"status", "--db", url(), "--channel", channel + "_typo"});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_TRUE(contains(wrong.out, "nothing listens on channel \"" + channel + "_typo\""))
      << wrong.out;
}

// A health check that cries wolf is worse than none: status found a
// listener only while its last statement was exactly its LISTEN, so a tail
// busy reading spilled rows (or one that pinged with SELECT 1) was "nothing
// listens". Every statement of a syncbus listener now names its channel.
TEST_F(CliTest, StatusFindsATailBusyOrIdleAndAnswersInJsonWhenTheServerIsDown) {
  const auto channel = unique_channel("cli_status_busy");
  const auto name = "status-tail-" + std::to_string(::getpid());
  Process tail(command({"tail", "--db", url(), "--channel", channel, "--name", name}));
  tail.read_for(10s, [&] { return contains(tail.err(), "listening on channel"); });
  ASSERT_TRUE(contains(tail.err(), "listening on channel")) << tail.err();

  const auto tail_listed = [&](const Outcome& status) {
    if (status.exit_code != 0) return false;
    const auto report = nlohmann::json::parse(status.out);
    for (const auto& l : report["listeners"]) {
      const auto app = l["application_name"].get<std::string>();
      if (app.rfind("syncbus:" + name + ".", 0) == 0) return true;
    }
    return false;
  };
  {
    // Keeps the tail busy reading rows: every message through the table,
    // a hundred a second.
    auto o = durable_options(channel, "status-load");
    PostgresClusterBus publisher(o);
    std::atomic<bool> publishing{true};
    std::thread load([&] {
      for (int i = 0; publishing; ++i) {
        publisher.publish({{"i", i}, {"pad", std::string(2000, 'p')}});
        std::this_thread::sleep_for(10ms);
      }
    });
    for (int i = 0; i < 8; ++i) {
      const auto status = run({"status", "--db", url(), "--channel", channel, "--json"});
      EXPECT_TRUE(tail_listed(status)) << "while busy, try " << i << ":\n"
                                       << status.out << status.err;
      tail.read_for(200ms);  // keeps the tail's stdout flowing
    }
    publishing = false;
    load.join();
  }
  tail.read_for(2500ms);  // idle past a ping
  const auto idle = run({"status", "--db", url(), "--channel", channel, "--json"});
  EXPECT_TRUE(tail_listed(idle)) << "idle:\n" << idle.out << idle.err;
  tail.signal(SIGINT);
  tail.read_for(5s);
  EXPECT_EQ(tail.wait(), 0);

  const auto down = run({"status", "--db", "host=127.0.0.1 port=1", "--json"});
  EXPECT_EQ(down.exit_code, 1);
  const auto report = nlohmann::json::parse(down.out);  // JSON on stdout all the same
  EXPECT_TRUE(contains(report["error"].get<std::string>(), "could not connect")) << down.out;
  EXPECT_EQ(report["problems"].size(), 1u);
  const auto scraped = run({"status", "--db", "host=127.0.0.1 port=1", "--prometheus"});
  EXPECT_EQ(scraped.exit_code, 1);
  EXPECT_TRUE(contains(scraped.out, "syncbus_status_up{channel=\"absolutejs_sync_cluster\"} 0\n"))
      << scraped.out;
}

// Found from outside: psql's `LISTEN "ch";` (a semicolon, or an unquoted
// name) was "nothing listens"; a LISTEN inside an open transaction, which
// has not taken effect, was a listener; and a role that may not see other
// roles' statements was told to check the channel's name.
TEST_F(CliTest, StatusReadsAListenAsTheServerDoesAndSaysWhenItCannotSee) {
  const auto channel = unique_channel("cli_status_psql");
  pqxx::connection by_hand(url());
  pqxx::nontransaction(by_hand).exec("LISTEN " + by_hand.quote_name(channel) + ";");
  const auto seen = run({"status", "--db", url(), "--channel", channel, "--json"});
  EXPECT_EQ(seen.exit_code, 0) << seen.out << seen.err;

  const auto unquoted = unique_channel("cli_status_lower");  // lower case already
  pqxx::connection folded(url());
  pqxx::nontransaction(folded).exec("listen " + unquoted);
  EXPECT_EQ(run({"status", "--db", url(), "--channel", unquoted}).exit_code, 0);

  const auto pending = unique_channel("cli_status_pending");
  pqxx::connection in_transaction(url());
  pqxx::work open(in_transaction);
  open.exec("LISTEN " + in_transaction.quote_name(pending));
  const auto not_yet = run({"status", "--db", url(), "--channel", pending});
  EXPECT_EQ(not_yet.exit_code, 1) << "a LISTEN not committed listens to nothing\n" << not_yet.out;
  EXPECT_TRUE(contains(not_yet.out, "nothing listens")) << not_yet.out;
  open.abort();

  // A bus of another role, which this role may not see the statements of.
  PostgresClusterBus bus(options(channel, "status-hidden"));
  pqxx::connection admin(url());
  const auto role = "syncbus_t_status_blind_" + std::to_string(::getpid());
  pqxx::nontransaction(admin).exec("CREATE ROLE " + role + " LOGIN");
  const auto as_role = detail::with_connection_options(url(), {{"user", role}}, {});
  const auto blind = run({"status", "--db", as_role, "--channel", channel});
  EXPECT_EQ(blind.exit_code, 1);
  EXPECT_TRUE(contains(blind.out, "cannot tell whether anything listens")) << blind.out;
  EXPECT_FALSE(contains(blind.out, "nothing listens")) << blind.out;
  pqxx::nontransaction(admin).exec("DROP ROLE " + role);
}

TEST_F(CliTest, DoctorPassesAGoodSetupAndNamesAMissingPrivilege) {
  const auto good = run({"doctor", "--db", url(), "--jobs", "listen,publish,vacuum"});
  EXPECT_EQ(good.exit_code, 0) << good.out << good.err;
  EXPECT_TRUE(contains(good.out, "LISTEN works")) << good.out;
  EXPECT_TRUE(contains(good.out, "no problem found")) << good.out;

  // A role that may read the table but not write it.
  pqxx::connection admin(url());
  const auto tag = std::to_string(::getpid());
  const auto schema = "syncbus_t_doctor_" + tag;
  const auto role = "syncbus_t_doctor_role_" + tag;
  {
    PostgresBusOptions o = options(unique_channel("doctor_migration"));
    o.spill_schema = schema;
    pqxx::nontransaction(admin).exec("CREATE SCHEMA " + schema);
    PostgresClusterBus owner(o);  // creates the table, as a migration would
  }
  pqxx::nontransaction(admin).exec("CREATE ROLE " + role + " LOGIN; GRANT USAGE ON SCHEMA " +
                                   schema + " TO " + role + "; GRANT SELECT ON " + schema +
                                   ".sync_cluster_spill TO " + role);
  const auto as_role = detail::with_connection_options(url(), {{"user", role}}, {});
  const auto narrow = run({"doctor", "--db", as_role, "--schema", schema});
  EXPECT_EQ(narrow.exit_code, 1) << narrow.out;
  EXPECT_TRUE(
      contains(narrow.out, "lacks INSERT on TABLE \"" + schema + "\".\"sync_cluster_spill\""))
      << narrow.out;
  EXPECT_TRUE(contains(narrow.out, "GRANT INSERT ON TABLE")) << narrow.out;
  EXPECT_TRUE(contains(narrow.out, "problem(s) found")) << narrow.out;
  // Listening alone is all this role is for: then nothing is missing (a
  // durable listener without SELECT on the removal log gives no positions:
  // said, not failed).
  const auto listening = run({"doctor", "--db", as_role, "--schema", schema, "--jobs", "listen"});
  EXPECT_EQ(listening.exit_code, 0) << listening.out;
  EXPECT_TRUE(contains(listening.out,
                       "lacks SELECT on TABLE \"" + schema + "\".\"sync_cluster_spill_removed\""))
      << listening.out;
  // The vacuum job notes what it deletes in the removal log.
  pqxx::nontransaction(admin).exec("GRANT DELETE ON " + schema + ".sync_cluster_spill TO " + role);
  const auto vacuuming = run({"doctor", "--db", as_role, "--schema", schema, "--jobs", "vacuum"});
  EXPECT_EQ(vacuuming.exit_code, 1) << vacuuming.out;
  EXPECT_TRUE(contains(vacuuming.out,
                       "GRANT INSERT ON TABLE \"" + schema + "\".\"sync_cluster_spill_removed\""))
      << vacuuming.out;
  pqxx::nontransaction(admin).exec("GRANT SELECT, INSERT, UPDATE ON " + schema +
                                   ".sync_cluster_spill_removed TO " + role);
  EXPECT_EQ(run({"doctor", "--db", as_role, "--schema", schema, "--jobs", "vacuum"}).exit_code, 0);
  pqxx::nontransaction(admin).exec("DROP SCHEMA " + schema + " CASCADE; DROP OWNED BY " + role +
                                   "; DROP ROLE " + role);
}

// doctor and publish agree on what publishing needs: a role that may only
// INSERT into the spill table passes `doctor --jobs publish`, and publishes,
// inline and spilled.
TEST_F(CliTest, ARoleThatMayOnlyInsertPassesDoctorForPublishingAndPublishes) {
  pqxx::connection admin(url());
  const auto tag = std::to_string(::getpid());
  const auto schema = "syncbus_t_insert_only_" + tag;
  const auto role = "syncbus_t_insert_only_role_" + tag;
  const auto channel = unique_channel("cli_insert_only");
  {
    PostgresBusOptions o = options(channel);
    o.spill_schema = schema;
    pqxx::nontransaction(admin).exec("CREATE SCHEMA " + schema);
    PostgresClusterBus owner(o);  // creates the table, as a migration would
  }
  pqxx::nontransaction(admin).exec("CREATE ROLE " + role + " LOGIN; GRANT USAGE ON SCHEMA " +
                                   schema + " TO " + role + "; GRANT INSERT ON " + schema +
                                   ".sync_cluster_spill TO " + role);
  const auto as_role = detail::with_connection_options(url(), {{"user", role}}, {});
  const auto doctor = run({"doctor", "--db", as_role, "--schema", schema, "--jobs", "publish"});
  EXPECT_EQ(doctor.exit_code, 0) << doctor.out << doctor.err;

  auto o = options(channel);
  o.spill_schema = schema;
  PostgresClusterBus receiver(o);
  testing::Collector seen;
  auto s = receiver.subscribe(seen.handler());
  const std::string big(9000, 'i');
  const auto published =
      run({"publish", "--db", as_role, "--schema", schema, "--channel", channel, "--lines"},
          "{\"n\":1}\n\"" + big + "\"\n");
  EXPECT_EQ(published.exit_code, 0) << published.err;
  EXPECT_TRUE(seen.wait_for_count(2, 10s));
  const auto got = seen.messages();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].body, nlohmann::json({{"n", 1}}));
  EXPECT_EQ(got[1].body, big) << "spilled through a table the role may not read";
  pqxx::nontransaction(admin).exec("DROP SCHEMA " + schema + " CASCADE; DROP OWNED BY " + role +
                                   "; DROP ROLE " + role);
}

// Found from outside: doctor passed a role whose sessions are read-only
// (default_transaction_read_only = on), and publishing and vacuum then
// failed. doctor says so, a bus that writes the table refuses to start with
// the fix, and one that writes nothing (spill never) still works.
TEST_F(CliTest, ReadOnlySessionsAreFoundByDoctorAndRefusedByABusThatWrites) {
  testing::RoleThatCanBeKeptOut role(url(), "read_only_" + std::to_string(::getpid()));
  role.set("default_transaction_read_only", "on");
  const auto as_role = role.as_role(options("unused")).conninfo;
  const auto doctor = run({"doctor", "--db", as_role, "--jobs", "publish"});
  EXPECT_EQ(doctor.exit_code, 1) << doctor.out;
  EXPECT_TRUE(contains(doctor.out, "are read-only")) << doctor.out;
  EXPECT_TRUE(contains(doctor.out, "SET default_transaction_read_only = off")) << doctor.out;
  EXPECT_EQ(run({"doctor", "--db", as_role, "--jobs", "listen"}).exit_code, 0)
      << "listening writes nothing";

  const auto channel = unique_channel("cli_read_only");
  try {
    PostgresClusterBus writer(role.as_role(options(channel)));
    ADD_FAILURE() << "a bus that writes the spill table started on read-only sessions";
  } catch (const configuration_error& e) {
    EXPECT_TRUE(contains(e.what(), "default_transaction_read_only = off")) << e.what();
  }
  auto o = role.as_role(options(channel));
  o.spill = SpillMode::never;
  PostgresClusterBus inline_only(o);
  inline_only.publish(nlohmann::json("NOTIFY works on read-only sessions"));
}

TEST_F(CliTest, DoctorFailsOnAnUnreachableServerWithoutShowingThePassword) {
  const auto out = run({"doctor", "--db", "host=127.0.0.1 port=1 password=hidden-pw-77"});
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_TRUE(contains(out.out, "could not connect")) << out.out;
  EXPECT_FALSE(contains(out.out + out.err, "hidden-pw-77"));
}

}  // namespace
}  // namespace syncbus
