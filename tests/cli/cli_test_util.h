// Helpers for tests that run real programs: the built `vpci` and system tools
// such as lspci and dtc.
#pragma once

#include <cstdio>
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace vpci::testing {

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `command` through /bin/sh, capturing stdout and stderr separately.
inline CommandResult run_command(const std::string& command) {
  static int counter = 0;
  const auto err_path = std::filesystem::temp_directory_path() /
                        ("vpci-test-stderr-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>" + err_path.string()).c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[65536];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.err = read_text_file(err_path);
  std::filesystem::remove(err_path);
  return result;
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

inline std::string vpci_cli() { return VPCI_CLI_PATH; }

// A scratch directory removed when the test ends.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("vpci-cli-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Every PCI dump of the shared corpus (lspci text files and raw config files) and
// the handmade malformed ones in tests/data/pci.
inline std::vector<std::filesystem::path> pci_corpus_files() {
  std::vector<std::filesystem::path> files;
  for (const std::filesystem::path& root :
       {std::filesystem::path(VPCI_CORPUS_DIR) / "pci",
        std::filesystem::path(VPCI_SOURCE_DIR) / "tests" / "data" / "pci"}) {
    // Listed while GoogleTest discovers tests: a missing directory must not throw
    // (an abort at discovery fails the whole build), its tests are simply absent.
    std::error_code ec;
    if (!std::filesystem::is_directory(root, ec)) {
      std::fprintf(stderr, "note: %s is missing; its corpus tests are skipped\n", root.c_str());
      continue;
    }
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root, ec)) {
      if (!entry.is_regular_file()) continue;
      const std::string name = entry.path().filename().string();
      if (name.ends_with("-vvv.txt") || name == "README.md") continue;  // not dumps
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace vpci::testing
