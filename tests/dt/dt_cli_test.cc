// `vpci dt bind` and `vpci dt show`, run as the real binary.
#include <unistd.h>

#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "dt/dtc.h"
#include "dt/tree.h"
#include "tests/dt/dt_test_util.h"

namespace vpci::dt {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Cli {
  int status = -1;
  std::string out;
  std::string err;
};

Cli run_vpci(const std::vector<std::string>& args) {
  auto r = run_process(VPCI_CLI_PATH, args, {});
  if (!r) {
    ADD_FAILURE() << r.error().message;
    return {};
  }
  return {r->exit_status, std::string(r->out.begin(), r->out.end()), r->err};
}

class DtCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("vpci-dt-cli-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string data(const std::string& name) const { return (testing::data_dir() / name).string(); }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(dir_ / name) << text;
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  std::filesystem::path dir_;
};

TEST_F(DtCliTest, BindWritesGuestDtbDtsAndMap) {
  const Cli r = run_vpci({"dt", "bind", "--host", data("soc-host.dts"), "--partial",
                          data("soc-partial.dts"), "-o", path("guest.dtb"), "--dts-out",
                          path("guest.dts"), "--map-out", path("map.json")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("13 stream(s) bound to /iommu@4040000"));
  EXPECT_EQ(files(), (std::vector<std::string>{"guest.dtb", "guest.dts", "map.json"}));
  const auto map = nlohmann::json::parse(testing::read_text(path("map.json")));
  EXPECT_EQ(map["viommu"]["path"], "/iommu@4040000");
  EXPECT_EQ(map["masters"].size(), 13u);
  // The map matches the library's golden map for the same inputs.
  EXPECT_EQ(testing::read_text(path("map.json")),
            testing::read_text(testing::data_dir() / "soc-map.golden.json"));
  // The DTB and the DTS describe the same tree; the DTS compiles without warnings.
  const auto dts = testing::read_text(path("guest.dts"));
  const auto compiled = testing::run_dtc({"-I", "dts", "-O", "dtb", "-"},
                                         std::vector<std::uint8_t>(dts.begin(), dts.end()));
  ASSERT_EQ(compiled.exit_status, 0);
  EXPECT_EQ(compiled.err, "");
  auto from_dts = parse_dtb(std::vector<std::uint8_t>(compiled.out.begin(), compiled.out.end()));
  auto from_dtb = load_tree_file(path("guest.dtb"));
  ASSERT_TRUE(from_dts);
  ASSERT_TRUE(from_dtb);
  EXPECT_EQ(*serialize_dtb(*from_dts), *serialize_dtb(*from_dtb));
}

TEST_F(DtCliTest, BindCorpusHostWithVsidOptions) {
  const Tree host = testing::load_or_die(testing::corpus_dir() / "juno.dtb");
  std::vector<testing::PartialMaster> masters;
  const Tree partial = testing::build_partial_from_host(host, &masters);
  const auto blob = serialize_dtb(partial);
  ASSERT_TRUE(blob);
  std::ofstream(path("partial.dtb"), std::ios::binary)
      .write(reinterpret_cast<const char*>(blob->data()),
             static_cast<std::streamsize>(blob->size()));
  const std::string first = masters.front().host_path;
  const Cli r = run_vpci({"dt", "bind", "--host", (testing::corpus_dir() / "juno.dtb").string(),
                          "--partial", path("partial.dtb"), "--map-out", path("map.json"),
                          "--vsid-base", "0x100", "--vsid", first + "=0x20"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto map = nlohmann::json::parse(testing::read_text(path("map.json")));
  EXPECT_EQ(map["masters"][0]["host_path"], first);
  EXPECT_EQ(map["masters"][0]["vsid"], 0x20);
  EXPECT_EQ(map["masters"][1]["vsid"], 0x100);
}

TEST_F(DtCliTest, BindWithoutOutputsPrintsDts) {
  const Cli r = run_vpci(
      {"dt", "bind", "--host", data("soc-host.dts"), "--partial", data("soc-partial.dts")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("/dts-v1/;"));
  EXPECT_THAT(r.out, HasSubstr("compatible = \"arm,smmu-v3\";"));
}

TEST_F(DtCliTest, RejectedBindWritesNothing) {
  write("bad-partial.dts", R"(/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>;
  passthrough { compatible = "simple-bus"; ranges; #address-cells = <2>; #size-cells = <2>;
    dma@fd500000 { reg = <0 0xfd500000 0 0x1000>; xen,path = "/soc/dma@fd500000"; iommus = <0 0x11>; };
  };
};)");
  write("guest.dtb", "old");
  const Cli r =
      run_vpci({"dt", "bind", "--host", data("soc-host.dts"), "--partial", path("bad-partial.dts"),
                "-o", path("guest.dtb"), "--map-out", path("map.json")});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, StartsWith("vpci dt bind: stream ID mismatch: /passthrough/dma@fd500000"));
  EXPECT_THAT(r.err, HasSubstr("host node /soc/dma@fd500000 has <0x10>"));
  EXPECT_EQ(files(), (std::vector<std::string>{"bad-partial.dts", "guest.dtb"}));
  EXPECT_EQ(testing::read_text(path("guest.dtb")), "old");
}

TEST_F(DtCliTest, MalformedHostBlobIsRejected) {
  auto bytes = testing::read_bytes(testing::corpus_dir() / "juno.dtb");
  bytes.resize(bytes.size() / 3);
  std::ofstream(path("cut.dtb"), std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  const Cli r = run_vpci({"dt", "bind", "--host", path("cut.dtb"), "--partial",
                          data("soc-partial.dts"), "-o", path("guest.dtb")});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("--host: "));
  EXPECT_THAT(r.err, HasSubstr("malformed device tree blob"));
  EXPECT_EQ(files(), (std::vector<std::string>{"cut.dtb"}));
  const Cli show = run_vpci({"dt", "show", path("cut.dtb")});
  EXPECT_EQ(show.status, 1);
  EXPECT_THAT(show.err, StartsWith("vpci dt show: "));
}

TEST_F(DtCliTest, CollidingVsidsAndBadOptions) {
  Cli r =
      run_vpci({"dt", "bind", "--host", data("soc-host.dts"), "--partial", data("soc-partial.dts"),
                "--map-out", path("map.json"), "--vsid", "/passthrough/dma@fd500000=0x40"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("ID collision"));
  EXPECT_THAT(r.err, HasSubstr("/passthrough/ethernet@ff0b0000"));
  r = run_vpci({"dt", "bind", "--host", data("soc-host.dts"), "--partial", data("soc-partial.dts"),
                "--vsid", "nopath"});
  EXPECT_EQ(r.status, 2);  // not of the option's form: a usage error
  EXPECT_THAT(r.err, HasSubstr("--vsid: \"nopath\" is not PATH=ID"));
  r = run_vpci({"dt", "bind", "--host", data("soc-host.dts"), "--partial", data("soc-partial.dts"),
                "--vsid-limit", "8"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("outside the vIOMMU's ID space"));  // the partial's chosen 0x40
  r = run_vpci({"dt", "bind", "--partial", data("soc-partial.dts")});
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(files(), std::vector<std::string>{});
}

TEST_F(DtCliTest, ShowListsIommusMastersAndMaps) {
  Cli r = run_vpci({"dt", "show", (testing::corpus_dir() / "juno.dtb").string()});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("IOMMUs (7):"));
  EXPECT_THAT(r.out, HasSubstr("Masters (6):"));
  EXPECT_THAT(r.out, HasSubstr("iommu-map RID 0x0000+0x1"));
  r = run_vpci({"dt", "show", "--json", (testing::corpus_dir() / "fsl-lx2160a-rdb.dtb").string()});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["iommus"].size(), 1u);
  EXPECT_EQ(j["masters"].size(), 2u);
  // fsl-mc's firmware-filled iommu-map = <0 &smmu 0 0> is reported, not fatal.
  ASSERT_EQ(j["problems"].size(), 1u);
  EXPECT_THAT(std::string(j["problems"][0]), HasSubstr("length 0"));
  r = run_vpci({"dt", "show", data("soc-host.dts")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("/soc/iommu@fdb00000  phandle"));
  EXPECT_THAT(r.out, HasSubstr("ipmmu"));
}

}  // namespace
}  // namespace vpci::dt
