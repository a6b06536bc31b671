// A tiny sync engine: one process of a cluster that replicates a key-value map
// over a PostgresClusterBus. Run several (see run_cluster.sh): each writes its
// own keys, one of them large enough to spill, applies the others' changes,
// and prints a digest of its map. Every process prints the same digest.
//
//   replicated_kv --db CONNINFO --name NAME --peers N [--keys K] [--channel C]
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>

namespace {

struct Args {
  std::string db;
  std::string name;
  std::string channel = "replicated_kv_demo";
  std::size_t peers = 3;
  int keys = 200;
};

Args parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--db")
      args.db = value;
    else if (flag == "--name")
      args.name = value;
    else if (flag == "--channel")
      args.channel = value;
    else if (flag == "--peers")
      args.peers = std::stoul(value);
    else if (flag == "--keys")
      args.keys = std::stoi(value);
    else
      throw std::invalid_argument("unknown flag " + flag);
  }
  if (args.db.empty() || args.name.empty()) {
    throw std::invalid_argument(
        "usage: replicated_kv --db CONNINFO --name NAME --peers N [--keys K] [--channel C]");
  }
  return args;
}

// The engine: a map, and what it has heard from its peers.
class KeyValueNode {
 public:
  KeyValueNode(syncbus::ClusterBus& bus, std::size_t peers) : bus_(bus), peers_(peers) {
    subscription_ = bus_.subscribe([this](const syncbus::ClusterMessage& m) { apply(m); });
  }

  // Every bus delivers only what is committed while it listens, so nobody
  // writes before everyone is known to listen: each node says hello until it
  // has heard every node say it has heard everyone.
  bool wait_for_everyone(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock<std::mutex> lock(mutex_);
    while (ready_.size() < peers_) {
      const bool heard_all = hello_.size() >= peers_;
      lock.unlock();
      bus_.publish({{"type", "hello"}, {"heard_all", heard_all}});
      lock.lock();
      if (changed_.wait_until(
              lock,
              std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)),
              [&] { return ready_.size() >= peers_; })) {
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
    }
    return true;
  }

  void set(const std::string& key, const std::string& value) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      map_[key] = value;
    }
    bus_.publish({{"type", "set"}, {"key", key}, {"value", value}});
  }

  bool finish(std::chrono::seconds timeout) {
    bus_.publish({{"type", "done"}});
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return done_.size() >= peers_; });
  }

  std::pair<std::uint64_t, std::size_t> digest() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::uint64_t hash = 14695981039346656037ull;  // FNV-1a, stable everywhere
    for (const auto& [key, value] : map_) {
      for (const std::string* part : {&key, &value}) {
        for (const unsigned char c : *part) hash = (hash ^ c) * 1099511628211ull;
        hash = (hash ^ 0xff) * 1099511628211ull;
      }
    }
    return {hash, map_.size()};
  }

 private:
  void apply(const syncbus::ClusterMessage& m) {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string type = m.body.at("type");
    if (type == "hello") {
      hello_.insert(m.origin);
      if (m.body.at("heard_all").get<bool>()) ready_.insert(m.origin);
    } else if (type == "set" && m.origin != bus_.instance_id()) {
      map_[m.body.at("key")] = m.body.at("value").get<std::string>();
    } else if (type == "done") {
      done_.insert(m.origin);
    }
    changed_.notify_all();
  }

  syncbus::ClusterBus& bus_;
  std::size_t peers_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, std::string> map_;
  std::set<std::string> hello_, ready_, done_;
  syncbus::Subscription subscription_;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    syncbus::PostgresBusOptions options;
    options.conninfo = args.db;
    options.channel = args.channel;
    options.instance_id = args.name;
    options.on_error = [&](const std::exception& e) {
      std::fprintf(stderr, "[%s] bus error: %s\n", args.name.c_str(), e.what());
    };
    syncbus::PostgresClusterBus bus(options);
    KeyValueNode node(bus, args.peers);

    if (!node.wait_for_everyone(std::chrono::seconds(60))) {
      std::fprintf(stderr, "[%s] timed out waiting for %zu peers\n", args.name.c_str(), args.peers);
      return 1;
    }
    for (int i = 0; i < args.keys; ++i) {
      node.set(args.name + "/key" + std::to_string(i), "value " + std::to_string(i * i));
    }
    // One value far over the 8000-byte NOTIFY limit: it travels through the
    // spill table.
    node.set(args.name + "/large", std::string(64 * 1024, args.name[0]));
    if (!node.finish(std::chrono::seconds(60))) {
      std::fprintf(stderr, "[%s] timed out waiting for peers to finish\n", args.name.c_str());
      return 1;
    }
    const auto [hash, keys] = node.digest();
    std::printf("%s digest=%016llx keys=%zu\n", args.name.c_str(),
                static_cast<unsigned long long>(hash), keys);
    // Spill rows are read by every bus, so they are vacuumed by age, never
    // right after use: peers may still be fetching this demo's large rows.
    const auto pruned = bus.vacuum(std::chrono::minutes(5));
    std::printf("%s vacuum: pruned %lld spill rows older than 5 minutes\n", args.name.c_str(),
                static_cast<long long>(pruned));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "replicated_kv: %s\n", e.what());
    return 1;
  }
}
