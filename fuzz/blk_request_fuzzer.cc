// Fuzzes virtio-blk request parsing and execution (devices/virtio_blk.h) behind a real
// DeviceCore: the input is a sequence of requests — type, sector, data lengths, data,
// and framing choices (short header, missing status byte, descriptor count, indirect)
// — which a minimal split-ring driver places in guest memory before notifying.
// Invariants checked after every request:
//   * the backend is only asked for ranges inside the disk (it aborts otherwise);
//   * guest memory is only touched inside the RAM region (access observer);
//   * a completed request has a status of OK, IOERR or UNSUPP in its last writable
//     byte and a used length within its writable part;
//   * device state is consistent: DEVICE_NEEDS_RESET is set exactly when a failure is
//     recorded, and a request the device did not complete implies the queue failed;
//   * a read-only device never changes the disk.
// After a failure the fuzzer resets and re-initialises the device, as a driver would.
// With flag bit3 the device runs on an event loop with the thread-pool I/O engine
// (devices/block_io.h): reads, writes and flushes complete asynchronously, and the
// fuzzer drains the device after each notification before checking.
//
// Input: [0] flags (bit0 read-only, bit1 EVENT_IDX, bit2 INDIRECT_DESC offered, bit3
// asynchronous) ·
// then per request: kind, sector selector, le16 out length, le16 in length, out data.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "base/event_loop.h"
#include "devices/virtio_blk.h"
#include "fuzz/fuzz_support.h"
#include "virtio/device_core.h"
#include "virtio/guest_memory.h"
#include "virtio/spec.h"

namespace {

using namespace vpci;
using namespace vpci::virtio;
using namespace vpci::devices;

constexpr GuestAddress kRamBase = 0x100000;
constexpr std::size_t kRamSize = 256 * 1024;
constexpr std::uint64_t kDiskBytes = 64 * 1024;
constexpr std::uint16_t kQueueSize = 16;
// RAM layout: rings at the start, request buffers from kBufferArea.
constexpr GuestAddress kDesc = kRamBase;
constexpr GuestAddress kAvail = kRamBase + 16 * kQueueSize;
constexpr GuestAddress kUsed = kRamBase + 1024;
constexpr GuestAddress kBufferArea = kRamBase + 4096;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "blk_request_fuzzer invariant violated: %s\n", what);
  std::abort();
}

class CheckedBackend final : public BlockBackend {
 public:
  std::uint64_t size_bytes() const override { return bytes.size(); }
  Status read(std::uint64_t offset, std::span<const std::span<std::uint8_t>> buffers) override {
    check(offset, total(buffers));
    for (auto span : buffers) {
      std::memcpy(span.data(), bytes.data() + offset, span.size());
      offset += span.size();
    }
    return {};
  }
  Status write(std::uint64_t offset, std::span<const std::span<std::uint8_t>> buffers) override {
    check(offset, total(buffers));
    for (auto span : buffers) {
      std::memcpy(bytes.data() + offset, span.data(), span.size());
      offset += span.size();
    }
    return {};
  }
  Status flush() override { return {}; }
  Status discard(std::uint64_t offset, std::uint64_t length) override {
    check(offset, length);
    std::memset(bytes.data() + offset, 0, length);
    return {};
  }
  Status write_zeroes(std::uint64_t offset, std::uint64_t length, bool) override {
    return discard(offset, length);
  }

  static std::uint64_t total(std::span<const std::span<std::uint8_t>> buffers) {
    std::uint64_t sum = 0;
    for (auto span : buffers) sum += span.size();
    return sum;
  }
  // Requests are whole sectors at sector offsets; the guest buffers carrying them may
  // be cut anywhere.
  void check(std::uint64_t offset, std::uint64_t length) const {
    if (offset > bytes.size() || length > bytes.size() - offset)
      fail("backend access outside the disk");
    if (offset % 512 != 0 || length % 512 != 0) fail("backend access not sector-aligned");
  }
  std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(kDiskBytes, 0x5C);
};

class Interrupts final : public InterruptSink {
 public:
  void raise_queue_interrupt(std::uint16_t) override {}
  void raise_config_interrupt() override {}
};

struct Element {
  GuestAddress address;
  std::uint32_t length;
  bool writable;
};

class Harness {
 public:
  explicit Harness(std::uint8_t flags) : read_only_((flags & 1) != 0) {
    fuzz::map_checked_ram(*memory_, ram_, kRamBase);
    auto backend = std::make_unique<CheckedBackend>();
    backend_ = backend.get();
    BlockDeviceOptions options;
    options.read_only = read_only_;
    options.queue_size = kQueueSize;
    options.max_discard_seg = 4;
    options.max_write_zeroes_seg = 4;
    options.max_discard_sectors = 64;
    options.max_write_zeroes_sectors = 64;
    options.serial = "fuzz";
    options.io = BlockIoMode::kThreads;
    auto device = BlockDevice::create(std::move(backend), options);
    if (!device) fail("device creation");
    CoreOptions core_options;
    core_options.offer_indirect_desc = (flags & 4) != 0;
    core_options.offer_ring_packed = false;
    core_ = std::make_unique<DeviceCore>(std::move(*device), memory_, &interrupts_, core_options);
    if ((flags & 8) != 0) {
      auto loop = EventLoop::create();
      if (!loop) fail("event loop");
      loop_ = std::move(*loop);
      core_->set_event_loop(loop_.get());
    }
    features_ = core_->device_features() & ~feature_bit(feature::kEventIdx);
    if ((flags & 2) != 0) features_ |= core_->device_features() & feature_bit(feature::kEventIdx);
    initialise();
  }

  void initialise() {
    std::memset(ram_.data(), 0, 4096);
    avail_idx_ = 0;
    last_used_ = 0;
    if (!core_->write_status(0)) fail("reset");
    if (!core_->write_status(status::kAcknowledge | status::kDriver)) fail("status");
    if (!core_->set_driver_features(features_)) fail("features");
    if (!core_->write_status(status::kAcknowledge | status::kDriver | status::kFeaturesOk))
      fail("FEATURES_OK");
    if (!core_->set_queue_size(0, kQueueSize) || !core_->set_queue_desc(0, kDesc) ||
        !core_->set_queue_driver(0, kAvail) || !core_->set_queue_device(0, kUsed) ||
        !core_->enable_queue(0)) {
      fail("queue setup");
    }
    if (!core_->write_status(core_->status() | status::kDriverOk)) fail("DRIVER_OK");
  }

  void run(fuzz::Input& in) {
    const std::uint8_t kind = in.u8();
    const std::uint8_t sector_selector = in.u8();
    const std::size_t out_length = in.u16() % 2049;
    const std::size_t in_length = in.u16() % 2049;
    const int pieces = 1 + ((kind >> 6) & 3);
    const bool indirect = (kind & 0x20) != 0;
    const bool no_status = (kind & 0x08) != 0 && (kind & 0x10) != 0;  // rare: breaks framing
    const bool short_header = (kind & 0x18) == 0x08;

    std::uint32_t type = 0;
    switch (kind & 7) {
      case 0: type = blk::kTypeIn; break;
      case 1: type = blk::kTypeOut; break;
      case 2: type = blk::kTypeFlush; break;
      case 3: type = blk::kTypeGetId; break;
      case 4: type = blk::kTypeDiscard; break;
      case 5: type = blk::kTypeWriteZeroes; break;
      case 6: type = static_cast<std::uint32_t>(in.u64()); break;
      default: type = blk::kTypeIn; break;
    }
    // Mostly sectors near the disk (so requests often succeed), sometimes anything.
    const std::uint64_t sector =
        (sector_selector & 0x80) != 0 ? in.u64() : (sector_selector & 0x7F);
    std::vector<std::uint8_t> out = in.bytes(out_length);

    const std::vector<std::uint8_t> disk_before =
        read_only_ ? backend_->bytes : std::vector<std::uint8_t>{};
    std::vector<Element> elements;
    next_buffer_ = kBufferArea;
    blk::RequestHeader header{to_le(type), 0, to_le(sector)};
    std::vector<std::uint8_t> header_bytes(16);
    std::memcpy(header_bytes.data(), &header, 16);
    if (short_header) header_bytes.resize(sector_selector % 16);
    add_readable(elements, header_bytes);
    add_split(elements, out, pieces, false);
    std::vector<std::uint8_t> in_zero(in_length, 0);
    add_split(elements, in_zero, pieces, true);
    if (!no_status) elements.push_back(Element{alloc(1), 1, true});

    std::uint64_t writable_total = 0;
    for (const auto& e : elements) writable_total += e.writable ? e.length : 0;
    const std::uint16_t head = place(elements, indirect);
    const std::uint16_t used_before = used_idx();
    if (!core_->notify(0)) fail("notify refused");
    core_->drain();  // asynchronous requests complete here

    // Device state consistency.
    const bool needs_reset = (core_->status() & status::kDeviceNeedsReset) != 0;
    if (needs_reset != core_->failure().has_value()) fail("NEEDS_RESET and failure() disagree");
    const std::uint16_t used_after = used_idx();
    if (static_cast<std::uint16_t>(used_after - used_before) > 1) fail("more than one used entry");
    if (used_after == used_before) {
      if (!needs_reset) fail("request neither completed nor failed");
    } else {
      UsedElement used{};
      std::memcpy(&used, ram_.data() + (kUsed - kRamBase) + 4 + 8 * (last_used_ % kQueueSize),
                  sizeof(used));
      ++last_used_;
      if (from_le(used.id) != head) fail("used id is not the head");
      if (from_le(used.len) > writable_total) fail("used length beyond the writable part");
      // The status is the last device-writable byte, wherever the driver put it.
      const Element* status_element = nullptr;
      for (const auto& e : elements) {
        if (e.writable && e.length > 0) status_element = &e;
      }
      if (status_element == nullptr) fail("completed a request without a writable byte");
      const std::uint8_t status_byte =
          ram_[status_element->address + status_element->length - 1 - kRamBase];
      if (status_byte > blk::kStatusUnsupported) fail("status byte is not OK/IOERR/UNSUPP");
    }
    if (read_only_ && backend_->bytes != disk_before) fail("read-only disk changed");
    if (needs_reset) initialise();  // a driver resets a broken device
  }

 private:
  GuestAddress alloc(std::size_t length) {
    const GuestAddress address = next_buffer_;
    next_buffer_ += (length + 15) & ~std::size_t{15};
    if (next_buffer_ > kRamBase + kRamSize) fail("fuzzer RAM exhausted");
    return address;
  }
  void add_readable(std::vector<Element>& elements, const std::vector<std::uint8_t>& bytes) {
    const GuestAddress address = alloc(bytes.size());
    std::memcpy(ram_.data() + (address - kRamBase), bytes.data(), bytes.size());
    elements.push_back(Element{address, static_cast<std::uint32_t>(bytes.size()), false});
  }
  void add_split(std::vector<Element>& elements, const std::vector<std::uint8_t>& bytes, int pieces,
                 bool writable) {
    std::size_t done = 0;
    for (int p = 0; p < pieces && done < bytes.size(); ++p) {
      const std::size_t n = p + 1 == pieces ? bytes.size() - done
                                            : std::max<std::size_t>(1, (bytes.size() - done) / 2);
      const GuestAddress address = alloc(n);
      std::memcpy(ram_.data() + (address - kRamBase), bytes.data() + done, n);
      elements.push_back(Element{address, static_cast<std::uint32_t>(n), writable});
      done += n;
    }
  }
  std::uint16_t place(const std::vector<Element>& elements, bool indirect) {
    auto put_desc = [&](GuestAddress at, const SplitDescriptor& d) {
      const SplitDescriptor le{to_le(d.addr), to_le(d.len), to_le(d.flags), to_le(d.next)};
      std::memcpy(ram_.data() + (at - kRamBase), &le, sizeof(le));
    };
    auto flags_of = [&](std::size_t i) {
      std::uint16_t f = elements[i].writable ? desc_flags::kWrite : 0;
      if (i + 1 < elements.size()) f |= desc_flags::kNext;
      return f;
    };
    const std::uint16_t head = 0;  // one request in flight at a time: the table is free
    if (indirect && elements.size() > 0) {
      const GuestAddress table = alloc(16 * elements.size());
      for (std::size_t i = 0; i < elements.size(); ++i) {
        put_desc(table + 16 * i, SplitDescriptor{elements[i].address, elements[i].length,
                                                 flags_of(i), static_cast<std::uint16_t>(i + 1)});
      }
      put_desc(kDesc, SplitDescriptor{table, static_cast<std::uint32_t>(16 * elements.size()),
                                      desc_flags::kIndirect, 0});
    } else {
      // Too many pieces for the ring would be refused by the device; keep it legal.
      const std::size_t count = std::min<std::size_t>(elements.size(), kQueueSize);
      for (std::size_t i = 0; i < count; ++i) {
        SplitDescriptor d{elements[i].address, elements[i].length, flags_of(i),
                          static_cast<std::uint16_t>(i + 1)};
        if (i + 1 == count) d.flags &= static_cast<std::uint16_t>(~desc_flags::kNext);
        put_desc(kDesc + 16 * i, d);
      }
    }
    const std::uint16_t slot = avail_idx_ % kQueueSize;
    const std::uint16_t head_le = to_le(head);
    std::memcpy(ram_.data() + (kAvail - kRamBase) + 4 + 2 * slot, &head_le, 2);
    ++avail_idx_;
    const std::uint16_t idx_le = to_le(avail_idx_);
    std::memcpy(ram_.data() + (kAvail - kRamBase) + 2, &idx_le, 2);
    return head;
  }
  std::uint16_t used_idx() const {
    std::uint16_t idx = 0;
    std::memcpy(&idx, ram_.data() + (kUsed - kRamBase) + 2, 2);
    return from_le(idx);
  }

  std::vector<std::uint8_t> ram_ = std::vector<std::uint8_t>(kRamSize, 0);
  std::shared_ptr<GuestMemory> memory_ = std::make_shared<GuestMemory>();
  Interrupts interrupts_;
  CheckedBackend* backend_ = nullptr;
  std::unique_ptr<EventLoop> loop_;  // before core_: the I/O engine leaves it last
  std::unique_ptr<DeviceCore> core_;
  std::uint64_t features_ = 0;
  bool read_only_;
  std::uint16_t avail_idx_ = 0;
  std::uint16_t last_used_ = 0;
  GuestAddress next_buffer_ = kBufferArea;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  fuzz::Input in(data + 1, size - 1);
  Harness harness(data[0]);
  for (int requests = 0; !in.empty() && requests < 64; ++requests) harness.run(in);
  return 0;
}
