// The one way vpci reads a file a user names on the command line or in a
// configuration: a dump, a TOML file, a device tree, a free-space table.
//
// A user file is hostile input like any other: it may be a directory, a FIFO that
// nobody writes, /dev/zero, a sparse file of terabytes, or unreadable. Every kind of
// input has a size cap, checked before reading where the size is known and while
// reading where it is not, so a bad path becomes an `Error` naming the file and the
// rule within bounded time and memory instead of an exception or an endless read.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "base/error.h"

namespace vpci {

// What a caller reads: a noun for messages ("configuration file") and its cap.
struct InputFileKind {
  std::string_view noun;
  std::size_t max_bytes;
};

inline constexpr std::size_t kMiB = std::size_t{1} << 20;

// Config-space sources: raw images are at most 4 KiB, but lspci text of a large
// machine (hundreds of functions, -xxxx, -vvv) runs to a few MiB.
inline constexpr InputFileKind kConfigSpaceInput{"config-space source", 16 * kMiB};
// TOML configurations (serve, domain check, free-space tables).
inline constexpr InputFileKind kConfigurationInput{"configuration file", 16 * kMiB};
// Device trees, as DTB or DTS; the largest upstream DTBs are well under 1 MiB.
inline constexpr InputFileKind kDeviceTreeInput{"device tree", 16 * kMiB};

// How long a FIFO or character device may stay silent before the read gives up:
// a FIFO with no writer would otherwise block forever.
inline constexpr std::chrono::milliseconds kInputIdleTimeout{3000};

// Reads the whole of `path`: a regular file, a FIFO or a character device (pipes
// such as `<(lspci -x)` are FIFOs). Errors (codes):
//   kNotFound       the path does not exist
//   kIoError        cannot be opened (permissions, ...) or read; a FIFO silent
//                   for kInputIdleTimeout
//   kInvalidArgument a directory, socket or block device
//   kNoSpace        larger than kind.max_bytes (the cap is in the message)
// The message starts with the path, so callers need add no context.
Result<std::string> read_input_file(const std::filesystem::path& path, const InputFileKind& kind);

// "16 MiB", "4 KiB", "300 bytes": a byte count for messages.
std::string describe_size(std::size_t bytes);

}  // namespace vpci
