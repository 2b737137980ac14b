// Helpers shared by the device tree tests: building a Xen-style partial tree from a
// host tree's IOMMU masters, running dtc with its default checks, reading files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "dt/bind.h"
#include "dt/tree.h"

namespace vpci::dt::testing {

std::filesystem::path corpus_dir();
std::filesystem::path data_dir();
std::vector<std::uint8_t> read_bytes(const std::filesystem::path& path);
std::string read_text(const std::filesystem::path& path);
Tree load_or_die(const std::filesystem::path& path);
Tree dts_or_die(const std::string& text);

struct PartialMaster {
  std::string partial_path;
  std::string host_path;
};

// Builds the partial tree a user would write for every node of `host` with
// `iommus` (docs/device-tree.md, "Partial tree"): one node per master under
// /passthrough (simple-bus, 2 address and 2 size cells) with the host compatible,
// `reg` translated through the host `ranges` to a CPU address (also given as
// `xen,reg` <host address, size, guest address>), `xen,path`, and `iommus` copied
// with each phandle replaced by the placeholder 0. A master whose address cannot be
// given (no `reg`, untranslatable, or already used by another master) goes into a
// plain container `/passthrough/unaddressed@0` without `reg`, which also exercises
// masters nested below /passthrough.
Tree build_partial_from_host(const Tree& host, std::vector<PartialMaster>* masters = nullptr);

// dt-validate (Debian's dt-schema, its core schemas) over the nodes a bind added — the
// vIOMMU, the virtual PCI host bridge, the grant-DMA node — in a minimal wrapper tree: a
// partial guest tree cannot validate as a whole (its root has no compatible or model,
// and Xen's /passthrough bus is not named as simple-bus wants), so the wrapper is the
// guest tree with every other root child removed and a root compatible and model added.
// Returns what dt-validate reported ("" when clean: it exits 0 either way), or nullopt
// when dt-validate is not installed.
std::optional<std::string> dt_validate_added_nodes(const BindResult& bound);

struct DtcRun {
  int exit_status = -1;
  std::string out;
  std::string err;
};
// Runs dtc with its default checks (no -q) on `input`.
DtcRun run_dtc(const std::vector<std::string>& args, const std::vector<std::uint8_t>& input);

// Decompiles `blob` with `dtc -I dtb -O dts` and compiles the result back, both
// with dtc's default checks, and returns what dtc printed on stderr that is not
// explained (fails the calling test if dtc failed). Explained, and only these: dtc
// 1.6.1's "iommus_property: <node>:iommus: cell N is not a phandle reference",
// which it prints for every phandle written as a plain number (all that
// `-O dts` can write); each such line is checked against the tree: cell N of that
// node's iommus must be a phandle of an existing node with #iommu-cells.
std::string dtc_roundtrip_warnings(const std::vector<std::uint8_t>& blob);

// Compiles dt::to_dts(tree) with dtc's default checks; returns dtc's stderr (must
// be empty) and fails the calling test unless the compiled tree equals `tree`.
std::string to_dts_compile_warnings(const Tree& tree);

}  // namespace vpci::dt::testing
