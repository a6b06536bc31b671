// What `syncbus status` and `doctor` take for a LISTEN on a channel, read as
// the server reads the statement (found from outside: psql's `LISTEN
// "ch";`, with its semicolon, was "nothing listens").
#include <gtest/gtest.h>

#include <string>

#include "server_admin.hpp"

namespace syncbus::detail {
namespace {

TEST(ServerAdmin, AListenIsReadAsTheServerReadsIt) {
  EXPECT_TRUE(is_listen_on(R"(LISTEN "psql_ch")", "psql_ch"));
  EXPECT_TRUE(is_listen_on(R"(LISTEN "psql_ch";)", "psql_ch"));
  EXPECT_TRUE(is_listen_on("listen psql_ch;", "psql_ch"));
  EXPECT_TRUE(is_listen_on("  Listen\tPsql_Ch ;  \n", "psql_ch")) << "unquoted: folded";
  EXPECT_FALSE(is_listen_on("LISTEN Psql_Ch", "Psql_Ch")) << "unquoted: folded, so not this";
  EXPECT_TRUE(is_listen_on(R"(LISTEN "Psql_Ch")", "Psql_Ch"));
  EXPECT_TRUE(
      is_listen_on("/* a /* nested */ comment */ -- and a line\nLISTEN \"a\"\"b\"", "a\"b"));
  EXPECT_TRUE(is_listen_on(listener_tag("ch") + "LISTEN \"ch\"", "ch"));
  EXPECT_TRUE(is_listen_on(R"(LISTEN"ch")", "ch"));
  // Cut to 63 bytes, as LISTEN cuts names.
  EXPECT_TRUE(is_listen_on("LISTEN \"" + std::string(70, 'x') + "\"", std::string(63, 'x')));

  EXPECT_FALSE(is_listen_on(R"(LISTEN "psql_ch")", "psql_c"));
  EXPECT_FALSE(is_listen_on(R"(UNLISTEN "ch")", "ch"));
  EXPECT_FALSE(is_listen_on("LISTENch", "ch"));
  EXPECT_FALSE(is_listen_on(R"(LISTEN "ch"; SELECT 1)", "ch"));
  EXPECT_FALSE(is_listen_on(R"(LISTEN "ch)", "ch"));
  EXPECT_FALSE(is_listen_on("LISTEN", "ch"));
  EXPECT_FALSE(is_listen_on("LISTEN 1ch", "1ch"));
  EXPECT_FALSE(is_listen_on("SELECT 'LISTEN ch'", "ch"));
  EXPECT_FALSE(is_listen_on("", "ch"));
}

TEST(ServerAdmin, TheListenerTagNamesTheChannelInHexWhateverItHolds) {
  EXPECT_EQ(listener_tag("ab"), "/* syncbus listener of channel 0x6162 */ ");
  // No name can end the comment early.
  const auto hostile = listener_tag("*/ LISTEN x; --");
  EXPECT_EQ(hostile.find("*/"), hostile.size() - 3);
}

}  // namespace
}  // namespace syncbus::detail
