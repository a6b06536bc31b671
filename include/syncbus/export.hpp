#pragma once
/// \file export.hpp
/// SYNCBUS_API marks what a shared libsyncbus exports: the public API of
/// these headers, and nothing of the library's insides (it is built with
/// hidden visibility, as fmt and spdlog are). A static library is the same
/// either way.

#if defined(__GNUC__) || defined(__clang__)
#define SYNCBUS_API __attribute__((visibility("default")))
#else
#define SYNCBUS_API
#endif
