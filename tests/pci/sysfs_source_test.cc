#include "pci/sysfs_source.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace vpci::pci {
namespace {

class SysfsSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("vpci-sysfs-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::filesystem::path& path, const std::string& data) {
    std::ofstream(path, std::ios::binary) << data;
  }
  // A copy of a device directory: `config` of `bytes` bytes, and `resource` if given.
  std::filesystem::path device(const std::string& name, std::size_t bytes,
                               const std::string& resource = "") {
    const auto path = dir_ / name;
    std::filesystem::create_directories(path);
    write(path / "config", std::string(bytes, '\x01'));
    if (!resource.empty()) write(path / "resource", resource);
    return path;
  }
  std::filesystem::path dir_;
};

constexpr const char* kResource =
    "0x0000004000000000 0x000000400007ffff 0x000000000014220c\n"  // 64-bit BAR0, 512 KiB
    "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"  // its upper half
    "0x000000000000c000 0x000000000000c01f 0x0000000000040101\n"  // I/O BAR2, 32 bytes
    "0x0000000000000000 0x0000000000000fff 0x0000000000040200\n"  // unassigned, 4 KiB
    "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
    "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
    "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";  // ROM

TEST(SysfsResourceTest, BarSizesFromStartAndEnd) {
  auto sizes = parse_sysfs_resource(kResource);
  ASSERT_TRUE(sizes.has_value()) << sizes.error().message;
  EXPECT_EQ((*sizes)[0], 512u * 1024);
  EXPECT_FALSE((*sizes)[1].has_value());
  EXPECT_EQ((*sizes)[2], 32u);
  EXPECT_EQ((*sizes)[3], 4096u);
  EXPECT_FALSE((*sizes)[4].has_value());
  EXPECT_FALSE((*sizes)[5].has_value());
}

TEST(SysfsResourceTest, MalformedLinesAreErrorsWithTheLine) {
  auto bad = parse_sysfs_resource("0x0 0x0 0x0\n0x10 zz 0x200\n");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message.rfind("2: 'zz' is not a hex number", 0), 0u) << bad.error().message;
  auto short_line = parse_sysfs_resource("0x0 0x0\n");
  ASSERT_FALSE(short_line.has_value());
  EXPECT_EQ(short_line.error().message.rfind("1: expected 'start end flags'", 0), 0u)
      << short_line.error().message;
}

TEST_F(SysfsSourceTest, DeviceDirectoryWithResource) {
  const auto path = device("0000:00:03.0", 256, kResource);
  auto dump = load_sysfs_device(path);
  ASSERT_TRUE(dump.has_value()) << dump.error().message;
  EXPECT_EQ(dump->address.to_string(), "0000:00:03.0");
  EXPECT_EQ(dump->origin, DumpOrigin::kSysfs);
  EXPECT_EQ(dump->file, path / "config");
  EXPECT_EQ(dump->space_size, 256u);
  EXPECT_FALSE(dump->truncated());
  EXPECT_EQ(dump->bar_sizes[0], 512u * 1024);
  EXPECT_EQ(dump->bar_sizes[2], 32u);
}

TEST_F(SysfsSourceTest, ACopiedShortConfigIsAShortDump) {
  // A copy's file size is what it holds, unlike the kernel's `config`, so a short copy
  // is a short dump, not a permission problem (that needs the real sysfs: CLI tests).
  auto dump = load_sysfs_device(device("0000:00:04.0", 64));
  ASSERT_TRUE(dump.has_value()) << dump.error().message;
  EXPECT_EQ(dump->truncation, Truncation::kShortDump);
  EXPECT_EQ(dump->space_size, 256u);
}

TEST_F(SysfsSourceTest, ADirectoryOfDevicesListsThemInAddressOrder) {
  device("0000:00:1f.0", 256);
  device("0000:00:02.0", 4096);
  device("0001:00:00.0", 256);
  std::filesystem::create_directories(dir_ / "power");  // attributes beside devices are ignored
  write(dir_ / "uevent", "");
  auto devices = load_sysfs_devices(dir_);
  ASSERT_TRUE(devices.has_value()) << devices.error().message;
  ASSERT_EQ(devices->size(), 3u);
  EXPECT_EQ((*devices)[0].address.to_string(), "0000:00:02.0");
  EXPECT_EQ((*devices)[0].space_size, 4096u);
  EXPECT_EQ((*devices)[1].address.to_string(), "0000:00:1f.0");
  EXPECT_EQ((*devices)[2].address.to_string(), "0001:00:00.0");
  // load_dump_source takes the directory too.
  auto loaded = load_dump_source(dir_);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  EXPECT_EQ(loaded->size(), 3u);
}

TEST_F(SysfsSourceTest, ADirectoryWithoutDevicesIsRefused) {
  std::filesystem::create_directories(dir_ / "empty");
  auto none = load_dump_source(dir_ / "empty");
  ASSERT_FALSE(none.has_value());
  EXPECT_NE(none.error().message.find("is a directory"), std::string::npos) << none.error().message;
}

TEST_F(SysfsSourceTest, AMalformedResourceNamesTheFileAndLine) {
  const auto path = device("0000:00:05.0", 256, "0x0 0x0 0x0\nnot hex\n");
  auto dump = load_sysfs_device(path);
  ASSERT_FALSE(dump.has_value());
  EXPECT_EQ(dump.error().message.rfind((path / "resource").string() + ":2: ", 0), 0u)
      << dump.error().message;
}

}  // namespace
}  // namespace vpci::pci
