#include "listen_session.hpp"

#include <fmt/format.h>
#include <pqxx/nontransaction>

#include <algorithm>

namespace syncbus::detail {

void configure_reading_session(pqxx::connection_base& session,
                               std::chrono::milliseconds query_timeout) {
  const auto ms = query_timeout.count();
  const auto statement_ms = std::max<long long>(1, ms - std::min<long long>(1000, ms / 10));
  const auto lock_ms = std::max<long long>(1, ms / 2);
  // See SpillStore::read_by_key_only for enable_seqscan.
  pqxx::nontransaction(session).exec(
      fmt::format("SET enable_seqscan = off; SET statement_timeout = {}; SET lock_timeout = {}",
                  statement_ms, lock_ms));
}

}  // namespace syncbus::detail
