// An in-memory device tree: load a flattened tree (DTB) or a source (DTS, compiled
// by `dtc`), edit nodes and properties by name, serialize once.
//
// Why not edit the blob in place with libfdt's read-write API: every libfdt write
// may move the structure block, so offsets taken before a write are stale after it
// (libfdt.h, "fdt_setprop ... may change the offsets of nodes"), and a bind touches
// hundreds of nodes. Holding the tree as nodes and writing the blob once with the
// sequential-write API (fdt_create ... fdt_finish, the way libxl builds guest trees)
// avoids both the offset bookkeeping and the repeated memmove.
//
// Untrusted blobs are checked with fdt_check_full() before anything reads them, and
// the things dtc itself rejects (duplicate node or property names, duplicate or
// invalid phandles) are rejected here too, so a tree that loads always serializes to
// a blob `dtc` accepts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/error.h"

namespace vpci::dt {

// Nesting deeper than this is refused when loading: real trees stay below 10 levels,
// and the tree's recursive walks must not be driven into a stack overflow by a
// crafted blob.
inline constexpr int kMaxDepth = 64;

struct Property {
  std::string name;
  std::vector<std::uint8_t> value;

  // The value as big-endian 32-bit cells; nullopt when the length is not a multiple
  // of 4 (Devicetree Specification v0.4, 2.2.4: cells are big-endian u32).
  [[nodiscard]] std::optional<std::vector<std::uint32_t>> cells() const;
  // A single cell; nullopt unless the value is exactly 4 bytes.
  [[nodiscard]] std::optional<std::uint32_t> u32() const;
  // A NUL-terminated string; nullopt when the value has no terminating NUL or an
  // embedded one.
  [[nodiscard]] std::optional<std::string> string() const;
  // A string list (`compatible`); nullopt unless the value ends with NUL.
  [[nodiscard]] std::optional<std::vector<std::string>> strings() const;
};

std::vector<std::uint8_t> encode_cells(std::span<const std::uint32_t> cells);
std::vector<std::uint8_t> encode_string(std::string_view text);
std::vector<std::uint8_t> encode_strings(std::span<const std::string> texts);

class Node {
 public:
  explicit Node(std::string name, Node* parent = nullptr)
      : name_(std::move(name)), parent_(parent) {}
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] Node* parent() { return parent_; }
  [[nodiscard]] const Node* parent() const { return parent_; }
  // "/" for the root, "/a/b@1" otherwise.
  [[nodiscard]] std::string path() const;
  // The part of the name after '@', empty when there is none.
  [[nodiscard]] std::string_view unit_address() const;

  [[nodiscard]] const std::vector<Property>& properties() const { return properties_; }
  [[nodiscard]] const Property* property(std::string_view name) const;
  [[nodiscard]] bool has_property(std::string_view name) const { return property(name) != nullptr; }
  // Replaces the value of an existing property in place (keeping its position) or
  // appends a new one.
  void set_property(std::string_view name, std::vector<std::uint8_t> value);
  void set_cells(std::string_view name, std::span<const std::uint32_t> cells) {
    set_property(name, encode_cells(cells));
  }
  void set_u32(std::string_view name, std::uint32_t value) {
    set_cells(name, std::span(&value, 1));
  }
  void set_string(std::string_view name, std::string_view text) {
    set_property(name, encode_string(text));
  }
  void set_empty(std::string_view name) { set_property(name, {}); }
  bool remove_property(std::string_view name);
  // Appends without looking for an existing property of that name (the loader
  // checks uniqueness with a hash set).
  void append_property_unchecked(std::string name, std::vector<std::uint8_t> value) {
    properties_.push_back(Property{std::move(name), std::move(value)});
  }

  [[nodiscard]] const std::vector<std::unique_ptr<Node>>& children() const { return children_; }
  [[nodiscard]] Node* child(std::string_view name);
  [[nodiscard]] const Node* child(std::string_view name) const;
  // Appends a child; kAlreadyExists when a sibling has the same name.
  Result<Node*> add_child(std::string name);
  // Appends without the sibling-name check, for callers that checked uniqueness
  // themselves (the loader does, with a hash set: the linear check would make
  // loading N siblings O(N^2)).
  Node* add_child_unchecked(std::string name);
  bool remove_child(std::string_view name);

  // The node's `phandle` (or legacy `linux,phandle`) value, if it has a valid one.
  [[nodiscard]] std::optional<std::uint32_t> phandle() const;
  // `#address-cells` / `#size-cells` this node sets for its children, with the
  // defaults of the Devicetree Specification v0.4, 2.3.5 (2 and 1) when absent.
  [[nodiscard]] std::uint32_t address_cells() const;
  [[nodiscard]] std::uint32_t size_cells() const;
  // `status` is absent, "okay" or "ok" (DT spec 2.3.4).
  [[nodiscard]] bool enabled() const;
  // True when any `compatible` string equals `value`.
  [[nodiscard]] bool is_compatible(std::string_view value) const;
  [[nodiscard]] std::vector<std::string> compatible() const;

  [[nodiscard]] std::unique_ptr<Node> clone(Node* parent) const;

 private:
  std::string name_;
  Node* parent_;
  std::vector<Property> properties_;
  std::vector<std::unique_ptr<Node>> children_;
};

struct MemoryReservation {
  std::uint64_t address = 0;
  std::uint64_t size = 0;
  friend bool operator==(const MemoryReservation&, const MemoryReservation&) = default;
};

class Node;
// Node by phandle, as built by Tree::phandle_index().
using PhandleIndex = std::unordered_map<std::uint32_t, const Node*>;

class Tree {
 public:
  Tree() : root_(std::make_unique<Node>("")) {}
  Tree(Tree&&) = default;
  Tree& operator=(Tree&&) = default;

  [[nodiscard]] Tree clone() const;

  [[nodiscard]] Node& root() { return *root_; }
  [[nodiscard]] const Node& root() const { return *root_; }
  // Absolute path lookup ("/soc/iommu@fd800000"); nullptr when absent. Aliases are
  // not resolved: paths in partial trees and in the map are always absolute.
  [[nodiscard]] Node* find(std::string_view path);
  [[nodiscard]] const Node* find(std::string_view path) const;

  // Every node carrying a phandle, by phandle.
  [[nodiscard]] PhandleIndex phandle_index() const;
  // Every phandle value in use.
  [[nodiscard]] std::vector<std::uint32_t> phandles() const;

  std::vector<MemoryReservation> reservations;
  std::uint32_t boot_cpuid = 0;

 private:
  std::unique_ptr<Node> root_;
};

// Parses a flattened tree. The blob is validated with fdt_check_full() first; see
// the header comment for what else is rejected.
Result<Tree> parse_dtb(std::span<const std::uint8_t> blob);
// Serializes with libfdt's sequential-write API, growing the buffer and retrying on
// -FDT_ERR_NOSPACE.
Result<std::vector<std::uint8_t>> serialize_dtb(const Tree& tree);

// Compiles DTS text with `dtc -I dts -O dtb` and parses the result. `origin` names
// the text in error messages.
Result<Tree> parse_dts(std::string_view text, std::string_view origin = "<dts>");
// Loads a file: a DTB when it starts with the FDT magic 0xd00dfeed, DTS otherwise.
Result<Tree> load_tree_file(const std::filesystem::path& path);
// Decompiles a blob with `dtc -I dtb -O dts` (`-s` sorts nodes and properties).
Result<std::string> dtb_to_dts(std::span<const std::uint8_t> blob, bool sorted);

// Visits every node depth-first, parents before children, in tree order.
template <typename NodeT, typename Visitor>
void for_each_node(NodeT& node, Visitor&& visit) {
  visit(node);
  for (const auto& child : node.children()) for_each_node(static_cast<NodeT&>(*child), visit);
}

}  // namespace vpci::dt
