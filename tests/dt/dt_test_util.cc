#include "tests/dt/dt_test_util.h"

#include <unistd.h>

#include <fstream>
#include <iterator>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "dt/dtc.h"
#include "dt/dts.h"

namespace vpci::dt::testing {
namespace {

std::optional<std::uint64_t> read_number(const std::vector<std::uint32_t>& cells, std::size_t at,
                                         std::uint32_t count) {
  if (count > 2 || at + count > cells.size()) return std::nullopt;
  std::uint64_t value = 0;
  for (std::uint32_t i = 0; i < count; ++i) value = (value << 32) | cells[at + i];
  return value;
}

// Translates a bus address of a child of `bus` to the root's address space through
// the `ranges` of `bus` and its ancestors (DT spec 2.3.8). nullopt when some level
// has no `ranges` or cells wider than 64 bits.
std::optional<std::uint64_t> translate(const Node& bus, std::uint64_t address) {
  const Node* node = &bus;
  while (node->parent() != nullptr) {
    const Property* ranges = node->property("ranges");
    if (ranges == nullptr) return std::nullopt;
    if (!ranges->value.empty()) {
      const auto cells = ranges->cells();
      const std::uint32_t child_cells = node->address_cells();
      const std::uint32_t parent_cells = node->parent()->address_cells();
      const std::uint32_t size_cells = node->size_cells();
      const std::size_t entry = child_cells + parent_cells + size_cells;
      if (!cells || entry == 0) return std::nullopt;
      bool found = false;
      for (std::size_t i = 0; i + entry <= cells->size(); i += entry) {
        const auto child = read_number(*cells, i, child_cells);
        const auto parent = read_number(*cells, i + child_cells, parent_cells);
        const auto size = read_number(*cells, i + child_cells + parent_cells, size_cells);
        if (!child || !parent || !size) return std::nullopt;
        if (address >= *child && address - *child < *size) {
          address = address - *child + *parent;
          found = true;
          break;
        }
      }
      if (!found) return std::nullopt;
    }
    node = node->parent();
  }
  return address;
}

std::string base_name(const std::string& name) {
  return name.substr(0, name.find('@'));
}

}  // namespace

std::filesystem::path corpus_dir() {
  return std::filesystem::path(VPCI_CORPUS_DIR) / "dt";
}
std::filesystem::path data_dir() {
  return std::filesystem::path(VPCI_SOURCE_DIR) / "tests/dt/data";
}

std::vector<std::uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string read_text(const std::filesystem::path& path) {
  const auto bytes = read_bytes(path);
  return {bytes.begin(), bytes.end()};
}

Tree load_or_die(const std::filesystem::path& path) {
  auto tree = load_tree_file(path);
  if (!tree) {
    ADD_FAILURE() << tree.error().message;
    return Tree{};
  }
  return std::move(*tree);
}

Tree dts_or_die(const std::string& text) {
  auto tree = parse_dts(text);
  if (!tree) {
    ADD_FAILURE() << tree.error().message;
    return Tree{};
  }
  return std::move(*tree);
}

Tree build_partial_from_host(const Tree& host, std::vector<PartialMaster>* masters) {
  Tree partial;
  Node& root = partial.root();
  root.set_u32("#address-cells", 2);
  root.set_u32("#size-cells", 2);
  Node& passthrough = **root.add_child("passthrough");
  passthrough.set_string("compatible", "simple-bus");
  passthrough.set_empty("ranges");
  passthrough.set_u32("#address-cells", 2);
  passthrough.set_u32("#size-cells", 2);
  Node* unaddressed = nullptr;
  std::set<std::uint64_t> used_addresses;
  std::set<std::string> used_names;

  for_each_node(host.root(), [&](const Node& host_node) {
    const Property* iommus = host_node.property("iommus");
    if (iommus == nullptr || host_node.parent() == nullptr) return;
    const Node& bus = *host_node.parent();
    const std::uint32_t address_cells = bus.address_cells();
    const std::uint32_t size_cells = bus.size_cells();

    // reg entries as (CPU address, size); empty when any entry is untranslatable.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> regions;
    if (const Property* reg = host_node.property("reg");
        reg != nullptr && address_cells <= 2 && size_cells <= 2) {
      const auto cells = reg->cells();
      const std::size_t entry = address_cells + size_cells;
      if (cells && entry != 0 && !cells->empty() && cells->size() % entry == 0) {
        for (std::size_t i = 0; i < cells->size(); i += entry) {
          const auto address = read_number(*cells, i, address_cells);
          const auto size = size_cells == 0 ? std::optional<std::uint64_t>(0)
                                            : read_number(*cells, i + address_cells, size_cells);
          const auto cpu = address ? translate(bus, *address) : std::nullopt;
          if (!cpu || !size) {
            regions.clear();
            break;
          }
          regions.emplace_back(*cpu, *size);
        }
      }
    }
    Node* parent = &passthrough;
    std::string name;
    if (!regions.empty() && used_addresses.insert(regions.front().first).second) {
      name = fmt::format("{}@{:x}", base_name(host_node.name()), regions.front().first);
    } else {
      regions.clear();
      if (unaddressed == nullptr) {
        // A non-simple-bus container: its children need no reg. It has a
        // unit address and an (empty-sized) ranges entry to satisfy the
        // simple-bus rules of its own parent.
        unaddressed = *passthrough.add_child("unaddressed@0");
        const std::uint32_t ranges[] = {0, 0, 0, 0, 0, 0};
        unaddressed->set_cells("ranges", ranges);
        unaddressed->set_u32("#address-cells", 2);
        unaddressed->set_u32("#size-cells", 2);
      }
      parent = unaddressed;
      name = base_name(host_node.name());
    }
    const std::string stem = name;
    for (int n = 1; !used_names.insert(parent->path() + "/" + name).second; ++n) {
      const auto at = stem.find('@');
      name = at == std::string::npos
                 ? fmt::format("{}-{}", stem, n)
                 : fmt::format("{}-{}{}", stem.substr(0, at), n, stem.substr(at));
    }
    Node& node = **parent->add_child(name);
    if (const Property* compatible = host_node.property("compatible"))
      node.set_property("compatible", compatible->value);
    if (!regions.empty()) {
      std::vector<std::uint32_t> reg;
      std::vector<std::uint32_t> xen_reg;
      for (const auto& [address, size] : regions) {
        const std::uint32_t a[] = {static_cast<std::uint32_t>(address >> 32),
                                   static_cast<std::uint32_t>(address)};
        const std::uint32_t s[] = {static_cast<std::uint32_t>(size >> 32),
                                   static_cast<std::uint32_t>(size)};
        reg.insert(reg.end(), {a[0], a[1], s[0], s[1]});
        // xen,reg = <host address, size, guest address> (guest = host here).
        xen_reg.insert(xen_reg.end(), {a[0], a[1], s[0], s[1], a[0], a[1]});
      }
      node.set_cells("reg", reg);
      node.set_cells("xen,reg", xen_reg);
    }
    node.set_string("xen,path", host_node.path());
    // iommus with every phandle replaced by the placeholder 0: the host's
    // specifier layout is needed to find the phandle cells.
    const auto cells = *iommus->cells();
    const auto phandles = host.phandle_index();
    std::vector<std::uint32_t> copied = cells;
    for (std::size_t i = 0; i < cells.size();) {
      const Node* provider = phandles.at(cells[i]);
      copied[i] = 0;
      i += 1 + *provider->property("#iommu-cells")->u32();
    }
    node.set_cells("iommus", copied);
    if (masters != nullptr) masters->push_back({node.path(), host_node.path()});
  });
  return partial;
}

std::optional<std::string> dt_validate_added_nodes(const BindResult& bound) {
  static const bool installed = run_process("dt-validate", {"--version"}, {}).has_value();
  if (!installed) return std::nullopt;
  Tree wrapper = bound.guest.clone();
  const auto top = [](const std::string& path) {
    return path.empty() ? std::string() : path.substr(1, path.find('/', 1) - 1);
  };
  const std::set<std::string> added = {top(bound.viommu_path), top(bound.pci_path),
                                       top(bound.grant_path)};
  std::vector<std::string> others;
  for (const auto& child : wrapper.root().children())
    if (!added.contains(child->name())) others.push_back(child->name());
  for (const auto& name : others) wrapper.root().remove_child(name);
  if (wrapper.root().children().empty()) {
    ADD_FAILURE() << "the bind added no node to validate";
    return std::string("nothing to validate");
  }
  std::vector<std::string> root_properties;
  for (const auto& property : wrapper.root().properties())
    if (property.name != "#address-cells" && property.name != "#size-cells")
      root_properties.push_back(property.name);
  for (const auto& name : root_properties) wrapper.root().remove_property(name);
  wrapper.root().set_string("compatible", "vpci,dt-validate-wrapper");
  wrapper.root().set_string("model", "nodes added by vpci dt bind");
  auto blob = serialize_dtb(wrapper);
  if (!blob) {
    ADD_FAILURE() << blob.error().message;
    return std::string("cannot serialize the wrapper");
  }
  const auto file =
      std::filesystem::temp_directory_path() / fmt::format("vpci-dt-validate-{}.dtb", ::getpid());
  std::ofstream(file, std::ios::binary)
      .write(reinterpret_cast<const char*>(blob->data()),
             static_cast<std::streamsize>(blob->size()));
  auto run = run_process("dt-validate", {file.string()}, {});
  std::filesystem::remove(file);
  if (!run) {
    ADD_FAILURE() << run.error().message;
    return std::string("dt-validate did not run");
  }
  return std::string(run->out.begin(), run->out.end()) + run->err;
}

DtcRun run_dtc(const std::vector<std::string>& args, const std::vector<std::uint8_t>& input) {
  DtcRun run;
  auto output = run_process(dtc_program(), args, input);
  if (!output) {
    ADD_FAILURE() << output.error().message;
    return run;
  }
  run.exit_status = output->exit_status;
  run.out.assign(output->out.begin(), output->out.end());
  run.err = output->err;
  return run;
}

std::string dtc_roundtrip_warnings(const std::vector<std::uint8_t>& blob) {
  const DtcRun decompiled = run_dtc({"-I", "dtb", "-O", "dts", "-"}, blob);
  EXPECT_EQ(decompiled.exit_status, 0) << decompiled.err;
  const DtcRun compiled =
      run_dtc({"-I", "dts", "-O", "dtb", "-"},
              std::vector<std::uint8_t>(decompiled.out.begin(), decompiled.out.end()));
  EXPECT_EQ(compiled.exit_status, 0) << compiled.err;
  auto tree = parse_dtb(blob);
  if (!tree) {
    ADD_FAILURE() << tree.error().message;
    return decompiled.err + compiled.err;
  }
  const auto phandles = tree->phandle_index();
  static const std::regex kArtifact(
      R"(^<stdin>:[0-9.\-]+: Warning \(iommus_property\): (/[^:]*):iommus: cell ([0-9]+) is not a phandle reference$)");
  std::string unexplained = decompiled.err;
  std::istringstream lines(compiled.err);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    bool explained = false;
    if (std::regex_match(line, m, kArtifact)) {
      const Node* node = tree->find(m[1].str());
      const std::size_t cell = std::stoul(m[2].str());
      const Property* iommus = node != nullptr ? node->property("iommus") : nullptr;
      const auto cells = iommus != nullptr ? iommus->cells() : std::nullopt;
      if (cells && cell < cells->size()) {
        const auto it = phandles.find((*cells)[cell]);
        explained = it != phandles.end() && it->second->has_property("#iommu-cells");
      }
    }
    if (!explained) unexplained += line + "\n";
  }
  return unexplained;
}

std::string to_dts_compile_warnings(const Tree& tree) {
  const std::string dts = to_dts(tree);
  const DtcRun compiled =
      run_dtc({"-I", "dts", "-O", "dtb", "-"}, std::vector<std::uint8_t>(dts.begin(), dts.end()));
  EXPECT_EQ(compiled.exit_status, 0) << compiled.err << dts;
  auto reparsed = parse_dtb(std::vector<std::uint8_t>(compiled.out.begin(), compiled.out.end()));
  if (!reparsed) {
    ADD_FAILURE() << reparsed.error().message;
    return compiled.err;
  }
  EXPECT_EQ(*serialize_dtb(*reparsed), *serialize_dtb(tree))
      << "to_dts() output compiles to another tree";
  return compiled.err;
}

}  // namespace vpci::dt::testing
