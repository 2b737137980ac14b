#include "tests/devices/blk_harness.h"

#include <fcntl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>

#include <sys/stat.h>

namespace vpci::devices::testing {

using virtio::testing::ChainBuilder;

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "blk harness: %s\n", what);
  std::abort();
}

}  // namespace

TempFile::TempFile(std::uint64_t size, std::uint8_t fill) {
  const char* dir = std::getenv("TMPDIR");
  std::string pattern = std::string(dir != nullptr ? dir : "/tmp") + "/vpci-blk-XXXXXX";
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0) die("mkstemp failed");
  path_ = name.data();
  std::vector<std::uint8_t> chunk(1 << 16, fill);
  for (std::uint64_t done = 0; done < size;) {
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), size - done));
    if (::write(fd, chunk.data(), n) != static_cast<ssize_t>(n)) die("cannot fill temp file");
    done += n;
  }
  ::close(fd);
}

TempFile::~TempFile() {
  ::unlink(path_.c_str());
}

std::vector<std::uint8_t> TempFile::contents() const {
  std::ifstream in(path_, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
}

// ---- MemoryBackend
// -------------------------------------------------------------------------------------

Status MemoryBackend::read(std::uint64_t offset, std::span<const std::span<std::uint8_t>> buffers) {
  if (fail_reads) return make_error(ErrorCode::kIoError, "injected read error");
  for (auto span : buffers) {
    std::memcpy(span.data(), bytes.data() + offset, span.size());
    offset += span.size();
  }
  return {};
}

Status MemoryBackend::write(std::uint64_t offset,
                            std::span<const std::span<std::uint8_t>> buffers) {
  if (fail_writes) return make_error(ErrorCode::kIoError, "injected write error");
  for (auto span : buffers) {
    std::memcpy(bytes.data() + offset, span.data(), span.size());
    offset += span.size();
  }
  return {};
}

Status MemoryBackend::flush() {
  if (fail_flush) return make_error(ErrorCode::kIoError, "injected flush error");
  ++flushes;
  return {};
}

Status MemoryBackend::discard(std::uint64_t offset, std::uint64_t length) {
  if (discard_unsupported) return make_error(ErrorCode::kUnsupported, "no discard");
  std::memset(bytes.data() + offset, 0, length);
  return {};
}

Status MemoryBackend::write_zeroes(std::uint64_t offset, std::uint64_t length, bool) {
  if (fail_writes) return make_error(ErrorCode::kIoError, "injected write error");
  std::memset(bytes.data() + offset, 0, length);
  return {};
}

// ---- BlkHarness
// ----------------------------------------------------------------------------------------

BlkHarness::BlkHarness(std::unique_ptr<BlockDevice> device, Ring ring, std::uint64_t extra_features,
                       virtio::testing::RamBacking backing, EventLoop* loop)
    : loop_(loop) {
  ram_ = std::make_unique<virtio::testing::FakeGuestRam>(memory_, 0x1000000, 16 << 20, backing);
  device_ = device.get();
  const std::uint16_t queues = device->num_queues();
  core_ = std::make_unique<virtio::DeviceCore>(std::move(device), memory_, &interrupts_);
  core_->set_event_loop(loop_);
  std::uint64_t features =
      core_->device_features() & ((std::uint64_t{1} << 24) - 1);  // all device bits
  features |= extra_features | virtio::feature_bit(virtio::feature::kIndirectDesc) |
              virtio::feature_bit(virtio::feature::kEventIdx);
  if (ring == Ring::kPacked) features |= virtio::feature_bit(virtio::feature::kRingPacked);
  if (!virtio::testing::ModernSetup::initialise(*core_, features)) die("initialisation failed");
  for (std::uint16_t q = 0; q < queues; ++q) {
    if (ring == Ring::kSplit) {
      split_.push_back(std::make_unique<virtio::testing::SplitRing>(*ram_, 64));
      if (!virtio::testing::ModernSetup::enable_split(*core_, q, *split_.back()))
        die("enable failed");
    } else {
      packed_.push_back(std::make_unique<virtio::testing::PackedRing>(*ram_, 63));
      if (!virtio::testing::ModernSetup::enable_packed(*core_, q, *packed_.back()))
        die("enable failed");
    }
  }
  if (!virtio::testing::ModernSetup::driver_ok(*core_)) die("DRIVER_OK failed");
  ring_bytes_ = 64 * 1024;  // the rings fit well inside the first 64 KiB
}

void BlkHarness::add_raw(std::uint16_t queue, const ChainBuilder& chain) {
  if (!split_.empty()) {
    split_.at(queue)->add(chain);
  } else {
    packed_.at(queue)->add(chain);
  }
}

ChainBuilder BlkHarness::build(std::uint32_t type, std::uint64_t sector,
                               std::span<const std::uint8_t> out, std::uint32_t in_length,
                               int pieces) {
  ChainBuilder chain(*ram_);
  blk::RequestHeader header{virtio::to_le(type), 0, virtio::to_le(sector)};
  chain.readable(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(&header),
                                               sizeof(header)));
  auto cut = [&](std::uint64_t total, auto&& add) {
    std::uint64_t done = 0;
    for (int p = 0; p < pieces && done < total; ++p) {
      const std::uint64_t left = total - done;
      const std::uint64_t piece =
          p + 1 == pieces ? left : std::max<std::uint64_t>(1, left / (pieces - p));
      add(done, piece);
      done += piece;
    }
  };
  cut(out.size(),
      [&](std::uint64_t offset, std::uint64_t n) { chain.readable(out.subspan(offset, n)); });
  cut(in_length,
      [&](std::uint64_t, std::uint64_t n) { chain.writable(static_cast<std::uint32_t>(n)); });
  chain.writable(1);
  return chain;
}

std::optional<virtio::testing::UsedBuffer> BlkHarness::wait_used(std::uint16_t queue) {
  const auto pop = [&] {
    return split_.empty() ? packed_.at(queue)->pop_used() : split_.at(queue)->pop_used();
  };
  auto used = pop();
  if (loop_ == nullptr) return used;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!used && std::chrono::steady_clock::now() < deadline) {
    (void)loop_->run_once(std::chrono::milliseconds(100));
    used = pop();
  }
  return used;
}

BlkResult BlkHarness::result_of(const ChainBuilder& chain,
                                const virtio::testing::UsedBuffer& used) {
  BlkResult result;
  auto written = chain.written_bytes();
  result.used_length = used.length;
  result.status = written.back();
  written.pop_back();
  result.data = std::move(written);
  return result;
}

BlkResult BlkHarness::submit(std::uint16_t queue, std::uint32_t type, std::uint64_t sector,
                             std::span<const std::uint8_t> out, std::uint32_t in_length, int pieces,
                             bool indirect) {
  ram_->reset_allocator(ring_bytes_);  // one request at a time: recycle buffer memory
  ChainBuilder chain = build(type, sector, out, in_length, pieces);
  chain.indirect(indirect);
  add_raw(queue, chain);
  if (!core_->notify(queue)) die("notify failed");
  const auto used = wait_used(queue);
  if (!used) return BlkResult{};  // status 0xFF: the request was not completed
  return result_of(chain, *used);
}

std::vector<BlkResult> BlkHarness::submit_all(std::uint16_t queue,
                                              const std::vector<BlkRequest>& requests) {
  if (split_.empty()) die("submit_all needs a split ring");
  ram_->reset_allocator(ring_bytes_);
  std::vector<ChainBuilder> chains;
  std::map<std::uint32_t, std::size_t> by_head;
  for (const BlkRequest& request : requests) {
    chains.push_back(build(request.type, request.sector, request.out, request.in_length, 1));
    chains.back().indirect(true);  // one ring descriptor each, so many fit at once
    by_head[split_.at(queue)->add(chains.back())] = chains.size() - 1;
  }
  if (!core_->notify(queue)) die("notify failed");
  std::vector<BlkResult> results(requests.size());
  for (std::size_t done = 0; done < requests.size(); ++done) {
    const auto used = wait_used(queue);
    if (!used) break;  // the rest stay "not completed"
    const auto it = by_head.find(used->id);
    if (it == by_head.end()) die("used id the harness never added");
    results[it->second] = result_of(chains[it->second], *used);
  }
  return results;
}

BlkResult BlkHarness::segments(std::uint32_t type,
                               const std::vector<blk::DiscardWriteZeroesSegment>& list) {
  std::vector<std::uint8_t> bytes(list.size() * sizeof(blk::DiscardWriteZeroesSegment));
  for (std::size_t i = 0; i < list.size(); ++i) {
    blk::DiscardWriteZeroesSegment le{virtio::to_le(list[i].sector),
                                      virtio::to_le(list[i].num_sectors),
                                      virtio::to_le(list[i].flags)};
    std::memcpy(bytes.data() + i * sizeof(le), &le, sizeof(le));
  }
  return submit(0, type, 0, bytes, 0);
}

}  // namespace vpci::devices::testing
