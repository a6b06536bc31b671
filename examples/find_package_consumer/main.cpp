// Links against an installed syncbus: uses both buses' public headers.
#include <syncbus/errors.hpp>
#include <syncbus/in_memory_bus.hpp>
#include <syncbus/postgres_bus.hpp>
#include <syncbus/version.hpp>

#include <cstdio>

int main() {
  syncbus::InMemoryClusterBus bus;
  int received = 0;
  auto subscription = bus.subscribe([&](const syncbus::ClusterMessage&) { ++received; });
  bus.publish({{"hello", "world"}});
  bus.hub()->wait_idle();

  // Reaching PostgresClusterBus's validation proves the Postgres half links.
  bool rejected = false;
  try {
    syncbus::PostgresClusterBus postgres_bus(syncbus::PostgresBusOptions{});
  } catch (const syncbus::configuration_error&) {
    rejected = true;
  }
  std::printf("syncbus %s: received %d, empty conninfo rejected: %s\n", syncbus::version_string,
              received, rejected ? "yes" : "no");
  return received == 1 && rejected ? 0 : 1;
}
