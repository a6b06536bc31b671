// Two instances of an engine on one PostgreSQL: the README's quick start.
//   quickstart "postgresql://user@host/db"   (or set DATABASE_URL)
#include <syncbus/postgres_bus.hpp>

#include <cstdio>
#include <cstdlib>
#include <future>

int main(int argc, char** argv) {
  const char* url = argc > 1 ? argv[1] : std::getenv("DATABASE_URL");
  if (url == nullptr) {
    std::fprintf(stderr, "usage: quickstart CONNINFO (or set DATABASE_URL)\n");
    return 2;
  }
  syncbus::PostgresBusOptions options;
  options.conninfo = url;
  options.on_error = [](const std::exception& e) { std::fprintf(stderr, "%s\n", e.what()); };

  syncbus::PostgresClusterBus instance_a(options);  // one per process, normally
  syncbus::PostgresClusterBus instance_b(options);

  std::promise<nlohmann::json> received;
  auto subscription = instance_b.subscribe([&](const syncbus::ClusterMessage& m) {
    if (m.origin == instance_b.instance_id()) return;  // skip our own changes
    received.set_value(m.body);
  });

  instance_a.publish({{"table", "todos"}, {"op", "insert"}, {"id", 1}});

  auto arrived = received.get_future();
  if (arrived.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return 1;
  std::printf("instance b received: %s\n", arrived.get().dump().c_str());
  return 0;
}
