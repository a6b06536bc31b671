#pragma once
// Instance ids: the `origin` of every message a bus publishes.
//
// A bus numbers its messages 1, 2, 3, ... and receivers drop a number they
// have seen from an origin as a duplicate. So an origin must never be used by
// two runs: an instance restarted under the same id would start again at 1
// and be ignored until it passed its previous run's count (and its spilled
// messages would collide with the old rows' unique key). A configured name is
// therefore only the readable start of the id; every bus adds a random part.

#include <string>
#include <string_view>

namespace syncbus::detail {

/// The longest configured name: room for the '.' and 8 random hex digits
/// within the 64 characters an origin may have.
inline constexpr std::size_t max_instance_name_length = 55;

/// `count` random lowercase hex digits from std::random_device.
std::string random_hex(std::size_t count);

/// True when `id` is 1 to 64 characters of [A-Za-z0-9._:-].
bool is_plain_instance_id(std::string_view id) noexcept;

/// This run's instance id: `name` + '.' + 8 random hex digits, or 14 random
/// hex digits when `name` is empty. Throws configuration_error when `name` is
/// not 1 to 55 characters of [A-Za-z0-9._:-] (ids travel in envelopes, SQL
/// parameters and application_name: keep them plain).
std::string new_instance_id(const std::string& name);

}  // namespace syncbus::detail
