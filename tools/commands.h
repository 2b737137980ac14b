// Registration of the `vpci` subcommands. Each command lives in its own
// `*_command.cc` file and registers itself with VPCI_REGISTER_COMMAND; `main.cc`
// only builds the CLI11 app from the registry. Command files are compiled straight
// into the executable, so no registrar is dropped by the linker.
#pragma once

#include <functional>
#include <vector>

#include <CLI/CLI.hpp>

namespace vpci::tools {

// A registrar adds one subcommand to `app`. When the subcommand runs it stores its
// exit status in `exit_code`: 0 success, 1 rejected input or verdict; CLI11 usage
// errors exit with 2.
using CommandRegistrar = void (*)(CLI::App& app, int& exit_code);

std::vector<CommandRegistrar>& command_registry();

struct CommandRegistration {
  explicit CommandRegistration(CommandRegistrar registrar) {
    command_registry().push_back(registrar);
  }
};

}  // namespace vpci::tools

#define VPCI_REGISTER_COMMAND(function)                                                  \
  static const ::vpci::tools::CommandRegistration vpci_command_registration_##function { \
    function                                                                             \
  }
