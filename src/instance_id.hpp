#pragma once
// Instance ids: the `origin` of every message a bus publishes.

#include <string>
#include <string_view>

namespace syncbus::detail {

/// A fresh random id: 16 lowercase hex digits from std::random_device.
std::string random_instance_id();

/// True when `id` is 1 to 64 characters of [A-Za-z0-9._:-].
bool is_plain_instance_id(std::string_view id) noexcept;

/// Returns `id`, or a random id when it is empty. Throws configuration_error
/// when it is not 1 to 64 characters of [A-Za-z0-9._:-] (ids travel in
/// envelopes, SQL parameters and application_name: keep them plain).
std::string checked_instance_id(const std::string& id);

}  // namespace syncbus::detail
