// Writing output files so that nothing is written on error: data goes to a
// temporary file in the same directory, which replaces the target only once it is
// complete and flushed.
//
// An output path that already names a character device or a FIFO (`-o /dev/stdout`,
// `-o >(gzip > x)`) is written in place: renaming over it would replace the device
// node or the pipe with a regular file (as root, /dev/null itself). Directories,
// sockets and block devices are refused.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace vpci::tools {

struct OutputFile {
  std::filesystem::path path;
  std::string contents;
};

// Writes every file or none: all regular targets are written to temporaries first
// and renamed into place only when every one of them was written. Streams (devices,
// FIFOs) are written last, after the renames, since what they consumed cannot be
// taken back. A FIFO nobody reads is refused rather than waited on.
Status write_output_files(const std::vector<OutputFile>& files);

Status write_file_atomically(const std::filesystem::path& path, std::string_view contents);

}  // namespace vpci::tools
