#include "identifiers.hpp"

#include <syncbus/errors.hpp>

#include <gtest/gtest.h>

#include <set>

#include "utf8.hpp"

namespace syncbus::detail {
namespace {

TEST(Identifiers, Utf8IsCheckedStrictly) {
  for (const std::string good : {"", "plain", "Ünïcödé", "日本語", "🚀", "a\x7f"}) {
    EXPECT_TRUE(is_valid_utf8(good)) << good;
  }
  for (const std::string bad :
       {"\xff", "\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\x80"}) {
    EXPECT_FALSE(is_valid_utf8(bad)) << ::testing::PrintToString(bad);
  }
}

TEST(Identifiers, OneTo63BytesOfUtf8AreAcceptedAndNothingElse) {
  for (const std::string good :
       {std::string("a"), std::string(63, 'x'), std::string("MixedCase"),
        std::string("quote\"semi;colon--comment/*x*/\\back"), std::string("канал_🚀")}) {
    EXPECT_NO_THROW(check_identifier("PostgresBusOptions::channel", good)) << good;
  }
  for (const std::string bad : {std::string(), std::string(64, 'x'), std::string(200, 'y'),
                                std::string("nul\0byte", 8), std::string("\xff\xfe")}) {
    EXPECT_THROW(check_identifier("PostgresBusOptions::channel", bad), configuration_error)
        << ::testing::PrintToString(bad);
  }
  // 21 three-byte characters are 63 bytes; one more is 66.
  std::string japanese;
  for (int i = 0; i < 21; ++i) japanese += "語";
  EXPECT_NO_THROW(check_identifier("PostgresBusOptions::spill_table", japanese));
  EXPECT_THROW(check_identifier("PostgresBusOptions::spill_table", japanese + "語"),
               configuration_error);
}

TEST(Identifiers, TheErrorNamesTheSettingAsGivenAndTheLimit) {
  try {
    check_identifier("PostgresBusOptions::spill_table", std::string(70, 't'));
    FAIL();
  } catch (const configuration_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("syncbus: PostgresBusOptions::spill_table is invalid"), std::string::npos)
        << what;
    EXPECT_NE(what.find("70 bytes"), std::string::npos) << what;
    EXPECT_NE(what.find("63"), std::string::npos) << what;
  }
}

TEST(Identifiers, DerivedNamesFitAndLongNamesSharingAPrefixDoNotCollide) {
  EXPECT_EQ(derived_identifier("spill", "_message_key"), "spill_message_key");
  std::set<std::string> seen;
  for (const char last : {'a', 'b', 'c'}) {
    const auto name = derived_identifier(std::string(62, 'p') + last, "_created_at_idx");
    EXPECT_LE(name.size(), max_identifier_bytes);
    EXPECT_TRUE(seen.insert(name).second) << name;
    EXPECT_EQ(name, derived_identifier(std::string(62, 'p') + last, "_created_at_idx"))
        << "deterministic";
  }
  // Never cut inside a multi-byte character.
  std::string wide;
  for (int i = 0; i < 21; ++i) wide += "語";
  const auto name = derived_identifier(wide, "_message_key");
  EXPECT_LE(name.size(), max_identifier_bytes);
  EXPECT_TRUE(is_valid_utf8(name)) << name;
}

}  // namespace
}  // namespace syncbus::detail
