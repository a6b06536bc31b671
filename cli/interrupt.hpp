#pragma once
// Ctrl-C (SIGINT) and SIGTERM for long-running subcommands: instead of
// killing the process, they make a file descriptor readable, which the
// subcommand polls beside its socket, so it stops cleanly (closing its bus,
// flushing its output) and exits 0.

namespace syncbus::cli {

/// Installs the handlers (once) and returns the fd that becomes readable on
/// SIGINT or SIGTERM.
int interrupt_fd();

/// True once SIGINT or SIGTERM arrived.
bool interrupted() noexcept;

}  // namespace syncbus::cli
