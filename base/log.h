// The library's one logger. Library code never prints (DEVELOPERS.md): what a user
// should hear about while vpci runs — a notice that guest memory is not shared, a
// device that needs a reset — goes through this logger with a level, and the program
// decides where it goes and how much (`vpci --log-level`, default info). Writes to
// stderr, one line per message: "vpci: <level>: <message>".
#pragma once

#include <spdlog/spdlog.h>

namespace vpci {

// The "vpci" logger, created on first use. Thread-safe.
spdlog::logger& logger();

}  // namespace vpci
