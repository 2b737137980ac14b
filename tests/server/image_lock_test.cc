// Image locks of `vpci serve` (server/image_lock.h): a writable image is held by one
// device, read-only ones are shared, the default image is never emptied while another
// holder has it, and a refusal names the image and the holding process.
#include "server/image_lock.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include "tests/support/scratch_dir.h"

namespace vpci::server {
namespace {

using ::testing::HasSubstr;

class ImageLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(scratch_.valid());
    dir_ = scratch_.path();
    image_ = dir_ / "disk.img";
    std::ofstream(image_) << "precious bytes";
  }

  [[nodiscard]] std::string contents() const {
    std::ifstream in(image_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  vpci::testing::ScratchDir scratch_{"image-lock-test"};
  std::filesystem::path dir_;
  std::filesystem::path image_;
};

TEST_F(ImageLockTest, AWritableImageIsHeldByOneOpenerEvenInOneProcess) {
  auto first = open_locked_image(image_, /*read_only=*/false);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  auto second = open_locked_image(image_, /*read_only=*/false);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, ErrorCode::kConflict);
  EXPECT_THAT(second.error().message,
              HasSubstr("cannot lock image " + image_.string() +
                        " for writing: another device of this configuration uses it"));
  auto reader = open_locked_image(image_, /*read_only=*/true);
  ASSERT_FALSE(reader.has_value());
  EXPECT_THAT(reader.error().message, HasSubstr("for reading"));
  first->reset();  // closing the descriptor releases the lock
  EXPECT_TRUE(open_locked_image(image_, /*read_only=*/false).has_value());
}

TEST_F(ImageLockTest, ReadOnlyImagesAreSharedButKeepWritersOut) {
  auto a = open_locked_image(image_, /*read_only=*/true);
  auto b = open_locked_image(image_, /*read_only=*/true);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_FALSE(open_locked_image(image_, /*read_only=*/false).has_value());
  a->reset();
  EXPECT_FALSE(open_locked_image(image_, /*read_only=*/false).has_value());
  b->reset();
  EXPECT_TRUE(open_locked_image(image_, /*read_only=*/false).has_value());
}

TEST_F(ImageLockTest, ARefusalNamesTheHoldingProcess) {
  int ready[2];
  int release[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(release), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(release[1]);
    auto held = open_locked_image(image_, /*read_only=*/false);
    const char status = held.has_value() ? 'y' : 'n';
    (void)::write(ready[1], &status, 1);
    pollfd wait{release[0], POLLIN, 0};
    (void)::poll(&wait, 1, 10000);  // until the parent closes its end, at most 10 s
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(release[0]);
  char status = 0;
  pollfd wait{ready[0], POLLIN, 0};
  ASSERT_EQ(::poll(&wait, 1, 10000), 1);
  ASSERT_EQ(::read(ready[0], &status, 1), 1);
  EXPECT_EQ(status, 'y');
  auto refused = open_locked_image(image_, /*read_only=*/true);
  ::close(release[1]);
  ::close(ready[0]);
  ::waitpid(child, nullptr, 0);
  ASSERT_FALSE(refused.has_value());
  EXPECT_THAT(refused.error().message,
              HasSubstr("for reading: process " + std::to_string(child) + " ("));
  EXPECT_THAT(refused.error().message, HasSubstr(") holds a lock on it"));
}

TEST_F(ImageLockTest, TheFreshImageIsNeverEmptiedWhileAnotherHolderHasIt) {
  auto held = open_locked_image(image_, /*read_only=*/true);
  ASSERT_TRUE(held.has_value());
  bool created = true;
  auto fresh = open_fresh_image(image_, 1 << 20, created);
  ASSERT_FALSE(fresh.has_value());
  EXPECT_FALSE(created);
  EXPECT_THAT(fresh.error().message, HasSubstr(image_.string()));
  EXPECT_EQ(contents(), "precious bytes");
  EXPECT_EQ(std::filesystem::file_size(image_), 14u);
  EXPECT_FALSE(check_image_lockable(image_).has_value());

  held->reset();
  EXPECT_TRUE(check_image_lockable(image_).has_value());
  fresh = open_fresh_image(image_, 1 << 20, created);
  ASSERT_TRUE(fresh.has_value()) << fresh.error().message;
  EXPECT_FALSE(created);  // it existed
  EXPECT_EQ(std::filesystem::file_size(image_), 1u << 20);
  EXPECT_EQ(contents().substr(0, 14), std::string(14, '\0'));
  // The fresh image stays locked while its descriptor is open.
  EXPECT_FALSE(open_locked_image(image_, /*read_only=*/true).has_value());
}

TEST_F(ImageLockTest, TheFreshImageIsCreatedButNeverThroughALink) {
  const auto made = dir_ / "new.img";
  EXPECT_TRUE(check_image_lockable(made).has_value());
  EXPECT_FALSE(std::filesystem::exists(made));  // the check creates nothing
  bool created = false;
  auto fresh = open_fresh_image(made, 4096, created);
  ASSERT_TRUE(fresh.has_value()) << fresh.error().message;
  EXPECT_TRUE(created);
  EXPECT_EQ(std::filesystem::file_size(made), 4096u);

  const auto link = dir_ / "link.img";
  std::filesystem::create_symlink(image_, link);
  auto refused = open_fresh_image(link, 4096, created);
  ASSERT_FALSE(refused.has_value());
  EXPECT_THAT(refused.error().message, HasSubstr("is a symbolic link"));
  EXPECT_FALSE(check_image_lockable(link).has_value());
  EXPECT_EQ(contents(), "precious bytes");
}

}  // namespace
}  // namespace vpci::server
