include(CMakePackageConfigHelpers)

set(SYNCBUS_CONFIG_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/syncbus")

install(TARGETS syncbus EXPORT syncbusTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/syncbus DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The documentation the tool's messages point at (docs/OPERATIONS.md, ...).
install(FILES LICENSE README.md CHANGELOG.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY docs DESTINATION ${CMAKE_INSTALL_DOCDIR} FILES_MATCHING PATTERN "*.md")
install(EXPORT syncbusTargets
  NAMESPACE syncbus::
  DESTINATION ${SYNCBUS_CONFIG_DIR})

configure_package_config_file(cmake/syncbusConfig.cmake.in
  "${PROJECT_BINARY_DIR}/syncbusConfig.cmake"
  INSTALL_DESTINATION ${SYNCBUS_CONFIG_DIR})
write_basic_package_version_file("${PROJECT_BINARY_DIR}/syncbusConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/syncbusConfig.cmake"
  "${PROJECT_BINARY_DIR}/syncbusConfigVersion.cmake"
  DESTINATION ${SYNCBUS_CONFIG_DIR})

# Relocatable: the prefix is found from the .pc file's own location, so
# `cmake --install --prefix ANYWHERE` yields a working file.
file(RELATIVE_PATH SYNCBUS_PC_PREFIX_FROM_PCFILEDIR
  "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
# `pkg-config --cflags --libs syncbus` links as written: a static libsyncbus
# (the default) needs its dependencies on every link line, so they are
# public; a shared one carries them itself, so they are private (--static).
set(SYNCBUS_PC_PRIVATE_DEPS "libpqxx fmt libcrypto simdjson")
if(BUILD_SHARED_LIBS)
  set(SYNCBUS_PC_REQUIRES "nlohmann_json")
  set(SYNCBUS_PC_REQUIRES_PRIVATE "${SYNCBUS_PC_PRIVATE_DEPS}")
  set(SYNCBUS_PC_LIBS "")
  set(SYNCBUS_PC_LIBS_PRIVATE "-lpq")
else()
  set(SYNCBUS_PC_REQUIRES "nlohmann_json ${SYNCBUS_PC_PRIVATE_DEPS}")
  set(SYNCBUS_PC_REQUIRES_PRIVATE "")
  set(SYNCBUS_PC_LIBS "-lpq")
  set(SYNCBUS_PC_LIBS_PRIVATE "")
endif()
configure_file(cmake/syncbus.pc.in "${PROJECT_BINARY_DIR}/syncbus.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/syncbus.pc"
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
