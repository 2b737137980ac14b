// A `vpci serve` child process for the CLI tests: started with arguments, its stdout and
// stderr in a file, waited for until ready, stopped with a signal.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>

#include "cli_test_util.h"

namespace vpci::testing {

class ServeProcess {
 public:
  // `cwd`, if given, is the child's working directory.
  ServeProcess(const std::vector<std::string>& args, std::filesystem::path log,
               const std::filesystem::path& cwd = {})
      : log_(std::move(log)) {
    pid_ = ::fork();
    if (pid_ == 0) {
      if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      std::string binary = VPCI_CLI_PATH;
      argv.push_back(binary.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Waits for the "ready" line (or exit).
  bool wait_ready() {
    for (int i = 0; i < 200; ++i) {
      if (output().find("vpci serve: ready") != std::string::npos) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }
  // Sends `signal` and returns the exit status.
  int stop(int signal) {
    if (pid_ <= 0) return exit_status_.value_or(-1);  // never kill(-1, ...)
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // The exit status (128 + signal if killed) once the process has ended, or nullopt
  // if it still runs after `timeout`.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return exit_status_;
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string output() const { return read_text_file(log_); }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
};

}  // namespace vpci::testing
