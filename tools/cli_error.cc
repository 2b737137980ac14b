#include "tools/cli_error.h"

#include <cstdio>

#include <fmt/format.h>

namespace vpci::tools {

void print_error(std::string_view command, std::string_view message) {
  while (!message.empty() && message.back() == '\n') message.remove_suffix(1);
  std::string out;
  for (;;) {
    const auto newline = message.find('\n');
    out += fmt::format("vpci {}: {}\n", command, message.substr(0, newline));
    if (newline == std::string_view::npos) break;
    message.remove_prefix(newline + 1);
  }
  // One write, so lines of concurrent processes sharing stderr do not interleave.
  (void)std::fputs(out.c_str(), stderr);
  (void)std::fflush(stderr);
}

int rejected(std::string_view command, const Error& error) {
  return rejected(command, error.message);
}

int rejected(std::string_view command, std::string_view message) {
  print_error(command, message);
  return kExitRejected;
}

int usage_error(std::string_view command, std::string_view message) {
  print_error(command, message);
  return kExitUsage;
}

}  // namespace vpci::tools
