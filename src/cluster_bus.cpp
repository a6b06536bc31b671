#include <syncbus/cluster_bus.hpp>

namespace syncbus {

std::future<void> ClusterBus::publish_async(const nlohmann::json& body) {
  std::promise<void> committed;
  try {
    publish(body);
    committed.set_value();
  } catch (...) {
    committed.set_exception(std::current_exception());
  }
  return committed.get_future();
}

}  // namespace syncbus
