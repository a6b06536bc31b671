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

Subscription ClusterBus::subscribe_from(std::string_view, MessageHandler) {
  throw configuration_error(
      "syncbus: this bus gives no positions, so subscribe_from() cannot resume from one; "
      "subscribe() and give the client a fresh snapshot");
}

}  // namespace syncbus
