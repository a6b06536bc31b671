// Must compile: a header whose functions throw syncbus errors makes them
// complete, so a user can catch them with only that header included.
#include <syncbus/postgres_bus.hpp>

bool caught(syncbus::PostgresBusOptions options) {
  try {
    syncbus::PostgresClusterBus bus(std::move(options));
    bus.publish(nlohmann::json::parse(R"({"id":1})"));
    return false;
  } catch (const syncbus::error&) {
    return true;
  }
}
