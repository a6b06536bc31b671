// Three "instances" of an engine in one process, on one InMemoryHub: the way
// an engine's unit tests simulate a cluster without a database.
#include <syncbus/in_memory_bus.hpp>

#include <atomic>
#include <cstdio>

int main() {
  auto hub = std::make_shared<syncbus::InMemoryHub>();
  syncbus::InMemoryClusterBus a(hub), b(hub), c(hub);

  std::atomic<int> received{0};
  std::vector<syncbus::Subscription> subscriptions;
  for (syncbus::ClusterBus* bus : {&a, &b, &c}) {
    subscriptions.push_back(bus->subscribe([&, bus](const syncbus::ClusterMessage& m) {
      if (m.origin == bus->instance_id()) return;  // an engine skips its own changes
      ++received;
    }));
  }
  a.publish({{"op", "insert"}, {"id", 1}});
  b.publish({{"op", "update"}, {"id", 1}});
  c.publish({{"op", "delete"}, {"id", 1}});
  hub->wait_idle();

  // Each of the 3 changes reaches the 2 other instances.
  std::printf("changes applied across instances: %d (expected 6)\n", received.load());
  return received == 6 ? 0 : 1;
}
