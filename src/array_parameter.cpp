#include "array_parameter.hpp"

#include <syncbus/errors.hpp>

#include <limits>

namespace syncbus::detail {
namespace {

// Type oids, fixed in PostgreSQL's catalog (pg_type.dat).
constexpr std::uint32_t text_oid = 25;
constexpr std::uint32_t int8_oid = 20;

void put32(std::string& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

void put64(std::string& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

// array_send's layout: dimensions, null flag, element type, size and lower
// bound of the one dimension, then each element as length + bytes.
std::string header(std::uint32_t element_oid, std::size_t count, std::size_t payload) {
  if (count > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
    throw error("syncbus: too many elements for one array parameter");
  }
  std::string out;
  out.reserve(20 + payload);
  put32(out, 1);  // one dimension
  put32(out, 0);  // no NULL element
  put32(out, element_oid);
  put32(out, static_cast<std::uint32_t>(count));
  put32(out, 1);  // lower bound
  return out;
}

}  // namespace

pqxx::binarystring text_array(const std::vector<std::string_view>& elements) {
  std::size_t payload = 0;
  for (const auto element : elements) payload += 4 + element.size();
  auto out = header(text_oid, elements.size(), payload);
  for (const auto element : elements) {
    if (element.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
      throw error("syncbus: an array element is too large for PostgreSQL (over 2 GB)");
    }
    put32(out, static_cast<std::uint32_t>(element.size()));
    out.append(element);
  }
  return pqxx::binarystring(out.data(), out.size());
}

pqxx::binarystring bigint_array(const std::vector<std::uint64_t>& values) {
  auto out = header(int8_oid, values.size(), values.size() * 12);
  for (const auto value : values) {
    put32(out, 8);
    put64(out, value);
  }
  return pqxx::binarystring(out.data(), out.size());
}

}  // namespace syncbus::detail
