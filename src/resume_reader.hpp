#pragma once
// The thread, and the connection of its own, that read from the spill table
// what resuming subscriptions (resume.hpp) missed: for each, every row its
// position leaves out and the bus had delivered at its seam (or at a later
// target), in one REPEATABLE READ snapshot per round, so that vacuum cannot
// take a row away between the check that the position has not expired and
// the read. Subscriptions are served one at a time, in the order they came.
//
// Started by the first subscribe_from() of a bus; stopped by close().

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bus_config.hpp"
#include "owned_thread.hpp"
#include "pg_session.hpp"
#include "position_token.hpp"
#include "spill_store.hpp"
#include "wake_fd.hpp"

namespace syncbus::detail {

class DeliveryQueue;
class Resume;

class ResumeReader {
 public:
  ResumeReader(const BusServices& services, DeliveryQueue& queue, std::string position_key);
  ~ResumeReader();
  ResumeReader(const ResumeReader&) = delete;
  ResumeReader& operator=(const ResumeReader&) = delete;

  /// Reads for `resume` once its seam has passed (thread-safe).
  void add(std::shared_ptr<Resume> resume);
  /// Stops reading; subscriptions not yet live stay as they are. Idempotent.
  void stop() noexcept;
  /// True on the reader's thread (where it reports errors).
  bool runs_on_this_thread() const noexcept { return thread_.is_current(); }

 private:
  void run();
  void serve(Resume& resume);
  /// One round: reads (resume.from(), target] and hands it on; false
  /// (nothing read) when the target does not name everything from() does.
  bool read_round(Resume& resume, const DecodedPosition& target);
  /// read_round's work, in the round's transaction.
  bool read_in_snapshot(Resume& resume, const DecodedPosition& target);
  /// Ends the round's transaction, or drops the session when it cannot.
  void end_read() noexcept;
  /// True when some row that `from` names is not named by `target` (read
  /// in the round's snapshot `now`).
  bool target_lags(const DecodedPosition& from, const DecodedPosition& target,
                   const PgSnapshot& now);
  /// Reads the bodies of `keys` and hands them on, moving resume.from().
  void hand_on(Resume& resume, const std::vector<SpillStore::RowKey>& keys);
  /// A row written again after vacuum deleted it (see read_round), in this
  /// round's removal log.
  bool written_again(const SpillStore::RowKey& row) const;
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> removed_;
  Session& session();
  template <typename Work>
  auto statement(const char* what, Work&& work);

  const BusConfig& config_;
  const PostgresBusOptions& options_;
  const ErrorSink& on_error_;
  DeadlineTimer& deadlines_;
  const MessageAuth& auth_;
  const SpillStore& store_;
  DeliveryQueue& queue_;
  const std::string position_key_;

  std::unique_ptr<Session> session_;
  WakeFd wake_;
  std::mutex mutex_;
  std::condition_variable added_;
  std::deque<std::shared_ptr<Resume>> waiting_;
  std::shared_ptr<Resume> serving_;
  bool stopping_ = false;
  OwnedThread thread_;
};

}  // namespace syncbus::detail
