#include "spill_store.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <pqxx/nontransaction>
#include <pqxx/result>
#include <pqxx/transaction>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <map>

#include "array_parameter.hpp"
#include "identifiers.hpp"
#include "pg_session.hpp"

namespace syncbus::detail {
namespace {

constexpr const char* store_statement = "syncbus_spill_store";
constexpr const char* vacuum_statement = "syncbus_spill_vacuum";
constexpr const char* committed_statement = "syncbus_spill_committed";
constexpr const char* from_statement = "syncbus_spill_from";
constexpr const char* last_statement = "syncbus_spill_last";
constexpr const char* first_statement = "syncbus_spill_first";
constexpr const char* many_statement = "syncbus_spill_many";
constexpr const char* one_statement = "syncbus_spill_one";
constexpr const char* vacuum_noting_statement = "syncbus_spill_vacuum_noting";

}  // namespace

SpillStore::SpillStore(pqxx::connection_base& session, Settings settings)
    : settings_(std::move(settings)) {
  qualified_name_ =
      session.quote_name(settings_.schema) + "." + session.quote_name(settings_.table);
  key_name_ = session.quote_name(derived_identifier(settings_.table, "_message_key"));
  index_name_ = session.quote_name(derived_identifier(settings_.table, "_created_at_idx"));
  xid_index_name_ = session.quote_name(derived_identifier(settings_.table, "_xid_idx"));
  qualified_xid_index_ = session.quote_name(settings_.schema) + "." + xid_index_name_;
  removed_name_ = session.quote_name(settings_.schema) + "." +
                  session.quote_name(derived_identifier(settings_.table, "_removed"));
  removed_key_name_ = session.quote_name(derived_identifier(settings_.table, "_removed_key"));
}

std::string SpillStore::removal_log_sql() const {
  // One row per (channel, origin) that vacuum has deleted rows of: the
  // highest sequence and transaction id deleted. A position that leaves out
  // a deleted row has expired (docs/PROTOCOL.md, "Positions").
  return fmt::format(
      "CREATE TABLE IF NOT EXISTS {0} (\n"
      "  channel  text   NOT NULL,\n"
      "  origin   text   NOT NULL,\n"
      "  sequence bigint NOT NULL,\n"
      "  xid      xid8,\n"
      "  CONSTRAINT {1} PRIMARY KEY (channel, origin)\n"
      ");",
      removed_name_, removed_key_name_);
}

bool SpillStore::has_removal_log(pqxx::connection_base& session) const {
  // As for the table (check_shape): what reads or writes it runs its code
  // as this role, so a log that could carry code is refused.
  const auto row = pqxx::nontransaction(session).exec_params1(
      "SELECT c.relkind::text, c.relrowsecurity, (SELECT count(*) FROM pg_trigger t WHERE "
      "t.tgrelid = c.oid AND NOT t.tgisinternal) + (SELECT count(*) FROM pg_rewrite r WHERE "
      "r.ev_class = c.oid) FROM (SELECT to_regclass($1) AS oid) o LEFT JOIN pg_class c ON c.oid "
      "= o.oid",
      removed_name_);
  if (row[0].is_null()) return false;
  if (row[0].as<std::string>() != "r" || row[1].as<bool>() || row[2].as<long>() > 0) {
    throw configuration_error(fmt::format(
        "syncbus: refusing the removal log {}: it is not a plain table without triggers, rules "
        "and row security, as syncbus makes it. Drop it, and let a bus make it again or run:\n{}",
        removed_name_, removal_log_sql()));
  }
  return true;
}

bool SpillStore::may_read_removal_log(pqxx::connection_base& session) const {
  return pqxx::nontransaction(session)
      .exec_params1("SELECT has_table_privilege($1, 'SELECT')", removed_name_)[0]
      .as<bool>();
}

std::string SpillStore::create_sql(bool lz4) const {
  // No surrogate id: every statement finds rows by their key, and one index
  // (and one sequence, and one grant) fewer makes each INSERT cheaper.
  // `xid` is filled by its default, so a writer that leaves it out (a
  // client following the protocol of syncbus 0.1) is still read exactly;
  // it is nullable only because a table upgraded from 0.1 has rows without.
  // Neither index leads with `channel`: a planner misled by stale
  // statistics could take such an index for the key (spill_store.cpp,
  // prepare()).
  return fmt::format(
      "CREATE TABLE IF NOT EXISTS {0} (\n"
      "  channel    text        NOT NULL,\n"
      "  origin     text        NOT NULL,\n"
      "  sequence   bigint      NOT NULL,\n"
      "  body       text        {3}NOT NULL,\n"
      "  mac        text,\n"
      "  created_at timestamptz NOT NULL DEFAULT now(),\n"
      "  xid        xid8        DEFAULT pg_current_xact_id(),\n"
      "  born       xid8,\n"
      "  sent       bigint,\n"
      "  CONSTRAINT {1} PRIMARY KEY (channel, origin, sequence)\n"
      ");\n"
      "CREATE INDEX IF NOT EXISTS {2} ON {0} (created_at);\n"
      "CREATE INDEX IF NOT EXISTS {4} ON {0} (xid);\n{5}",
      qualified_name_, key_name_, index_name_, lz4 ? "COMPRESSION lz4 " : "", xid_index_name_,
      removal_log_sql());
}

std::string SpillStore::upgrade_sql(bool mac) const {
  // Adding a column without a default, then giving it one, rewrites
  // nothing: rows written before keep a NULL xid (a catch-up never needs
  // them), rows written after get their writer's.
  return fmt::format(
      "{1}ALTER TABLE {0} ADD COLUMN IF NOT EXISTS xid xid8;\n"
      "ALTER TABLE {0} ALTER COLUMN xid SET DEFAULT pg_current_xact_id();\n"
      "ALTER TABLE {0} ADD COLUMN IF NOT EXISTS born xid8;\n"
      "ALTER TABLE {0} ADD COLUMN IF NOT EXISTS sent bigint;\n"
      "CREATE INDEX IF NOT EXISTS {2} ON {0} (xid);\n{3}",
      qualified_name_,
      mac ? fmt::format("ALTER TABLE {} ADD COLUMN IF NOT EXISTS mac text;\n", qualified_name_)
          : "",
      xid_index_name_, removal_log_sql());
}

bool SpillStore::exists(pqxx::connection_base& session) const {
  return pqxx::nontransaction(session)
      .exec_params1("SELECT to_regclass($1) IS NOT NULL", qualified_name_)[0]
      .as<bool>();
}

void SpillStore::ensure_table(pqxx::connection_base& session, bool create) const {
  try {
    pqxx::work txn(session);
    // Checked without a lock first: usually there is nothing to do. When
    // there is, it is done under a lock that makes instances starting
    // together take turns (concurrent CREATE TABLE IF NOT EXISTS can still
    // fail on the catalog's unique index), and checked again under it: the
    // check's snapshot must come after whoever held the lock before
    // committed, or it sees the table's name but not its columns.
    for (bool locked = false;; locked = true) {
      // to_regclass() parses the quoted name: it finds exactly this table,
      // whatever search_path says. LZ4 where the server has it (PostgreSQL
      // 14+, built with lz4): the default, pglz, costs more CPU than
      // everything else a spilled message does on the server.
      const auto found = txn.exec_params1(
          "WITH t AS (SELECT to_regclass($1) AS oid), "
          "columns AS (SELECT attname, atthasdef FROM pg_attribute, t WHERE attrelid = t.oid AND "
          "attnum > 0 AND NOT attisdropped) "
          "SELECT (SELECT oid FROM t) IS NOT NULL, "
          "EXISTS (SELECT 1 FROM columns WHERE attname = 'mac'), "
          "EXISTS (SELECT 1 FROM columns WHERE attname = 'xid' AND atthasdef), "
          "EXISTS (SELECT 1 FROM columns WHERE attname = 'born') AND EXISTS (SELECT 1 FROM "
          "columns WHERE attname = 'sent'), "
          "to_regclass($2) IS NOT NULL, "
          "coalesce((SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = "
          "'default_toast_compression'), false), "
          "coalesce((SELECT pg_has_role(relowner, 'USAGE') FROM pg_class, t WHERE pg_class.oid = "
          "t.oid), false), "
          "to_regclass($3) IS NOT NULL",
          qualified_name_, qualified_xid_index_, removed_name_);
      const bool exists = found[0].as<bool>();
      const bool has_mac = found[1].as<bool>();
      const bool up_to_date = found[2].as<bool>() && found[3].as<bool>() && found[4].as<bool>();
      const bool lz4 = found[5].as<bool>();
      const bool owned = found[6].as<bool>();
      const bool has_log = found[7].as<bool>();
      const bool needs_mac = settings_.with_macs && !has_mac;
      if (exists) check_shape(txn);
      // Without the removal log the table still serves (positions are not
      // given): made here only by a role that could make the table.
      const bool adds_log = !has_log && create && owned;
      if (exists && up_to_date && !needs_mac && !adds_log) {
        txn.commit();
        return;
      }
      if (!locked) {
        txn.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))",
                        "syncbus:create:" + qualified_name_);
        continue;
      }
      if (exists && up_to_date && !needs_mac) {
        txn.exec(removal_log_sql());
        txn.commit();
        return;
      }
      if (exists) {
        const auto sql = upgrade_sql(needs_mac);
        if (!create || !owned) {
          throw configuration_error(fmt::format(
              "syncbus: the spill table {} {}, and {}. Run, as the table's owner (a migration; "
              "docs/OPERATIONS.md shows how to build the index without blocking writers):\n{}",
              qualified_name_,
              up_to_date
                  ? "has no `mac` column, which PostgresBusOptions::secrets needs"
                  : "was made by an older syncbus: it lacks the `xid`, `born` and `sent` columns "
                    "(and their index) that catching up by transaction needs",
              create ? "this role does not own it" : "create_spill_table is false", sql));
        }
        txn.exec(sql);
        txn.commit();
        return;
      }
      if (!create) {
        throw configuration_error(
            fmt::format("syncbus: the spill table {} does not exist and "
                        "PostgresBusOptions::create_spill_table is false. Create it with:\n{}",
                        qualified_name_, create_sql(lz4)));
      }
      // Unlike the table functions, this one takes the name as is, unparsed.
      if (!txn.exec_params1("SELECT has_schema_privilege($1, 'CREATE')", settings_.schema)[0]
               .as<bool>()) {
        throw configuration_error(fmt::format(
            "syncbus: the spill table {0} does not exist, and this role may not create it (no "
            "CREATE on schema {1}). Create it ahead of time with a migration, as a role that "
            "may, and set PostgresBusOptions::create_spill_table = false:\n{2}\n"
            "See docs/OPERATIONS.md for the grants each role needs",
            qualified_name_, session.quote_name(settings_.schema), create_sql(lz4)));
      }
      txn.exec(create_sql(lz4));
      txn.commit();
      return;
    }
  } catch (...) {
    rethrow_as_syncbus_error(fmt::format("creating the spill table {}", qualified_name_));
  }
}

void SpillStore::check_shape(pqxx::transaction_base& txn) const {
  // Every bus writes to and reads from this table as its own role. Whoever
  // made the table could have given it code that would then run as that
  // role: a trigger, a rule, a row-security policy, a column default or a
  // generated column, a check, an expression index, a domain's check, a
  // child table. The table's name may come from configuration that others
  // can write (docs/SECURITY.md): so a table with any of these is refused.
  // Built-in type ids: text 25, bigint 20, timestamptz 1184, xid8 5069.
  const auto shape = txn.exec_params1(
      "SELECT c.relkind::text, c.relrowsecurity, "
      "(SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), "
      "(SELECT count(*) FROM pg_rewrite r WHERE r.ev_class = c.oid), "
      "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid), "
      "(SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid AND (i.indexprs IS NOT NULL OR "
      "i.indpred IS NOT NULL)), "
      "(SELECT count(*) FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype NOT IN "
      "('p', 'u', 'n')), "
      "(SELECT count(*) FROM pg_inherits h WHERE h.inhparent = c.oid OR h.inhrelid = c.oid), "
      "coalesce((SELECT json_agg(json_build_array(a.attname, a.atttypid::oid::bigint, "
      "pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> '', ty.typtype::text) ORDER BY "
      "a.attnum)::text FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid LEFT JOIN "
      "pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attrelid = c.oid "
      "AND a.attnum > 0 AND NOT a.attisdropped), '[]') "
      "FROM pg_class c WHERE c.oid = to_regclass($1)",
      qualified_name_);
  std::vector<std::string> wrong;
  if (shape[0].as<std::string>() != "r") wrong.push_back("it is not a plain table");
  if (shape[1].as<bool>()) wrong.push_back("row-level security is on");
  const std::pair<int, const char*> counted[] = {
      {2, "trigger(s)"},
      {3, "rule(s)"},
      {4, "row-security policy(ies)"},
      {5, "expression or partial index(es)"},
      {6, "check, foreign-key or exclusion constraint(s)"},
      {7, "parent or child table(s)"}};
  for (const auto& [column, what] : counted) {
    const auto n = shape[column].as<long>();
    if (n > 0) wrong.push_back(fmt::format("it has {} {}", n, what));
  }
  struct Expected {
    std::int64_t type;
    const char* default_sql;  // nullptr: none
  };
  const std::map<std::string, Expected> expected{
      {"channel", {25, nullptr}},
      {"origin", {25, nullptr}},
      {"sequence", {20, nullptr}},
      {"body", {25, nullptr}},
      {"mac", {25, nullptr}},
      {"created_at", {1184, "now()"}},
      {"xid", {5069, "pg_current_xact_id()"}},
      {"born", {5069, nullptr}},
      {"sent", {20, nullptr}},
      {"id", {20, "nextval("}}};  // a 0.1 table's bigserial
  for (const auto& column : nlohmann::json::parse(shape[8].c_str())) {
    const auto name = column[0].get<std::string>();
    const auto default_sql = column[2].is_null() ? std::string() : column[2].get<std::string>();
    if (column[3].get<bool>()) wrong.push_back(fmt::format("column {} is generated", name));
    if (column[4].get<std::string>() == "d") {
      wrong.push_back(fmt::format("column {} has a domain type", name));
    }
    const auto known = expected.find(name);
    if (known == expected.end()) {
      if (!default_sql.empty()) wrong.push_back(fmt::format("column {} has a default", name));
      continue;
    }
    if (column[1].get<std::int64_t>() != known->second.type) {
      wrong.push_back(fmt::format("column {} is not of the type syncbus gives it", name));
    }
    const auto* allowed = known->second.default_sql;
    const bool default_ok =
        default_sql.empty() ||
        (allowed != nullptr &&
         (name == "id" ? default_sql.rfind(allowed, 0) == 0 : default_sql == allowed));
    if (!default_ok) {
      wrong.push_back(fmt::format("column {} has a default syncbus did not give it ({})", name,
                                  default_sql.substr(0, 80)));
    }
  }
  if (wrong.empty()) return;
  std::string list;
  for (const auto& w : wrong) list += (list.empty() ? "" : "; ") + w;
  throw configuration_error(fmt::format(
      "syncbus: refusing the spill table {}: {}. Whatever code a table carries runs as the "
      "role of every bus that writes to or reads from it; syncbus uses only a table of the "
      "shape it creates (docs/OPERATIONS.md). Check spill_schema and spill_table, and drop "
      "what syncbus did not make",
      qualified_name_, list));
}

// The sequence a table owns (a serial or identity column), or none: a
// one-row relation for FROM, with the table as $2.
constexpr const char* owned_sequence_sql =
    "(SELECT (SELECT s.oid::regclass::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
    "WHERE d.refobjid = to_regclass($2) AND d.classid = 'pg_class'::regclass AND s.relkind = "
    "'S' LIMIT 1))";

SpillStore::Privileges SpillStore::privileges(pqxx::connection_base& session) const {
  // The names go in as parameters: the table, quoted, since the table
  // functions parse it as SQL (exactly as the statements will); the schema
  // as is, since has_schema_privilege() does not.
  const auto row = pqxx::nontransaction(session).exec_params1(
      "SELECT quote_ident(current_user), has_schema_privilege($1, 'USAGE'), "
      "has_table_privilege($2, 'SELECT'), has_table_privilege($2, 'INSERT'), "
      "has_table_privilege($2, 'DELETE'), coalesce(sequence, ''), "
      "coalesce(has_sequence_privilege(sequence, 'USAGE'), true) FROM " +
          std::string(owned_sequence_sql) + " AS owned(sequence)",
      settings_.schema, qualified_name_);
  return {row[0].as<std::string>(), row[1].as<bool>(),        row[2].as<bool>(), row[3].as<bool>(),
          row[4].as<bool>(),        row[5].as<std::string>(), row[6].as<bool>()};
}

std::vector<SpillStore::MissingPrivilege> SpillStore::missing_privileges(
    pqxx::connection_base& session, bool publishes, bool listens) const {
  const auto has = privileges(session);
  const auto quoted_schema = session.quote_name(settings_.schema);
  std::vector<MissingPrivilege> missing;
  const auto lacks = [&](std::string what, std::string grant) {
    missing.push_back({std::move(what), std::move(grant) + " TO " + has.role + ";"});
  };
  if (!has.schema_usage) {
    lacks("USAGE on schema " + quoted_schema, "GRANT USAGE ON SCHEMA " + quoted_schema);
  }
  if (listens && !has.select) {
    lacks("SELECT on table " + qualified_name_, "GRANT SELECT ON TABLE " + qualified_name_);
  }
  if (publishes && !has.insert) {
    lacks("INSERT on table " + qualified_name_, "GRANT INSERT ON TABLE " + qualified_name_);
  }
  if (publishes && !has.sequence_usage) {
    lacks("USAGE on sequence " + has.sequence, "GRANT USAGE ON SEQUENCE " + has.sequence);
  }
  return missing;
}

void SpillStore::prepare(pqxx::connection_base& session, std::string_view tag) const {
  const auto prepare = [&](const char* name, const std::string& text) {
    session.prepare(name, std::string(tag) + text);
  };
  // The sequences, bodies, MACs and payloads travel as binary arrays
  // (array_parameter.hpp): each body's bytes reach the table as they are,
  // neither escaped here nor parsed there. unnest() in the select list zips
  // the arrays and streams the rows (unnest() in FROM would first gather
  // them in a tuplestore, which goes to disk past work_mem). The INSERT runs
  // whether or not anything reads it; the rows and the NOTIFYs commit
  // together, the NOTIFYs in array order.
  const bool macs = settings_.with_macs;
  prepare(
      store_statement,
      fmt::format("WITH stored AS (INSERT INTO {} (channel, origin, sequence, body, born, sent{}) "
                  "SELECT $1, $2, unnest($3::bigint[]), unnest($4::text[]), $6::text::xid8, "
                  "nullif($7::bigint, 0){}) SELECT pg_notify($1, unnest($5::text[]))",
                  qualified_name_, macs ? ", mac" : "", macs ? ", unnest($8::text[])" : ""));
  // What every read returns: the key, the body unless it is over the cap
  // (then only its size: a hostile row is refused, never loaded), the MAC.
  // The size cap is each statement's last parameter, `$n`.
  const auto columns = [&](int n) {
    return fmt::format(
        "s.origin, s.sequence, CASE WHEN octet_length(s.body) <= ${0}::bigint THEN s.body END, "
        "octet_length(s.body), {1}, s.born::text, s.sent, s.xid::text",
        n, settings_.with_macs ? "s.mac" : "NULL::text");
  };
  // Catching up: the rows committed in a range of transaction ids, visible
  // in a snapshot, keyset-paged in (xid, origin, sequence) order. The range
  // is an index scan on `xid`, bounded on both sides, so a page costs what
  // it covers even when the table holds other channels' rows in that range.
  // No genuine row has a sequence below 1: a planted one is never listed
  // (read as unsigned, its number threw, and the catch-up retried for ever).
  prepare(committed_statement,
          fmt::format("SELECT s.xid::text, s.origin, s.sequence "
                      "FROM {} s WHERE s.xid >= $2::text::xid8 AND s.xid < $5::text::xid8 "
                      "AND s.channel = $1 AND s.sequence > 0 AND (s.xid, s.origin, s.sequence) > "
                      "($2::text::xid8, $3, $4) AND pg_visible_in_snapshot(s.xid, "
                      "$6::pg_snapshot) ORDER BY s.xid, s.origin, s.sequence LIMIT $7",
                      qualified_name_));
  // Reading back: a range of the key.
  prepare(first_statement,
          fmt::format("SELECT s.origin, min(s.sequence) FROM {} s WHERE s.xid >= $2::text::xid8 "
                      "AND s.xid < $3::text::xid8 AND s.channel = $1 AND s.sequence > 0 GROUP BY "
                      "s.origin",
                      qualified_name_));
  prepare(last_statement,
          fmt::format("SELECT s.sequence, s.xid::text FROM {} s WHERE channel = $1 AND origin = "
                      "$2 AND sequence <= $3 AND sequence > 0 ORDER BY sequence DESC LIMIT 1",
                      qualified_name_));
  prepare(from_statement,
          fmt::format("SELECT s.sequence, s.xid::text FROM {} s WHERE channel = "
                      "$1 AND origin = $2 AND sequence >= $3 ORDER BY sequence LIMIT $4",
                      qualified_name_));
  prepare(
      many_statement,
      // One unique-key probe per key, whatever the statistics say.
      // Without the LIMIT the planner flattens the subquery into a
      // join, and for a channel newer than the last ANALYZE (its
      // estimate: 1 row) picks a hash join over all the channel's
      // rows: seen taking 250 ms for 512 keys among 100,000 rows.
      // For the same reason the created_at index does not lead
      // with channel: it was picked instead of the key, scanning.
      //
      // Bodies are loaded, in key order, while they add up to at
      // most $5 bytes (the first always): the others come back
      // with their size only, for a later fetch. So no fetch
      // loads more than about $5 bytes, whatever the rows hold,
      // and each loads at least one row. octet_length() of a
      // stored body reads its header only, not the body.
      fmt::format(
          "SELECT s.origin, s.sequence, CASE WHEN octet_length(s.body) <= "
          "$4::bigint AND (k.n = 1 OR sum(CASE WHEN octet_length(s.body) <= "
          "$4::bigint THEN octet_length(s.body) ELSE 0 END) OVER (ORDER BY "
          "k.n) <= $5::bigint) THEN s.body END, octet_length(s.body), {}, "
          "s.born::text, s.sent, s.xid::text FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY "
          "AS k(origin, sequence, n) CROSS JOIN LATERAL (SELECT * FROM {} WHERE "
          "channel = $1 AND origin = k.origin AND sequence = k.sequence LIMIT "
          "1) s ORDER BY k.n",
          settings_.with_macs ? "s.mac" : "NULL::text", qualified_name_));
  // A lone key, what every fetch is at low load, has a statement of its own.
  // Its generic plan is cached after five runs; the many-key statement's is
  // not, ever (unnest() of a parameter is estimated at 10 rows, so the plan
  // made for the actual array always looks cheaper), and planning it again
  // cost the server about 50 us per fetch, on each receiving session.
  prepare(one_statement, fmt::format("SELECT {} FROM {} s WHERE channel = $1 AND origin = $2 AND "
                                     "sequence = $3",
                                     columns(4), qualified_name_));
  // A batch of rows by their tuple ids: a TID scan, after an index scan on
  // created_at for the candidates (ctid IN (...) would scan the table).
  prepare(vacuum_statement,
          fmt::format("DELETE FROM {0} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {0} WHERE "
                      "channel = $1 AND created_at < $2::timestamptz LIMIT $3))",
                      qualified_name_));
  // The same, noting in the removal log, in the same transaction, the
  // highest sequence and transaction id deleted per origin (rows written
  // before the table had `xid` count for none).
  prepare(vacuum_noting_statement,
          fmt::format("WITH gone AS (DELETE FROM {0} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {0} "
                      "WHERE channel = $1 AND created_at < $2::timestamptz LIMIT $3)) RETURNING "
                      "origin, sequence, xid), noted AS (INSERT INTO {1} AS r (channel, origin, "
                      "sequence, xid) SELECT $1, origin, max(sequence), max(xid) FROM gone GROUP "
                      "BY origin ON CONFLICT (channel, origin) DO UPDATE SET sequence = "
                      "GREATEST(r.sequence, EXCLUDED.sequence), xid = GREATEST(r.xid, "
                      "EXCLUDED.xid)) SELECT count(*) FROM gone",
                      qualified_name_, removed_name_));
}

void SpillStore::read_by_key_only(pqxx::connection_base& session) {
  // Every read finds its rows by key (or a key range), and a table scan is
  // never the right plan at the sizes where it matters. The planner cannot
  // know that: after vacuum() empties the table and autovacuum analyzes it,
  // the statistics say "no rows", and the fetch's generic plan, cached once
  // the first few fetches have run against a still-small table, scans the
  // whole table for every key until the next ANALYZE. Seen in the benchmark
  // as a run six times slower than the others, the server's CPU spent
  // scanning for each message a table that grew by thousands a second.
  pqxx::nontransaction statement(session);
  statement.exec0("SET enable_seqscan = off");
}

void SpillStore::store_batch_and_notify(pqxx::connection_base& session, const std::string& origin,
                                        MessageAuth::RowStamp stamp, const Frames& frames) const {
  pqxx::nontransaction statement(session);
  const auto born_text = std::to_string(stamp.born);
  const auto sent = static_cast<std::int64_t>(stamp.sent_ms);
  const auto views = [](const std::vector<std::string>& texts) {
    return std::vector<std::string_view>(texts.begin(), texts.end());
  };
  const auto sequences = bigint_array(frames.spilled_sequences);
  const auto bodies = text_array(frames.spilled_bodies);
  const auto payloads = text_array(views(frames.payloads));
  if (settings_.with_macs) {
    statement.exec_prepared(store_statement, settings_.channel, origin, sequences, bodies, payloads,
                            born_text, sent, text_array(views(frames.spilled_macs)));
  } else {
    statement.exec_prepared(store_statement, settings_.channel, origin, sequences, bodies, payloads,
                            born_text, sent);
  }
}

std::int64_t SpillStore::cap() const noexcept {
  return static_cast<std::int64_t>(
      std::min<std::size_t>(settings_.max_body_bytes, static_cast<std::size_t>(INT64_MAX)));
}

std::vector<SpillStore::StoredMessage> SpillStore::stored_messages(const pqxx::result& rows) const {
  std::vector<StoredMessage> out;
  out.reserve(rows.size());
  for (pqxx::result::size_type i = 0; i < rows.size(); ++i) {
    const auto row = rows[i];
    StoredMessage message;
    message.origin = row[0].as<std::string>();
    message.sequence = row[1].as<std::uint64_t>();
    if (row[2].is_null()) {
      const auto size = row[3].as<std::uint64_t>();
      if (size > settings_.max_body_bytes) {
        message.too_large = size;
      } else {
        message.deferred = true;
      }
    } else {
      message.body_json = std::string_view(row[2].c_str(), row[2].size());
      message.rows = rows;
    }
    if (!row[4].is_null()) message.mac = row[4].as<std::string>();
    if (!row[5].is_null()) message.born = parse_xid(row[5].c_str());
    // Anyone who may INSERT can write any bigint here: one that is not a
    // positive time is none (a signed row then fails its check, a refusal
    // and a gap; an unsigned one is delivered, left out of the lag). Read
    // as unsigned, a negative one threw, and the row was retried for ever.
    if (!row[6].is_null()) {
      if (const auto sent = row[6].as<std::int64_t>(); sent > 0) {
        message.sent_ms = static_cast<std::uint64_t>(sent);
      }
    }
    // NULL in a row written by syncbus 0.1 (or by a writer that left the
    // column's default out): unknown, which a position copes with.
    if (!row[7].is_null()) message.xid = parse_xid(row[7].c_str());
    out.push_back(std::move(message));
  }
  return out;
}

std::vector<SpillStore::StoredMessage> SpillStore::fetch_many(pqxx::connection_base& session,
                                                              const std::vector<MessageKey>& keys,
                                                              std::size_t budget_bytes) const {
  if (keys.empty()) return {};
  if (keys.size() == 1) {
    pqxx::nontransaction statement(session);
    return stored_messages(
        statement.exec_prepared(one_statement, settings_.channel, keys.front().origin,
                                static_cast<std::int64_t>(keys.front().sequence), cap()));
  }
  std::vector<std::string_view> origins;
  std::vector<std::uint64_t> sequences;
  origins.reserve(keys.size());
  sequences.reserve(keys.size());
  for (const auto& key : keys) {
    origins.push_back(key.origin);
    sequences.push_back(key.sequence);
  }
  pqxx::nontransaction statement(session);
  return stored_messages(statement.exec_prepared(
      many_statement, settings_.channel, text_array(origins), bigint_array(sequences), cap(),
      static_cast<std::int64_t>(std::min<std::size_t>(budget_bytes, INT64_MAX))));
}

std::vector<SpillStore::RowKey> SpillStore::list_committed(pqxx::connection_base& session,
                                                           const RowKey& after,
                                                           std::uint64_t below_xid,
                                                           const PgSnapshot& visible_in,
                                                           int limit) const {
  pqxx::nontransaction statement(session);
  const auto rows =
      statement.exec_prepared(committed_statement, settings_.channel, std::to_string(after.xid),
                              after.origin, static_cast<std::int64_t>(after.sequence),
                              std::to_string(below_xid), visible_in.text(), limit);
  std::vector<RowKey> keys;
  keys.reserve(rows.size());
  for (const auto& row : rows) {
    keys.push_back(
        {parse_xid(row[0].c_str()), row[1].as<std::string>(), row[2].as<std::uint64_t>()});
  }
  return keys;
}

std::vector<SpillStore::RowKey> SpillStore::list_from(pqxx::connection_base& session,
                                                      const std::string& origin,
                                                      std::uint64_t from_sequence,
                                                      int limit) const {
  pqxx::nontransaction statement(session);
  const auto rows = statement.exec_prepared(from_statement, settings_.channel, origin,
                                            static_cast<std::int64_t>(from_sequence), limit);
  std::vector<RowKey> keys;
  keys.reserve(rows.size());
  for (const auto& row : rows) {
    keys.push_back(
        {row[1].is_null() ? 0 : parse_xid(row[1].c_str()), origin, row[0].as<std::uint64_t>()});
  }
  return keys;
}

std::map<std::string, std::uint64_t> SpillStore::first_sequences(pqxx::connection_base& session,
                                                                 std::uint64_t from_xid,
                                                                 std::uint64_t below_xid) const {
  std::map<std::string, std::uint64_t> out;
  for (const auto& row : pqxx::nontransaction(session).exec_prepared(
           first_statement, settings_.channel, std::to_string(from_xid),
           std::to_string(below_xid))) {
    out.emplace(row[0].as<std::string>(), row[1].as<std::uint64_t>());
  }
  return out;
}

std::optional<SpillStore::RowKey> SpillStore::last_at_or_below(pqxx::connection_base& session,
                                                               const std::string& origin,
                                                               std::uint64_t sequence) const {
  pqxx::nontransaction statement(session);
  const auto rows = statement.exec_prepared(last_statement, settings_.channel, origin,
                                            static_cast<std::int64_t>(sequence));
  if (rows.empty()) return std::nullopt;
  return RowKey{rows[0][1].is_null() ? 0 : parse_xid(rows[0][1].c_str()), origin,
                rows[0][0].as<std::uint64_t>()};
}

std::string SpillStore::vacuum_cutoff(pqxx::connection_base& session,
                                      std::chrono::milliseconds older_than) const {
  return pqxx::nontransaction(session)
      .exec_params1("SELECT (now() - $1::bigint * interval '1 millisecond')::text",
                    static_cast<std::int64_t>(older_than.count()))[0]
      .as<std::string>();
}

std::int64_t SpillStore::vacuum_batch(pqxx::connection_base& session, const std::string& cutoff,
                                      std::int64_t limit, bool note_removed) const {
  pqxx::nontransaction statement(session);
  if (note_removed) {
    return statement.exec_prepared1(vacuum_noting_statement, settings_.channel, cutoff, limit)[0]
        .as<std::int64_t>();
  }
  const auto result = statement.exec_prepared(vacuum_statement, settings_.channel, cutoff, limit);
  return static_cast<std::int64_t>(result.affected_rows());
}

std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> SpillStore::removed(
    pqxx::connection_base& session) const {
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> out;
  for (const auto& row : pqxx::nontransaction(session).exec_params(
           fmt::format("SELECT origin, sequence, xid::text FROM {} WHERE channel = $1",
                       removed_name_),
           settings_.channel)) {
    out.emplace(row[0].as<std::string>(),
                std::make_pair(row[1].as<std::uint64_t>(),
                               row[2].is_null() ? std::uint64_t{0} : parse_xid(row[2].c_str())));
  }
  return out;
}

std::optional<SpillStore::Removed> SpillStore::removed_after(
    pqxx::transaction_base& txn, const PgSnapshot& snapshot,
    const std::map<std::string, std::uint64_t>& cursors) const {
  std::vector<std::string_view> origins;
  origins.reserve(cursors.size());
  for (const auto& [origin, sequence] : cursors) origins.push_back(origin);
  // Only the origins a position could have lost rows of: those it has a
  // cursor for, and those whose last deleted row it does not see.
  const auto rows = txn.exec_params(
      fmt::format("SELECT origin, sequence, xid::text FROM {} WHERE channel = $1 AND (origin = "
                  "ANY($2::text[]) OR NOT pg_visible_in_snapshot(xid, $3::pg_snapshot))",
                  removed_name_),
      settings_.channel, text_array(origins), snapshot.text());
  for (const auto& row : rows) {
    Removed removed{row[0].as<std::string>(), row[1].as<std::uint64_t>()};
    const auto cursor = cursors.find(removed.origin);
    if (cursor == cursors.end() || removed.sequence > cursor->second) return removed;
  }
  return std::nullopt;
}

}  // namespace syncbus::detail
