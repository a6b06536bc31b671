#include "message_auth.hpp"

#include <syncbus/errors.hpp>

#include <gtest/gtest.h>

#include "envelope.hpp"

namespace syncbus::detail {
namespace {

const std::string key_one = "first-shared-secret-0123456789";
const std::string key_two = "second-shared-secret-987654321";

std::string verified(const MessageAuth& auth, const std::string& channel,
                     const std::string& payload) {
  std::string scratch;
  return std::string(auth.verify_envelope(channel, payload, scratch));
}

TEST(MessageAuth, ASignedEnvelopeVerifiesAndDecodesAsTheOriginal) {
  const MessageAuth auth({key_one});
  const auto envelope = encode_inline("a1", 3, R"({"k":1})");
  const auto payload = auth.sign_envelope("chan", envelope);
  EXPECT_EQ(payload.size(), envelope.size() + MessageAuth::envelope_overhead);
  EXPECT_EQ(payload.substr(0, envelope.size() - 1), envelope.substr(0, envelope.size() - 1));
  EXPECT_NE(payload.find(R"(,"mac":")"), std::string::npos);
  EXPECT_EQ(verified(auth, "chan", payload), envelope);
  // A receiver without secrets ignores the extra field.
  EXPECT_EQ(decode_envelope(payload).bodies.at(0), nlohmann::json({{"k", 1}}));
}

TEST(MessageAuth, UnsignedTamperedOrMisdirectedEnvelopesAreRefused) {
  const MessageAuth auth({key_one});
  const auto payload = auth.sign_envelope("chan", encode_inline("a1", 3, "1"));
  EXPECT_THROW(verified(auth, "chan", encode_inline("a1", 3, "1")), protocol_error);
  auto tampered = payload;
  tampered[tampered.find(":3,") + 1] = '4';  // another sequence number
  EXPECT_THROW(verified(auth, "chan", tampered), protocol_error);
  auto bad_mac = payload;
  bad_mac[bad_mac.size() - 3] = bad_mac[bad_mac.size() - 3] == 'a' ? 'b' : 'a';
  EXPECT_THROW(verified(auth, "chan", bad_mac), protocol_error);
  // Replayed on another channel: the channel is part of what is signed.
  EXPECT_THROW(verified(auth, "other", payload), protocol_error);
  // Signed with a key this bus does not have.
  const MessageAuth stranger({key_two});
  EXPECT_THROW(verified(auth, "chan", stranger.sign_envelope("chan", encode_inline("a1", 3, "1"))),
               protocol_error);
  for (const std::string junk :
       {std::string(), std::string("}"), std::string(R"(,"mac":"")"), std::string(200, 'x')}) {
    EXPECT_THROW(verified(auth, "chan", junk), protocol_error) << junk;
  }
}

TEST(MessageAuth, RotationSignsWithTheFirstKeyAndAcceptsEvery) {
  const MessageAuth old_only({key_one});
  const MessageAuth rotating({key_two, key_one});
  const auto from_old = old_only.sign_envelope("c", encode_heartbeat("a", 1));
  const auto from_new = rotating.sign_envelope("c", encode_heartbeat("a", 1));
  EXPECT_NO_THROW(verified(rotating, "c", from_old));
  EXPECT_NO_THROW(verified(rotating, "c", from_new));
  EXPECT_THROW(verified(old_only, "c", from_new), protocol_error);
}

TEST(MessageAuth, RowMacsCoverChannelOriginSequenceStampAndBody) {
  const MessageAuth auth({key_one});
  using Stamp = MessageAuth::RowStamp;
  for (const std::optional<Stamp> stamp :
       {std::optional<Stamp>{}, std::optional<Stamp>{Stamp{4711, 1764433659123}}}) {
    const auto mac = auth.row_mac({"c", "o", 7, stamp, "{}"});
    EXPECT_EQ(mac.size(), 64u);
    EXPECT_TRUE(auth.row_mac_valid({"c", "o", 7, stamp, "{}"}, mac));
    EXPECT_FALSE(auth.row_mac_valid({"c2", "o", 7, stamp, "{}"}, mac));
    EXPECT_FALSE(auth.row_mac_valid({"c", "o2", 7, stamp, "{}"}, mac));
    EXPECT_FALSE(auth.row_mac_valid({"c", "o", 8, stamp, "{}"}, mac));
    EXPECT_FALSE(auth.row_mac_valid({"c", "o", 7, stamp, "[]"}, mac));
    EXPECT_FALSE(auth.row_mac_valid({"c", "o", 7, stamp, "{}"}, ""));
    // Field boundaries are part of what is signed: moving bytes across them fails.
    EXPECT_FALSE(
        auth.row_mac_valid({"c", "o7", 7, stamp, "{}"}, auth.row_mac({"c", "o", 77, stamp, "{}"})));
  }
  // The birth and the signing time are signed: changing either, adding or
  // removing them, fails.
  const auto stamped = auth.row_mac({"c", "o", 7, Stamp{4711, 1000}, "{}"});
  EXPECT_FALSE(auth.row_mac_valid({"c", "o", 7, Stamp{4712, 1000}, "{}"}, stamped));
  EXPECT_FALSE(auth.row_mac_valid({"c", "o", 7, Stamp{4711, 1001}, "{}"}, stamped));
  EXPECT_FALSE(auth.row_mac_valid({"c", "o", 7, std::nullopt, "{}"}, stamped));
  EXPECT_FALSE(auth.row_mac_valid({"c", "o", 7, Stamp{4711, 1000}, "{}"},
                                  auth.row_mac({"c", "o", 7, std::nullopt, "{}"})));
}

TEST(MessageAuth, OffPassesEverythingThrough) {
  const MessageAuth off({});
  EXPECT_FALSE(off.enabled());
  EXPECT_EQ(off.sign_envelope("c", "{}"), "{}");
  EXPECT_EQ(verified(off, "c", "anything"), "anything");
}

TEST(MessageAuth, AShortKeyIsRefusedWithoutBeingShown) {
  try {
    MessageAuth auth({key_one, "tooshort-pw"});
    FAIL() << "a 11-byte key was accepted";
  } catch (const configuration_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("secrets[1]"), std::string::npos) << what;
    EXPECT_EQ(what.find("tooshort-pw"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace syncbus::detail
