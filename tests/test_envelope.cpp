#include "envelope.hpp"

#include <syncbus/errors.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace syncbus::detail {
namespace {

TEST(Envelope, InlineRoundTripsOriginSequenceAndBody) {
  const nlohmann::json body = {{"table", "todos"}, {"id", 42}, {"done", true}};
  const auto payload = encode_inline("node-a", 7, serialize_body(body, false));
  const Envelope decoded = decode_envelope(payload);
  EXPECT_EQ(decoded.origin, "node-a");
  EXPECT_EQ(decoded.sequence, 7u);
  ASSERT_FALSE(decoded.spilled());
  EXPECT_EQ(decoded.bodies.at(0), body);
}

TEST(Envelope, InlineWireFormatIsTheDocumentedOne) {
  EXPECT_EQ(encode_inline("a1", 3, serialize_body({{"k", 1}}, false)),
            R"({"v":1,"origin":"a1","seq":3,"body":{"k":1}})");
  EXPECT_EQ(encode_spill_pointer("a1", 3), R"({"v":1,"origin":"a1","seq":3,"spilled":true})");
}

TEST(Envelope, SpillPointerRoundTrips) {
  const Envelope decoded = decode_envelope(encode_spill_pointer("b", 9223372036854775807u));
  EXPECT_EQ(decoded.origin, "b");
  EXPECT_EQ(decoded.sequence, 9223372036854775807u);  // the largest: a bigint
  EXPECT_TRUE(decoded.spilled());
}

TEST(Envelope, HeartbeatRoundTripsAndIsNeitherBodyNorPointer) {
  EXPECT_EQ(encode_heartbeat("a1", 9), R"({"v":1,"origin":"a1","seq":9,"heartbeat":true})");
  const Envelope decoded = decode_envelope(encode_heartbeat("a1", 9));
  EXPECT_EQ(decoded.kind, Envelope::Kind::heartbeat);
  EXPECT_EQ(decoded.origin, "a1");
  EXPECT_EQ(decoded.sequence, 9u);
  EXPECT_FALSE(decoded.spilled());
}

TEST(Envelope, EveryKindOfJsonBodyRoundTrips) {
  for (const nlohmann::json& body :
       {nlohmann::json(nullptr), nlohmann::json(0), nlohmann::json(-1.5), nlohmann::json(""),
        nlohmann::json("héllo wörld ✓ 𝄞"), nlohmann::json::array(), nlohmann::json::object(),
        nlohmann::json::parse(R"({"a":[1,{"b":"\u0000"}]})")}) {
    const auto decoded = decode_envelope(encode_inline("o", 1, serialize_body(body, false)));
    ASSERT_FALSE(decoded.spilled());
    EXPECT_EQ(decoded.bodies.at(0), body) << body.dump();
  }
}

TEST(Envelope, MultiByteTextIsSentAsRawUtf8UnlessAsciiIsRequired) {
  const nlohmann::json body = "日本語";
  EXPECT_EQ(serialize_body(body, false).size(), 2 + 9u);  // 3 bytes a character
  const auto ascii = serialize_body(body, true);
  EXPECT_EQ(ascii, R"("\u65e5\u672c\u8a9e")");
  EXPECT_EQ(decode_envelope(encode_inline("o", 1, ascii)).bodies.at(0), body);
}

TEST(Envelope, EveryCharacterNeedingAnEscapeIsFoundWhereverItSitsInALongString) {
  // The writer scans eight bytes at a time: put each kind of byte that must
  // not be copied as is at every offset of a long plain run (and around the
  // eight-byte blocks' edges), and compare with nlohmann's own escaping.
  const std::vector<std::string> specials = {
      "\"", "\\", std::string(1, '\0'), "\x01", "\n", "\x1f", "\x7f", "é", "✓", "𝄞"};
  for (const auto& special : specials) {
    for (std::size_t offset = 0; offset < 40; ++offset) {
      std::string text(40, 'a');
      text.insert(offset, special);
      for (const bool ascii_only : {false, true}) {
        const nlohmann::json body = text;
        EXPECT_EQ(serialize_body(body, ascii_only), body.dump(-1, ' ', ascii_only))
            << "byte 0x" << std::hex << int(static_cast<unsigned char>(special[0])) << " at "
            << std::dec << offset;
      }
    }
  }
  // Bytes 0x20 to 0x7e other than " and \ are copied as they are.
  std::string printable;
  for (int c = 0x20; c < 0x7f; ++c) printable += static_cast<char>(c);
  EXPECT_EQ(serialize_body(printable + printable, false),
            nlohmann::json(printable + printable).dump());
  EXPECT_THROW(serialize_body(std::string(33, 'a') + "\xff" + std::string(30, 'a'), false),
               invalid_message);
}

TEST(Envelope, InvalidUtf8BodyIsRejectedAsInvalidMessage) {
  const nlohmann::json body = std::string("\xff\xfe", 2);
  EXPECT_THROW(serialize_body(body, false), invalid_message);
}

TEST(Envelope, DecoderRejectsWhatIsNotAnEnvelope) {
  for (
      const std::string payload :
      {"", "garbage", "{", "[]", "42", R"({"v":1})", R"({"v":"1","origin":"a","seq":1,"body":1})",
       R"({"v":1,"origin":"","seq":1,"body":1})", R"({"v":1,"origin":5,"seq":1,"body":1})",
       R"({"v":1,"origin":"a","seq":0,"body":1})", R"({"v":1,"origin":"a","seq":-3,"body":1})",
       R"({"v":1,"origin":"a","seq":1.5,"body":1})", R"({"v":1,"origin":"a","seq":1})",
       R"({"v":1,"origin":"a","seq":1,"spilled":false})",
       R"({"v":1,"origin":"a","seq":1,"body":1,"spilled":true})",
       R"({"v":1,"origin":"a","seq":1,"body":1,"heartbeat":true})",
       R"({"v":1,"origin":"a","seq":1,"spilled":true,"heartbeat":true})",
       R"({"v":1,"origin":"a","seq":1,"heartbeat":false})",
       // Origins are instance ids: nothing a query or a log could trip on.
       R"({"v":1,"origin":"a\"b","seq":1,"body":1})", R"({"v":1,"origin":"a\\b","seq":1,"body":1})",
       R"({"v":1,"origin":"a b","seq":1,"body":1})",
       R"({"v":1,"origin":"a\u0000b","seq":1,"body":1})",
       R"({"v":1,"origin":"é","seq":1,"body":1})",
       R"({"v":1,"origin":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","seq":1,"body":1})",
       // The spill table's sequence is a bigint.
       R"({"v":1,"origin":"a","seq":9223372036854775808,"body":1})"}) {
    EXPECT_THROW(decode_envelope(payload), protocol_error) << payload;
  }
}

TEST(Envelope, BatchesAndRangesRoundTrip) {
  const std::vector<std::string> bodies{R"({"k":1})", "2", R"("three")"};
  const auto payload = encode_batch("a1", 7, {bodies[0], bodies[1], bodies[2]});
  EXPECT_EQ(payload, R"({"v":1,"origin":"a1","seq":7,"bodies":[{"k":1},2,"three"]})");
  EXPECT_EQ(payload.size(), batch_envelope_size({"a1", 7}, 3, bodies[0].size() + 1 + 7));
  const auto batch = decode_envelope(payload);
  EXPECT_EQ(batch.kind, Envelope::Kind::inline_body);
  EXPECT_EQ(batch.sequence, 7u);
  EXPECT_EQ(batch.count, 3u);
  ASSERT_EQ(batch.bodies.size(), 3u);
  EXPECT_EQ(batch.bodies[0], nlohmann::json({{"k", 1}}));
  EXPECT_EQ(batch.bodies[2], "three");
  // One body: the single-message form, as before batching existed.
  EXPECT_EQ(encode_batch("a1", 7, {bodies[1]}), encode_inline("a1", 7, bodies[1]));
  EXPECT_EQ(inline_envelope_size("a1", 7, bodies[1].size()),
            encode_inline("a1", 7, bodies[1]).size());

  EXPECT_EQ(encode_spill_pointer("a1", 7, 3),
            R"({"v":1,"origin":"a1","seq":7,"spilled":true,"count":3})");
  const auto range = decode_envelope(encode_spill_pointer("a1", 7, 3));
  EXPECT_TRUE(range.spilled());
  EXPECT_EQ(range.sequence, 7u);
  EXPECT_EQ(range.count, 3u);
  EXPECT_EQ(decode_envelope(encode_spill_pointer("a1", 7)).count, 1u);
}

TEST(Envelope, UnknownVersionIsNamedInTheError) {
  try {
    decode_envelope(R"({"v":2,"origin":"a","seq":1,"body":1})");
    FAIL() << "version 2 was accepted";
  } catch (const protocol_error& e) {
    EXPECT_NE(std::string(e.what()).find("version 2"), std::string::npos) << e.what();
  }
}

TEST(Envelope, UnknownFieldsAreIgnoredForForwardCompatibility) {
  const auto decoded = decode_envelope(R"({"v":1,"origin":"a","seq":2,"body":"x","trace":"abc"})");
  EXPECT_EQ(decoded.bodies.at(0), "x");
}

// `sent` says when, for the lag (and, signed, for freshness: a signed
// envelope without a usable one is refused there). One that is not a
// positive integer is no time; the message is no less a message.
TEST(Envelope, ASentThatIsNoTimeIsAbsentAndTheMessageStands) {
  for (const std::string sent : {"-1", "0", "1.5", "1796005166000.5", "1e300", "\"x\"", "null",
                                 "true", "{}", "[1]", "-9223372036854775808", "1796005166e3"}) {
    const auto payload = R"({"v":1,"origin":"a","seq":1,"sent":)" + sent + R"(,"body":"b"})";
    Envelope decoded;
    ASSERT_NO_THROW(decoded = decode_envelope(payload)) << payload;
    EXPECT_FALSE(decoded.sent_ms.has_value()) << payload;
    EXPECT_EQ(decoded.bodies.at(0), "b") << payload;
  }
  const auto batch = decode_envelope(R"({"v":1,"origin":"a","seq":1,"sent":-5,"bodies":[1,2,3]})");
  EXPECT_EQ(batch.bodies.size(), 3u);
  EXPECT_EQ(
      decode_envelope(R"({"v":1,"origin":"a","seq":1,"sent":1796005166000,"body":1})").sent_ms,
      1796005166000u);
}

TEST(Envelope, ErrorMessagesQuoteOnlyAnExcerptOfHugeGarbage) {
  try {
    decode_envelope(std::string(100000, 'x'));
    FAIL();
  } catch (const protocol_error& e) {
    EXPECT_LT(std::string(e.what()).size(), 600u);
  }
}

TEST(Envelope, OversizedOrDeeplyNestedInputIsRejectedBeforeParsing) {
  // NOTIFY payloads are shorter than 8000 bytes: anything longer is not one.
  EXPECT_THROW(decode_envelope(encode_inline("a", 1, '"' + std::string(8000, 'x') + '"')),
               protocol_error);
  // A body may nest 256 levels; an envelope adds one or two (a batch), and
  // one nesting deeper than the body's limit plus two is refused unparsed.
  const auto nested = [](std::size_t depth) {
    return std::string(depth, '[') + std::string(depth, ']');
  };
  EXPECT_NO_THROW(decode_envelope(encode_inline("a", 1, nested(max_body_depth))));
  EXPECT_NO_THROW(decode_envelope(encode_batch("a", 1, {nested(max_body_depth), "1"})));
  EXPECT_THROW(decode_envelope(encode_inline("a", 1, nested(max_body_depth + 2))), protocol_error);
  EXPECT_THROW(decode_envelope(std::string(4000, '[')), protocol_error);
  // One rule for a body however it travels: 257 levels are refused inline,
  // alone or in a batch, as they are when spilled.
  EXPECT_THROW(decode_envelope(encode_inline("a", 1, nested(max_body_depth + 1))), protocol_error);
  EXPECT_THROW(decode_envelope(encode_batch("a", 1, {nested(max_body_depth + 1), "1"})),
               protocol_error);
  EXPECT_THROW(parse_body(nested(max_body_depth + 1), 100000), protocol_error);
  EXPECT_NO_THROW(parse_body(nested(max_body_depth), 100000));
  // Brackets inside strings are text, escaped quotes included.
  EXPECT_FALSE(nesting_exceeds(R"(["[[[[\"[[[["])", 1));
  EXPECT_TRUE(nesting_exceeds(R"([[1]])", 1));
}

TEST(Envelope, SpilledBodiesAreCappedInSizeAndDepth) {
  EXPECT_EQ(parse_body(R"({"a":1})", 7), nlohmann::json({{"a", 1}}));
  EXPECT_THROW(parse_body(R"({"a":1})", 6), protocol_error);
  EXPECT_THROW(parse_body(std::string(300, '[') + std::string(300, ']'), 1000), protocol_error);
}

TEST(Envelope, PublishingATooDeeplyNestedBodyIsRefused) {
  nlohmann::json deep = 1;
  for (std::size_t i = 0; i < max_body_depth; ++i) deep = nlohmann::json::array({deep});
  EXPECT_NO_THROW(serialize_body(deep, false));
  EXPECT_THROW(serialize_body(nlohmann::json::array({deep}), false), invalid_message);
}

}  // namespace
}  // namespace syncbus::detail
