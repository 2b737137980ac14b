// A private directory for one test's files, removed with everything in it when the
// object goes away. mkdtemp makes the name unique, so tests of one binary, parallel CTest
// runs and leftovers of a crashed run never share a directory.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace vpci::testing {

class ScratchDir {
 public:
  // `prefix` names the test in the directory name (vpci-<prefix>-XXXXXX under $TMPDIR).
  explicit ScratchDir(std::string_view prefix) {
    std::string pattern =
        (std::filesystem::temp_directory_path() / ("vpci-" + std::string(prefix) + "-XXXXXX"))
            .string();
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  // Empty if the directory could not be created (tests ASSERT on valid()).
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] bool valid() const { return !path_.empty(); }
  [[nodiscard]] std::filesystem::path operator/(std::string_view name) const {
    return path_ / name;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace vpci::testing
