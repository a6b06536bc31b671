// syncbus publish: publishes JSON messages through a PostgresClusterBus, as
// an engine would (same envelope, same spill table, same signature).
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <nlohmann/json.hpp>

#include <future>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "connection.hpp"

namespace syncbus::cli {
namespace {

constexpr const char* usage = R"(usage: syncbus publish [options] [BODY]

Publishes BODY, a JSON value, to every bus on the channel. Without BODY the
whole of stdin is one message; with --lines each line of stdin is one (empty
lines are skipped). Exit 0 once every message is committed; 1 if any was not
(each failure is named on stderr); 2 for a body that is not JSON.
Strings are JSON too: syncbus publish '"hello"'.

options:
)";

constexpr const char* usage_tail = R"(  --lines              one message per line of stdin
  --spill MODE         overflow (default), always or never
  --name NAME          the publishing bus's name (default: syncbus-cli)
  --verbose            print the bus's log, and how many messages were published,
                       on stderr
  --help
)";

// What nlohmann::json would change without a word, found as it parses: an
// integer beyond 64 bits (it becomes a rounded double) and a key given twice
// in one object (the last one wins). The body sent must be the body given.
class FidelityCheck final : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::string problem;  // "" when there is none

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t& raw) override {
    if (raw.find_first_of(".eE") == std::string::npos) {
      problem = "the integer " + raw +
                " does not fit in 64 bits, and would be sent rounded: send it as a string";
      return false;
    }
    return true;
  }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    return true;
  }
  bool key(string_t& name) override {
    if (!keys_.back().insert(name).second) {
      problem = "the key \"" + name +
                "\" is given twice in one object, and only the last "
                "would be sent";
      return false;
    }
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

 private:
  std::vector<std::set<std::string>> keys_;
};

nlohmann::json parse_json(const std::string& text, const std::string& what) {
  auto value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    throw usage_error(what +
                      " is not valid JSON (a string must be quoted: '\"hello\"'), or "
                      "holds a number beyond a double's range");
  }
  FidelityCheck check;
  nlohmann::json::sax_parse(text, &check);
  if (!check.problem.empty()) throw usage_error(what + ": " + check.problem);
  return value;
}

SpillMode spill_mode(const std::string& text) {
  if (text == "overflow") return SpillMode::overflow;
  if (text == "always") return SpillMode::always;
  if (text == "never") return SpillMode::never;
  throw usage_error("--spill \"" + text + "\": use overflow, always or never");
}

}  // namespace

int run_publish(const Arguments& args) {
  auto valued = connection_options();
  valued.insert(valued.end(), {"spill", "name"});
  const CommandLine line(args, valued, {"lines", "verbose", "help"});
  if (line.has("help")) {
    std::cout << usage << connection_help << usage_tail;
    return exit_ok;
  }
  const auto where = connection_from(line);
  check_identifiers(where);  // named by their flags, not by the bus's options
  if (line.positional().size() > 1) {
    throw usage_error("give one BODY (quote it), or none to read stdin");
  }
  if (line.has("lines") && !line.positional().empty()) {
    throw usage_error("--lines reads stdin: give no BODY with it");
  }

  // Every body is checked before anything is sent.
  std::vector<nlohmann::json> bodies;
  if (!line.positional().empty()) {
    bodies.push_back(parse_json(line.positional()[0], "BODY"));
  } else if (line.has("lines")) {
    std::string text;
    for (std::size_t number = 1; std::getline(std::cin, text); ++number) {
      if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
      bodies.push_back(parse_json(text, "line " + std::to_string(number)));
    }
  } else {
    std::ostringstream all;
    all << std::cin.rdbuf();
    bodies.push_back(parse_json(all.str(), "stdin"));
  }

  auto options = bus_options(where);
  options.spill = spill_mode(line.value("spill").value_or("overflow"));
  options.instance_id = line.value("name").value_or("syncbus-cli");
  // What the bus has to say goes through its log hook, to stderr.
  if (line.has("verbose")) {
    options.log = [](LogLevel level, const std::string& message) {
      std::cerr << "syncbus publish: [" << to_string(level) << "] "
                << in_command_line_terms(message) << '\n';
    };
  }
  if (line.has("timeout")) {
    if (where.statement_timeout.count() == 0) {
      throw usage_error(
          "--timeout 0 (no limit) is not for publish, which must end: give a duration");
    }
    options.publish_timeout = options.query_timeout = where.statement_timeout;
  }
  // Publish-only: it needs no listening session, so a role that may only
  // INSERT (doctor --jobs publish) can publish.
  options.listen = false;
  // A short-lived publisher: no timers.
  options.heartbeat_interval = std::chrono::milliseconds(0);
  options.queue_usage_interval = std::chrono::milliseconds(0);
  check_bus_options(options);
  // Declared before the bus, so that they outlive it: a failed publish's
  // exception is shared with the bus's sending thread, and is best let go
  // of here last, after close() joined that thread (see
  // bench/syncbus_runs.cpp, FirstError).
  std::vector<std::future<void>> outcomes;
  PostgresClusterBus bus(options);

  // Through the same pipeline an engine uses: in order, several to a
  // transaction when there are many.
  outcomes.reserve(bodies.size());
  for (const auto& body : bodies) outcomes.push_back(bus.publish_async(body));
  std::size_t failed = 0;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    try {
      outcomes[i].get();
    } catch (const std::exception& e) {
      ++failed;
      std::cerr << "syncbus publish: message " << i + 1
                << " was not published: " << in_command_line_terms(e.what()) << '\n';
    }
  }
  if (line.has("verbose") || failed > 0) {
    std::cerr << "syncbus publish: " << outcomes.size() - failed << " of " << outcomes.size()
              << " message(s) published on channel \"" << where.channel << "\" as "
              << bus.instance_id() << '\n';
  }
  return failed == 0 ? exit_ok : exit_problem;
}

}  // namespace syncbus::cli
