#pragma once
// Whose turn it is to read a listener's socket: the listener's thread, or
// the bus's delivery thread while it has nothing to deliver.
//
// Why: at low load a message used to wake two threads in turn: the
// listener's (by the socket), then the delivery thread (by the listener).
// The second wake-up was the whole of syncbus's latency over raw libpq at
// 1,000 messages/s (docs/BENCHMARKS.md: 14-17 us of a 200 B message's
// way, on a 2-vCPU guest where waking a thread takes 3-18 us; the decoding
// alone, 2-4 us, since). So while the listener would only sleep, messages
// come far apart and the delivery thread is idle, the listener lends its
// socket: the delivery thread waits on it, reads, and runs the handlers at
// once, one wake-up per message as with raw libpq. Handlers still run on
// the delivery thread only. It gives the socket back before running them,
// so a slow handler holds up no reading for longer than the listener's
// next look (ListenerLoop: lend_check).
//
// The listener's session (its connection and all that hangs off it) is used
// only by the holder of the turn; handing the turn over orders what each
// holder did before what the next one does.

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include "wake_fd.hpp"

namespace syncbus::detail {

class SocketTurn {
 public:
  // The listener's side.

  /// Lends the socket (the listener holds it): the delivery thread may take
  /// it until take_back(). False, and nothing lent, once closed.
  bool lend();
  /// Takes the socket back: at once when it is lent and unused; when the
  /// delivery thread holds it, `interrupt` makes it let go (called without
  /// the lock) and this waits for it. False when closed meanwhile: the
  /// listener then must not touch its session (the delivery thread may).
  template <typename Interrupt>
  bool take_back(Interrupt&& interrupt);
  /// Takes the socket back only when the delivery thread is not waiting on
  /// it (it is delivering); true when the listener holds it now.
  bool take_if_unused();
  /// What the delivery thread's read threw, if anything (once).
  std::exception_ptr take_failure();
  /// Readable when the delivery thread gave the socket back by itself (its
  /// read failed, or it found a burst waiting), or asks for it while the
  /// listener waits on it (listener_waits).
  int signal_fd() const noexcept { return signal_.fd(); }
  void consume_signal() noexcept { signal_.consume(); }
  /// Said around the listener's waits on the socket, while it holds it.
  void listener_waits(bool waiting);
  /// No more lending; a take_back() waiting returns false. Idempotent.
  void close();

  // The delivery thread's side.

  /// Takes the lent socket; false when it is not lent (or wanted back). Then,
  /// when the listener waits on the socket itself, asks it (once) to lend it.
  bool take_lent();
  /// Lets go of the socket: lent again, or (`give_back`, or when the
  /// listener wants it) the listener's, with `failure` for it to handle.
  void let_go(bool give_back, std::exception_ptr failure = nullptr);
  /// True when the listener wants the socket back.
  bool wanted_back();
  /// True on the thread that holds the lent socket now.
  bool held_by_this_thread();

 private:
  enum class Holder { listener, lent, delivery };
  std::mutex mutex_;
  std::condition_variable let_go_;
  Holder holder_ = Holder::listener;
  bool wanted_back_ = false;
  bool closed_ = false;
  bool listener_waits_ = false;
  bool asked_ = false;  // the delivery thread asked for it, unanswered
  std::thread::id delivery_thread_;
  std::exception_ptr failure_;
  WakeFd signal_;
};

template <typename Interrupt>
bool SocketTurn::take_back(Interrupt&& interrupt) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (holder_ == Holder::delivery) {
    wanted_back_ = true;
    lock.unlock();
    interrupt();
    lock.lock();
    let_go_.wait(lock, [this] { return holder_ != Holder::delivery || closed_; });
    wanted_back_ = false;
    if (holder_ == Holder::delivery) return false;
  }
  holder_ = Holder::listener;
  return true;
}

}  // namespace syncbus::detail
