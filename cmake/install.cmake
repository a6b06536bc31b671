include(CMakePackageConfigHelpers)

set(SYNCBUS_CONFIG_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/syncbus")

install(TARGETS syncbus EXPORT syncbusTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/syncbus DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
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
configure_file(cmake/syncbus.pc.in "${PROJECT_BINARY_DIR}/syncbus.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/syncbus.pc"
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
