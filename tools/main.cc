#include <algorithm>

#include "tools/commands.h"

namespace vpci::tools {

std::vector<CommandRegistrar>& command_registry() {
  static std::vector<CommandRegistrar> registry;
  return registry;
}

}  // namespace vpci::tools

int main(int argc, char** argv) {
  CLI::App app{"vpci: software-defined virtual PCI devices for hypervisors and toolstacks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "vpci 0.1.0");
  int exit_code = 0;
  for (auto registrar : vpci::tools::command_registry()) registrar(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int status = app.exit(e);
    return status == 0 ? 0 : 2;
  }
  return exit_code;
}
