#pragma once
// The benchmark's report: a table row per run, each syncbus row followed by
// its ratios to the raw baseline's.

#include "measures.hpp"

namespace syncbus::bench {

void print_header();
/// Adds one round of a paced run to the rounds before it.
void pool(Result& all, const Result& round);
/// Prints `r`, and when given, its ratios to `raw`.
void print(const Result& r, const Result* raw);
/// Prints the hand-batched ceiling and how far `best` (syncbus's fastest
/// run of the size) reaches toward it.
void print_ceiling(const Result& ceiling, const Result& best);
/// Prints how the resident size went in a long run, and how it grew.
void print_memory(const Result& r);

}  // namespace syncbus::bench
