// Crash consistency of virtio-blk: a child process serves a stream of writes and
// flushes on a file through the real device (DeviceCore + BlockDevice +
// FileBlockBackend, driven by the fake driver) and reports each completed FLUSH over a
// pipe. The parent SIGKILLs it mid-run and checks the file: every write acknowledged
// before a completed flush must be there (or overwritten by a later write to the same
// sector), and every sector must hold a well-formed write or its initial zeroes.
//
// It runs three ways: synchronous (no loop), and on an event loop with io_uring and with
// the thread pool (devices/block_io.h), where each batch of writes is in flight at once
// and the kill usually lands while some are still in the kernel.
//
// Note: SIGKILL loses the process, not the page cache, so this checks the device's
// ordering and acknowledgement contract (nothing is acknowledged before it reached the
// backend, FLUSH completes only after fdatasync); surviving power loss additionally
// relies on fdatasync, which FLUSH calls.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "tests/devices/blk_harness.h"

namespace vpci::devices {
namespace {

using testing::BlkHarness;
using testing::Ring;
using testing::TempFile;

constexpr std::uint64_t kSectors = 4096;                 // 2 MiB disk
constexpr std::uint64_t kMagic = 0x7670'6369'626c'6b21;  // "vpciblk!"
constexpr std::uint64_t kSeed = 0x5eed;
constexpr int kReportsBeforeKill = 40;

struct WritePlan {
  std::uint64_t sector;
  std::uint32_t sectors;
};

// The i-th write of the stream; both processes derive it from i alone.
WritePlan plan_write(std::uint64_t i) {
  std::mt19937_64 rng(kSeed ^ (i * 0x9E3779B97F4A7C15ull));
  const auto sectors = static_cast<std::uint32_t>(1 + rng() % 8);
  return WritePlan{rng() % (kSectors - sectors + 1), sectors};
}

// Sector contents written by write i: {magic, i, sector} then bytes derived from both.
void stamp(std::uint64_t write, std::uint64_t sector, std::uint8_t* out) {
  const std::uint64_t header[3] = {kMagic, write, sector};
  std::memcpy(out, header, sizeof(header));
  std::mt19937 rng(static_cast<std::uint32_t>(write * 131 + sector));
  for (std::size_t i = sizeof(header); i < 512; ++i) out[i] = static_cast<std::uint8_t>(rng());
}

bool plan_covers(const WritePlan& plan, std::uint64_t sector) {
  return sector >= plan.sector && sector < plan.sector + plan.sectors;
}

// Which runtime the child uses: nullopt for synchronous, else the engine.
using Runtime = std::optional<BlockIoMode>;

[[noreturn]] void serve_until_killed(const std::string& path, int report_fd, Runtime runtime) {
  auto backend = FileBlockBackend::open(path, false);
  if (!backend) ::_exit(10);
  BlockDeviceOptions options;
  options.num_queues = 2;
  if (runtime) options.io = *runtime;
  auto device = BlockDevice::create(std::move(*backend), options);
  if (!device) ::_exit(11);
  std::unique_ptr<EventLoop> loop;
  if (runtime) {
    auto created = EventLoop::create();
    if (!created) ::_exit(16);
    loop = std::move(*created);
  }
  BlkHarness blk(std::move(*device), Ring::kSplit, 0, virtio::testing::RamBacking::kMapped,
                 loop.get());
  std::uint64_t next = 0;
  for (;;) {
    const std::uint64_t batch = 1 + next % (runtime ? 16 : 5);
    std::vector<testing::BlkRequest> writes;
    std::vector<WritePlan> in_batch;
    for (std::uint64_t k = 0; k < batch; ++k, ++next) {
      const WritePlan plan = plan_write(next);
      // Writes in flight together land in any order, so a batch never holds two that
      // overlap: each sector's newest write is then the one the checker expects.
      const auto overlaps = [&](const WritePlan& other) {
        return plan.sector < other.sector + other.sectors &&
               other.sector < plan.sector + plan.sectors;
      };
      if (runtime && std::any_of(in_batch.begin(), in_batch.end(), overlaps)) break;
      in_batch.push_back(plan);
      std::vector<std::uint8_t> data(plan.sectors * 512);
      for (std::uint32_t s = 0; s < plan.sectors; ++s)
        stamp(next, plan.sector + s, data.data() + s * 512);
      if (runtime) {
        writes.push_back(testing::BlkRequest{blk::kTypeOut, plan.sector, std::move(data), 0});
        continue;
      }
      const auto queue = static_cast<std::uint16_t>(next % 2);
      const int pieces = 1 + static_cast<int>(next % 3);
      if (blk.submit(queue, blk::kTypeOut, plan.sector, data, 0, pieces).status != blk::kStatusOk)
        ::_exit(12);
    }
    if (runtime) {
      // The whole batch in flight at once; it completes in any order.
      for (const auto& result : blk.submit_all(static_cast<std::uint16_t>(next % 2), writes))
        if (result.status != blk::kStatusOk) ::_exit(12);
    }
    // Every write above has completed; the flush makes them stable (§5.2.6.2 case 3).
    if (blk.flush(static_cast<std::uint16_t>(next % 2)).status != blk::kStatusOk) ::_exit(13);
    if (::write(report_fd, &next, sizeof(next)) != static_cast<ssize_t>(sizeof(next))) ::_exit(14);
    if (next > 10'000'000) ::_exit(15);  // never reached: the parent kills us long before
  }
}

bool read_report(int fd, std::uint64_t& value) {
  std::size_t got = 0;
  auto* bytes = reinterpret_cast<std::uint8_t*>(&value);
  while (got < sizeof(value)) {
    const ssize_t n = ::read(fd, bytes + got, sizeof(value) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

class BlockCrash : public ::testing::TestWithParam<Runtime> {};

TEST_P(BlockCrash, WritesAcknowledgedBeforeACompletedFlushSurviveSigkill) {
  TempFile file(kSectors * 512);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    serve_until_killed(file.path(), fds[1], GetParam());
  }
  ::close(fds[1]);

  std::uint64_t flushed = 0;
  int reports = 0;
  std::uint64_t value = 0;
  while (reports < kReportsBeforeKill && read_report(fds[0], value)) {
    flushed = value;
    ++reports;
  }
  ::kill(pid, SIGKILL);
  // Reports already in the pipe were sent before the kill and are just as binding.
  while (read_report(fds[0], value)) {
    flushed = value;
    ++reports;
  }
  ::close(fds[0]);
  int wait_status = 0;
  ASSERT_EQ(::waitpid(pid, &wait_status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wait_status))
      << "child exited by itself with " << WEXITSTATUS(wait_status);
  EXPECT_EQ(WTERMSIG(wait_status), SIGKILL);
  ASSERT_GE(reports, kReportsBeforeKill);
  ASSERT_GT(flushed, 0u);

  // The newest flushed write of every sector.
  std::vector<std::int64_t> required(kSectors, -1);
  for (std::uint64_t i = 0; i < flushed; ++i) {
    const WritePlan plan = plan_write(i);
    for (std::uint32_t s = 0; s < plan.sectors; ++s)
      required[plan.sector + s] = static_cast<std::int64_t>(i);
  }
  const auto disk = file.contents();
  ASSERT_EQ(disk.size(), kSectors * 512);
  int lost = 0;
  int corrupt = 0;
  std::uint64_t newest_seen = 0;
  std::array<std::uint8_t, 512> expected{};
  for (std::uint64_t sector = 0; sector < kSectors; ++sector) {
    const std::uint8_t* block = disk.data() + sector * 512;
    if (std::all_of(block, block + 512, [](std::uint8_t b) { return b == 0; })) {
      if (required[sector] >= 0) {
        ++lost;
        ADD_FAILURE() << "sector " << sector << " lost flushed write " << required[sector];
      }
      continue;
    }
    std::uint64_t header[3];
    std::memcpy(header, block, sizeof(header));
    const std::uint64_t write = header[1];
    bool ok = header[0] == kMagic && header[2] == sector && plan_covers(plan_write(write), sector);
    if (ok) {
      stamp(write, sector, expected.data());
      ok = std::memcmp(expected.data(), block, 512) == 0;
    }
    if (!ok) {
      ++corrupt;
      ADD_FAILURE() << "sector " << sector << " holds no well-formed write";
      continue;
    }
    newest_seen = std::max(newest_seen, write);
    if (required[sector] >= 0 && write < static_cast<std::uint64_t>(required[sector])) {
      ++lost;
      ADD_FAILURE() << "sector " << sector << " holds write " << write
                    << " older than flushed write " << required[sector];
    }
  }
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(corrupt, 0);
  EXPECT_GE(newest_seen + 1, flushed);
  RecordProperty("flushed_writes", static_cast<int>(flushed));
}

INSTANTIATE_TEST_SUITE_P(Runtimes, BlockCrash,
                         ::testing::Values(Runtime{}, Runtime{BlockIoMode::kIoUring},
                                           Runtime{BlockIoMode::kThreads}),
                         [](const auto& test) {
                           if (!test.param) return std::string("Synchronous");
                           return *test.param == BlockIoMode::kIoUring ? std::string("IoUring")
                                                                       : std::string("Threads");
                         });

}  // namespace
}  // namespace vpci::devices
