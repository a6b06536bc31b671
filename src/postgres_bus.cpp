// PostgresClusterBus is the public face of its parts (bus_parts.hpp).
#include <syncbus/postgres_bus.hpp>

#include "bus_parts.hpp"

namespace syncbus {

struct PostgresClusterBus::impl : detail::BusParts {
  using BusParts::BusParts;
};

PostgresClusterBus::PostgresClusterBus(PostgresBusOptions options)
    : impl_(std::make_unique<impl>(std::move(options))) {}

PostgresClusterBus::~PostgresClusterBus() { close(); }

const std::string& PostgresClusterBus::instance_id() const { return impl_->config().origin(); }

const std::string& PostgresClusterBus::channel() const noexcept {
  return impl_->config().options().channel;
}

void PostgresClusterBus::publish(const nlohmann::json& body) { impl_->publish(body); }

std::future<void> PostgresClusterBus::publish_async(const nlohmann::json& body) {
  return impl_->publish_async(body);
}

Subscription PostgresClusterBus::subscribe(MessageHandler handler) {
  return impl_->subscribe(std::move(handler));
}

Subscription PostgresClusterBus::subscribe_from(std::string_view position, MessageHandler handler) {
  return impl_->subscribe_from(position, std::move(handler));
}

BusStats PostgresClusterBus::stats() const { return impl_->stats(); }

void PostgresClusterBus::close() { impl_->close(); }

std::int64_t PostgresClusterBus::vacuum(std::chrono::milliseconds older_than) {
  return impl_->vacuum(older_than);
}

}  // namespace syncbus
