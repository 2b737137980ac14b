#include "base/error.h"

#include <cstring>

namespace vpci {

std::string errno_text(int error) {
  char buffer[256];
  // The GNU strerror_r (C++ on glibc defines _GNU_SOURCE): returns the message, which
  // may or may not be in `buffer`.
  return ::strerror_r(error, buffer, sizeof(buffer));
}

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid-argument";
    case ErrorCode::kOutOfRange: return "out-of-range";
    case ErrorCode::kMalformedInput: return "malformed-input";
    case ErrorCode::kNotFound: return "not-found";
    case ErrorCode::kAlreadyExists: return "already-exists";
    case ErrorCode::kNoSpace: return "no-space";
    case ErrorCode::kConflict: return "conflict";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kIoError: return "io-error";
    case ErrorCode::kProtocolViolation: return "protocol-violation";
  }
  return "unknown";
}

}  // namespace vpci
