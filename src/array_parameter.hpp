#pragma once
// Arrays as statement parameters, in PostgreSQL's binary format: the server
// takes each element's bytes as they are (no escaping here, no parsing
// there), which matters for batches of large message bodies. libpqxx 6.4
// sends a pqxx::binarystring parameter in binary format; the statement names
// the parameter's type ($4::text[], $3::bigint[]).

#include <pqxx/binarystring>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace syncbus::detail {

/// A text[] parameter holding `elements` (valid UTF-8 each), in order.
pqxx::binarystring text_array(const std::vector<std::string_view>& elements);

/// A bigint[] parameter holding `values`, in order.
pqxx::binarystring bigint_array(const std::vector<std::uint64_t>& values);

}  // namespace syncbus::detail
