// StreamPosition: what a durable bus has delivered, as a snapshot and a
// cursor per origin; and the token that carries it (position_token.hpp).
#include "stream_position.hpp"

#include <syncbus/errors.hpp>

#include <gtest/gtest.h>

#include "position_token.hpp"

namespace syncbus::detail {
namespace {

using Cursors = std::map<std::string, std::uint64_t>;

TEST(StreamPosition, AnOriginKeepsACursorUntilASnapshotShowsItsLastRow) {
  StreamPosition position;
  position.start(PgSnapshot::parse("100:100:"));
  position.delivered("a.1", 1, 100);
  position.delivered("b.2", 7, 101);
  EXPECT_EQ(position.cursors(), (Cursors{{"a.1", 1}, {"b.2", 7}}));
  // 101 still in progress when the mark was taken: b's last row is not in
  // it, so the snapshot alone would say b has delivered less than it has.
  position.settle(PgSnapshot::parse("101:102:101"), {});
  EXPECT_EQ(position.cursors(), (Cursors{{"b.2", 7}}));
  position.settle(PgSnapshot::parse("102:102:"), {});
  EXPECT_TRUE(position.cursors().empty());
  EXPECT_EQ(position.snapshot().text(), "102:102:");
}

TEST(StreamPosition, WhatCarriesNoTransactionIdKeepsItsCursor) {
  StreamPosition position;
  position.start(PgSnapshot::parse("10:10:"));
  position.delivered("own.1", 3, 0);  // the bus's own, from its publisher
  position.passed("c.3", 9);          // a gap
  position.settle(PgSnapshot::parse("50:50:"), {});
  EXPECT_EQ(position.cursors(), (Cursors{{"c.3", 9}, {"own.1", 3}}));
  // A later row with its id lets it go.
  position.delivered("c.3", 10, 40);
  position.settle(PgSnapshot::parse("60:60:"), {});
  EXPECT_EQ(position.cursors(), (Cursors{{"own.1", 3}}));
}

TEST(StreamPosition, AnOriginHeldBackKeepsItsCursorBelowTheHold) {
  StreamPosition position;
  position.start(PgSnapshot::parse("10:10:"));
  position.delivered("a.1", 4, 11);
  // a's 5 on are to be read back; d was held from its first message.
  position.settle(PgSnapshot::parse("20:20:"), {{"a.1", 5}, {"d.4", 1}});
  EXPECT_EQ(position.cursors(), (Cursors{{"a.1", 4}, {"d.4", 0}}));
  position.delivered("a.1", 5, 12);
  position.delivered("d.4", 1, 13);
  position.settle(PgSnapshot::parse("30:30:"), {});
  EXPECT_TRUE(position.cursors().empty());
}

TEST(StreamPosition, ADuplicateOrAnOldGapMovesNothing) {
  StreamPosition position;
  position.start(PgSnapshot::parse("10:10:"));
  position.delivered("a.1", 4, 11);
  position.delivered("a.1", 3, 9);
  position.passed("a.1", 2);
  position.settle(PgSnapshot::parse("12:12:"), {});
  EXPECT_TRUE(position.cursors().empty()) << "the last row (11) is in the snapshot";
}

const std::string key =
    position_channel_key({"7713863474456296647/5", "public", "sync_cluster_spill", "orders"});

TEST(PositionToken, RoundTripsAndIsShortAndPrintable) {
  const auto snapshot = PgSnapshot::parse("1000017:1000093:1000017,1000090");
  const Cursors cursors{{"api-1.0f3a9c21", 812}, {"api-2.9be01c7d", 77}, {"worker.41ac0e", 3}};
  const auto token = encode_position(key, snapshot, cursors);
  EXPECT_EQ(token.rfind("p1.", 0), 0u);
  EXPECT_LT(token.size(), 120u) << token;
  for (const char c : token)
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')
        << token;
  const auto back = decode_position(key, token);
  EXPECT_EQ(back.snapshot, snapshot);
  EXPECT_EQ(back.cursors, cursors);
  const auto empty = decode_position(key, encode_position(key, PgSnapshot{}, {}));
  EXPECT_EQ(empty.snapshot, PgSnapshot{});
  EXPECT_TRUE(empty.cursors.empty());
  const std::uint64_t most = INT64_MAX;  // a bigint's, as PostgreSQL stores them
  const auto huge = PgSnapshot::of(most - 5, most, {most - 5, most - 1});
  EXPECT_EQ(decode_position(key, encode_position(key, huge, {{"x", most}})).snapshot, huge);
  // Past that, not a position (PostgreSQL would refuse the snapshot; a
  // cursor past a bigint would wrap when read after).
  EXPECT_THROW(decode_position(key, encode_position(key, PgSnapshot::of(0, 5, {}), {})),
               invalid_position);
  EXPECT_THROW(decode_position(key, encode_position(key, PgSnapshot::of(5, most + 1, {}), {})),
               invalid_position);
  EXPECT_THROW(decode_position(key, encode_position(key, huge, {{"x", most + 1}})),
               invalid_position);
}

TEST(PositionToken, AnotherChannelsTablesOrDatabasesPositionIsRefusedSayingSo) {
  const auto token = encode_position(key, PgSnapshot::parse("5:9:6"), {{"a.1", 2}});
  for (const auto& other :
       {position_channel_key({"7713863474456296647/5", "public", "sync_cluster_spill", "order"}),
        position_channel_key({"7713863474456296647/5", "public", "other_spill", "orders"}),
        position_channel_key({"7713863474456296647/5", "app", "sync_cluster_spill", "orders"}),
        position_channel_key({"7713863474456296647/6", "public", "sync_cluster_spill", "orders"}),
        position_channel_key({"7713863474456296648/5", "public", "sync_cluster_spill", "orders"}),
        position_channel_key({"/5", "public", "sync_cluster_spill", "orders"})}) {
    try {
      decode_position(other, token);
      FAIL() << "accepted";
    } catch (const invalid_position& e) {
      EXPECT_NE(std::string(e.what()).find("another channel"), std::string::npos) << e.what();
    }
  }
}

TEST(PositionToken, AnythingElseIsRefusedAsNotAPosition) {
  const auto good = encode_position(key, PgSnapshot::parse("5:9:6"), {{"a.1", 2}});
  std::vector<std::string> bad{"",
                               "p1.",
                               "p2." + good.substr(3),
                               good.substr(0, good.size() - 1),
                               good + "A",
                               good + "=",
                               good.substr(0, 10) + "+" + good.substr(11),
                               "p1.!!!!"};
  // Every truncation, and every single character changed.
  for (std::size_t n = 3; n < good.size(); ++n) bad.push_back(good.substr(0, n));
  for (const auto& text : bad) {
    EXPECT_THROW(decode_position(key, text), invalid_position) << text;
  }
  for (std::size_t i = 3; i < good.size(); ++i) {
    for (const char c : std::string("AZaz09-_")) {
      auto text = good;
      if (text[i] == c) continue;
      text[i] = c;
      try {
        const auto decoded = decode_position(key, text);
        // A change that still decodes is another valid position of the
        // channel: it must say something else.
        EXPECT_FALSE(decoded.snapshot == PgSnapshot::parse("5:9:6") &&
                     decoded.cursors == (Cursors{{"a.1", 2}}))
            << text;
      } catch (const invalid_position&) {
      }
    }
  }
  EXPECT_THROW(decode_position(key, "p1." + std::string(max_position_length, 'A')),
               invalid_position);
}

}  // namespace
}  // namespace syncbus::detail
