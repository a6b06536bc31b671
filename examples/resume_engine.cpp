// A client that moves between instances without starting over: it reads a
// replicated map through instance A, A dies, and it resumes on instance B
// from the position of the last change it applied (ClusterMessage::position).
// It ends with the same map as a client that never moved.
//
//   resume_engine "postgresql://user@host/db"   (or set DATABASE_URL)
#include <syncbus/postgres_bus.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace {

// What an engine keeps per client: its state, and where it stands.
struct ClientState {
  std::mutex mutex;
  std::map<std::string, std::string> todos;
  std::string since;  // the position of the last change applied
  int applied = 0;

  syncbus::MessageHandler handler() {
    return [this](const syncbus::ClusterMessage& m) {
      std::lock_guard<std::mutex> lock(mutex);
      const auto& change = m.body;
      if (change.at("op") == "set") {
        todos[change.at("id").get<std::string>()] = change.at("title").get<std::string>();
      } else {
        todos.erase(change.at("id").get<std::string>());
      }
      since = m.position;
      ++applied;
    };
  }
  int count() {
    std::lock_guard<std::mutex> lock(mutex);
    return applied;
  }
};

bool wait_for(ClientState& client, int changes) {
  for (int i = 0; i < 2000 && client.count() < changes; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return client.count() == changes;
}

}  // namespace

int main(int argc, char** argv) {
  const char* url = argc > 1 ? argv[1] : std::getenv("DATABASE_URL");
  if (url == nullptr) {
    std::fprintf(stderr, "usage: resume_engine CONNINFO (or set DATABASE_URL)\n");
    return 2;
  }
  syncbus::PostgresBusOptions options;
  options.conninfo = url;
  options.channel = "resume_example_" + std::to_string(::getpid());
  options.spill = syncbus::SpillMode::always;  // positions need it
  options.on_error = [](const std::exception& e) { std::fprintf(stderr, "%s\n", e.what()); };

  syncbus::PostgresClusterBus writer(options);
  syncbus::PostgresClusterBus instance_b(options);
  auto instance_a = std::make_unique<syncbus::PostgresClusterBus>(options);

  ClientState stayed, moved;  // one on B throughout; one that starts on A
  auto on_b = instance_b.subscribe(stayed.handler());
  auto on_a = instance_a->subscribe(moved.handler());

  constexpr int changes = 200;
  std::thread writes([&] {
    for (int i = 1; i <= changes; ++i) {
      const auto id = std::to_string(i % 17);
      if (i % 5 == 0) {
        writer.publish({{"op", "delete"}, {"id", id}});
      } else {
        writer.publish({{"op", "set"}, {"id", id}, {"title", "todo " + std::to_string(i)}});
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });

  // A dies half way: its client keeps only its map and its position.
  for (int i = 0; i < 20'000 && moved.count() < changes / 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  on_a.unsubscribe();
  instance_a.reset();
  std::string since;
  {
    std::lock_guard<std::mutex> lock(moved.mutex);
    since = moved.since;
  }
  std::printf("instance A is gone after %d changes; the client resumes on B\n", moved.count());
  syncbus::Subscription resumed;
  try {
    resumed = instance_b.subscribe_from(since, moved.handler());
  } catch (const syncbus::position_expired&) {
    // Vacuum outran the client: an engine would send it a fresh snapshot.
    std::fprintf(stderr, "the position expired\n");
    return 1;
  }
  writes.join();

  if (!wait_for(stayed, changes) || !wait_for(moved, changes)) {
    std::fprintf(stderr, "changes applied: %d and %d of %d\n", stayed.count(), moved.count(),
                 changes);
    return 1;
  }
  if (moved.todos != stayed.todos) {
    std::fprintf(stderr, "the client that moved ended with another state\n");
    return 1;
  }
  std::printf("both clients applied %d changes and hold the same %zu todos\n", changes,
              stayed.todos.size());
  return 0;
}
