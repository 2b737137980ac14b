// Wording shared by the TOML readers (pci/free_space_table, domain/config_file,
// server/serve_config) for "expected X, found Y" messages. Header-only: only code that
// already uses toml++ includes it.
#pragma once

#include <string_view>

#include <toml++/toml.h>

namespace vpci {

inline std::string_view toml_type_phrase(toml::node_type type) {
  switch (type) {
    case toml::node_type::none: return "nothing";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
  }
  return "an unknown TOML type";
}

}  // namespace vpci
