#pragma once
// Receivers in processes of their own (--receiver-processes): a sync engine
// runs one bus per instance, each in its own process, and with 8 or 32
// receivers in the benchmark's process its CPU would hide what fan-out costs.
// Each child runs one receiver (a receiving bus, or a raw listening
// connection) and reports through memory shared with the benchmark (how many
// messages it has, for the senders' flow control and the drain) and, when it
// ends, a pipe (its whole tally: latencies, order, last arrival). The
// children are forked at the start of a run, before the run starts a thread.

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "measures.hpp"

namespace syncbus::bench {

/// What a receiver process sees of the run.
class ReceiverLink {
 public:
  /// A message sent at `sent_ns` arrived now (with `sequence`: it must
  /// follow the one before).
  void record(std::int64_t sent_ns, std::optional<std::uint64_t> sequence = std::nullopt);
  /// The receiver listens: the run may start sending.
  void ready();
  /// True once it has every message the run sent, the run gave up waiting,
  /// or a stop was requested.
  bool done() const;

 private:
  friend class ReceiverProcesses;
  struct Shared;
  ReceiverLink(Shared& shared, std::size_t index) : shared_(shared), index_(index) {}
  Shared& shared_;
  std::size_t index_;
  ReceiverTally tally_;
};

class ReceiverProcesses {
 public:
  /// Forks `count` children, each running `receive(link)` until link.done()
  /// (the function returns then; what it throws is the run's error).
  ReceiverProcesses(std::size_t count, const std::function<void(ReceiverLink&)>& receive);
  /// Stops any child still running.
  ~ReceiverProcesses();
  ReceiverProcesses(const ReceiverProcesses&) = delete;
  ReceiverProcesses& operator=(const ReceiverProcesses&) = delete;

  /// Waits until every child listens; throws if one failed first.
  void wait_ready();
  /// Messages receiver `i` has so far.
  const std::atomic<std::size_t>& received(std::size_t i) const;
  /// The run sent `total` messages: the children stop once they have them,
  /// or at `give_up_ns` (now_ns()'s clock).
  void expect(std::size_t total, std::int64_t give_up_ns);
  /// Waits for the children to end; their tallies, in order. Throws the
  /// first child's error, if any.
  std::vector<std::unique_ptr<ReceiverTally>> collect();
  /// CPU seconds the children used (known after collect()).
  double cpu_seconds() const { return cpu_seconds_; }

 private:
  ReceiverLink::Shared* shared_ = nullptr;
  std::size_t count_ = 0;
  std::vector<pid_t> children_;
  std::vector<int> reports_;  // the read end of each child's pipe
  double cpu_seconds_ = 0;
};

}  // namespace syncbus::bench
