#include "pci/dump.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace vpci::pci {
namespace {

TEST(DumpParseTest, DevicesWithAndWithoutDomainAndVerboseText) {
  const std::string text =
      "00:1f.3 Audio device: Intel Corporation Something\n"
      "\tSubsystem: whatever\n"
      "00: 86 80 c8 a0 06 04 10 00\n"
      "08: 10 00 03 04\n"
      "\n"
      "0001:02:00.0 Non-Volatile memory controller\n"
      "00: 4d 14 08 a8\n"
      "04: 01 00 01 00\n";
  auto devices = parse_lspci_text(text);
  ASSERT_TRUE(devices.has_value()) << devices.error().message;
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_EQ((*devices)[0].address.to_string(), "0000:00:1f.3");
  EXPECT_EQ((*devices)[0].config.size(), 12u);
  EXPECT_EQ((*devices)[0].config[0x0A], 0x03);
  EXPECT_EQ((*devices)[1].address.to_string(), "0001:02:00.0");
  EXPECT_EQ((*devices)[1].config.size(), 8u);
  EXPECT_EQ((*devices)[1].config[4], 0x01);
  EXPECT_EQ((*devices)[0].line, 1u);
  EXPECT_EQ((*devices)[1].line, 6u);
}

// Damage is refused with the line (and column) where it shows, never read as a
// different config space.
TEST(DumpParseTest, AMissingRowIsAGap) {
  auto gap = parse_lspci_text(
      "00:02.0 x\n00: 86 80 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
      "10: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
      "30: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n");
  ASSERT_FALSE(gap.has_value());
  EXPECT_EQ(gap.error().code, ErrorCode::kMalformedInput);
  EXPECT_EQ(gap.error().message.rfind(
                "4:1: row 0x30 of 0000:00:02.0 leaves a gap: bytes 0x20-0x2f are missing", 0),
            0u)
      << gap.error().message;
  // A device whose first row is not offset 0 lost its first rows.
  auto late = parse_lspci_text("00:02.0 x\n10: 00\n");
  ASSERT_FALSE(late.has_value());
  EXPECT_EQ(
      late.error().message.rfind("2:1: row 0x10 of 0000:00:02.0 leaves a gap: bytes 0x0-0xf", 0),
      0u)
      << late.error().message;
}

TEST(DumpParseTest, ARepeatedRowIsRefused) {
  auto repeated = parse_lspci_text(
      "00:02.0 x\n00: 86 80 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
      "10: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
      "10: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n");
  ASSERT_FALSE(repeated.has_value());
  EXPECT_EQ(repeated.error().message.rfind(
                "4:1: row 0x10 of 0000:00:02.0 repeats bytes up to 0x1f already given (line 3)", 0),
            0u)
      << repeated.error().message;
}

TEST(DumpParseTest, ImpossibleAddressesAreRefused) {
  auto device = parse_lspci_text("00:20.0 x\n00: 86 80\n");
  ASSERT_FALSE(device.has_value());
  EXPECT_EQ(device.error().message.rfind("1:4: impossible address: device 0x20 exceeds 0x1f", 0),
            0u)
      << device.error().message;
  auto function = parse_lspci_text("0000:00:02.8 x\n00: 86 80\n");
  ASSERT_FALSE(function.has_value());
  EXPECT_EQ(function.error().message.rfind("1:12: impossible address: function 8 exceeds 7", 0), 0u)
      << function.error().message;
}

TEST(DumpParseTest, ARepeatedDeviceIsRefused) {
  auto twice = parse_lspci_text("00:02.0 x\n00: 86 80\n\n0000:00:02.0 y\n00: 86 80\n");
  ASSERT_FALSE(twice.has_value());
  EXPECT_EQ(
      twice.error().message.rfind("4:1: device 0000:00:02.0 appears twice (first at line 1)", 0),
      0u)
      << twice.error().message;
  // The same slot in another domain is another device.
  EXPECT_TRUE(parse_lspci_text("00:02.0 x\n00: 86 80\n\n0001:00:02.0 y\n00: 86 80\n").has_value());
}

TEST(DumpParseTest, ShortDumpsAreTruncatedFullOnesAreNot) {
  const auto dump_of = [](std::size_t bytes) {
    std::string text = "00:02.0 x\n";
    for (std::size_t row = 0; row < bytes; row += 16)
      text += fmt::format("{:02x}: {}\n", row, "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
    auto devices = parse_lspci_text(text);
    EXPECT_TRUE(devices.has_value());
    return (*devices)[0];
  };
  const auto x = dump_of(64);  // lspci -x
  EXPECT_EQ(x.space_size, 256u);
  EXPECT_EQ(x.truncation, Truncation::kShortDump);
  EXPECT_TRUE(x.truncated());
  const auto xxx = dump_of(256);
  EXPECT_EQ(xxx.space_size, 256u);
  EXPECT_FALSE(xxx.truncated());
  const auto partial_extended = dump_of(512);
  EXPECT_EQ(partial_extended.space_size, 4096u);
  EXPECT_TRUE(partial_extended.truncated());
  const auto xxxx = dump_of(4096);
  EXPECT_EQ(xxxx.space_size, 4096u);
  EXPECT_FALSE(xxxx.truncated());
  EXPECT_EQ(truncation_name(Truncation::kPermissions), "permissions");
}

TEST(DumpParseTest, DeviceLineNeedsTheTrailingSpace) {
  // pciutils skips a device line without the trailing space and its data.
  auto devices = parse_lspci_text("00:02.0\n00: 86 80\n");
  ASSERT_TRUE(devices.has_value());
  EXPECT_TRUE(devices->empty());
}

TEST(DumpParseTest, MalformedDataLinesAreErrorsWithLineNumbers) {
  auto bad = parse_lspci_text("00:02.0 x\n00: 86 80\n02: 86  80\n");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, ErrorCode::kMalformedInput);
  EXPECT_EQ(bad.error().message.rfind("3:8: malformed data", 0), 0u) << bad.error().message;
  EXPECT_FALSE(parse_lspci_text("00:02.0 x\n00: 8g\n").has_value());
  EXPECT_FALSE(parse_lspci_text("00:02.0 x\n1000: 00\n").has_value());
  EXPECT_FALSE(parse_lspci_text("00:02.0 x\n" + std::string(300, 'a') + "\n").has_value());
}

TEST(DumpParseTest, CrLfLinesAndMissingFinalNewlineAreAccepted) {
  auto devices = parse_lspci_text("00:02.0 x\r\n00: 86 80\r\n02: aa");
  ASSERT_TRUE(devices.has_value());
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].config.size(), 3u);
}

TEST(DumpParseTest, DeviceAddresses) {
  EXPECT_EQ(parse_device_address("00:02.0")->to_string(), "0000:00:02.0");
  EXPECT_EQ(parse_device_address("0000:3b:1f.7")->to_string(), "0000:3b:1f.7");
  EXPECT_EQ(parse_device_address("10000:00:00.0")->domain, 0x10000u);
  EXPECT_FALSE(parse_device_address("00:20.0").has_value());  // device > 31
  EXPECT_FALSE(parse_device_address("00:02.8").has_value());
  EXPECT_FALSE(parse_device_address("00:02.0x").has_value());
  EXPECT_FALSE(parse_device_address("nonsense").has_value());
  EXPECT_FALSE(parse_device_address("0000:03:00.0 ").has_value());
  EXPECT_FALSE(parse_device_address("00:02.0 ").has_value());
}

TEST(DumpWriteTest, WriterOutputParsesBackIdentically) {
  std::vector<std::uint8_t> config(4096);
  for (std::size_t i = 0; i < config.size(); ++i) config[i] = static_cast<std::uint8_t>(i * 7);
  const DeviceAddress address{0, 3, 0, 1};
  const std::string text = format_lspci_dump(address, config, "comment");
  EXPECT_EQ(text.rfind("0000:03:00.1 comment\n", 0), 0u);
  EXPECT_EQ(text.substr(text.size() - 2), "\n\n");
  auto devices = parse_lspci_text(text);
  ASSERT_TRUE(devices.has_value());
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].config, config);
  EXPECT_EQ((*devices)[0].address, address);
}

class DumpSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("vpci-dump-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::filesystem::path& path, const std::string& data) {
    std::ofstream(path, std::ios::binary) << data;
  }
  std::filesystem::path dir_;
};

TEST_F(DumpSourceTest, RawConfigFileIsOneDevice) {
  std::string raw(256, '\0');
  raw[0] = '\x86';
  raw[1] = '\x80';
  write(dir_ / "0000_00_1f.3.config.bin", raw);
  auto devices = load_dump_source(dir_ / "0000_00_1f.3.config.bin");
  ASSERT_TRUE(devices.has_value()) << devices.error().message;
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].config.size(), 256u);
  EXPECT_EQ((*devices)[0].address.to_string(), "0000:00:1f.3");
  EXPECT_EQ((*devices)[0].origin, DumpOrigin::kRawFile);
  EXPECT_FALSE((*devices)[0].truncated());
  write(dir_ / "short.bin", raw.substr(0, 64));
  auto short_raw = load_dump_source(dir_ / "short.bin");
  ASSERT_TRUE(short_raw.has_value()) << short_raw.error().message;
  EXPECT_EQ((*short_raw)[0].truncation, Truncation::kShortDump);
  EXPECT_EQ((*short_raw)[0].space_size, 256u);
}

TEST_F(DumpSourceTest, SysfsDeviceDirectory) {
  const auto device_dir = dir_ / "0000:00:03.0";
  std::filesystem::create_directories(device_dir);
  write(device_dir / "config", std::string(64, '\x01'));
  auto devices = load_dump_source(device_dir);
  ASSERT_TRUE(devices.has_value()) << devices.error().message;
  EXPECT_EQ((*devices)[0].address.to_string(), "0000:00:03.0");
  EXPECT_EQ((*devices)[0].config.size(), 64u);
}

TEST_F(DumpSourceTest, ErrorsNameTheSource) {
  auto missing = load_dump_source(dir_ / "missing");
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message.find("missing"), std::string::npos);
  write(dir_ / "empty.txt", "just some words\n");
  auto empty = load_dump_source(dir_ / "empty.txt");
  ASSERT_FALSE(empty.has_value());
  EXPECT_NE(empty.error().message.find("no device"), std::string::npos);
  write(dir_ / "huge.bin", std::string(5000, '\0'));
  EXPECT_FALSE(load_dump_source(dir_ / "huge.bin").has_value());
  std::filesystem::create_directories(dir_ / "notadevice");
  write(dir_ / "notadevice" / "config", std::string(64, '\0'));
  EXPECT_FALSE(load_dump_source(dir_ / "notadevice").has_value());
}

}  // namespace
}  // namespace vpci::pci
