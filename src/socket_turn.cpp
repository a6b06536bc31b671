#include "socket_turn.hpp"

namespace syncbus::detail {

bool SocketTurn::lend() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) return false;
  holder_ = Holder::lent;
  asked_ = false;
  // An ask that came before is answered: from now on the signal means that
  // the socket was given back.
  signal_.consume();
  return true;
}

bool SocketTurn::take_if_unused() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (holder_ == Holder::delivery) return false;
  holder_ = Holder::listener;
  return true;
}

std::exception_ptr SocketTurn::take_failure() {
  std::lock_guard<std::mutex> lock(mutex_);
  auto failure = failure_;
  failure_ = nullptr;
  return failure;
}

void SocketTurn::listener_waits(bool waiting) {
  std::lock_guard<std::mutex> lock(mutex_);
  listener_waits_ = waiting;
  if (!waiting) asked_ = false;
}

void SocketTurn::close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
  }
  let_go_.notify_all();
}

bool SocketTurn::take_lent() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (holder_ == Holder::lent && !wanted_back_ && !closed_) {
    holder_ = Holder::delivery;
    delivery_thread_ = std::this_thread::get_id();
    return true;
  }
  if (holder_ == Holder::listener && listener_waits_ && !asked_ && !closed_) {
    asked_ = true;
    signal_.signal();
  }
  return false;
}

void SocketTurn::let_go(bool give_back, std::exception_ptr failure) {
  bool signal = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    delivery_thread_ = std::thread::id();
    if (failure) failure_ = std::move(failure);
    if (give_back || failure_ || wanted_back_) {
      holder_ = Holder::listener;
      // Wanted back: the listener waits for it. Otherwise it may be asleep.
      signal = !wanted_back_;
    } else {
      holder_ = Holder::lent;
    }
  }
  let_go_.notify_all();
  if (signal) signal_.signal();
}

bool SocketTurn::wanted_back() {
  std::lock_guard<std::mutex> lock(mutex_);
  return wanted_back_ || closed_;
}

bool SocketTurn::held_by_this_thread() {
  std::lock_guard<std::mutex> lock(mutex_);
  return holder_ == Holder::delivery && delivery_thread_ == std::this_thread::get_id();
}

}  // namespace syncbus::detail
