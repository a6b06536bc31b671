#pragma once
// Opening libpqxx connections the way every part of the bus needs them, and
// translating libpqxx exceptions into syncbus ones (none leaks out of src/).

#include <pqxx/connection>
#include <pqxx/errorhandler>

#include <memory>
#include <string>
#include <string_view>

namespace syncbus::detail {

/// Swallows the server's notices: libpqxx's default prints them to stderr,
/// and the library writes nothing to the terminal by itself.
class NoticeSilencer final : public pqxx::errorhandler {
 public:
  using pqxx::errorhandler::errorhandler;
  bool operator()(const char[]) noexcept override { return false; }
};

/// A connection of the bus: a libpqxx connection that keeps quiet.
class Session final : public pqxx::connection {
 public:
  explicit Session(const std::string& conninfo) : pqxx::connection(conninfo) {}

 private:
  NoticeSilencer silencer_{*this};
};

/// Opens a connection with client_encoding UTF8, `application_name`, and a
/// connect_timeout of 5 s unless the conninfo sets one.
/// Throws connection_error (the libpq message, never the conninfo, which may
/// hold a password) or database_error.
std::unique_ptr<Session> open_session(const std::string& conninfo,
                                      const std::string& application_name);

/// Rethrows the exception being handled as a syncbus exception whose message
/// starts with `doing` ("publishing to channel \"x\""). Call it from a catch
/// block only. syncbus exceptions pass through unchanged.
[[noreturn]] void rethrow_as_syncbus_error(std::string_view doing);

/// True when the server's encoding is neither UTF8 nor SQL_ASCII, so bodies
/// must be sent as pure ASCII (\u escapes) to keep their byte sizes exact.
bool needs_ascii_payloads(pqxx::connection& session);

}  // namespace syncbus::detail
