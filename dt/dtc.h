// Running the device tree compiler. `dtc` is the reference parser of DTS and the
// checker every tree we write must satisfy, so vpci runs it rather than carrying a
// second DTS grammar.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace vpci::dt {

struct ProcessOutput {
  int exit_status = -1;  // the exit code, or 128 + signal number
  std::vector<std::uint8_t> out;
  std::string err;
};

// Runs `program` (looked up in PATH) with `args`, feeding `input` on stdin and
// collecting stdout and stderr. kIoError when the program cannot be started; a
// non-zero exit is not an error here (the caller decides).
Result<ProcessOutput> run_process(const std::string& program, const std::vector<std::string>& args,
                                  std::span<const std::uint8_t> input);

// The `dtc` program to run: $VPCI_DTC when set, else "dtc".
std::string dtc_program();

}  // namespace vpci::dt

namespace vpci::dt {

// dtc's stderr for a failed compile of stdin, as one line about the user's file:
// "Error: <stdin>:1.21-22 syntax error\nFATAL ERROR: ..." from origin "a.dts" becomes
// "a.dts:1:21: syntax error". The first positioned error is kept (dtc's later ones
// often follow from it), with a count of the rest; summary lines are dropped.
std::string describe_dtc_failure(std::string_view err, std::string_view origin);

}  // namespace vpci::dt
