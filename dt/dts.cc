#include "dt/dts.h"

#include <cctype>
#include <map>
#include <optional>
#include <set>
#include <string_view>

#include <fmt/format.h>

namespace vpci::dt {
namespace {

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// The "#...-cells" property giving the argument count after each phandle, for the
// phandle-with-arguments properties dtc 1.6.1 checks (checks.c WARNING_PROPERTY_
// PHANDLE_CELLS list, plus gpios). nullopt for other properties.
std::optional<std::string_view> cells_name(std::string_view property) {
  static const std::map<std::string_view, std::string_view> kTable = {
      {"clocks", "#clock-cells"},
      {"cooling-device", "#cooling-cells"},
      {"dmas", "#dma-cells"},
      {"hwlocks", "#hwlock-cells"},
      {"interrupts-extended", "#interrupt-cells"},
      {"io-channels", "#io-channel-cells"},
      {"iommus", "#iommu-cells"},
      {"mboxes", "#mbox-cells"},
      {"msi-parent", "#msi-cells"},
      {"mux-controls", "#mux-control-cells"},
      {"phys", "#phy-cells"},
      {"power-domains", "#power-domain-cells"},
      {"pwms", "#pwm-cells"},
      {"resets", "#reset-cells"},
      {"sound-dai", "#sound-dai-cells"},
      {"thermal-sensors", "#thermal-sensor-cells"},
  };
  if (const auto it = kTable.find(property); it != kTable.end()) return it->second;
  if (property == "gpios" || ends_with(property, "-gpios") || ends_with(property, "-gpio"))
    return "#gpio-cells";
  return std::nullopt;
}

class DtsWriter {
 public:
  explicit DtsWriter(const Tree& tree) : tree_(tree), phandles_(tree.phandle_index()) {
    if (const Node* symbols = tree.find("/__symbols__")) {
      for (const auto& p : symbols->properties()) {
        if (const auto path = p.string())
          label_of_path_.emplace(*path, p.name);  // first label wins
        used_labels_.insert(p.name);
      }
    }
  }

  std::string write() {
    std::string out = "/dts-v1/;\n\n";
    for (const auto& r : tree_.reservations)
      out += fmt::format("/memreserve/ {:#018x} {:#018x};\n", r.address, r.size);
    if (!tree_.reservations.empty()) out += "\n";
    std::string body;
    write_node(tree_.root(), 0, body);
    // Labels are decided while writing the body (a node is labelled when some cell
    // refers to it), so they are inserted afterwards at their markers.
    out += resolve_labels(body);
    return out;
  }

 private:
  // Where a node's label goes: a marker replaced once all references are known.
  static std::string marker(const Node& node) {
    return fmt::format("\x01{}\x01", static_cast<const void*>(&node));
  }

  std::string reference(std::uint32_t phandle) {
    const Node* node = phandles_.at(phandle);
    referenced_.insert(node);
    return fmt::format("&{}", label(*node));
  }

  const std::string& label(const Node& node) {
    if (const auto it = labels_.find(&node); it != labels_.end()) return it->second;
    std::string name;
    if (const auto it = label_of_path_.find(node.path()); it != label_of_path_.end()) {
      name = it->second;
    } else {
      // The node name made a C identifier (dtc labels: [a-zA-Z_][a-zA-Z0-9_]*).
      std::string stem = node.name();
      for (char& c : stem) {
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      }
      if (stem.empty() || std::isdigit(static_cast<unsigned char>(stem.front())))
        stem = std::string("_") + stem;
      name = stem;
      for (int n = 2; used_labels_.count(name) != 0; ++n) name = fmt::format("{}_{}", stem, n);
      used_labels_.insert(name);
    }
    return labels_.emplace(&node, std::move(name)).first->second;
  }

  std::string resolve_labels(const std::string& body) {
    std::string out;
    out.reserve(body.size());
    std::size_t pos = 0;
    while (true) {
      const auto start = body.find('\x01', pos);
      if (start == std::string::npos) break;
      const auto end = body.find('\x01', start + 1);
      out.append(body, pos, start - pos);
      const std::string key = body.substr(start, end - start + 1);
      if (const auto it = marker_node_.find(key);
          it != marker_node_.end() && referenced_.count(it->second) != 0) {
        out += labels_.at(it->second) + ": ";
      }
      pos = end + 1;
    }
    out.append(body, pos, std::string::npos);
    return out;
  }

  // The number of argument cells after `phandle` in a phandle-args property, if
  // the target exists and has the cells property (0 when it is optional and absent,
  // as for `#msi-cells`).
  std::optional<std::uint32_t> argument_cells(std::uint32_t phandle,
                                              std::string_view cells_property) {
    const auto it = phandles_.find(phandle);
    if (it == phandles_.end()) return std::nullopt;
    const Property* p = it->second->property(cells_property);
    if (p == nullptr)
      return cells_property == "#msi-cells" ? std::optional<std::uint32_t>(0) : std::nullopt;
    return p->u32();
  }

  // Which cells of `cells` are phandles, for the properties whose layout is known;
  // empty when the layout does not parse (the value is then written as numbers).
  std::vector<bool> phandle_cells(const Property& p, const std::vector<std::uint32_t>& cells) {
    std::vector<bool> is_phandle(cells.size(), false);
    const auto valid = [&](std::uint32_t ph) {
      return ph != 0 && ph != 0xffffffffu && phandles_.count(ph) != 0;
    };
    if (p.name == "interrupt-parent") {
      if (cells.size() != 1 || !valid(cells[0])) return {};
      is_phandle[0] = true;
      return is_phandle;
    }
    if (p.name == "iommu-map" || p.name == "msi-map") {
      if (cells.size() % 4 != 0) return {};
      for (std::size_t i = 1; i < cells.size(); i += 4) {
        if (!valid(cells[i])) return {};
        is_phandle[i] = true;
      }
      return is_phandle;
    }
    const auto cells_property = cells_name(p.name);
    if (!cells_property) return {};
    for (std::size_t i = 0; i < cells.size();) {
      if (!valid(cells[i])) return {};
      const auto args = argument_cells(cells[i], *cells_property);
      if (!args || i + 1 + *args > cells.size()) return {};
      is_phandle[i] = true;
      i += 1 + *args;
    }
    return is_phandle;
  }

  static bool printable_strings(const std::vector<std::uint8_t>& v) {
    if (v.empty() || v.back() != 0 || v.front() == 0) return false;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const auto c = v[i];
      if (c == 0) {
        if (i > 0 && v[i - 1] == 0) return false;
      } else if (c < 0x20 || c > 0x7e) {
        return false;
      }
    }
    return true;
  }

  std::string value(const Property& p) {
    if (p.value.empty()) return {};
    const auto cells = p.cells();
    if (cells) {
      const auto is_phandle = phandle_cells(p, *cells);
      if (!is_phandle.empty() || !printable_strings(p.value)) {
        std::string out = " = <";
        for (std::size_t i = 0; i < cells->size(); ++i) {
          if (i != 0) out += ' ';
          out += !is_phandle.empty() && is_phandle[i] ? reference((*cells)[i])
                                                      : fmt::format("{:#x}", (*cells)[i]);
        }
        return out + ">";
      }
    }
    if (printable_strings(p.value)) {
      std::string out = " = \"";
      for (std::size_t i = 0; i + 1 < p.value.size(); ++i) {
        const char c = static_cast<char>(p.value[i]);
        if (c == 0) {
          out += "\", \"";
        } else {
          if (c == '"' || c == '\\') out += '\\';
          out += c;
        }
      }
      return out + "\"";
    }
    std::string out = " = [";
    for (std::size_t i = 0; i < p.value.size(); ++i)
      out += fmt::format("{}{:02x}", i == 0 ? "" : " ", p.value[i]);
    return out + "]";
  }

  void write_node(const Node& node, int depth, std::string& out) {
    const std::string indent(static_cast<std::size_t>(depth), '\t');
    out += indent;
    if (node.phandle()) {
      const std::string key = marker(node);
      marker_node_.emplace(key, &node);
      out += key;
    }
    out += node.parent() == nullptr ? "/" : node.name();
    out += " {\n";
    for (const auto& p : node.properties())
      out += fmt::format("{}\t{}{};\n", indent, p.name, value(p));
    for (const auto& child : node.children()) {
      out += "\n";
      write_node(*child, depth + 1, out);
    }
    out += indent + "};\n";
  }

  const Tree& tree_;
  const PhandleIndex phandles_;
  std::map<std::string, std::string> label_of_path_;
  std::set<std::string> used_labels_;
  std::map<const Node*, std::string> labels_;
  std::set<const Node*> referenced_;
  std::map<std::string, const Node*> marker_node_;
};

}  // namespace

std::string to_dts(const Tree& tree) {
  return DtsWriter(tree).write();
}

}  // namespace vpci::dt
