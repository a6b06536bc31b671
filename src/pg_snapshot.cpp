#include "pg_snapshot.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <utility>

namespace syncbus::detail {
namespace {

[[noreturn]] void invalid(std::string_view text, std::string_view why) {
  constexpr std::size_t max_shown = 80;
  throw protocol_error(fmt::format("syncbus: \"{}{}\" is not a PostgreSQL snapshot ({})",
                                   text.substr(0, max_shown), text.size() > max_shown ? "..." : "",
                                   why));
}

// A decimal number with no sign, no spaces and no leading '+'.
bool parse_number(std::string_view text, std::uint64_t& out) {
  if (text.empty()) return false;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), out);
  return error == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::uint64_t parse_xid(std::string_view text) {
  std::uint64_t xid = 0;
  if (!parse_number(text, xid)) {
    throw protocol_error(fmt::format("syncbus: \"{}\" is not a transaction id",
                                     text.substr(0, std::min<std::size_t>(text.size(), 40))));
  }
  return xid;
}

PgSnapshot PgSnapshot::parse(std::string_view text) {
  const auto first = text.find(':');
  const auto second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos) invalid(text, "not xmin:xmax:xip");
  PgSnapshot snapshot;
  if (!parse_number(text.substr(0, first), snapshot.xmin_) ||
      !parse_number(text.substr(first + 1, second - first - 1), snapshot.xmax_)) {
    invalid(text, "xmin or xmax is not a number");
  }
  if (snapshot.xmin_ > snapshot.xmax_) invalid(text, "xmin is above xmax");
  auto rest = text.substr(second + 1);
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::uint64_t xid = 0;
    if (!parse_number(rest.substr(0, comma), xid)) invalid(text, "an xip entry is not a number");
    if (xid < snapshot.xmin_ || xid >= snapshot.xmax_ ||
        (!snapshot.in_progress_.empty() && xid <= snapshot.in_progress_.back())) {
      invalid(text, "xip entries must ascend within [xmin, xmax)");
    }
    snapshot.in_progress_.push_back(xid);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
    if (rest.empty()) invalid(text, "a trailing comma");
  }
  return snapshot;
}

PgSnapshot PgSnapshot::of(std::uint64_t xmin, std::uint64_t xmax,
                          std::vector<std::uint64_t> in_progress) {
  const auto check = [&](bool ok, std::string_view why) {
    if (!ok) {
      throw protocol_error(
          fmt::format("syncbus: not a PostgreSQL snapshot ({}:{}: {})", xmin, xmax, why));
    }
  };
  check(xmin <= xmax, "xmin is above xmax");
  for (std::size_t i = 0; i < in_progress.size(); ++i) {
    check(in_progress[i] >= xmin && in_progress[i] < xmax &&
              (i == 0 || in_progress[i] > in_progress[i - 1]),
          "xip entries must ascend within [xmin, xmax)");
  }
  PgSnapshot snapshot;
  snapshot.xmin_ = xmin;
  snapshot.xmax_ = xmax;
  snapshot.in_progress_ = std::move(in_progress);
  return snapshot;
}

bool PgSnapshot::visible(std::uint64_t xid) const noexcept {
  if (xid < xmin_) return true;
  if (xid >= xmax_) return false;
  return !std::binary_search(in_progress_.begin(), in_progress_.end(), xid);
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> PgSnapshot::invisible_ranges(
    std::uint64_t below, std::uint64_t span) const {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto xid : in_progress_) {
    if (xid < below) ranges.emplace_back(xid, xid + 1);
  }
  for (auto lo = xmax_; lo < below; lo += std::min(span, below - lo)) {
    ranges.emplace_back(lo, std::min(lo + span, below));
  }
  return ranges;
}

std::string PgSnapshot::text() const {
  std::string out = fmt::format("{}:{}:", xmin_, xmax_);
  for (std::size_t i = 0; i < in_progress_.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(in_progress_[i]);
  }
  return out;
}

}  // namespace syncbus::detail
