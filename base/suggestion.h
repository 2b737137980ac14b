// Typo suggestions for configuration readers: "unknown kind \"virtio-rgn\" (did you
// mean \"virtio-rng\"?)". Shared by every TOML reader (domain/, server/serve_config).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace vpci {

// Edits (insert, delete, substitute, swap two neighbours) that turn `a` into `b`: the
// optimal-string-alignment distance, so that "phv" is one edit from "pvh".
std::size_t edit_distance(std::string_view a, std::string_view b);

// " (did you mean \"x\"?)" for a near miss among `candidates`, else "". More than two
// edits away is not a typo. On a tie the candidate of the same length wins (a swap or
// a substitution rather than a dropped letter).
std::string suggestion(std::string_view word, std::span<const std::string_view> candidates);

// "\"a\", \"b\", \"c\"": the candidates for an error message.
std::string quoted_list(std::span<const std::string_view> names);

}  // namespace vpci
