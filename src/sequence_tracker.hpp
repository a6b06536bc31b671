#pragma once
// Per-origin sequence bookkeeping at a receiver: drops duplicates and finds
// gaps. A pure class (no threads, no I/O): the delivery thread owns one.
//
// It forgets an origin that has been silent for a long time (see sweep()),
// so that a long-lived bus, which sees a new origin every time a peer
// restarts, holds a bounded amount of state. Heartbeats keep a live origin
// remembered; a closing bus says goodbye.

#include <syncbus/gap_event.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

namespace syncbus::detail {

/// How long a bus remembers an origin it no longer hears from (heartbeats,
/// at most every 5 minutes, keep a live one remembered). A signed message
/// of an origin it does not know, signed longer ago than this, may be a
/// replay of one it forgot.
inline constexpr std::chrono::minutes origin_memory{30};

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
  /// bus's to see, and those before `sequence` are a gap. With
  /// `signature_predates` (Inbound), a message of an origin that has sent
  /// this bus nothing fresh yet is not delivered but reported as a gap (it
  /// may be a replay; if genuine, it is a message this bus missed). With
  /// `replay_suspect` (Inbound), the same whatever the origin has sent.
  Verdict on_message(const std::string& origin, std::uint64_t sequence, bool origin_is_new = false,
                     bool signature_predates = false, bool replay_suspect = false);

  /// A heartbeat says `origin`'s last published sequence is `last_sequence`:
  /// anything between what we saw and that is missing (a loss at the tail of
  /// a burst, which no later message would reveal).
  std::optional<GapEvent> on_heartbeat(const std::string& origin, std::uint64_t last_sequence,
                                       bool origin_is_new = false, bool signature_predates = false);

  /// A heartbeat from an origin that has closed: checked as one, then the
  /// origin is forgotten (see the constructor).
  std::optional<GapEvent> on_goodbye(const std::string& origin, std::uint64_t last_sequence,
                                     bool origin_is_new = false);

  /// Messages first..last of `origin` were dropped before delivery: reports
  /// what of that range lies beyond what was delivered, even for an origin
  /// seen for the first time.
  std::optional<GapEvent> on_dropped(const std::string& origin, std::uint64_t first,
                                     std::uint64_t last, bool origin_is_new = false);

  /// `origin`'s `sequence` was refused as stale: a gap only when the origin
  /// is known here and the sequence is beyond what was delivered (a replay
  /// of a forgotten origin's message must not make a gap appear).
  std::optional<GapEvent> on_stale(const std::string& origin, std::uint64_t sequence);

  /// The transport reconnected without reading what it missed: no origin
  /// has said anything fresh since (a signed message sent before is not
  /// delivered, see on_message), though each is still known.
  void connection_reset();

  /// Forgets the origins not heard from during the last `idle_sweeps` calls
  /// (the delivery thread calls it once a minute: origins silent for about
  /// half an hour are forgotten). Returns how many it forgot.
  std::size_t sweep(unsigned idle_sweeps);

  /// Number of origins tracked.
  std::size_t origins() const noexcept { return origins_.size(); }

  /// The most origins tracked at once: about 10 MB. Past it, those heard
  /// from longest ago are forgotten first. Only a flood of made-up origins
  /// (on a channel without secrets, where anyone may speak for anyone) gets
  /// there; forgetting costs what expiry costs.
  static constexpr std::size_t max_origins = 100'000;

 private:
  struct Origin {
    std::uint64_t last = 0;      // the last sequence delivered (or known missing)
    std::uint64_t heard_in = 0;  // the sweep period it was last heard in
    bool fresh = false;          // it sent something not signature_predates
  };
  /// The origin's entry, created when first seen with its baseline: `first`
  /// when the origin is new here (1 for an origin born after us), else the
  /// number given as `seen`. Sets `created`.
  Origin& entry(const std::string& origin, std::uint64_t baseline, bool& created);
  /// Forgets origins, those heard from longest ago first, down to 90 % of
  /// max_origins, but `keep`.
  void make_room(const std::string& keep);

  std::unordered_map<std::string, Origin> origins_;
  std::uint64_t period_ = 0;
  bool forget_on_goodbye_;
};

}  // namespace syncbus::detail
