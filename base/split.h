// Splits text at every `separator`: "a,,b" → {"a", "", "b"}, "" → {""}. The pieces view
// `text`, which must outlive them. Used by the CLI-syntax parsers of pci/ (PASID and
// capability requests).
#pragma once

#include <string_view>
#include <vector>

namespace vpci {

inline std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const std::size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) break;
    text.remove_prefix(at + 1);
  }
  return parts;
}

}  // namespace vpci
