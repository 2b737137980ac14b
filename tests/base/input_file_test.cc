#include "base/input_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

namespace vpci {
namespace {

namespace fs = std::filesystem;

class InputFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("vpci-input-file-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    const fs::path path = dir_ / name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  fs::path dir_;
};

constexpr InputFileKind kSmall{"test input", 16};

TEST_F(InputFileTest, ReadsARegularFileWhole) {
  const auto path = write("a.txt", std::string("abc\0def", 7));
  auto text = read_input_file(path, kSmall);
  ASSERT_TRUE(text) << text.error().message;
  EXPECT_EQ(*text, std::string("abc\0def", 7));
}

TEST_F(InputFileTest, AcceptsExactlyTheCap) {
  const auto path = write("cap.txt", std::string(16, 'x'));
  EXPECT_TRUE(read_input_file(path, kSmall));
}

TEST_F(InputFileTest, RefusesOneByteOverTheCapAndSaysTheCap) {
  const auto path = write("big.txt", std::string(17, 'x'));
  auto text = read_input_file(path, kSmall);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, ErrorCode::kNoSpace);
  EXPECT_NE(text.error().message.find("16 bytes limit for a test input"), std::string::npos)
      << text.error().message;
}

TEST_F(InputFileTest, RefusesAHugeSparseFileWithoutReadingIt) {
  const fs::path path = dir_ / "sparse";
  std::ofstream(path).close();
  fs::resize_file(path, std::uintmax_t{1} << 40);
  const auto start = std::chrono::steady_clock::now();
  auto text = read_input_file(path, kConfigSpaceInput);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, ErrorCode::kNoSpace);
  EXPECT_NE(text.error().message.find("16 MiB"), std::string::npos) << text.error().message;
  // Not a timing threshold: a read of 1 TiB would not finish at all.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::minutes(1));
}

TEST_F(InputFileTest, StopsAnEndlessDeviceAtTheCap) {
  auto text = read_input_file("/dev/zero", kSmall);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, ErrorCode::kNoSpace);
  EXPECT_NE(text.error().message.find("/dev/zero"), std::string::npos);
}

TEST_F(InputFileTest, RefusesADirectory) {
  auto text = read_input_file(dir_, kSmall);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(text.error().message.find("is a directory"), std::string::npos) << text.error().message;
}

TEST_F(InputFileTest, MissingFileIsNotFound) {
  auto text = read_input_file(dir_ / "nope", kSmall);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, ErrorCode::kNotFound);
  EXPECT_NE(text.error().message.find("No such file"), std::string::npos) << text.error().message;
}

TEST_F(InputFileTest, FifoWithoutWriterTimesOut) {
  const fs::path path = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  auto text = read_input_file(path, kSmall);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, ErrorCode::kIoError);
  EXPECT_NE(text.error().message.find("no data"), std::string::npos) << text.error().message;
}

TEST_F(InputFileTest, FifoWithAWriterIsReadToEnd) {
  const fs::path path = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const int fd = ::open(path.c_str(), O_WRONLY);
    const bool ok = fd >= 0 && ::write(fd, "hello", 5) == 5;
    ::_exit(ok ? 0 : 1);
  }
  auto text = read_input_file(path, kSmall);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(text) << text.error().message;
  EXPECT_EQ(*text, "hello");
}

TEST_F(InputFileTest, FifoWhoseWriterClosesWithoutDataIsEmpty) {
  const fs::path path = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Open after the reader so the reader sees the writer come and go.
    ::usleep(100 * 1000);
    const int fd = ::open(path.c_str(), O_WRONLY);
    ::_exit(fd >= 0 ? 0 : 1);
  }
  auto text = read_input_file(path, kSmall);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(text) << text.error().message;
  EXPECT_EQ(*text, "");
}

TEST(DescribeSize, UsesTheLargestExactUnit) {
  EXPECT_EQ(describe_size(16 * kMiB), "16 MiB");
  EXPECT_EQ(describe_size(4096), "4 KiB");
  EXPECT_EQ(describe_size(300), "300 bytes");
}

}  // namespace
}  // namespace vpci
