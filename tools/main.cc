#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/log.h"
#include "base/suggestion.h"
#include "tools/cli_error.h"
#include "tools/commands.h"

namespace vpci::tools {

std::vector<CommandRegistrar>& command_registry() {
  static std::vector<CommandRegistrar> registry;
  return registry;
}

namespace {

// "dt bind": the command (and subcommand) CLI11 was parsing, for the message prefix.
std::string command_path(CLI::App& app) {
  std::string path;
  for (CLI::App* current = &app;;) {
    const auto parsed = current->get_subcommands();
    if (parsed.empty()) break;
    current = parsed.front();
    path += (path.empty() ? "" : " ") + current->get_name();
  }
  return path;
}

int command_line_error(const std::string& path, const std::string& message) {
  if (!path.empty()) return usage_error(path, message);
  fmt::print(stderr, "vpci: {}\n", message);
  return kExitUsage;
}

// CLI11 reports an unknown subcommand as an unexpected argument and a missing one as
// "A subcommand is required"; name the commands instead, and suggest the nearest one
// for a typo. Returns the exit status, or -1 when the command words are complete and
// known (options, and the arguments of a command without subcommands, are CLI11's).
int check_command_words(CLI::App& app, int argc, char** argv) {
  CLI::App* current = &app;
  std::string path;
  for (int i = 1;; ++i) {
    const auto subcommands = current->get_subcommands({});
    if (subcommands.empty() || (i < argc && std::string_view(argv[i]).starts_with("-"))) return -1;
    std::vector<std::string> names;
    for (const CLI::App* sub : subcommands) names.push_back(sub->get_name());
    const std::vector<std::string_view> views(names.begin(), names.end());
    if (i >= argc)
      return command_line_error(path, fmt::format("a command is required: {}", quoted_list(views)));
    const std::string word = argv[i];
    const auto named = std::find_if(subcommands.begin(), subcommands.end(),
                                    [&](const CLI::App* sub) { return sub->check_name(word); });
    if (named == subcommands.end()) {
      std::string hint = suggestion(word, views);
      if (hint.empty()) hint = fmt::format("; the commands are {}", quoted_list(views));
      return command_line_error(path, fmt::format("unknown command \"{}\"{}", word, hint));
    }
    current = *named;
    path += (path.empty() ? "" : " ") + current->get_name();
  }
}

int run(int argc, char** argv) {
  CLI::App app{"vpci: software-defined virtual PCI devices for hypervisors and toolstacks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "vpci 0.1.0");
  // What the library reports while it runs (base/log.h): notices such as guest memory
  // that is not shared, warnings, and debug detail. Accepted before or after the command.
  app.add_option_function<std::string>(
         "--log-level",
         [](const std::string& level) { vpci::logger().set_level(spdlog::level::from_str(level)); },
         "messages from the library while it runs: trace, debug, info (default), warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->trigger_on_parse();
  app.fallthrough();
  int exit_code = kExitSuccess;
  for (auto registrar : command_registry()) registrar(app, exit_code);
  if (const int status = check_command_words(app, argc, argv); status >= 0) return status;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with status 0; CLI11 prints them.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    const std::string path = command_path(app);
    const std::string message =
        fmt::format("{} (see vpci{}{} --help)", e.what(), path.empty() ? "" : " ", path);
    return command_line_error(path, message);
  } catch (const std::exception& e) {
    // Commands return errors as values; an exception here is a bug, but it must still
    // end as one line and a status, not as std::terminate.
    const std::string path = command_path(app);
    fmt::print(stderr, "vpci{}{}: internal error: {}\n", path.empty() ? "" : " ", path, e.what());
    return kExitRejected;
  }
  return exit_code;
}

}  // namespace
}  // namespace vpci::tools

int main(int argc, char** argv) {
  // run() turns what it expects into messages and statuses; anything thrown outside its
  // parse step (building the command table, a registrar) is a bug, and still ends as
  // one line and status 1 rather than std::terminate.
  try {
    return vpci::tools::run(argc, argv);
  } catch (const std::exception& e) {
    (void)std::fprintf(stderr, "vpci: internal error: %s\n", e.what());
  } catch (...) {
    (void)std::fprintf(stderr, "vpci: internal error: unknown exception\n");
  }
  return vpci::tools::kExitRejected;
}
