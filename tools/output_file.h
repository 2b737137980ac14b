// Writing output files so that nothing is written on error: data goes to a
// temporary file in the same directory, which replaces the target only once it is
// complete and flushed.
#pragma once

#include <filesystem>
#include <span>
#include <string_view>

#include "base/error.h"

namespace vpci::tools {

Status write_file_atomically(const std::filesystem::path& path, std::string_view contents);

}  // namespace vpci::tools
