#include "command_line.hpp"

#include <algorithm>

namespace syncbus::cli {

CommandLine::CommandLine(const std::vector<std::string>& args,
                         const std::vector<std::string>& valued,
                         const std::vector<std::string>& flags) {
  const auto known = [](const std::vector<std::string>& names, const std::string& name) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& arg = args[i];
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      positional_.push_back(arg);
      continue;
    }
    auto name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (known(flags, name)) {
      if (inline_value) throw usage_error("--" + name + " takes no value");
      values_[name];
    } else if (known(valued, name)) {
      if (!inline_value && i + 1 >= args.size()) throw usage_error("--" + name + " needs a value");
      values_[name].push_back(inline_value ? *inline_value : args[++i]);
    } else {
      throw usage_error("unknown option --" + name);
    }
  }
}

std::optional<std::string> CommandLine::value(const std::string& name) const {
  const auto found = values_.find(name);
  if (found == values_.end() || found->second.empty()) return std::nullopt;
  return found->second.back();
}

std::vector<std::string> CommandLine::values(const std::string& name) const {
  const auto found = values_.find(name);
  return found == values_.end() ? std::vector<std::string>{} : found->second;
}

std::chrono::milliseconds parse_duration(const std::string& option, const std::string& text) {
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const auto unit = text.substr(used);
  const std::map<std::string, double> millis = {{"ms", 1},    {"s", 1000},    {"", 1000},
                                                {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  const auto factor = millis.find(unit);
  // Past about a century, PostgreSQL's intervals overflow: no age or
  // timeout means that much.
  constexpr double most_ms = 100.0 * 365 * 86400000;
  if (used == 0 || factor == millis.end() || number < 0 || number * factor->second > most_ms) {
    throw usage_error("--" + option + " \"" + text +
                      "\" is not a duration: give a number and a unit, e.g. 500ms, 60s, 5m, 2h "
                      "(at most 100 years)");
  }
  return std::chrono::milliseconds(static_cast<long long>(number * factor->second));
}

}  // namespace syncbus::cli
