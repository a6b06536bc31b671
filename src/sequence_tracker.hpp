#pragma once
// Per-origin sequence bookkeeping at a receiver: drops duplicates and finds
// gaps. A pure class (no threads, no I/O): the delivery thread owns one.
//
// It forgets an origin that has been silent for a long time (see sweep()),
// so that a long-lived bus, which sees a new origin every time a peer
// restarts, holds a bounded amount of state. Heartbeats keep a live origin
// remembered; a closing bus says goodbye.

#include <syncbus/gap_event.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

namespace syncbus::detail {

class SequenceTracker {
 public:
  struct Verdict {
    /// False for a message already delivered (a duplicate).
    bool deliver = true;
    /// Messages of this origin skipped before this one, if any.
    std::optional<GapEvent> gap;
  };

  /// `forget_on_goodbye`: forget an origin as soon as it says goodbye (on a
  /// channel without secrets). With secrets, it is kept until it expires,
  /// so that a replay of its messages is still a duplicate.
  explicit SequenceTracker(bool forget_on_goodbye = true) : forget_on_goodbye_(forget_on_goodbye) {}

  /// A message `sequence` of `origin` arrived. The first message seen from an
  /// origin sets its baseline, unless `origin_is_new` (the origin was born
  /// after this bus started listening): then its sequences from 1 were this
  /// bus's to see, and those before `sequence` are a gap.
  Verdict on_message(const std::string& origin, std::uint64_t sequence, bool origin_is_new = false);

  /// A heartbeat says `origin`'s last published sequence is `last_sequence`:
  /// anything between what we saw and that is missing (a loss at the tail of
  /// a burst, which no later message would reveal).
  std::optional<GapEvent> on_heartbeat(const std::string& origin, std::uint64_t last_sequence,
                                       bool origin_is_new = false);

  /// A heartbeat from an origin that has closed: checked as one, then the
  /// origin is forgotten (see the constructor).
  std::optional<GapEvent> on_goodbye(const std::string& origin, std::uint64_t last_sequence,
                                     bool origin_is_new = false);

  /// Messages first..last of `origin` were dropped before delivery: reports
  /// what of that range lies beyond what was delivered, even for an origin
  /// seen for the first time.
  std::optional<GapEvent> on_dropped(const std::string& origin, std::uint64_t first,
                                     std::uint64_t last);

  /// `origin`'s `sequence` was refused as stale: a gap only when the origin
  /// is known here and the sequence is beyond what was delivered (a replay
  /// of a forgotten origin's message must not make a gap appear).
  std::optional<GapEvent> on_stale(const std::string& origin, std::uint64_t sequence);

  /// Forgets the origins not heard from during the last `idle_sweeps` calls
  /// (the delivery thread calls it once a minute: origins silent for about
  /// half an hour are forgotten). Returns how many it forgot.
  std::size_t sweep(unsigned idle_sweeps);

  /// Number of origins tracked.
  std::size_t origins() const noexcept { return origins_.size(); }

 private:
  struct Origin {
    std::uint64_t last = 0;      // the last sequence delivered (or known missing)
    std::uint64_t heard_in = 0;  // the sweep period it was last heard in
  };
  /// The origin's entry, created when first seen with its baseline: `first`
  /// when the origin is new here (1 for an origin born after us), else the
  /// number given as `seen`. Sets `created`.
  Origin& entry(const std::string& origin, std::uint64_t baseline, bool& created);

  std::unordered_map<std::string, Origin> origins_;
  std::uint64_t period_ = 0;
  bool forget_on_goodbye_;
};

}  // namespace syncbus::detail
