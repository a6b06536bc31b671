#include "conninfo.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <libpq-fe.h>

#include <map>
#include <memory>
#include <string_view>

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

// What of `conninfo` could be a password, found without libpq (which may
// have refused to parse it): the userinfo after ':' in a URI, and whatever
// follows "password=" in a key=value string, up to a space.
std::vector<std::string> password_candidates(const std::string& conninfo) {
  std::vector<std::string> found;
  const auto scheme = conninfo.find("://");
  if (scheme != std::string::npos) {
    const auto authority = scheme + 3;
    const auto at = conninfo.find('@', authority);
    const auto colon = conninfo.find(':', authority);
    if (at != std::string::npos && colon != std::string::npos && colon < at) {
      found.push_back(conninfo.substr(colon + 1, at - colon - 1));
    }
  }
  for (auto at = conninfo.find("password"); at != std::string::npos;
       at = conninfo.find("password", at + 1)) {
    auto value = conninfo.find_first_not_of(" =", at + 8);
    if (value == std::string::npos) break;
    const bool quoted = conninfo[value] == '\'';
    if (quoted) ++value;
    const auto end = conninfo.find_first_of(quoted ? "'" : " &", value);
    found.push_back(conninfo.substr(value, end == std::string::npos ? end : end - value));
  }
  return found;
}

// Every option libpq finds in `conninfo`, by keyword.
std::map<std::string, std::string> parsed_options(const std::string& conninfo) {
  char* raw_error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed(
      PQconninfoParse(conninfo.c_str(), &raw_error), &PQconninfoFree);
  std::unique_ptr<char, decltype(&PQfreemem)> error(raw_error, &PQfreemem);
  if (!parsed) {
    // libpq quotes the token it could not parse: in a URI that may be the
    // password.
    std::string why = redacted(error ? error.get() : "out of memory", conninfo);
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

std::string redacted(std::string message, const std::string& conninfo) {
  std::vector<std::string> secrets = password_candidates(conninfo);
  char* raw_error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> parsed(
      PQconninfoParse(conninfo.c_str(), &raw_error), &PQconninfoFree);
  if (raw_error != nullptr) PQfreemem(raw_error);
  for (const PQconninfoOption* option = parsed.get(); option && option->keyword != nullptr;
       ++option) {
    if (option->val != nullptr && std::string_view(option->keyword) == "password") {
      secrets.emplace_back(option->val);
    }
  }
  for (const auto& secret : secrets) {
    if (secret.empty()) continue;
    for (auto at = message.find(secret); at != std::string::npos;
         at = message.find(secret, at + 8)) {
      message.replace(at, secret.size(), "********");
    }
  }
  return message;
}

std::string connection_option(const std::string& conninfo, const std::string& key) {
  const auto options = parsed_options(conninfo);
  const auto found = options.find(key);
  return found == options.end() ? std::string() : found->second;
}

}  // namespace syncbus::detail
