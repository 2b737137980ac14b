// Binding 10,000 passthrough masters spread over 64 SMMUs.
//
// The synthetic host: 64 MMU-500s under /soc (every 8th with 2-cell SID+mask
// specifiers), 10,000 masters, master i on SMMU i % 64 with stream ID i / 64, so
// every stream ID recurs on many SMMUs (the Tegra/Juno/R-Car pattern that keying on
// the stream ID alone gets wrong). The partial tree lists all masters the Xen way.
// Masters sit on 100 buses of 100 devices, in the host and in the partial tree:
// dtc 1.6.1's parser runs out of stack ("memory exhausted") on a DTS with 10,000
// sibling nodes, and the output must be compilable by dtc for the comparison.
//
//   dt_bind_bench                        run the benchmarks
//   dt_bind_bench --write-trees=DIR      write DIR/host.dtb and DIR/partial.dtb (for
//                                        bench/dt_vs_dtc.sh) and exit
#include <cstring>
#include <fstream>
#include <string_view>

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include "dt/bind.h"
#include "dt/tree.h"

namespace {

using namespace vpci::dt;

constexpr std::uint32_t kSmmus = 64;
constexpr std::uint32_t kMasters = 10000;
constexpr std::uint32_t kPerBus = 100;
constexpr std::uint64_t kDeviceBase = 0x200000000ull;
constexpr std::uint64_t kDeviceStride = 0x1000;

// A simple-bus child named by, and translating 1:1, the address window of its
// devices (a non-empty `ranges`, so dtc's simple_bus_reg check has a unit address).
Node& add_bus(Node& parent, std::uint32_t index) {
  const std::uint64_t base = kDeviceBase + std::uint64_t{index} * kPerBus * kDeviceStride;
  Node& bus = *parent.add_child_unchecked(fmt::format("bus@{:x}", base));
  bus.set_string("compatible", "simple-bus");
  bus.set_u32("#address-cells", 2);
  bus.set_u32("#size-cells", 2);
  const auto hi = static_cast<std::uint32_t>(base >> 32);
  const auto lo = static_cast<std::uint32_t>(base);
  const std::uint32_t ranges[] = {hi, lo, hi, lo, 0, kPerBus * kDeviceStride};
  bus.set_cells("ranges", ranges);
  return bus;
}

struct Trees {
  Tree host;
  Tree partial;
};

Trees make_trees() {
  Trees t;
  Node& root = t.host.root();
  root.set_u32("#address-cells", 2);
  root.set_u32("#size-cells", 2);
  Node& soc = **root.add_child("soc");
  soc.set_string("compatible", "simple-bus");
  soc.set_u32("#address-cells", 2);
  soc.set_u32("#size-cells", 2);
  soc.set_empty("ranges");
  std::vector<std::uint32_t> cells_of(kSmmus);
  for (std::uint32_t s = 0; s < kSmmus; ++s) {
    const std::uint64_t base = 0x100000000ull + std::uint64_t{s} * 0x100000;
    Node& smmu = *soc.add_child_unchecked(fmt::format("iommu@{:x}", base));
    const std::string compatible[] = {"vendor,soc-smmu-500", "arm,mmu-500"};
    smmu.set_property("compatible", encode_strings(compatible));
    const std::uint32_t reg[] = {static_cast<std::uint32_t>(base >> 32),
                                 static_cast<std::uint32_t>(base), 0, 0x100000};
    smmu.set_cells("reg", reg);
    smmu.set_u32("#global-interrupts", 1);
    cells_of[s] = s % 8 == 7 ? 2 : 1;
    smmu.set_u32("#iommu-cells", cells_of[s]);
    smmu.set_u32("phandle", s + 1);
  }
  Node& partial_root = t.partial.root();
  partial_root.set_u32("#address-cells", 2);
  partial_root.set_u32("#size-cells", 2);
  Node& passthrough = **partial_root.add_child("passthrough");
  passthrough.set_string("compatible", "simple-bus");
  passthrough.set_empty("ranges");
  passthrough.set_u32("#address-cells", 2);
  passthrough.set_u32("#size-cells", 2);
  Node* host_bus = nullptr;
  Node* partial_bus = nullptr;
  for (std::uint32_t i = 0; i < kMasters; ++i) {
    if (i % kPerBus == 0) {
      host_bus = &add_bus(soc, i / kPerBus);
      partial_bus = &add_bus(passthrough, i / kPerBus);
    }
    const std::uint32_t s = i % kSmmus;
    const std::uint64_t address = kDeviceBase + std::uint64_t{i} * kDeviceStride;
    const std::string name = fmt::format("dev@{:x}", address);
    const std::uint32_t reg[] = {static_cast<std::uint32_t>(address >> 32),
                                 static_cast<std::uint32_t>(address), 0,
                                 static_cast<std::uint32_t>(kDeviceStride)};
    std::vector<std::uint32_t> iommus = {s + 1, i / kSmmus};
    if (cells_of[s] == 2) iommus.push_back(0);
    Node& master = *host_bus->add_child_unchecked(name);
    master.set_string("compatible", "vendor,dev");
    master.set_cells("reg", reg);
    master.set_cells("iommus", iommus);

    Node& copy = *partial_bus->add_child_unchecked(name);
    copy.set_string("compatible", "vendor,dev");
    copy.set_cells("reg", reg);
    const std::uint32_t xen_reg[] = {reg[0], reg[1], reg[2], reg[3], reg[0], reg[1]};
    copy.set_cells("xen,reg", xen_reg);
    copy.set_string("xen,path", fmt::format("/soc/{}/{}", host_bus->name(), name));
    iommus[0] = 0;  // placeholder phandle
    copy.set_cells("iommus", iommus);
  }
  return t;
}

const Trees& trees() {
  static const Trees t = make_trees();
  return t;
}

const std::vector<std::uint8_t>& host_blob() {
  static const auto blob = *serialize_dtb(trees().host);
  return blob;
}

const std::vector<std::uint8_t>& partial_blob() {
  static const auto blob = *serialize_dtb(trees().partial);
  return blob;
}

// The bind itself on trees already in memory (what a toolstack linking the library
// pays per domain build).
void BM_BindInMemory(benchmark::State& state) {
  const Trees& t = trees();
  for (auto _ : state) {
    auto r = bind_partial_tree(t.host, t.partial);
    if (!r) state.SkipWithError(r.error().message.c_str());
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kMasters);
}
BENCHMARK(BM_BindInMemory)->Unit(benchmark::kMillisecond);

// Blob in, blob out: load and validate both trees (fdt_check_full), bind,
// serialize the guest — `vpci dt bind` without process start and file I/O.
void BM_BindFromBlobs(benchmark::State& state) {
  for (auto _ : state) {
    auto host = parse_dtb(host_blob());
    auto partial = parse_dtb(partial_blob());
    auto r = bind_partial_tree(*host, *partial);
    if (!r) state.SkipWithError(r.error().message.c_str());
    auto out = serialize_dtb(r->guest);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * kMasters);
}
BENCHMARK(BM_BindFromBlobs)->Unit(benchmark::kMillisecond);

void BM_LoadHostBlob(benchmark::State& state) {
  for (auto _ : state) {
    auto host = parse_dtb(host_blob());
    benchmark::DoNotOptimize(host);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * host_blob().size()));
}
BENCHMARK(BM_LoadHostBlob)->Unit(benchmark::kMillisecond);

void BM_SerializeGuest(benchmark::State& state) {
  const auto r = bind_partial_tree(trees().host, trees().partial);
  for (auto _ : state) {
    auto out = serialize_dtb(r->guest);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_SerializeGuest)->Unit(benchmark::kMillisecond);

int write_trees(std::string_view dir) {
  for (const auto& [name, blob] :
       {std::pair{"host.dtb", &host_blob()}, std::pair{"partial.dtb", &partial_blob()}}) {
    const std::string path = fmt::format("{}/{}", dir, name);
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(blob->data()),
              static_cast<std::streamsize>(blob->size()));
    if (!out) {
      fmt::print(stderr, "cannot write {}\n", path);
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr std::string_view kWriteTrees = "--write-trees=";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with(kWriteTrees)) return write_trees(arg.substr(kWriteTrees.size()));
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
