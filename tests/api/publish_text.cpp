// Must not compile: publish() of text would send a JSON string, not the JSON
// the text spells (tests/CMakeLists.txt checks the compiler's message).
// SYNCBUS_TEXT_ARGUMENT is the argument under test.
#include <syncbus/in_memory_bus.hpp>

#include <string>

void publish_text(syncbus::ClusterBus& bus) {
  const std::string text = "{\"id\":1}";
  (void)text;
  bus.publish(SYNCBUS_TEXT_ARGUMENT);
}
