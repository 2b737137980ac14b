// tree.h's loading and writing: DTB through libfdt (checked before libfdt reads
// it), DTS through dtc, files of either. The in-memory tree itself (tree.cc) never
// touches libfdt.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <unordered_set>

extern "C" {
#include <libfdt.h>
}

#include "base/input_file.h"
#include "dt/dtc.h"
#include "dt/tree.h"

namespace vpci::dt {
namespace {

std::uint32_t load_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}

std::string fdt_error_text(int code) {
  // libfdt 1.6.1's fdt_strerror() has no text for its newest codes
  // (FDT_ERR_ALIGNMENT = 19 among them).
  const std::string text = fdt_strerror(code);
  return text == "<unknown error>" ? fmt::format("libfdt error {}", -code) : text;
}

// dtc's checks.c: node names take [a-zA-Z0-9,._+*#?@-] with at most one '@'
// (node_name_chars, node_name_format), property names [a-zA-Z0-9,._+*#?-]
// (property_name_chars); all three are errors in dtc. Refusing them on load keeps
// every loaded tree writable as a blob dtc accepts, and every path printable.
bool valid_name_char(char c, bool node) {
  if (std::isalnum(static_cast<unsigned char>(c)) != 0) return true;
  switch (c) {
    case ',':
    case '.':
    case '_':
    case '+':
    case '*':
    case '#':
    case '?':
    case '-': return true;
    case '@': return node;
    default: return false;
  }
}

bool valid_name(std::string_view name, bool node) {
  if (name.empty()) return false;
  for (const char c : name) {
    if (!valid_name_char(c, node)) return false;
  }
  return !node || std::count(name.begin(), name.end(), '@') <= 1;
}

// Walks the header, memory reservation block and structure block of a blob with
// bounds-checked arithmetic before libfdt sees it. libfdt 1.6.1's fdt_check_full()
// is not safe on every malformed blob: fuzzing this loader found a NULL dereference
// inside it (a property whose name offset fails to resolve) and inputs on which it
// does not return. This check establishes what libfdt then relies on: every token
// in bounds and well-formed, every property name offset inside the strings block and
// NUL-terminated there, one root node, balanced nesting (at most kMaxDepth levels),
// FDT_END last. (Devicetree Specification v0.4, chapter 5.)
Status check_fdt_layout(std::span<const std::uint8_t> blob) {
  const auto be32 = [&](std::size_t at) { return load_be32(blob.data() + at); };
  constexpr std::size_t kHeaderSize = 40;  // version 17 header
  if (blob.size() < kHeaderSize)
    return make_error(ErrorCode::kMalformedInput, "shorter than the FDT header");
  if (be32(0) != FDT_MAGIC)
    return make_error(ErrorCode::kMalformedInput, "bad magic {:#x}", be32(0));
  const std::uint64_t total = be32(4);
  const std::uint64_t struct_offset = be32(8);
  const std::uint64_t strings_offset = be32(12);
  const std::uint64_t reserve_offset = be32(16);
  const std::uint32_t version = be32(20);
  const std::uint32_t last_compatible = be32(24);
  const std::uint64_t strings_size = be32(32);
  const std::uint64_t struct_size = be32(36);
  if (version < 17 || last_compatible > 17) {
    return make_error(ErrorCode::kMalformedInput,
                      "FDT version {} (last compatible {}) is not readable as version 17", version,
                      last_compatible);
  }
  if (total > blob.size() || total < kHeaderSize) {
    return make_error(ErrorCode::kMalformedInput, "totalsize {} does not fit the {} bytes given",
                      total, blob.size());
  }
  const auto inside = [&](std::uint64_t offset, std::uint64_t size) {
    return offset >= kHeaderSize && offset <= total && size <= total - offset;
  };
  if (!inside(struct_offset, struct_size) || !inside(strings_offset, strings_size) ||
      !inside(reserve_offset, 16) || struct_offset % 4 != 0 || reserve_offset % 8 != 0 ||
      struct_size % 4 != 0) {
    return make_error(ErrorCode::kMalformedInput, "blocks outside the blob or misaligned");
  }
  for (std::uint64_t at = reserve_offset;; at += 16) {
    if (!inside(at, 16))
      return make_error(ErrorCode::kMalformedInput, "unterminated memory reservation block");
    bool zero = true;
    for (std::size_t i = 0; i < 16; ++i) zero = zero && blob[at + i] == 0;
    if (zero) break;
  }
  const std::uint8_t* strings = blob.data() + strings_offset;
  std::uint64_t at = 0;
  int depth = 0;
  bool root_seen = false;
  while (true) {
    if (at + 4 > struct_size)
      return make_error(ErrorCode::kMalformedInput, "structure block ends without FDT_END");
    const std::uint32_t token = be32(struct_offset + at);
    at += 4;
    switch (token) {
      case FDT_BEGIN_NODE: {
        if (root_seen && depth == 0)
          return make_error(ErrorCode::kMalformedInput, "more than one root node");
        const std::uint8_t* name = blob.data() + struct_offset + at;
        const void* nul = std::memchr(name, 0, struct_size - at);
        if (nul == nullptr) return make_error(ErrorCode::kMalformedInput, "unterminated node name");
        const std::uint64_t length =
            static_cast<std::uint64_t>(static_cast<const std::uint8_t*>(nul) - name);
        if (depth == 0 && length != 0)
          return make_error(ErrorCode::kMalformedInput, "the root node has a name");
        at += (length + 1 + 3) & ~std::uint64_t{3};
        root_seen = true;
        if (++depth > kMaxDepth + 1) {
          return make_error(ErrorCode::kMalformedInput, "nesting deeper than {} levels", kMaxDepth);
        }
        break;
      }
      case FDT_END_NODE:
        if (depth == 0)
          return make_error(ErrorCode::kMalformedInput, "FDT_END_NODE outside any node");
        --depth;
        break;
      case FDT_PROP: {
        if (depth == 0) return make_error(ErrorCode::kMalformedInput, "property outside any node");
        if (at + 8 > struct_size)
          return make_error(ErrorCode::kMalformedInput, "truncated property");
        const std::uint64_t length = be32(struct_offset + at);
        const std::uint64_t name_offset = be32(struct_offset + at + 4);
        at += 8;
        if (length > struct_size - at)
          return make_error(ErrorCode::kMalformedInput, "property value past the block");
        if (name_offset >= strings_size ||
            std::memchr(strings + name_offset, 0, strings_size - name_offset) == nullptr) {
          return make_error(ErrorCode::kMalformedInput,
                            "property name offset {:#x} outside the strings block", name_offset);
        }
        at += (length + 3) & ~std::uint64_t{3};
        break;
      }
      case FDT_NOP: break;
      case FDT_END:
        if (!root_seen || depth != 0)
          return make_error(ErrorCode::kMalformedInput, "FDT_END inside a node");
        return {};
      default:
        return make_error(ErrorCode::kMalformedInput, "unknown structure token {:#x} at {:#x}",
                          token, at - 4);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------
// DTB in and out

Result<Tree> parse_dtb(std::span<const std::uint8_t> blob) {
  if (blob.size() < sizeof(fdt_header)) {
    return make_error(ErrorCode::kMalformedInput,
                      "not a device tree blob: {} bytes is shorter than the FDT header",
                      blob.size());
  }
  // libfdt refuses blobs that are not 8-byte aligned (-FDT_ERR_ALIGNMENT); a
  // caller's buffer (a file read into a vector, a slice of a larger message) need
  // not be.
  std::vector<std::uint64_t> aligned;
  const void* fdt = blob.data();
  if (reinterpret_cast<std::uintptr_t>(fdt) % alignof(std::uint64_t) != 0) {
    aligned.resize((blob.size() + 7) / 8);
    std::memcpy(aligned.data(), blob.data(), blob.size());
    fdt = aligned.data();
  }
  if (auto layout = check_fdt_layout(std::span(static_cast<const std::uint8_t*>(fdt), blob.size()));
      !layout) {
    return tl::unexpected(std::move(layout).error().with_context("malformed device tree blob"));
  }
  if (const int rc = fdt_check_full(fdt, blob.size()); rc != 0) {
    return make_error(ErrorCode::kMalformedInput, "malformed device tree blob: {}",
                      fdt_error_text(rc));
  }
  Tree tree;
  const int reservations = fdt_num_mem_rsv(fdt);
  for (int i = 0; i < reservations; ++i) {
    std::uint64_t address = 0;
    std::uint64_t size = 0;
    if (fdt_get_mem_rsv(fdt, i, &address, &size) != 0) {
      return make_error(ErrorCode::kMalformedInput, "malformed memory reservation {}", i);
    }
    tree.reservations.push_back({address, size});
  }
  tree.boot_cpuid = fdt_boot_cpuid_phys(fdt);

  // Iterative walk (fdt_next_node reports depth) so nesting depth cannot exhaust the
  // stack here; kMaxDepth bounds the recursive walks that follow.
  std::vector<Node*> stack;
  // Names of the children seen so far at each depth, pointing into the blob.
  std::vector<std::unordered_set<std::string_view>> sibling_names;
  int depth = 0;
  std::unordered_set<std::uint32_t> seen_phandles;
  // fdt_next_node leaves depth at -1 after the root's end tag.
  for (int offset = 0; offset >= 0 && depth >= 0; offset = fdt_next_node(fdt, offset, &depth)) {
    if (depth > kMaxDepth) {
      return make_error(ErrorCode::kMalformedInput, "device tree nests deeper than {} levels",
                        kMaxDepth);
    }
    stack.resize(static_cast<std::size_t>(depth));
    sibling_names.resize(static_cast<std::size_t>(depth) + 1);
    Node* node = nullptr;
    if (depth == 0) {
      node = &tree.root();
    } else {
      int name_length = 0;
      const char* name = fdt_get_name(fdt, offset, &name_length);
      if (name == nullptr || name_length <= 0) {
        return make_error(ErrorCode::kMalformedInput, "node without a name under {}",
                          stack.back()->path());
      }
      const std::string_view name_view(name, static_cast<std::size_t>(name_length));
      if (!valid_name(name_view, true)) {
        return make_error(
            ErrorCode::kMalformedInput,
            "node under {} has an invalid name (dtc allows [a-zA-Z0-9,._+*#?@-], one '@')",
            stack.back()->path());
      }
      if (!sibling_names[static_cast<std::size_t>(depth) - 1].insert(name_view).second) {
        return make_error(ErrorCode::kMalformedInput,
                          "duplicate node name: {} has two children named {}", stack.back()->path(),
                          name_view);
      }
      node = stack.back()->add_child_unchecked(std::string(name_view));
    }
    stack.push_back(node);
    sibling_names[static_cast<std::size_t>(depth)].clear();  // a new parent at this depth
    std::unordered_set<std::string_view> property_names;
    int prop_offset = 0;
    fdt_for_each_property_offset(prop_offset, fdt, offset) {
      const char* name = nullptr;
      int length = 0;
      const void* value = fdt_getprop_by_offset(fdt, prop_offset, &name, &length);
      if (value == nullptr || name == nullptr || length < 0) {
        return make_error(ErrorCode::kMalformedInput, "unreadable property in {}", node->path());
      }
      if (!valid_name(name, false)) {
        return make_error(ErrorCode::kMalformedInput,
                          "{} has a property with an invalid name (dtc allows [a-zA-Z0-9,._+*#?-])",
                          node->path());
      }
      if (!property_names.insert(name).second) {
        return make_error(ErrorCode::kMalformedInput, "duplicate property {} in {}", name,
                          node->path());
      }
      const auto* bytes = static_cast<const std::uint8_t*>(value);
      node->append_property_unchecked(name, std::vector<std::uint8_t>(bytes, bytes + length));
    }
    for (const char* name : {"phandle", "linux,phandle"}) {
      if (const Property* p = node->property(name)) {
        const auto value = p->u32();
        if (!value || *value == 0 || *value == 0xffffffffu) {
          return make_error(ErrorCode::kMalformedInput,
                            "{} has an invalid {} (must be one cell, not 0 or 0xffffffff)",
                            node->path(), name);
        }
      }
    }
    const Property* ph = node->property("phandle");
    const Property* linux_ph = node->property("linux,phandle");
    if (ph != nullptr && linux_ph != nullptr && ph->u32() != linux_ph->u32()) {
      return make_error(ErrorCode::kMalformedInput,
                        "{} has different phandle and linux,phandle values", node->path());
    }
    if (const auto value = node->phandle()) {
      if (!seen_phandles.insert(*value).second) {
        return make_error(ErrorCode::kMalformedInput,
                          "phandle {:#x} of {} is used by another node too", *value, node->path());
      }
    }
  }
  return tree;
}

namespace {

int write_node(void* fdt, const Node& node) {
  if (int rc = fdt_begin_node(fdt, node.name().c_str()); rc != 0) return rc;
  for (const auto& p : node.properties()) {
    if (int rc =
            fdt_property(fdt, p.name.c_str(), p.value.data(), static_cast<int>(p.value.size()));
        rc != 0) {
      return rc;
    }
  }
  for (const auto& child : node.children()) {
    if (int rc = write_node(fdt, *child); rc != 0) return rc;
  }
  return fdt_end_node(fdt);
}

std::size_t estimate_size(const Node& node) {
  // Per node: tag + name + end tag; per property: tag, length, name offset, value.
  std::size_t size = 8 + node.name().size() + 4 + 4;
  for (const auto& p : node.properties()) size += 12 + p.value.size() + 3 + p.name.size() + 1;
  for (const auto& c : node.children()) size += estimate_size(*c);
  return size;
}

}  // namespace

Result<std::vector<std::uint8_t>> serialize_dtb(const Tree& tree) {
  std::size_t capacity = estimate_size(tree.root()) + 16 * (tree.reservations.size() + 1) + 256;
  constexpr std::size_t kMaxBlob = std::size_t{1} << 30;
  while (capacity <= kMaxBlob) {
    std::vector<std::uint8_t> buffer(capacity);
    void* fdt = buffer.data();
    int rc = fdt_create(fdt, static_cast<int>(capacity));
    for (std::size_t i = 0; rc == 0 && i < tree.reservations.size(); ++i) {
      rc = fdt_add_reservemap_entry(fdt, tree.reservations[i].address, tree.reservations[i].size);
    }
    if (rc == 0) rc = fdt_finish_reservemap(fdt);
    if (rc == 0) rc = write_node(fdt, tree.root());
    if (rc == 0) rc = fdt_finish(fdt);
    if (rc == -FDT_ERR_NOSPACE) {
      capacity *= 2;
      continue;
    }
    if (rc != 0)
      return make_error(ErrorCode::kInvalidArgument, "cannot serialize device tree: {}",
                        fdt_error_text(rc));
    fdt_set_boot_cpuid_phys(fdt, tree.boot_cpuid);
    buffer.resize(fdt_totalsize(fdt));
    return buffer;
  }
  return make_error(ErrorCode::kNoSpace, "device tree larger than {} bytes", kMaxBlob);
}

// ---------------------------------------------------------------------------------
// DTS through dtc

Result<Tree> parse_dts(std::string_view text, std::string_view origin) {
  const std::vector<std::uint8_t> input(text.begin(), text.end());
  // -q: dtc's warnings about the user's source are not ours to print; errors still
  // fail the compile and are reported.
  VPCI_ASSIGN_OR_RETURN(auto output,
                        run_process(dtc_program(), {"-q", "-I", "dts", "-O", "dtb", "-"}, input));
  if (output.exit_status != 0) {
    return make_error(ErrorCode::kMalformedInput, "{} (dtc could not compile it)",
                      describe_dtc_failure(output.err, origin));
  }
  auto tree = parse_dtb(output.out);
  if (!tree) return tl::unexpected(std::move(tree).error().with_context(origin));
  return tree;
}

namespace {

// Where `bytes` stops being text a DTS could hold (printable ASCII, whitespace,
// UTF-8 in strings and comments), or npos.
std::size_t first_non_text_byte(std::span<const std::uint8_t> bytes) {
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const std::uint8_t b = bytes[i];
    if (b < 0x20 && b != '\n' && b != '\r' && b != '\t' && b != '\f' && b != '\v') return i;
    if (b == 0x7F) return i;
  }
  return std::string_view::npos;
}

}  // namespace

// A failure says which of the two formats the file looked like, so that a user who
// passed the wrong file (or a DTB cut short) is not shown a DTS syntax error.
Result<Tree> load_tree_file(const std::filesystem::path& path) {
  VPCI_ASSIGN_OR_RETURN(const std::string text, read_input_file(path, kDeviceTreeInput));
  const std::vector<std::uint8_t> bytes(text.begin(), text.end());
  if (bytes.empty()) {
    return make_error(ErrorCode::kMalformedInput, "{}: the file is empty (expected a DTB or DTS)",
                      path.string());
  }
  if (bytes.size() >= 4 && load_be32(bytes.data()) == FDT_MAGIC) {
    auto tree = parse_dtb(bytes);
    if (!tree) {
      return tl::unexpected(
          std::move(tree).error().with_context(path.string() + ": a DTB (magic 0xd00dfeed), but"));
    }
    return tree;
  }
  if (const auto at = first_non_text_byte(bytes); at != std::string_view::npos) {
    return make_error(
        ErrorCode::kMalformedInput,
        "{}: neither a DTB (no magic 0xd00dfeed) nor a DTS (byte {:#04x} at offset {} is not text)",
        path.string(), bytes[at], at);
  }
  auto tree = parse_dts(text, path.string());
  if (!tree && text.find("/dts-v1/") == std::string::npos) {
    tree.error().message += "; neither a DTB (no magic 0xd00dfeed) nor a DTS (no /dts-v1/ tag)";
  } else if (!tree) {
    tree.error().message += "; looked like a DTS (text with /dts-v1/, no DTB magic)";
  }
  return tree;
}

Result<std::string> dtb_to_dts(std::span<const std::uint8_t> blob, bool sorted) {
  std::vector<std::string> args = {"-q", "-I", "dtb", "-O", "dts"};
  if (sorted) args.emplace_back("-s");
  args.emplace_back("-");
  VPCI_ASSIGN_OR_RETURN(auto output, run_process(dtc_program(), args, blob));
  if (output.exit_status != 0) {
    return make_error(ErrorCode::kMalformedInput, "dtc could not decompile the blob: {}",
                      output.err);
  }
  return std::string(output.out.begin(), output.out.end());
}

}  // namespace vpci::dt
