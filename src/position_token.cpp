#include "position_token.hpp"

#include <syncbus/errors.hpp>

#include <fmt/format.h>
#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "instance_id.hpp"

namespace syncbus::detail {
namespace {

constexpr std::string_view prefix = "p1.";
constexpr std::size_t channel_key_bytes = 8;
constexpr std::size_t max_origin_length = 64;
constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

[[noreturn]] void refuse(std::string_view why) {
  throw invalid_position(fmt::format(
      "syncbus: not a position of this channel: {}. A position is the text a bus gave in "
      "ClusterMessage::position, unchanged",
      why));
}

void put_varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out += static_cast<char>((value & 0x7f) | 0x80);
    value >>= 7;
  }
  out += static_cast<char>(value);
}

std::string base64url(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  const auto byte = [&](std::size_t at) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at]));
  };
  for (; i + 3 <= bytes.size(); i += 3) {
    const auto n = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (int shift = 18; shift >= 0; shift -= 6) out += alphabet[(n >> shift) & 63];
  }
  if (bytes.size() - i == 1) {
    const auto n = byte(i) << 16;
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
  } else if (bytes.size() - i == 2) {
    const auto n = byte(i) << 16 | byte(i + 1) << 8;
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += alphabet[(n >> 6) & 63];
  }
  return out;
}

int sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

std::string from_base64url(std::string_view text) {
  if (text.size() % 4 == 1) refuse("its length is not that of base64url");
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t bits = 0;
  int held = 0;
  for (const char c : text) {
    const int value = sextet(c);
    if (value < 0) {
      refuse(fmt::format("it holds byte 0x{:02x}, which is not a base64url character",
                         static_cast<unsigned char>(c)));
    }
    bits = (bits << 6) | static_cast<std::uint32_t>(value);
    held += 6;
    if (held >= 8) {
      held -= 8;
      out += static_cast<char>((bits >> held) & 0xff);
    }
  }
  // One spelling per token: the bits left over are zero.
  if ((bits & ((1u << held) - 1)) != 0) refuse("its last character is not canonical base64url");
  return out;
}

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}

  std::uint64_t varint(std::string_view what) {
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ == bytes_.size()) refuse(fmt::format("it ends inside {}", what));
      const auto byte = static_cast<unsigned char>(bytes_[at_++]);
      const std::uint64_t low = byte & 0x7f;
      if (shift == 63 && low > 1) refuse(fmt::format("{} does not fit in 64 bits", what));
      value |= low << shift;
      if ((byte & 0x80) == 0) {
        if (byte == 0 && shift != 0) refuse(fmt::format("{} is not in its shortest form", what));
        return value;
      }
    }
    refuse(fmt::format("{} does not fit in 64 bits", what));
  }

  std::string_view bytes(std::size_t count, std::string_view what) {
    if (bytes_.size() - at_ < count) refuse(fmt::format("it ends inside {}", what));
    const auto out = bytes_.substr(at_, count);
    at_ += count;
    return out;
  }

  std::size_t left() const noexcept { return bytes_.size() - at_; }

 private:
  std::string_view bytes_;
  std::size_t at_ = 0;
};

std::uint64_t add(std::uint64_t a, std::uint64_t b, std::string_view what) {
  if (b > UINT64_MAX - a) refuse(fmt::format("{} does not fit in 64 bits", what));
  return a + b;
}

}  // namespace

std::string position_channel_key(const ChannelName& name) {
  std::string input = "syncbus position";
  for (const auto part : {name.database, name.schema, name.table, name.channel}) {
    input += '\0';
    input.append(part);
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  if (EVP_Digest(input.data(), input.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1) {
    throw error("syncbus: OpenSSL could not compute SHA-256");
  }
  return std::string(reinterpret_cast<const char*>(digest.data()), channel_key_bytes);
}

PositionEncoder::PositionEncoder(std::string_view channel_key, const PgSnapshot& snapshot,
                                 std::size_t cursors)
    : bytes_(channel_key) {
  put_varint(bytes_, snapshot.xmin());
  put_varint(bytes_, snapshot.xmax() - snapshot.xmin());
  put_varint(bytes_, snapshot.in_progress().size());
  auto previous = snapshot.xmin();
  bool first = true;
  for (const auto xid : snapshot.in_progress()) {
    put_varint(bytes_, xid - previous - (first ? 0 : 1));
    previous = xid;
    first = false;
  }
  put_varint(bytes_, cursors);
}

void PositionEncoder::cursor(std::string_view origin, std::uint64_t sequence) {
  put_varint(bytes_, origin.size());
  bytes_ += origin;
  put_varint(bytes_, sequence);
}

std::string PositionEncoder::finish() const {
  std::string token(prefix);
  token += base64url(bytes_);
  return token;
}

std::string encode_position(std::string_view channel_key, const PgSnapshot& snapshot,
                            const std::map<std::string, std::uint64_t>& cursors) {
  PositionEncoder encoder(channel_key, snapshot, cursors.size());
  for (const auto& [origin, sequence] : cursors) encoder.cursor(origin, sequence);
  return encoder.finish();
}

DecodedPosition decode_position(std::string_view channel_key, std::string_view token) {
  if (token.size() > max_position_length) {
    refuse(fmt::format("it is {} characters long, over the {} a position may have", token.size(),
                       max_position_length));
  }
  if (token.substr(0, prefix.size()) != prefix) {
    refuse(token.empty() ? "it is empty"
                         : "it does not begin with \"p1.\" (the only version of positions)");
  }
  const auto bytes = from_base64url(token.substr(prefix.size()));
  Reader in(bytes);
  if (in.bytes(channel_key_bytes, "its channel") != channel_key) {
    throw invalid_position(
        "syncbus: the position is of another channel, spill table or database than this "
        "bus's: a position can be resumed from only on the channel (and table) of the bus that "
        "gave it, in the same database of the same server (or of a physical copy of it, which "
        "goes on with its transaction ids). A database restored from a dump, or reached by a "
        "role that may not call pg_control_system() while the others may, is another one");
  }
  // Transaction ids and sequences are what PostgreSQL stores: positive
  // bigints (xid8 from 3; a snapshot's xmin from 1).
  constexpr std::uint64_t most = INT64_MAX;
  const auto xmin = in.varint("xmin");
  const auto xmax = add(xmin, in.varint("xmax"), "xmax");
  if (xmin == 0 || xmax > most) refuse("its snapshot is outside the range of transaction ids");
  const auto count = in.varint("the count of transactions in progress");
  // Each takes a byte at least: a count past what is left is a lie, not a
  // reason to reserve memory.
  if (count > in.left()) refuse("it counts more transactions in progress than it holds");
  std::vector<std::uint64_t> in_progress;
  in_progress.reserve(count);
  for (std::uint64_t i = 0; i < count; ++i) {
    const auto step = in.varint("a transaction in progress");
    const auto xid =
        i == 0 ? add(xmin, step, "a transaction id")
               : add(add(in_progress.back(), step, "a transaction id"), 1, "a transaction id");
    if (xid >= xmax) refuse("a transaction in progress is not below xmax");
    in_progress.push_back(xid);
  }
  DecodedPosition out;
  try {
    out.snapshot = PgSnapshot::of(xmin, xmax, std::move(in_progress));
  } catch (const protocol_error& e) {
    refuse(e.what());
  }
  const auto origins = in.varint("the count of cursors");
  if (origins > in.left() / 3) refuse("it counts more cursors than it holds");
  for (std::uint64_t i = 0; i < origins; ++i) {
    const auto length = in.varint("an origin's length");
    if (length == 0 || length > max_origin_length) refuse("an origin is not 1 to 64 bytes long");
    std::string origin(in.bytes(length, "an origin"));
    if (!is_plain_instance_id(origin)) refuse("an origin is not an instance id");
    if (!out.cursors.empty() && origin <= out.cursors.rbegin()->first) {
      refuse("its origins are not in ascending order, each once");
    }
    const auto sequence = in.varint("a sequence");
    if (sequence > most) refuse("a sequence is outside the range of sequences (a bigint)");
    out.cursors.emplace_hint(out.cursors.end(), std::move(origin), sequence);
  }
  if (in.left() != 0) refuse("bytes follow its end");
  return out;
}

}  // namespace syncbus::detail
