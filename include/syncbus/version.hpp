#pragma once
/// \file version.hpp
/// The library version, as numbers for the preprocessor and as a string.

#define SYNCBUS_VERSION_MAJOR 0
#define SYNCBUS_VERSION_MINOR 3
#define SYNCBUS_VERSION_PATCH 0

namespace syncbus {
/// The library version as "major.minor.patch".
inline constexpr const char* version_string = "0.3.0";
}  // namespace syncbus
