// Binds a partial tree built from every corpus tree's IOMMU masters and checks the
// guest tree and the stream table against the host tree. The CLI's JSON rendering of
// the same binds is checked in tests/tools/dt_bind_map_test.cc.
#include <map>
#include <set>
#include <tuple>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "dt/bind.h"
#include "dt/iommu.h"
#include "tests/dt/dt_test_util.h"

namespace vpci::dt {
namespace {

using testing::build_partial_from_host;
using testing::corpus_dir;
using testing::load_or_die;

struct CorpusCase {
  const char* file;
  std::size_t masters;     // nodes with iommus (device-tree.md table, "Masters")
  std::size_t specifiers;  // iommus entries
  std::size_t distinct;    // distinct (IOMMU, specifier)
};

// Counts from shared/reference/device-tree.md, section 7.
const CorpusCase kCases[] = {
    {"zcu102-smmu.dtb", 30, 33, 33},
    {"versal-net-vn-x-b2197-01-revA.dtb", 3, 3, 3},
    {"imx8qm-mek.dtb", 5, 5, 2},
    {"imx95-19x19-evk.dtb", 2, 2, 2},
    {"fsl-lx2160a-rdb.dtb", 2, 2, 2},
    {"juno.dtb", 6, 14, 13},
    {"tegra194-p2972-0000.dtb", 17, 17, 17},
    {"tegra234-p3737-0000+p3701-0000.dtb", 23, 23, 20},
    {"armada-8040-db.dtb", 7, 7, 7},
    {"r8a779g0-white-hawk.dtb", 10, 40, 40},
    {"r8a779f0-spider.dtb", 3, 33, 33},
    {"sm8550-qrd.dtb", 29, 56, 54},
};

class CorpusBindTest : public ::testing::TestWithParam<CorpusCase> {};

TEST_P(CorpusBindTest, PartialFromMastersBindsCleanly) {
  const CorpusCase& c = GetParam();
  const Tree host = load_or_die(corpus_dir() / c.file);
  const Topology host_topology = parse_topology(host);
  ASSERT_EQ(host_topology.masters.size(), c.masters);

  std::vector<testing::PartialMaster> built;
  const Tree partial = build_partial_from_host(host, &built);
  ASSERT_EQ(built.size(), c.masters);

  auto bound = bind_partial_tree(host, partial);
  ASSERT_TRUE(bound) << bound.error().message;
  auto blob = serialize_dtb(bound->guest);
  ASSERT_TRUE(blob) << blob.error().message;

  // dtc with its default checks accepts the output: decompiled and compiled back
  // with no warning but dtc 1.6.1's plain-number phandle notice (verified cell by
  // cell), and our reference-keeping DTS compiles with no warning at all.
  EXPECT_EQ(testing::dtc_roundtrip_warnings(*blob), "");
  EXPECT_EQ(testing::to_dts_compile_warnings(bound->guest), "");
  // The nodes vpci added pass dt-validate's core schemas (dt_test_util.h).
  if (const auto findings = testing::dt_validate_added_nodes(*bound)) {
    EXPECT_EQ(*findings, "");
  } else {
    ADD_FAILURE() << "dt-validate (Debian's dt-schema) is not installed: scripts/install-deps.sh";
  }

  // Reload the serialized guest: every iommus of a bound master points at the
  // vIOMMU, which is an arm,smmu-v3 node with #iommu-cells = <1>.
  auto guest = parse_dtb(*blob);
  ASSERT_TRUE(guest) << guest.error().message;
  const Node* viommu = guest->find(bound->viommu_path);
  ASSERT_NE(viommu, nullptr);
  EXPECT_TRUE(viommu->is_compatible("arm,smmu-v3"));
  EXPECT_EQ(viommu->property("#iommu-cells")->u32(), 1u);
  EXPECT_EQ(viommu->phandle(), bound->viommu_phandle);
  EXPECT_FALSE(bound->viommu_phandle >= kXenReservedPhandleFirst &&
               bound->viommu_phandle <= kXenReservedPhandleLast);
  const Topology guest_topology = parse_topology(*guest);
  EXPECT_THAT(guest_topology.problems, ::testing::IsEmpty());
  ASSERT_EQ(guest_topology.masters.size(), c.masters);
  std::size_t specifiers = 0;
  for (const auto& m : guest_topology.masters) {
    for (const auto& s : m.specifiers) {
      EXPECT_EQ(s.phandle, bound->viommu_phandle) << m.path;
      EXPECT_EQ(s.cells.size(), 1u) << m.path;
      ++specifiers;
    }
  }
  EXPECT_EQ(specifiers, c.specifiers);

  // The table agrees with the host tree: each row's (piommu, psid, pmask) is the
  // host master's specifier, in order, and its vsid is what the guest iommus says.
  ASSERT_EQ(bound->streams.size(), c.specifiers);
  std::map<std::string, std::string> host_of;
  for (const auto& b : built) host_of[b.partial_path] = b.host_path;
  std::map<std::string, std::size_t> next_index;
  std::map<std::tuple<std::string, std::uint32_t, std::uint32_t>, std::uint32_t> vsid_of_key;
  std::map<std::uint32_t, std::tuple<std::string, std::uint32_t, std::uint32_t>> key_of_vsid;
  for (const auto& row : bound->streams) {
    const std::string& path = row.path;
    ASSERT_TRUE(host_of.count(path)) << path;
    EXPECT_EQ(row.host_path, host_of[path]);
    EXPECT_FALSE(row.rid || row.host_rid) << path;
    const Node* host_node = host.find(host_of[path]);
    ASSERT_NE(host_node, nullptr);
    const auto host_specifiers = parse_iommus(host.phandle_index(), *host_node);
    ASSERT_TRUE(host_specifiers);
    const std::size_t index = next_index[path]++;
    ASSERT_LT(index, host_specifiers->size());
    const IommuSpecifier& hs = (*host_specifiers)[index];
    const IommuProvider* provider = host_topology.provider_by_phandle(hs.phandle);
    ASSERT_NE(provider, nullptr);
    EXPECT_EQ(row.piommu, provider->path) << path;
    EXPECT_EQ(row.psid, hs.stream_id()) << path;
    EXPECT_EQ(row.pmask, hs.cells.size() > 1 ? hs.cells[1] : provider->stream_match_mask) << path;
    const Node* guest_node = guest->find(path);
    ASSERT_NE(guest_node, nullptr);
    const auto guest_cells = *guest_node->property("iommus")->cells();
    EXPECT_EQ(row.vsid, guest_cells[2 * index + 1]) << path;
    // One vSID per physical stream, one physical stream per vSID.
    const auto key = std::make_tuple(row.piommu, row.psid, row.pmask);
    const auto [it, inserted] = vsid_of_key.emplace(key, row.vsid);
    EXPECT_EQ(it->second, row.vsid) << path;
    const auto [kit, kinserted] = key_of_vsid.emplace(row.vsid, key);
    EXPECT_EQ(kit->second, key) << path;
  }
  EXPECT_EQ(vsid_of_key.size(), c.distinct);

  // Deterministic: the same inputs give the same bytes.
  auto again = bind_partial_tree(host, partial);
  ASSERT_TRUE(again);
  EXPECT_EQ(*serialize_dtb(again->guest), *blob);
}

INSTANTIATE_TEST_SUITE_P(Corpus, CorpusBindTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<CorpusCase>& param_info) {
                           std::string name = param_info.param.file;
                           name = name.substr(0, name.find(".dtb"));
                           for (auto& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

// Every corpus tree not in the table has no IOMMU master, so the table covers all
// trees with masters.
TEST(CorpusBind, TableCoversEveryTreeWithMasters) {
  std::set<std::string> listed;
  for (const auto& c : kCases) listed.insert(c.file);
  for (const auto& entry : std::filesystem::directory_iterator(corpus_dir())) {
    if (entry.path().extension() != ".dtb") continue;
    const Tree host = load_or_die(entry.path());
    const Topology topology = parse_topology(host);
    EXPECT_EQ(!topology.masters.empty(), listed.count(entry.path().filename().string()) == 1)
        << entry.path();
  }
}

// Tegra234 reuses stream IDs on different SMMUs: keyed on the stream ID alone they
// would collapse into one vSID. Each (SMMU, ID) pair must get its own.
TEST(CorpusBind, StreamIdReusedAcrossSmmusGetsDistinctVsids) {
  const Tree host = load_or_die(corpus_dir() / "tegra234-p3737-0000+p3701-0000.dtb");
  const Tree partial = build_partial_from_host(host);
  auto bound = bind_partial_tree(host, partial);
  ASSERT_TRUE(bound) << bound.error().message;
  std::map<std::uint32_t, std::set<std::string>> iommus_of_psid;
  for (const auto& s : bound->streams) iommus_of_psid[s.psid].insert(s.piommu);
  bool reused = false;
  for (const auto& [psid, iommus] : iommus_of_psid) {
    if (iommus.size() < 2) continue;
    reused = true;
    std::set<std::uint32_t> vsids;
    for (const auto& s : bound->streams) {
      if (s.psid == psid) vsids.insert(s.vsid);
    }
    EXPECT_EQ(vsids.size(), iommus.size()) << "psid " << psid;
  }
  EXPECT_TRUE(reused) << "the Tegra234 tree no longer reuses a stream ID across SMMUs";
}

// PCI passthrough through each corpus host bridge with an iommu-map: function 0 of
// bus 1 (or RID 0 on bridges whose buses start at 0 with no bus 1 mapping) gets the
// stream ID the host's iommu-map gives, behind the vIOMMU.
TEST(CorpusBind, PciFunctionsThroughCorpusHostBridges) {
  for (const char* file : {"tegra194-p2972-0000.dtb", "tegra234-p3737-0000+p3701-0000.dtb",
                           "imx95-19x19-evk.dtb", "sm8550-qrd.dtb", "armada-8040-db.dtb",
                           "juno.dtb", "fsl-lx2160a-rdb.dtb", "fvp-base-revc.dtb"}) {
    SCOPED_TRACE(file);
    const Tree host = load_or_die(corpus_dir() / file);
    const Topology topology = parse_topology(host);
    Tree partial;
    partial.root().set_u32("#address-cells", 2);
    partial.root().set_u32("#size-cells", 2);
    Node& functions = **partial.root().add_child("pci-passthrough");
    functions.set_u32("#address-cells", 1);
    functions.set_u32("#size-cells", 0);
    std::vector<std::pair<std::string, MappedId>> expected;
    std::uint32_t device = 0;
    for (const auto& bridge : topology.bridges) {
      if (bridge.iommu_map.empty()) continue;
      const std::uint32_t host_rid = bridge.iommu_map.front().rid_base;
      const auto mapped = map_rid(bridge, host_rid);
      ASSERT_TRUE(mapped) << mapped.error().message;
      const std::uint32_t rid = (++device) << 3;
      Node& f = **functions.add_child(fmt::format("function@{:x}", rid));
      f.set_u32("reg", rid);
      f.set_string("xen,path", bridge.path);
      f.set_u32("vpci,host-rid", host_rid);
      expected.emplace_back(bridge.path, *mapped);
    }
    ASSERT_FALSE(expected.empty());
    // One virtio-pci function too, served by domain 1.
    Node& virtio = **functions.add_child("virtio@f8");
    virtio.set_u32("reg", 0xf8);
    virtio.set_u32("vpci,backend-domid", 1);

    auto bound = bind_partial_tree(host, partial);
    ASSERT_TRUE(bound) << bound.error().message;
    auto blob = serialize_dtb(bound->guest);
    ASSERT_TRUE(blob);
    EXPECT_EQ(testing::dtc_roundtrip_warnings(*blob), "");
    EXPECT_EQ(testing::to_dts_compile_warnings(bound->guest), "");
    // The virtual host bridge (and vIOMMU) pass dt-validate's core schemas.
    const auto findings = testing::dt_validate_added_nodes(*bound);
    ASSERT_TRUE(findings.has_value())
        << "dt-validate (Debian's dt-schema) is not installed: scripts/install-deps.sh";
    EXPECT_EQ(*findings, "") << file;
    ASSERT_EQ(bound->streams.size(), expected.size());
    const auto host_phandles = host.phandle_index();
    for (std::size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(bound->streams[i].host_path, expected[i].first);
      EXPECT_EQ(bound->streams[i].psid, expected[i].second.id);
      EXPECT_EQ(bound->streams[i].piommu, host_phandles.at(expected[i].second.phandle)->path());
      EXPECT_EQ(bound->streams[i].rid, (i + 1) << 3);
    }
    // The guest bridge's iommu-map routes each RID: passthrough to the vIOMMU with
    // its vSID, the virtio function to the grant node with its domid, length 1.
    auto guest = parse_dtb(*blob);
    ASSERT_TRUE(guest);
    auto guest_bridge =
        parse_pci_host_bridge(guest->phandle_index(), *guest->find(bound->pci_path));
    ASSERT_TRUE(guest_bridge) << guest_bridge.error().message;
    for (const auto& s : bound->streams) {
      const auto routed = map_rid(*guest_bridge, *s.rid);
      ASSERT_TRUE(routed);
      EXPECT_EQ(routed->phandle, bound->viommu_phandle);
      EXPECT_EQ(routed->id, s.vsid);
    }
    const auto grant = map_rid(*guest_bridge, 0xf8);
    ASSERT_TRUE(grant);
    EXPECT_EQ(grant->phandle, bound->grant_phandle);
    EXPECT_EQ(grant->id, 1u);
    EXPECT_EQ(guest_bridge->iommu_map[grant->entry].length, 1u);
    EXPECT_FALSE(map_rid(*guest_bridge, 0xf9))
        << "function 1 of the virtio device must not inherit domid 2";
  }
}

}  // namespace
}  // namespace vpci::dt
