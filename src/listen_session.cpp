#include "listen_session.hpp"

#include "spill_store.hpp"

#include <fmt/format.h>
#include <pqxx/nontransaction>

#include <algorithm>

namespace syncbus::detail {

void configure_reading_session(pqxx::connection_base& session,
                               std::chrono::milliseconds query_timeout) {
  const auto ms = query_timeout.count();
  const auto statement_ms = std::max<long long>(1, ms - std::min<long long>(1000, ms / 10));
  const auto lock_ms = std::max<long long>(1, ms / 2);
  configure_session(session, std::chrono::milliseconds(statement_ms),
                    std::chrono::milliseconds(lock_ms));
  // See SpillStore::read_by_key_only for enable_seqscan.
  SpillStore::read_by_key_only(session);
}

}  // namespace syncbus::detail
