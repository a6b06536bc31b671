#pragma once
// Start-up checks: everything a bus needs from its server is verified at
// construction, with an error that says what to fix, rather than discovered
// later (at the first oversized message, or never: a standby delivers
// nothing, a transaction pooler silently loses LISTEN).

#include <pqxx/connection_base>

#include <string>
#include <vector>

#include "spill_store.hpp"

namespace syncbus::detail {

/// The oldest PostgreSQL the bus supports (server_version_num): 13, the
/// first with 64-bit transaction ids and snapshots as SQL types (xid8,
/// pg_current_xact_id(), pg_current_snapshot(), pg_visible_in_snapshot()),
/// on which the spill table and catching up stand.
inline constexpr int min_server_version = 130000;

/// What the bus needs to know of a server before using it.
struct ServerFacts {
  int version_num = 0;       // e.g. 150004
  std::string version;       // e.g. "15.4 (Debian 15.4-1)"
  bool in_recovery = false;  // a hot standby
  /// The session's transactions are read-only (default_transaction_read_only,
  /// set for the role, the database or in PGOPTIONS): NOTIFY works, writing
  /// the spill table does not.
  bool read_only = false;
  std::string role;  // current_user, quoted as an identifier
};

/// Reads them over `session` (one round trip).
ServerFacts read_server_facts(pqxx::connection_base& session);

/// Which database of which server this is, for positions
/// (position_channel_key): the server's system identifier (from
/// pg_control_system(), shared by its physical copies, which go on with its
/// transaction ids; "" when the role may not call it) and the database's
/// oid. One or two round trips.
std::string read_database_identity(pqxx::connection_base& session);

/// Throws configuration_error when the server is too old or in recovery.
void check_server(const ServerFacts& facts);

/// What is wrong with read-only sessions for a bus that writes the spill
/// table, and how to fix it ("" when they are not read-only). For the bus's
/// start-up error and `syncbus doctor`.
std::string read_only_problem(const ServerFacts& facts);

/// Throws configuration_error listing every missing privilege and the
/// statements that grant them; returns when nothing is missing.
void check_privileges(const std::vector<SpillStore::MissingPrivilege>& missing);

}  // namespace syncbus::detail
