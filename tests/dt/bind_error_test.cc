// Every way a bind is refused, and that the message names what was wrong; plus the
// allocation rules (ranges, uniqueness, base, phandles).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "dt/bind.h"
#include "dt/iommu.h"
#include "tests/dt/dt_test_util.h"

namespace vpci::dt {
namespace {

using ::testing::AllOf;
using testing::dts_or_die;
using ::testing::HasSubstr;

const char* const kHost = R"(
/dts-v1/;
/ {
  #address-cells = <2>; #size-cells = <2>;
  smmu_a: iommu@1000000 { compatible = "arm,mmu-500"; reg = <0 0x1000000 0 0x10000>; #iommu-cells = <1>; };
  smmu_b: iommu@2000000 { compatible = "arm,smmu-v3"; reg = <0 0x2000000 0 0x10000>; #iommu-cells = <1>; };
  dart: iommu@3000000 { compatible = "apple,t8103-dart"; reg = <0 0x3000000 0 0x4000>; #iommu-cells = <1>; };
  clk: clock { compatible = "fixed-clock"; #clock-cells = <0>; clock-frequency = <100>; };
  its: msi-controller@4000000 { compatible = "arm,gic-v3-its"; reg = <0 0x4000000 0 0x20000>; msi-controller; #msi-cells = <1>; };
  dev0@10000000 { reg = <0 0x10000000 0 0x1000>; iommus = <&smmu_a 0x10>; };
  dev1@10001000 { reg = <0 0x10001000 0 0x1000>; iommus = <&smmu_b 0x10>; };
  dev2@10002000 { reg = <0 0x10002000 0 0x1000>; iommus = <&smmu_a 0x20>, <&smmu_a 0x21>; };
  dev3@10003000 { reg = <0 0x10003000 0 0x1000>; iommus = <&dart 1>; };
  dev4@10004000 { reg = <0 0x10004000 0 0x1000>; iommus = <&clk>; };
  dev5@10005000 { reg = <0 0x10005000 0 0x1000>; iommus = <&smmu_a 0x30>; };
  pcie@20000000 {
    compatible = "pci-host-ecam-generic"; device_type = "pci";
    reg = <0 0x20000000 0 0x1000000>; bus-range = <0 0xf>;
    #address-cells = <3>; #size-cells = <2>;
    ranges = <0x02000000 0 0x30000000 0 0x30000000 0 0x1000000>;
    iommu-map = <0x100 &smmu_b 0x500 0x100>;
    msi-map = <0x0 &its 0x0 0x1000>;
  };
  pcie-nomap@21000000 {
    compatible = "pci-host-ecam-generic"; device_type = "pci";
    reg = <0 0x21000000 0 0x1000000>;
    #address-cells = <3>; #size-cells = <2>;
    ranges = <0x02000000 0 0x31000000 0 0x31000000 0 0x1000000>;
  };
  pcie-overlap@22000000 {
    compatible = "pci-host-ecam-generic"; device_type = "pci";
    reg = <0 0x22000000 0 0x1000000>;
    #address-cells = <3>; #size-cells = <2>;
    ranges = <0x02000000 0 0x32000000 0 0x32000000 0 0x1000000>;
    iommu-map = <0x0 &smmu_b 0x0 0x100>, <0x80 &smmu_b 0x1000 0x10>;
  };
};
)";

// A partial tree: header + /passthrough containing `body`, and `extra` at the root.
std::string partial(const std::string& body, const std::string& extra = "") {
  return "/dts-v1/;\n/ {\n #address-cells = <2>; #size-cells = <2>;\n passthrough {\n"
         "  compatible = \"simple-bus\"; ranges; #address-cells = <2>; #size-cells = <2>;\n" +
         body + " };\n" + extra + "};\n";
}

std::string master(const std::string& name, const std::string& host_path, const std::string& more) {
  return "  " + name + " { xen,path = \"" + host_path + "\"; " + more + " };\n";
}

std::string pci(const std::string& functions) {
  return " pci-passthrough {\n  #address-cells = <1>; #size-cells = <0>;\n" + functions + " };\n";
}

Result<BindResult> bind_text(const std::string& partial_text, const BindOptions& options = {}) {
  const Tree host = dts_or_die(kHost);
  const Tree p = dts_or_die(partial_text);
  return bind_partial_tree(host, p, options);
}

void expect_error(const Result<BindResult>& r, ErrorCode code,
                  const ::testing::Matcher<std::string>& message) {
  ASSERT_FALSE(r) << "bind succeeded";
  EXPECT_EQ(r.error().code, code) << r.error().message;
  EXPECT_THAT(r.error().message, message);
}

TEST(DtBindErrors, MalformedBlobs) {
  const auto good = testing::read_bytes(testing::corpus_dir() / "juno.dtb");
  std::vector<std::uint8_t> truncated(good.begin(),
                                      good.begin() + static_cast<std::ptrdiff_t>(good.size() / 2));
  auto r = parse_dtb(truncated);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformedInput);
  EXPECT_THAT(r.error().message, HasSubstr("malformed device tree blob"));

  std::vector<std::uint8_t> bad_magic = good;
  bad_magic[0] ^= 0xff;
  EXPECT_FALSE(parse_dtb(bad_magic));
  EXPECT_FALSE(parse_dtb(std::vector<std::uint8_t>(8, 0)));
  EXPECT_FALSE(parse_dtb({}));

  // A structure block whose size field lies.
  std::vector<std::uint8_t> lying = good;
  lying[0x24 + 3] ^= 0x40;  // size_dt_struct
  EXPECT_FALSE(parse_dtb(lying));
}

TEST(DtBindErrors, DuplicatePhandlesAndNamesRejectedOnLoad) {
  Tree t;
  (*t.root().add_child("a"))->set_u32("phandle", 5);
  (*t.root().add_child("b"))->set_u32("phandle", 5);
  auto blob = serialize_dtb(t);
  ASSERT_TRUE(blob);
  auto r = parse_dtb(*blob);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, HasSubstr("phandle 0x5"));

  Tree zero;
  (*zero.root().add_child("a"))->set_u32("phandle", 0);
  EXPECT_FALSE(parse_dtb(*serialize_dtb(zero)));
}

TEST(DtBindErrors, MalformedDtsNamesDtcError) {
  auto r = parse_dts("/dts-v1/; / { a = <1; };", "broken.dts");
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message,
              AllOf(HasSubstr("broken.dts"), HasSubstr("dtc could not compile")));
}

TEST(DtBindErrors, DanglingPhandleInHost) {
  const Tree host = dts_or_die(
      "/dts-v1/; / { #address-cells = <2>; #size-cells = <2>; dev { iommus = <0x77 0x1>; }; };");
  const Tree p = dts_or_die(partial(master("dev", "/dev", "iommus = <0 1>;")));
  expect_error(bind_partial_tree(host, p), ErrorCode::kNotFound,
               AllOf(HasSubstr("/passthrough/dev"), HasSubstr("dangling phandle 0x77")));
}

TEST(DtBindErrors, UnknownProvider) {
  expect_error(
      bind_text(partial(master("dev", "/dev3@10003000", "iommus = <0 1>;"))),
      ErrorCode::kUnsupported,
      AllOf(HasSubstr("unknown IOMMU provider /iommu@3000000"), HasSubstr("apple,t8103-dart")));
}

TEST(DtBindErrors, ProviderWithoutIommuCells) {
  expect_error(bind_text(partial(master("dev", "/dev4@10004000", ""))), ErrorCode::kMalformedInput,
               AllOf(HasSubstr("/clock has no #iommu-cells"), HasSubstr("/passthrough/dev")));
}

TEST(DtBindErrors, CellCountMismatchBetweenPartialAndHost) {
  expect_error(bind_text(partial(master("dev", "/dev2@10002000", "iommus = <0 0x20>;"))),
               ErrorCode::kMalformedInput,
               AllOf(HasSubstr("cell-count mismatch"), HasSubstr("/passthrough/dev"),
                     HasSubstr("/dev2@10002000")));
}

TEST(DtBindErrors, CellCountMismatchInHost) {
  const Tree host = dts_or_die(
      "/dts-v1/; / { #address-cells = <2>; #size-cells = <2>;"
      " s: iommu { compatible = \"arm,mmu-500\"; #iommu-cells = <2>; };"
      " dev { iommus = <&s 0x10 0x0 &s 0x11>; }; };");
  const Tree p = dts_or_die(partial(master("dev", "/dev", "")));
  expect_error(bind_partial_tree(host, p), ErrorCode::kMalformedInput,
               AllOf(HasSubstr("cell-count mismatch"), HasSubstr("#iommu-cells = <2>")));
}

TEST(DtBindErrors, StreamIdMismatchNamesBothNodes) {
  expect_error(bind_text(partial(master("dev", "/dev0@10000000", "iommus = <0 0x11>;"))),
               ErrorCode::kConflict,
               AllOf(HasSubstr("stream ID mismatch"), HasSubstr("/passthrough/dev"),
                     HasSubstr("<0x11>"), HasSubstr("/dev0@10000000"), HasSubstr("<0x10>")));
}

TEST(DtBindErrors, PlaceholderMustBeZeroOrHostPhandle) {
  expect_error(bind_text(partial(master("dev", "/dev0@10000000", "iommus = <0x99 0x10>;"))),
               ErrorCode::kConflict,
               HasSubstr("neither the placeholder 0 nor the host IOMMU's phandle"));
}

TEST(DtBindErrors, MissingHostNodeAndMissingXenPath) {
  expect_error(bind_text(partial(master("dev", "/nope", "iommus = <0 0x10>;"))),
               ErrorCode::kNotFound,
               HasSubstr("xen,path \"/nope\" does not exist in the host tree"));
  expect_error(bind_text(partial("  dev { iommus = <0 0x10>; };\n")), ErrorCode::kMalformedInput,
               HasSubstr("has iommus but no xen,path"));
}

TEST(DtBindErrors, MalformedXenReg) {
  expect_error(
      bind_text(partial(master("dev", "/dev0@10000000", "xen,reg = <0 0x10000000 0 0x1000 0>;"))),
      ErrorCode::kMalformedInput,
      AllOf(HasSubstr("/passthrough/dev xen,reg"), HasSubstr("6 cells each")));
}

TEST(DtBindErrors, NothingToBind) {
  expect_error(bind_text(partial("")), ErrorCode::kNotFound, HasSubstr("nothing to bind"));
}

TEST(DtBindErrors, OverlayPartialRefused) {
  expect_error(
      bind_text(partial(master("dev", "/dev0@10000000", ""), " __fixups__ { x = \"/a:b:0\"; };\n")),
      ErrorCode::kUnsupported, HasSubstr("__fixups__"));
}

TEST(DtBindErrors, ChosenIdCollisionNamesBothMasters) {
  expect_error(bind_text(partial(master("a", "/dev0@10000000", "vpci,vsid = <7>;") +
                                 master("b", "/dev1@10001000", "vpci,vsid = <7>;"))),
               ErrorCode::kAlreadyExists,
               AllOf(HasSubstr("ID collision"), HasSubstr("/passthrough/a"),
                     HasSubstr("/passthrough/b"), HasSubstr("0x7")));
  // The command line and the partial tree collide the same way.
  BindOptions options;
  options.vsid_requests.push_back({"/passthrough/b", {3}});
  expect_error(bind_text(partial(master("a", "/dev0@10000000", "vpci,vsid = <3>;") +
                                 master("b", "/dev1@10001000", "")),
                         options),
               ErrorCode::kAlreadyExists,
               AllOf(HasSubstr("--vsid /passthrough/b"), HasSubstr("/passthrough/a")));
}

TEST(DtBindErrors, SameStreamTwoDifferentChosenIds) {
  expect_error(bind_text(partial(master("a", "/dev0@10000000", "vpci,vsid = <1>;") +
                                 master("b", "/dev0@10000000", "vpci,vsid = <2>;"))),
               ErrorCode::kConflict,
               AllOf(HasSubstr("same physical stream"), HasSubstr("/iommu@1000000")));
}

TEST(DtBindErrors, ChosenIdOutOfRange) {
  BindOptions options;
  options.vsid_limit = 0x100;
  expect_error(bind_text(partial(master("a", "/dev0@10000000", "vpci,vsid = <0x100>;")), options),
               ErrorCode::kOutOfRange, HasSubstr("outside the vIOMMU's ID space 0-0xff"));
}

TEST(DtBindErrors, ChosenIdCountMustMatchSpecifiers) {
  expect_error(bind_text(partial(master("a", "/dev2@10002000", "vpci,vsid = <1 2 3>;"))),
               ErrorCode::kInvalidArgument, HasSubstr("2 iommus specifier(s)"));
  BindOptions options;
  options.vsid_requests.push_back({"/nowhere", {1}});
  expect_error(bind_text(partial(master("a", "/dev0@10000000", "")), options), ErrorCode::kNotFound,
               HasSubstr("--vsid /nowhere"));
}

TEST(DtBindErrors, ExhaustedIdSpace) {
  BindOptions options;
  options.vsid_base = 1;
  options.vsid_limit = 3;  // room for 1 and 2
  expect_error(
      bind_text(partial(master("a", "/dev0@10000000", "") + master("b", "/dev1@10001000", "") +
                        master("c", "/dev2@10002000", "")),
                options),
      ErrorCode::kNoSpace, AllOf(HasSubstr("exhausted"), HasSubstr("2 more stream(s)")));
  options.vsid_base = 3;
  expect_error(bind_text(partial(master("a", "/dev0@10000000", "")), options),
               ErrorCode::kOutOfRange, HasSubstr("vSID base 0x3 is not below"));
}

TEST(DtBindErrors, VirtualNodeNameCollision) {
  expect_error(bind_text(partial(master("a", "/dev0@10000000", ""), " iommu@4040000 { };\n")),
               ErrorCode::kAlreadyExists, HasSubstr("/iommu@4040000"));
}

TEST(DtBindErrors, PciFunctionErrors) {
  const std::string dev = master("a", "/dev0@10000000", "");
  expect_error(
      bind_text(partial(
          dev, pci("  f@8 { xen,path = \"/pcie@20000000\"; vpci,host-rid = <0x100>; };\n"))),
      ErrorCode::kMalformedInput, HasSubstr("needs reg = <guest RID>"));
  expect_error(bind_text(partial(dev, pci("  f@8 { reg = <8>; vpci,backend-domid = <1>; };\n"
                                          "  g@8 { reg = <8>; vpci,backend-domid = <2>; };\n"))),
               ErrorCode::kAlreadyExists, HasSubstr("both claim guest RID 0x0008"));
  expect_error(
      bind_text(partial(
          dev,
          pci("  f@8 { reg = <8>; xen,path = \"/pcie@20000000\"; vpci,host-rid = <0x200>; };\n"))),
      ErrorCode::kNotFound, HasSubstr("covers no RID 0x0200"));
  expect_error(bind_text(partial(dev, pci("  f@8 { reg = <8>; xen,path = \"/pcie-nomap@21000000\"; "
                                          "vpci,host-rid = <0>; };\n"))),
               ErrorCode::kNotFound, HasSubstr("has no iommu-map"));
  expect_error(
      bind_text(partial(dev, pci("  f@8 { reg = <8>; xen,path = \"/pcie-overlap@22000000\"; "
                                 "vpci,host-rid = <0>; };\n"))),
      ErrorCode::kConflict, HasSubstr("both cover RID 0x80"));
  expect_error(
      bind_text(partial(
          dev,
          pci("  f@8 { reg = <8>; xen,path = \"/pcie@20000000\"; vpci,backend-domid = <1>; };\n"))),
      ErrorCode::kMalformedInput, HasSubstr("has both"));
  expect_error(
      bind_text(partial(dev, pci("  f@8 { reg = <8>; vpci,backend-domid = <0x7ff0>; };\n"))),
      ErrorCode::kOutOfRange, HasSubstr("reserved Xen domain ID"));
  expect_error(bind_text(partial(dev, pci("  f@8 { reg = <8>; };\n"))), ErrorCode::kMalformedInput,
               HasSubstr("neither a virtio-pci function"));
  expect_error(bind_text(partial(
                   dev, " pci-passthrough { f@8 { reg = <8>; vpci,backend-domid = <1>; }; };\n")),
               ErrorCode::kMalformedInput, HasSubstr("#address-cells = <1> and #size-cells = <0>"));
  BindOptions small;
  small.pci.ecam_size = 1 << 20;  // bus 0 only
  expect_error(
      bind_text(partial(dev, pci("  f@100 { reg = <0x100>; vpci,backend-domid = <1>; };\n")),
                small),
      ErrorCode::kOutOfRange, HasSubstr("buses 0-0"));
}

TEST(DtBindRules, StreamIdReusedOnTwoIommusGetsTwoVsids) {
  auto r =
      bind_text(partial(master("a", "/dev0@10000000", "") + master("b", "/dev1@10001000", "")));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->streams.size(), 2u);
  EXPECT_EQ(r->streams[0].psid, r->streams[1].psid);
  EXPECT_NE(r->streams[0].vsid, r->streams[1].vsid);
}

TEST(DtBindRules, FirstFreeFromBaseSkipsChosenIds) {
  BindOptions options;
  options.vsid_base = 0x10;
  auto r = bind_text(partial(master("a", "/dev0@10000000", "") +
                             master("b", "/dev2@10002000", "vpci,vsid = <0x11 0x40>;") +
                             master("c", "/dev5@10005000", "")),
                     options);
  ASSERT_TRUE(r) << r.error().message;
  std::vector<std::uint32_t> vsids;
  for (const auto& s : r->streams) vsids.push_back(s.vsid);
  EXPECT_EQ(vsids, (std::vector<std::uint32_t>{0x10, 0x11, 0x40, 0x12}));
}

TEST(DtBindRules, CommandLineIdOverridesPartialProperty) {
  BindOptions options;
  options.vsid_requests.push_back({"/dev0@10000000", {0x99}});  // by host path
  auto r = bind_text(partial(master("a", "/dev0@10000000", "vpci,vsid = <5>;")), options);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->streams[0].vsid, 0x99u);
  EXPECT_FALSE(r->guest.find("/passthrough/a")->has_property("vpci,vsid"));
}

TEST(DtBindRules, PhandlesAvoidXenReservedRange) {
  // A partial tree using every phandle from 1 to 64999: the next free one is
  // 65000, which Xen reserves, as are 65001 and 65002. (Built in memory: dtc's
  // parser runs out of stack on 65k sibling nodes in one source.)
  const Tree host = dts_or_die(kHost);
  Tree p = dts_or_die(partial(master("a", "/dev0@10000000", "")));
  Node& many = **p.root().add_child("many");
  for (std::uint32_t ph = 1; ph < 65000; ++ph)
    many.add_child_unchecked(fmt::format("n{}", ph))->set_u32("phandle", ph);
  auto r = bind_partial_tree(host, p);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->viommu_phandle, 65003u);
}

TEST(DtBindRules, ForceAssignWithoutIommuIsLeftAlone) {
  auto r = bind_text(partial(master("a", "/dev0@10000000", "") +
                             master("b", "/dev1@10001000", "xen,force-assign-without-iommu;")));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->streams.size(), 1u);
  EXPECT_FALSE(r->guest.find("/passthrough/b")->has_property("iommus"));
}

TEST(DtBindRules, RidTranslationThroughMask) {
  const Tree host = testing::load_or_die(testing::corpus_dir() / "armada-8040-db.dtb");
  const Topology t = parse_topology(host);
  ASSERT_EQ(t.bridges.size(), 1u);
  const PciHostBridge& b = t.bridges[0];
  EXPECT_EQ(b.iommu_map_mask, 0x31fu);
  // RID 0x105 & 0x31f = 0x105, tuple 1: 0x105 - 0x100 + 0x4a0.
  EXPECT_EQ(map_rid(b, 0x105)->id, 0x4a5u);
  // RID 0x4e0 & 0x31f = 0x000: tuple 0.
  EXPECT_EQ(map_rid(b, 0x4e0)->id, 0x480u);
}

TEST(DtBindRules, ClassifiesCorpusProviders) {
  const Node dummy("x");
  const Tree juno = testing::load_or_die(testing::corpus_dir() / "juno.dtb");
  const Topology t = parse_topology(juno);
  ASSERT_EQ(t.providers.size(), 7u);
  for (const auto& p : t.providers) EXPECT_EQ(p.kind, IommuKind::kSmmuV1) << p.path;
  const Topology rcar =
      parse_topology(testing::load_or_die(testing::corpus_dir() / "r8a779g0-white-hawk.dtb"));
  for (const auto& p : rcar.providers) EXPECT_EQ(p.kind, IommuKind::kIpmmu) << p.path;
  const Topology qcom =
      parse_topology(testing::load_or_die(testing::corpus_dir() / "sm8550-qrd.dtb"));
  for (const auto& p : qcom.providers) {
    EXPECT_EQ(p.kind, IommuKind::kMmu500) << p.path;
    EXPECT_EQ(p.cells, 2u);
  }
  EXPECT_EQ(classify_iommu(dummy), IommuKind::kUnknown);
}

}  // namespace
}  // namespace vpci::dt
