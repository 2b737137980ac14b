// The one way a `vpci` command reports failure, so every command follows the
// convention README states: exit 0 on success, 1 when the command line was
// well-formed but its input was rejected, 2 when the command line itself is wrong;
// every message on stderr is `vpci <command>: <what>`, with `file:line:col: ` after
// the prefix where the problem has a position.
#pragma once

#include <string_view>

#include "base/error.h"

namespace vpci::tools {

inline constexpr int kExitSuccess = 0;
// The command line parsed, but a file it names (or what the command was asked to do
// with it) was refused: unreadable or malformed files, a device that is not in the
// source, a placement that does not fit, a domain Xen would reject.
inline constexpr int kExitRejected = 1;
// The command line is wrong whatever the files hold: an unknown command or option, a
// missing or extra argument, options that exclude each other, an option value that
// is not of the option's form or range (a BDF, a number, a spec).
inline constexpr int kExitUsage = 2;

// Writes `message` to stderr as `vpci <command>: <line>`, one such line per line of
// the message, so that no line of a multi-line report lacks the prefix.
void print_error(std::string_view command, std::string_view message);

// print_error, then the exit status for rejected input / for a usage error.
int rejected(std::string_view command, const Error& error);
int rejected(std::string_view command, std::string_view message);
int usage_error(std::string_view command, std::string_view message);

}  // namespace vpci::tools
