#pragma once
// The baseline: the same work done with plain libpq, one pg_notify per
// transaction (for bodies that do not fit a payload: one INSERT and a
// pg_notify of the row id, and each listener SELECTs each row), one sender,
// as many listening connections as syncbus has receiving buses
// (Config::receivers).

#include <libpq-fe.h>

#include <fmt/format.h>

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "measures.hpp"

namespace syncbus::bench {

/// A libpq connection, for the baseline (and the benchmark's first probe).
class RawConnection {
 public:
  explicit RawConnection(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      throw std::runtime_error(fmt::format("raw: cannot connect: {}", PQerrorMessage(conn_)));
    }
  }
  ~RawConnection() { PQfinish(conn_); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // Runs one statement with text parameters; returns the first value.
  std::string exec(const char* sql, std::vector<const char*> params = {}) {
    PGresult* result = PQexecParams(conn_, sql, static_cast<int>(params.size()), nullptr,
                                    params.data(), nullptr, nullptr, 0);
    const auto status = PQresultStatus(result);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      const std::string message = PQresultErrorMessage(result);
      PQclear(result);
      throw std::runtime_error("raw: " + message);
    }
    std::string value =
        PQntuples(result) > 0 && PQnfields(result) > 0 ? PQgetvalue(result, 0, 0) : "";
    PQclear(result);
    return value;
  }
  PGconn* get() const { return conn_; }

 private:
  PGconn* conn_;
};

/// One baseline run of `size`-byte messages: at saturation, or at `rate`
/// per second. `postmaster`: the server's process, for its CPU (0: none).
/// `batch` > 1 (sizes that fit a payload, at saturation): the ceiling of
/// hand-written batching, `batch` pg_notify calls per statement, each
/// message stamped when its statement is sent.
Result run_raw(const Config& config, std::size_t size, std::optional<int> rate, int postmaster,
               std::size_t batch = 1);

}  // namespace syncbus::bench
