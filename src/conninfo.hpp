#pragma once
// Connection strings: the user's (a libpq URI or key=value string) with the
// options the bus needs added, parsed by libpq itself.

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace syncbus::detail {

using ConnectionOptions = std::vector<std::pair<std::string, std::string>>;

/// Rewrites `conninfo` as key='value' pairs, with `overrides` replacing what
/// the user set and `defaults` added where the user set nothing. Throws
/// configuration_error, without echoing the string (it may hold a password),
/// when libpq cannot parse it.
std::string with_connection_options(const std::string& conninfo, const ConnectionOptions& overrides,
                                    const ConnectionOptions& defaults);

/// `message` with anything in it that could be `conninfo`'s password replaced
/// by asterisks: libpq quotes parts of a connection string in its errors.
std::string redacted(std::string message, const std::string& conninfo);

/// The value `conninfo` gives `key` ("" when it gives none). Throws
/// configuration_error like with_connection_options().
std::string connection_option(const std::string& conninfo, const std::string& key);

}  // namespace syncbus::detail
