#pragma once
// The benchmark's report: a table on a terminal (each syncbus row followed by
// its ratios to the raw baseline's), or, with --json, one JSON object per
// line for each run, with the configuration that made it, so that figures
// can be kept and compared across commits.

#include <string>

#include "arguments.hpp"
#include "measures.hpp"

namespace syncbus::bench {

/// Adds one round of a paced run to the rounds before it.
void pool(Result& all, const Result& round);

class Report {
 public:
  explicit Report(const Config& config) : config_(config) {}

  /// What the whole invocation measures with, before any run.
  void preamble(bool server_cpu_measured) const;
  /// Before the rows of a message size.
  void size_begins() const;
  /// A baseline run (raw libpq), or a syncbus run and its ratios to `raw`.
  void run(const Result& r, const Result* raw) const;
  /// The hand-batched ceiling, and how far `best` (syncbus's fastest run of
  /// the size) reaches toward it.
  void ceiling(const Result& ceiling, const Result& best) const;
  /// How the resident size went in a long run, and how it grew.
  void memory(const Result& r) const;
  /// After the last run: what the columns mean.
  void legend() const;

 private:
  void json_line(const Result& r, const std::string& kind, const Result* compared_to) const;
  const Config& config_;
};

}  // namespace syncbus::bench
