# Finds syncbus's dependencies. libpqxx: its CMake package when there is one,
# else pkg-config (Debian's libpqxx 6.4 ships only libpqxx.pc).
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.2 REQUIRED)
find_package(fmt REQUIRED)
# simdjson: parses what arrives from peers (several times faster than
# nlohmann::json's parser, which remains the public JSON type).
find_package(simdjson 3 REQUIRED)
# libcrypto: HMAC-SHA256 for message authentication.
find_package(OpenSSL 3.0 REQUIRED COMPONENTS Crypto)

# libpq itself, used directly to parse connection strings.
find_package(PkgConfig REQUIRED)
pkg_check_modules(PQ REQUIRED IMPORTED_TARGET libpq)
set(SYNCBUS_PQ_TARGET PkgConfig::PQ)

find_package(libpqxx CONFIG QUIET)
if(libpqxx_FOUND)
  set(SYNCBUS_PQXX_TARGET libpqxx::pqxx)
  set(SYNCBUS_PQXX_FROM_PKG_CONFIG OFF)
else()
  pkg_check_modules(PQXX REQUIRED IMPORTED_TARGET libpqxx)
  set(SYNCBUS_PQXX_TARGET PkgConfig::PQXX)
  set(SYNCBUS_PQXX_FROM_PKG_CONFIG ON)
endif()
