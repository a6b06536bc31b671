// Framing (src/framing.hpp): numbering, routing and packing a batch, at the
// byte boundaries of the NOTIFY payload limit, signed and not. Every case
// is checked by decoding what was framed (framing_check.hpp, which the
// fuzzer shares).
#include "framing.hpp"

#include <syncbus/errors.hpp>
#include <syncbus/postgres_bus.hpp>

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "framing_check.hpp"

namespace syncbus::detail {
namespace {

constexpr std::size_t limit = notify_payload_limit;

const MessageAuth unsigned_auth({});
const MessageAuth signing_auth({"a framing test secret, long enough"});

Sender sender_for(const MessageAuth& auth) {
  return {"channel", "origin-1", 42, auth, 123456, 1'790'000'000'000};
}

// A JSON body of exactly `size` bytes (at least 1).
std::string body_of(std::size_t size) {
  if (size < 2) return "1";
  return '"' + std::string(size - 2, 'a') + '"';
}

struct Framed {
  BatchPlan plan;
  Frames frames;
};

Framed frame(const Sender& sender, SpillMode mode, std::uint64_t last_sequence,
             const std::vector<std::string>& bodies) {
  const std::vector<std::string_view> views(bodies.begin(), bodies.end());
  Framed out{plan_batch(sender, mode, last_sequence, views), {}};
  out.frames = frame_batch(sender, out.plan, views);
  EXPECT_EQ(testing::check_framing(sender, mode, last_sequence, views, out.plan, out.frames), "");
  return out;
}

// The largest body whose inline envelope fits, for `sender` at `sequence`.
std::size_t largest_inline_body(const Sender& sender, std::uint64_t sequence) {
  return limit - 1 - sender.signature_bytes() -
         inline_envelope_size(sender.widest_header(sequence), 0);
}

TEST(Framing, LimitIsPostgresNotifyPayloadLimit) {
  EXPECT_EQ(limit, 8000u);
  EXPECT_EQ(PostgresClusterBus::notify_payload_limit, limit);
}

TEST(Framing, OverflowSendsInlineStrictlyBelowTheLimit) {
  EXPECT_EQ(choose_route(SpillMode::overflow, 0), Route::inline_payload);
  EXPECT_EQ(choose_route(SpillMode::overflow, limit - 1), Route::inline_payload);
  EXPECT_EQ(choose_route(SpillMode::overflow, limit), Route::spill_table);
  EXPECT_EQ(choose_route(SpillMode::overflow, 50'000'000), Route::spill_table);
}

TEST(Framing, AlwaysUsesTheTableForEveryMessage) {
  EXPECT_EQ(choose_route(SpillMode::always, 0), Route::spill_table);
  EXPECT_EQ(choose_route(SpillMode::always, limit - 1), Route::spill_table);
  EXPECT_EQ(choose_route(SpillMode::always, limit), Route::spill_table);
}

TEST(Framing, NeverSendsSmallOnesAndRefusesOversizedWithSizeAndLimit) {
  EXPECT_EQ(choose_route(SpillMode::never, limit - 1), Route::inline_payload);
  try {
    choose_route(SpillMode::never, limit);
    FAIL() << "an oversized message was accepted under SpillMode::never";
  } catch (const payload_too_large& e) {
    EXPECT_EQ(e.size(), limit);
    EXPECT_EQ(e.limit(), limit);
    const std::string what = e.what();
    EXPECT_NE(what.find("8000 bytes"), std::string::npos) << what;
    EXPECT_NE(what.find("SpillMode::overflow"), std::string::npos) << what;
  }
}

TEST(Framing, ABodyWhoseEnvelopeIsOneByteUnderTheLimitGoesInlineAndOneMoreSpills) {
  for (const auto* auth : {&unsigned_auth, &signing_auth}) {
    const auto sender = sender_for(*auth);
    const auto largest = largest_inline_body(sender, 1);
    auto framed = frame(sender, SpillMode::overflow, 0, {body_of(largest)});
    ASSERT_EQ(framed.plan.accepted.size(), 1u);
    EXPECT_EQ(framed.plan.accepted[0].route, Route::inline_payload);
    EXPECT_TRUE(framed.frames.spilled_sequences.empty());

    framed = frame(sender, SpillMode::overflow, 0, {body_of(largest + 1)});
    EXPECT_EQ(framed.plan.accepted.at(0).route, Route::spill_table);
    EXPECT_EQ(framed.frames.spilled_sequences, std::vector<std::uint64_t>{1});
    EXPECT_EQ(framed.frames.spilled_macs.size(), auth->enabled() ? 1u : 0u);
  }
}

TEST(Framing, ARefusedMessageUsesNoSequenceNumber) {
  const auto sender = sender_for(signing_auth);
  const auto framed = frame(sender, SpillMode::never, 7,
                            {body_of(10), body_of(limit), body_of(20), body_of(3 * limit)});
  ASSERT_EQ(framed.plan.accepted.size(), 2u);
  EXPECT_EQ(framed.plan.accepted[0].sequence, 8u);
  EXPECT_EQ(framed.plan.accepted[1].sequence, 9u);
  EXPECT_EQ(framed.plan.accepted[1].index, 2u);
  ASSERT_EQ(framed.plan.refused.size(), 2u);
  EXPECT_EQ(framed.plan.refused[0].index, 1u);
  EXPECT_EQ(framed.plan.refused[1].index, 3u);
  EXPECT_EQ(framed.plan.last_sequence, 9u);
  EXPECT_EQ(framed.frames.payloads.size(), 1u);  // 8 and 9 share an envelope
}

TEST(Framing, TwoBodiesShareAPayloadUpToOneByteUnderTheLimit) {
  for (const auto* auth : {&unsigned_auth, &signing_auth}) {
    const auto sender = sender_for(*auth);
    // Two bodies whose batch envelope is exactly limit - 1 bytes.
    const auto overhead = batch_envelope_size(sender.header(1), 2, 0) + sender.signature_bytes();
    const auto together = limit - 1 - overhead;
    auto framed = frame(sender, SpillMode::overflow, 0,
                        {body_of(together / 2), body_of(together - together / 2)});
    EXPECT_EQ(framed.frames.payloads.size(), 1u);
    EXPECT_EQ(framed.frames.payloads[0].size(), limit - 1);
    // One byte more, and they go in two.
    framed = frame(sender, SpillMode::overflow, 0,
                   {body_of(together / 2), body_of(together - together / 2 + 1)});
    EXPECT_EQ(framed.frames.payloads.size(), 2u);
  }
}

TEST(Framing, ConsecutiveSpilledMessagesShareOneRangePointer) {
  const auto sender = sender_for(signing_auth);
  const auto framed =
      frame(sender, SpillMode::overflow, 0,
            {body_of(10), body_of(limit), body_of(2 * limit), body_of(10), body_of(limit)});
  // inline #1 | pointer #2..3 | inline #4 | pointer #5
  ASSERT_EQ(framed.frames.payloads.size(), 4u);
  EXPECT_EQ(framed.frames.spilled_sequences, (std::vector<std::uint64_t>{2, 3, 5}));
  std::string unsigned_envelope;
  const auto pointer = decode_envelope(
      signing_auth.verify_envelope("channel", framed.frames.payloads[1], unsigned_envelope));
  EXPECT_TRUE(pointer.spilled());
  EXPECT_EQ(pointer.sequence, 2u);
  EXPECT_EQ(pointer.count, 2u);
}

TEST(Framing, SpillModeAlwaysSendsEveryMessageAsARowAndOnePointer) {
  const auto framed = frame(sender_for(unsigned_auth), SpillMode::always, 99,
                            {body_of(1), body_of(100), body_of(limit)});
  EXPECT_EQ(framed.frames.payloads.size(), 1u);
  EXPECT_EQ(framed.frames.spilled_sequences, (std::vector<std::uint64_t>{100, 101, 102}));
}

TEST(Framing, RoutesHoldWhenFramedAgainForAnotherSessionWithTheWidestHeader) {
  // Chosen with the widest pid and time: framed for a session with a longer
  // pid than the first (a retry), a message that went inline still fits.
  auto sender = sender_for(signing_auth);
  sender.pid = 1;
  const auto largest = largest_inline_body(sender, 1);
  const std::vector<std::string> bodies{body_of(largest)};
  const std::vector<std::string_view> views(bodies.begin(), bodies.end());
  const auto plan = plan_batch(sender, SpillMode::never, 0, views);
  ASSERT_EQ(plan.accepted.size(), 1u);
  auto retry = sender;
  retry.pid = 4'294'967'295;
  const auto frames = frame_batch(retry, plan, views);
  EXPECT_EQ(frames.payloads.at(0).size(), limit - 1);
  EXPECT_EQ(testing::check_framing(retry, SpillMode::never, 0, views, plan, frames), "");
}

TEST(Framing, TheSequenceNumbersGrowingADigitIsAccountedFor) {
  const auto sender = sender_for(unsigned_auth);
  // Fits at #9 but not at #10 (one digit longer).
  const auto at_nine = largest_inline_body(sender, 9);
  EXPECT_EQ(largest_inline_body(sender, 10), at_nine - 1);
  const auto framed = frame(sender, SpillMode::overflow, 8, {body_of(at_nine), body_of(at_nine)});
  EXPECT_EQ(framed.plan.accepted.at(0).route, Route::inline_payload);
  EXPECT_EQ(framed.plan.accepted.at(1).route, Route::spill_table);
}

TEST(Framing, ManyRandomBatchesNearTheBoundariesFrameExactly) {
  std::mt19937_64 random(20261129);
  for (int round = 0; round < 400; ++round) {
    const auto& auth = round % 2 ? signing_auth : unsigned_auth;
    const auto mode = static_cast<SpillMode>(round % 3);
    auto sender = sender_for(auth);
    sender.pid = random() % 5'000'000;
    sender.sent_ms = round % 7 == 0 ? 0 : 1'700'000'000'000 + random() % 100'000'000'000;
    std::vector<std::string> bodies(1 + random() % 40);
    for (auto& body : bodies) {
      const auto kind = random() % 4;
      body = body_of(kind == 0   ? 1 + random() % 50
                     : kind == 1 ? 7800 + random() % 400
                     : kind == 2 ? 1 + random() % 4000
                                 : 1 + random() % 20000);
    }
    const std::uint64_t last = round % 5 == 0 ? 99'999 : random() % 1000;
    frame(sender, mode, last, bodies);
  }
}

TEST(Framing, AHeartbeatCarriesTheLastSequenceAndSaysGoodbyeWhenAsked) {
  const auto sender = sender_for(signing_auth);
  std::string unsigned_envelope;
  const auto goodbye = decode_envelope(signing_auth.verify_envelope(
      "channel", frame_heartbeat(sender, 17, /*goodbye=*/true), unsigned_envelope));
  EXPECT_EQ(goodbye.kind, Envelope::Kind::heartbeat);
  EXPECT_EQ(goodbye.sequence, 17u);
  EXPECT_TRUE(goodbye.goodbye);
  EXPECT_EQ(goodbye.pid, sender.pid);
  const auto plain = decode_envelope(frame_heartbeat(sender_for(unsigned_auth), 3));
  EXPECT_FALSE(plain.goodbye);
  EXPECT_FALSE(plain.pid.has_value());
  EXPECT_EQ(plain.sent_ms, sender.sent_ms);
}

TEST(Framing, EveryEnvelopeSaysWhenItWasSentSignedOrNotAndNoneBeforeTheClockIsKnown) {
  // `sent` is what receivers measure their delivery lag from: written by
  // every bus (0.3), `pid` only by one that signs.
  const std::vector<std::string> bodies{body_of(10), body_of(9000), body_of(20)};
  const auto framed = frame(sender_for(unsigned_auth), SpillMode::overflow, 0, bodies);
  ASSERT_EQ(framed.frames.payloads.size(), 3u);
  for (const auto& payload : framed.frames.payloads) {
    const auto envelope = decode_envelope(payload);
    EXPECT_EQ(envelope.sent_ms, sender_for(unsigned_auth).sent_ms) << payload;
    EXPECT_FALSE(envelope.pid.has_value()) << payload;
  }
  // Before the server's clock was read: no `sent`, and routes chosen for
  // the widest one still hold.
  auto unknown = sender_for(unsigned_auth);
  unknown.sent_ms = 0;
  const auto largest = largest_inline_body(sender_for(unsigned_auth), 1);
  const auto without = frame(unknown, SpillMode::never, 0, {body_of(largest)});
  ASSERT_EQ(without.frames.payloads.size(), 1u);
  EXPECT_FALSE(decode_envelope(without.frames.payloads[0]).sent_ms.has_value());
}

}  // namespace
}  // namespace syncbus::detail
