#pragma once
// The command line of syncbus's programs (the `syncbus` tool and the
// benchmark): options parsed the same way everywhere (`--name value`,
// `--name=value`, flags, positional arguments), checked against what a
// command accepts, and the exit codes they share.

#include <chrono>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace syncbus::cli {

/// Exit codes, the same for every subcommand.
enum ExitCode : int {
  exit_ok = 0,
  /// The command ran and found a problem (a failed check, a failed publish,
  /// an unreachable server): the message says which.
  exit_problem = 1,
  /// The command line itself is wrong: the message says what to change.
  exit_usage = 2,
};

/// A command line error: printed with the subcommand's usage, exit_usage.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The options of one subcommand: `--name value`, `--name=value`, flags,
/// and positional arguments, checked against what the subcommand accepts.
class CommandLine {
 public:
  /// `valued`: options that take a value (may repeat); `flags`: options that
  /// do not. Throws usage_error for anything else.
  CommandLine(const std::vector<std::string>& args, const std::vector<std::string>& valued,
              const std::vector<std::string>& flags);

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  /// The last value given to `name`, if any.
  std::optional<std::string> value(const std::string& name) const;
  std::vector<std::string> values(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

/// `text` as a number for --`option` (no sign for an unsigned type, nothing
/// after it), or a usage_error saying it is not one.
template <typename Number>
Number parse_number(const std::string& option, const std::string& text) {
  std::istringstream in(text);
  Number value{};
  if (!(in >> value) || !in.eof() ||
      (std::is_unsigned_v<Number> && text.find('-') != std::string::npos)) {
    throw usage_error("--" + option + " \"" + text + "\" is not a number");
  }
  return value;
}

/// Parses "500ms", "60s", "5m", "2h", "1d" (a bare number is seconds).
/// Throws usage_error naming `option` when it cannot.
std::chrono::milliseconds parse_duration(const std::string& option, const std::string& text);

/// What every subcommand that talks to PostgreSQL needs.

}  // namespace syncbus::cli
