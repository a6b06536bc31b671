#include "conninfo.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <libpq-fe.h>

#include <map>
#include <memory>

namespace syncbus::detail {
namespace {

// libpq's quoting for a value in a key=value connection string.
std::string quoted(const std::string& value) {
  std::string out = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// Every option libpq finds in `conninfo`, by keyword.
std::map<std::string, std::string> parsed_options(const std::string& conninfo) {
  char* raw_error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed(
      PQconninfoParse(conninfo.c_str(), &raw_error), &PQconninfoFree);
  std::unique_ptr<char, decltype(&PQfreemem)> error(raw_error, &PQfreemem);
  if (!parsed) {
    std::string why = error ? error.get() : "out of memory";
    while (!why.empty() && (why.back() == '\n' || why.back() == '.')) why.pop_back();
    throw configuration_error(
        fmt::format("syncbus: PostgresBusOptions::conninfo is not a valid libpq connection "
                    "string or URI ({}); see the libpq documentation, \"Connection Strings\"",
                    why));
  }
  // Ordered, so that what is built from it is stable.
  std::map<std::string, std::string> options;
  for (const PQconninfoOption* option = parsed.get(); option->keyword != nullptr; ++option) {
    if (option->val != nullptr) options[option->keyword] = option->val;
  }
  return options;
}

}  // namespace

std::string with_connection_options(const std::string& conninfo, const ConnectionOptions& overrides,
                                    const ConnectionOptions& defaults) {
  auto options = parsed_options(conninfo);
  for (const auto& [key, value] : defaults) options.try_emplace(key, value);
  for (const auto& [key, value] : overrides) options[key] = value;

  std::string out;
  for (const auto& [key, value] : options) {
    if (!out.empty()) out += ' ';
    out += key + '=' + quoted(value);
  }
  return out;
}

std::string connection_option(const std::string& conninfo, const std::string& key) {
  const auto options = parsed_options(conninfo);
  const auto found = options.find(key);
  return found == options.end() ? std::string() : found->second;
}

}  // namespace syncbus::detail
