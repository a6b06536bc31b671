// Calling back into the bus from its own callbacks: every member function
// (but destroying the bus) from every callback (handlers, on_gap, on_error,
// log), on every thread that runs callbacks (the delivery thread, the
// listener thread, the timer thread, and the thread calling close()). Each
// call must return and do what it says; none may abort the process or hang.
#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "pg_helpers.hpp"
#include "test_support.hpp"

namespace syncbus {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::unique_channel;

// Where the callback that calls back runs, and what makes it run.
enum class Trigger {
  handler,           // a message handler, on the delivery thread
  on_gap,            // on_gap, on the delivery thread
  error_delivering,  // on_error for a handler that threw, on the delivery thread
  error_listening,   // on_error for garbage on the channel, on the thread reading it
                     // (the listener's, or at low load the idle delivery thread)
  error_timer,       // on_error for a failed heartbeat, on the timer thread
  log_listening,     // log, for the same garbage, on the thread reading it
  log_closing,       // log, for "closing", on the thread that calls close()
};

enum class Action {
  close,
  publish,
  publish_async,
  subscribe,
  unsubscribe,
  vacuum,
  stats,
  names,  // instance_id() and channel()
};

const char* name_of(Trigger t) {
  switch (t) {
    case Trigger::handler:
      return "Handler";
    case Trigger::on_gap:
      return "OnGap";
    case Trigger::error_delivering:
      return "OnErrorOnTheDeliveryThread";
    case Trigger::error_listening:
      return "OnErrorOnTheListenerThread";
    case Trigger::error_timer:
      return "OnErrorOnTheTimerThread";
    case Trigger::log_listening:
      return "LogOnTheListenerThread";
    case Trigger::log_closing:
      return "LogWhileClosing";
  }
  return "?";
}

const char* name_of(Action a) {
  switch (a) {
    case Action::close:
      return "Close";
    case Action::publish:
      return "Publish";
    case Action::publish_async:
      return "PublishAsync";
    case Action::subscribe:
      return "Subscribe";
    case Action::unsubscribe:
      return "Unsubscribe";
    case Action::vacuum:
      return "Vacuum";
    case Action::stats:
      return "Stats";
    case Action::names:
      return "Names";
  }
  return "?";
}

// The one call made from inside a callback, and what came of it.
class CallBack {
 public:
  explicit CallBack(Action action) : action_(action) {}

  void attach(PostgresClusterBus& bus) {
    other_ = bus.subscribe([](const ClusterMessage&) {});
    bus_.store(&bus);
  }

  // Called from the callback: makes the call the first time only.
  void fire() {
    auto* bus = bus_.load();
    if (bus == nullptr || fired_.exchange(true)) return;
    std::string outcome = "returned";
    try {
      switch (action_) {
        case Action::close:
          bus->close();
          break;
        case Action::publish:
          bus->publish({{"from", "a callback"}});
          break;
        case Action::publish_async:
          bus->publish_async({{"from", "a callback"}}).get();
          break;
        case Action::subscribe:
          kept_ = bus->subscribe([](const ClusterMessage&) {});
          break;
        case Action::unsubscribe:
          other_.unsubscribe();
          break;
        case Action::vacuum:
          bus->vacuum(std::chrono::hours(1));
          break;
        case Action::stats:
          (void)bus->stats().delivered;
          break;
        case Action::names:
          (void)(bus->instance_id().size() + bus->channel().size());
          break;
      }
    } catch (const closed_error&) {
      outcome = "closed_error";
    } catch (const std::exception& e) {
      outcome = std::string("threw: ") + e.what();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    outcome_ = outcome;
    done_.notify_all();
  }

  std::string wait_for_outcome(std::chrono::milliseconds timeout = 20s) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait_for(lock, timeout, [this] { return !outcome_.empty(); });
    return outcome_.empty() ? "never returned" : outcome_;
  }

  void detach() {
    bus_.store(nullptr);
    kept_.unsubscribe();
    other_.unsubscribe();
  }

 private:
  Action action_;
  std::atomic<PostgresClusterBus*> bus_{nullptr};
  std::atomic<bool> fired_{false};
  Subscription other_;
  Subscription kept_;
  std::mutex mutex_;
  std::condition_variable done_;
  std::string outcome_;
};

class CallbackTest : public testing::PostgresTest,
                     public ::testing::WithParamInterface<std::tuple<Trigger, Action>> {};

TEST_P(CallbackTest, EveryMemberMayBeCalledFromEveryCallbackOnEveryThread) {
  const auto [trigger, action] = GetParam();
  const auto channel = unique_channel("callback");
  CallBack call(action);
  auto o = options(channel, "callback");
  o.heartbeat_interval = 0ms;  // but where a heartbeat is the trigger
  switch (trigger) {
    case Trigger::on_gap:
      o.on_gap = [&](const GapEvent&) { call.fire(); };
      break;
    case Trigger::error_delivering:
    case Trigger::error_listening:
      o.on_error = [&](const std::exception&) { call.fire(); };
      break;
    case Trigger::error_timer:
      o.heartbeat_interval = 20ms;
      o.on_error = [&](const std::exception& e) {
        if (std::string(e.what()).find("heartbeat") != std::string::npos) call.fire();
      };
      break;
    case Trigger::log_listening:
      o.log = [&](LogLevel level, const std::string&) {
        if (level == LogLevel::error) call.fire();
      };
      break;
    case Trigger::log_closing:
      o.log = [&](LogLevel, const std::string& line) {
        if (line.find("closing") != std::string::npos) call.fire();
      };
      break;
    case Trigger::handler:
      break;
  }

  std::optional<PostgresClusterBus> bus;
  bus.emplace(o);
  call.attach(*bus);
  Subscription handler;
  if (trigger == Trigger::handler) {
    handler = bus->subscribe([&](const ClusterMessage&) { call.fire(); });
  } else if (trigger == Trigger::error_delivering) {
    handler = bus->subscribe([](const ClusterMessage& m) {
      if (m.body == "throw") throw std::runtime_error("boom");
    });
  }
  switch (trigger) {
    case Trigger::handler:
      bus->publish(nlohmann::json("hello"));
      break;
    case Trigger::error_delivering:
      bus->publish(nlohmann::json("throw"));
      break;
    case Trigger::on_gap:
      raw_notify(channel, R"({"v":1,"origin":"gapper","seq":1,"body":1})");
      raw_notify(channel, R"({"v":1,"origin":"gapper","seq":3,"body":3})");
      break;
    case Trigger::error_listening:
    case Trigger::log_listening:
      raw_notify(channel, "not an envelope");
      break;
    case Trigger::error_timer:
      // Heartbeats start once something was published; the next one finds
      // the publishing connection gone.
      bus->publish(nlohmann::json("first"));
      ASSERT_EQ(testing::terminate_backend(url(), *bus, testing::BusConnection::publisher), 1);
      break;
    case Trigger::log_closing:
      bus->close();
      break;
  }

  const auto outcome = call.wait_for_outcome();
  EXPECT_NE(outcome, "never returned");
  EXPECT_EQ(outcome.rfind("threw", 0), std::string::npos) << outcome;
  if (action == Action::close) {
    // Closed, as close() says, whichever thread called it.
    EXPECT_TRUE(eventually(
        [&] {
          try {
            bus->publish(nlohmann::json("after close"));
            return false;
          } catch (const closed_error&) {
            return true;
          }
        },
        5s));
  } else if (trigger != Trigger::log_closing) {
    // Still working: a message published now is delivered.
    testing::Collector seen;
    auto s = bus->subscribe(seen.handler());
    bus->publish(nlohmann::json("still alive"));
    EXPECT_TRUE(seen.wait_for_count(1, 10s));
  }
  call.detach();
  handler.unsubscribe();
  bus.reset();  // joins every thread
}

INSTANTIATE_TEST_SUITE_P(
    Callbacks, CallbackTest,
    ::testing::Combine(::testing::Values(Trigger::handler, Trigger::on_gap,
                                         Trigger::error_delivering, Trigger::error_listening,
                                         Trigger::error_timer, Trigger::log_listening,
                                         Trigger::log_closing),
                       ::testing::Values(Action::close, Action::publish, Action::publish_async,
                                         Action::subscribe, Action::unsubscribe, Action::vacuum,
                                         Action::stats, Action::names)),
    [](const ::testing::TestParamInfo<std::tuple<Trigger, Action>>& info) {
      return std::string(name_of(std::get<0>(info.param))) + "Calls" +
             name_of(std::get<1>(info.param));
    });

}  // namespace
}  // namespace syncbus
