// `vpci dt bind`'s option syntax: what each option's text becomes in
// dt::BindOptions, and which option an error names.
#include "tools/dt_bind_options.h"

#include <string>
#include <type_traits>
#include <utility>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace vpci::tools {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(DtBindOptions, VsidRequest) {
  auto r = parse_vsid_request("/passthrough/sata@fd0c0000=0x200,513,0X202");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->path, "/passthrough/sata@fd0c0000");
  EXPECT_THAT(r->vsids, ElementsAre(0x200u, 513u, 0x202u));
  // The last '=' splits, so a path may contain one.
  r = parse_vsid_request("/a=b=7");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->path, "/a=b");
  EXPECT_THAT(r->vsids, ElementsAre(7u));
  r = parse_vsid_request("/x=0xffffffff");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_THAT(r->vsids, ElementsAre(0xffffffffu));
}

TEST(DtBindOptions, MalformedVsidRequests) {
  for (const char* text : {"nopath", "=1", "relative=1", ""}) {
    const auto r = parse_vsid_request(text);
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_THAT(r.error().message, HasSubstr("is not PATH=ID[,ID...] with an absolute node path"));
  }
  for (const char* text :
       {"/x=", "/x=1,,2", "/x=1,", "/x=0x100000000", "/x=-1", "/x=0x", "/x=1a"}) {
    const auto r = parse_vsid_request(text);
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_THAT(r.error().message, StartsWith(std::string("\"") + text + "\": "));
    EXPECT_THAT(r.error().message, HasSubstr("is not a 32-bit number"));
  }
}

TEST(DtBindOptions, NoOptionsKeepsLibraryDefaults) {
  const auto options = parse_bind_options({});
  ASSERT_TRUE(options) << options.error().message;
  const dt::BindOptions defaults;
  EXPECT_EQ(options->vsid_base, defaults.vsid_base);
  EXPECT_EQ(options->vsid_limit, defaults.vsid_limit);
  EXPECT_TRUE(options->vsid_requests.empty());
  EXPECT_EQ(options->viommu.base, defaults.viommu.base);
  EXPECT_EQ(options->viommu.size, defaults.viommu.size);
  EXPECT_TRUE(options->viommu.interrupts.empty());
  EXPECT_TRUE(options->viommu.interrupt_names.empty());
  EXPECT_EQ(options->pci.ecam_base, defaults.pci.ecam_base);
  EXPECT_EQ(options->pci.ecam_size, defaults.pci.ecam_size);
  EXPECT_EQ(options->pci.mem32_base, defaults.pci.mem32_base);
  EXPECT_EQ(options->pci.mem32_size, defaults.pci.mem32_size);
  EXPECT_EQ(options->pci.mem64_base, defaults.pci.mem64_base);
  EXPECT_EQ(options->pci.mem64_size, defaults.pci.mem64_size);
}

TEST(DtBindOptions, EveryOption) {
  BindOptionText text;
  text.vsids = {"/passthrough/a=1", "/soc/b=0x2,3"};
  text.vsid_base = "0x100";
  text.vsid_limit = "0x100000000";
  text.viommu_base = "0x5000000";
  text.viommu_size = "131072";
  text.viommu_interrupts = "0, 70 ,1";
  text.viommu_interrupt_names = {"eventq", "gerror"};
  text.pci_ecam = "0x30000000,0x200000";
  text.pci_mem32 = "0x40000000,0x1000000";
  text.pci_mem64 = "0x800000000,0";
  const auto options = parse_bind_options(text);
  ASSERT_TRUE(options) << options.error().message;
  ASSERT_EQ(options->vsid_requests.size(), 2u);
  EXPECT_EQ(options->vsid_requests[0].path, "/passthrough/a");
  EXPECT_THAT(options->vsid_requests[0].vsids, ElementsAre(1u));
  EXPECT_EQ(options->vsid_requests[1].path, "/soc/b");
  EXPECT_THAT(options->vsid_requests[1].vsids, ElementsAre(2u, 3u));
  EXPECT_EQ(options->vsid_base, 0x100u);
  EXPECT_EQ(options->vsid_limit, 0x100000000u);
  EXPECT_EQ(options->viommu.base, 0x5000000u);
  EXPECT_EQ(options->viommu.size, 0x20000u);
  EXPECT_THAT(options->viommu.interrupts, ElementsAre(0u, 70u, 1u));
  EXPECT_THAT(options->viommu.interrupt_names, ElementsAre("eventq", "gerror"));
  EXPECT_EQ(options->pci.ecam_base, 0x30000000u);
  EXPECT_EQ(options->pci.ecam_size, 0x200000u);
  EXPECT_EQ(options->pci.mem32_base, 0x40000000u);
  EXPECT_EQ(options->pci.mem32_size, 0x1000000u);
  EXPECT_EQ(options->pci.mem64_base, 0x800000000u);
  EXPECT_EQ(options->pci.mem64_size, 0u);
}

// The error for one option given as `value`, the others left out.
template <typename T>
std::string error_of(T BindOptionText::*option, std::type_identity_t<T> value) {
  BindOptionText text;
  text.*option = std::move(value);
  const auto options = parse_bind_options(text);
  EXPECT_FALSE(options);
  return options ? std::string{} : options.error().message;
}

// Each error starts with the option it is about, as `vpci dt bind` prints it.
TEST(DtBindOptions, ErrorsNameTheOption) {
  using T = BindOptionText;
  EXPECT_EQ(error_of(&T::vsids, {"/a=1", "nopath"}),
            "--vsid: \"nopath\" is not PATH=ID[,ID...] with an absolute node path");
  EXPECT_THAT(error_of(&T::vsid_base, "0x100000000"), StartsWith("--vsid-base: "));
  EXPECT_THAT(error_of(&T::vsid_limit, "many"), StartsWith("--vsid-limit: "));
  EXPECT_THAT(error_of(&T::viommu_base, "0x"), StartsWith("--viommu-base: "));
  EXPECT_THAT(error_of(&T::viommu_size, "-1"), StartsWith("--viommu-size: "));
  EXPECT_THAT(error_of(&T::viommu_interrupts, "0,70,x"), StartsWith("--viommu-interrupts: "));
  EXPECT_EQ(error_of(&T::pci_ecam, "0x10000000"), "--pci-ecam: \"0x10000000\" is not BASE,SIZE");
  EXPECT_THAT(error_of(&T::pci_mem32, "0x1,size"), StartsWith("--pci-mem32: "));
  EXPECT_THAT(error_of(&T::pci_mem64, ",1"), StartsWith("--pci-mem64: "));
}

}  // namespace
}  // namespace vpci::tools
