// Error values for everything that can fail because of input we do not control.
//
// vpci has two error tiers (see ARCHITECTURE.md): programmer errors are asserts;
// anything a guest, a socket peer or a user file controls becomes an `Error`
// carried by `Result<T>`. No exceptions cross the library API.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <tl/expected.hpp>

namespace vpci {

enum class ErrorCode : std::uint8_t {
  kInvalidArgument,    // a request that can never succeed (bad offset, bad width)
  kOutOfRange,         // an offset or length outside the object it addresses
  kMalformedInput,     // a file or message that does not follow its format
  kNotFound,           // a named thing (device, file, node) does not exist
  kAlreadyExists,      // a unique thing would be duplicated
  kNoSpace,            // no room left (config space, ID space, buffer)
  kConflict,           // two requests or ranges contradict each other
  kUnsupported,        // well-formed but not implemented by design
  kIoError,            // the OS refused (errno in the message)
  kProtocolViolation,  // a guest or peer broke a rule of its protocol/spec
};

// strerror(error), but thread-safe (strerror may share one buffer across threads;
// clang-tidy concurrency-mt-unsafe): "No such file or directory".
std::string errno_text(int error);

std::string_view error_code_name(ErrorCode code);

struct Error {
  ErrorCode code;
  std::string message;

  // Prepends where the error happened ("reading foo.lspci: ...") so the user sees
  // the whole path from their request down to the failing check.
  [[nodiscard]] Error with_context(std::string_view context) const& {
    return Error{code, fmt::format("{}: {}", context, message)};
  }
  [[nodiscard]] Error with_context(std::string_view context) && {
    message = fmt::format("{}: {}", context, message);
    return std::move(*this);
  }
};

template <typename T>
using Result = tl::expected<T, Error>;

using Status = Result<void>;

// Builds an unexpected error with a formatted message:
//   return make_error(ErrorCode::kOutOfRange, "offset {:#x} past end", off);
template <typename... Args>
[[nodiscard]] tl::unexpected<Error> make_error(ErrorCode code, fmt::format_string<Args...> format,
                                               Args&&... args) {
  return tl::unexpected<Error>(Error{code, fmt::format(format, std::forward<Args>(args)...)});
}

}  // namespace vpci

// Evaluates a Result-returning expression; on error returns the error from the
// enclosing function. Usable only in functions returning some Result<U>.
#define VPCI_TRY(expr)                                                           \
  do {                                                                           \
    auto vpci_try_result_ = (expr);                                              \
    if (!vpci_try_result_) {                                                     \
      return tl::unexpected<::vpci::Error>(std::move(vpci_try_result_).error()); \
    }                                                                            \
  } while (false)

// Like VPCI_TRY but binds the value: VPCI_ASSIGN_OR_RETURN(auto x, parse(...));
#define VPCI_CONCAT_INNER_(a, b) a##b
#define VPCI_CONCAT_(a, b) VPCI_CONCAT_INNER_(a, b)
#define VPCI_ASSIGN_OR_RETURN(lhs, expr) \
  VPCI_ASSIGN_OR_RETURN_IMPL_(VPCI_CONCAT_(vpci_result_, __LINE__), lhs, expr)
#define VPCI_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)               \
  auto tmp = (expr);                                              \
  if (!tmp) {                                                     \
    return tl::unexpected<::vpci::Error>(std::move(tmp).error()); \
  }                                                               \
  lhs = std::move(*tmp)
