#include "failure.hpp"

#include <syncbus/errors.hpp>

namespace syncbus::detail {

Failure Failure::of(const std::exception_ptr& error) {
  Failure failure;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    failure.what_ = e.what();
    // Most derived first.
    if (const auto* full = dynamic_cast<const notify_queue_full*>(&e)) {
      failure.kind_ = Kind::notify_queue_full;
      failure.sqlstate_ = full->sqlstate();
    } else if (const auto* database = dynamic_cast<const database_error*>(&e)) {
      failure.kind_ = Kind::database;
      failure.sqlstate_ = database->sqlstate();
    } else if (dynamic_cast<const timeout_error*>(&e) != nullptr) {
      failure.kind_ = Kind::timeout;
    } else if (dynamic_cast<const connection_error*>(&e) != nullptr) {
      failure.kind_ = Kind::connection;
    } else if (const auto* large = dynamic_cast<const payload_too_large*>(&e)) {
      failure.kind_ = Kind::payload_too_large;
      failure.size_ = large->size();
      failure.limit_ = large->limit();
    } else if (dynamic_cast<const configuration_error*>(&e) != nullptr) {
      failure.kind_ = Kind::configuration;
    } else if (dynamic_cast<const invalid_message*>(&e) != nullptr) {
      failure.kind_ = Kind::invalid_message;
    } else if (dynamic_cast<const protocol_error*>(&e) != nullptr) {
      failure.kind_ = Kind::protocol;
    } else if (dynamic_cast<const closed_error*>(&e) != nullptr) {
      failure.kind_ = Kind::closed;
    }
  } catch (...) {
    failure.what_ = "syncbus: publishing failed with an exception that is not a std::exception";
  }
  return failure;
}

void Failure::raise() const {
  switch (kind_) {
    case Kind::configuration:
      throw configuration_error(what_);
    case Kind::connection:
      throw connection_error(what_);
    case Kind::timeout:
      throw timeout_error(what_);
    case Kind::database:
      throw database_error(what_, sqlstate_);
    case Kind::notify_queue_full:
      throw notify_queue_full(what_, sqlstate_);
    case Kind::payload_too_large:
      throw payload_too_large(what_, size_, limit_);
    case Kind::invalid_message:
      throw invalid_message(what_);
    case Kind::protocol:
      throw protocol_error(what_);
    case Kind::closed:
      throw closed_error(what_);
    case Kind::error:
      break;
  }
  throw error(what_);
}

std::exception_ptr Failure::as_exception_ptr() const {
  try {
    raise();
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace syncbus::detail
