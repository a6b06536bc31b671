#include <syncbus/version.hpp>

#include <gtest/gtest.h>

#include <string>

TEST(Version, HeaderMatchesTheCMakeProjectVersion) {
  EXPECT_EQ(std::string(syncbus::version_string), SYNCBUS_PROJECT_VERSION);
  EXPECT_EQ(std::to_string(SYNCBUS_VERSION_MAJOR) + "." + std::to_string(SYNCBUS_VERSION_MINOR) +
                "." + std::to_string(SYNCBUS_VERSION_PATCH),
            SYNCBUS_PROJECT_VERSION);
}
