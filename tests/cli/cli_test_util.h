// Helpers for tests that run real programs: the built `vpci` and system tools
// such as lspci and dtc.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>

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
  const auto err_path =
      std::filesystem::temp_directory_path() /
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

inline std::string vpci_cli() {
  return VPCI_CLI_PATH;
}

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

// What a bounded run of a program did: how it ended, what it printed, and what it
// cost (the issue-20 bounds are wall time and peak RSS).
struct BoundedResult {
  bool started = false;
  bool killed = false;   // still running at the deadline
  int exit_code = -1;    // when it exited
  int signal = 0;        // when a signal ended it
  long max_rss_kib = 0;  // wait4's ru_maxrss (KiB on Linux)
  std::chrono::milliseconds elapsed{0};
  std::string out;
  std::string err;
};

// Runs `argv` (argv[0] a path) with stdin from /dev/null, killing it at `deadline`.
// `as_nobody`: when running as root, the child drops to uid/gid 65534 before exec,
// so that files without read permission are unreadable to it too.
inline BoundedResult run_bounded(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds deadline, bool as_nobody = false) {
  static int counter = 0;
  const auto stem =
      std::filesystem::temp_directory_path() /
      ("vpci-bounded-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  const std::string out_path = stem.string() + ".out";
  const std::string err_path = stem.string() + ".err";
  BoundedResult result;
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) return result;
  if (pid == 0) {
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (in < 0 || out < 0 || err < 0) ::_exit(126);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    if (as_nobody && ::geteuid() == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)
        ::_exit(126);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  result.started = true;
  int status = 0;
  rusage usage{};
  for (;;) {
    const pid_t done = ::wait4(pid, &status, WNOHANG, &usage);
    if (done == pid) break;
    if (std::chrono::steady_clock::now() - start > deadline) {
      ::kill(pid, SIGKILL);
      ::wait4(pid, &status, 0, &usage);
      result.killed = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  result.max_rss_kib = usage.ru_maxrss;
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  result.out = read_text_file(out_path);
  result.err = read_text_file(err_path);
  std::filesystem::remove(out_path);
  std::filesystem::remove(err_path);
  return result;
}

}  // namespace vpci::testing
