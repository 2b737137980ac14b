// Fuzzes virtio-net (devices/virtio_net.h) behind a real DeviceCore on an event loop,
// with an in-memory packet back end standing in for the tap. The input is a script of
// guest and tap actions: transmit chains (a header of any content, a frame of any length
// cut into pieces, sometimes indirect, sometimes with a device-writable descriptor or an
// address outside RAM), control commands (any class, command, data and room for the ack),
// receive buffers of any shape, frames arriving from the tap (any length, for this MAC or
// not), kicks and resets. Invariants checked after every action:
//   * guest memory is only touched inside the RAM region (access observer);
//   * every used entry names a chain in flight on its queue, with a length within the
//     chain's writable part: 0 on a transmit queue (§5.1.6.2), 1 on the control queue with
//     an ack of OK or ERR (§5.1.6.5);
//   * with MRG_RXBUF, a received packet's num_buffers entries are published together
//     (§5.1.6.4.2: never a partial packet);
//   * the back end only gets frames that start with the negotiated header and are within
//     the size caps (the tap accepts oversized frames, reference virtio-net.md §8);
//   * DEVICE_NEEDS_RESET is set exactly when a failure is recorded; a driver resets then.
//
// Input: [0] flags — bit0 MRG_RXBUF offered, bit1 legacy driver, bit2 EVENT_IDX, bit3
// INDIRECT_DESC, bit4 two queue pairs (MQ), bit5 MTU 9000 offered, bit6 the back end is
// full on every other send — then actions, each an opcode byte and its operands.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include <sys/eventfd.h>
#include <sys/uio.h>

#include "base/event_loop.h"
#include "base/little_endian.h"
#include "devices/net_spec.h"
#include "devices/packet_backend.h"
#include "devices/virtio_net.h"
#include "fuzz/fuzz_support.h"
#include "virtio/device_core.h"
#include "virtio/guest_memory.h"
#include "virtio/ring_layout.h"
#include "virtio/spec.h"

namespace {

using namespace vpci;
using namespace vpci::virtio;
using namespace vpci::devices;

constexpr GuestAddress kRamBase = 0x100000;
constexpr std::size_t kRamSize = 512 * 1024;
constexpr std::uint16_t kQueueSize = 16;
constexpr unsigned kMaxQueues = 5;  // two pairs and the control queue
// Each queue's split ring in the legacy layout (§2.7.2: used ring on the next 4 KiB), and
// one 4 KiB buffer slot per descriptor; an indirect chain keeps its table and all its
// buffers in its head's slot.
constexpr GuestAddress kRingBytes = 8192;
constexpr std::size_t kSlotBytes = 4096;
constexpr GuestAddress kSlotArea = kRamBase + 64 * 1024;
constexpr GuestAddress kOutsideRam = 0x7000'0000;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "net_device_fuzzer invariant violated: %s\n", what);
  std::abort();
}

// The tap: frames the test queues for the device to read (an eventfd says "readable"),
// and every frame the device sends checked against the negotiated header and size caps.
class FuzzBackend final : public PacketBackend {
 public:
  FuzzBackend(unsigned pairs, bool full_every_other) : full_every_other_(full_every_other) {
    for (unsigned i = 0; i < pairs; ++i) {
      const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (fd < 0) fail("eventfd");
      fds_.push_back(fd);
      pending_.emplace_back();
    }
  }
  ~FuzzBackend() override {
    for (const int fd : fds_) ::close(fd);
  }
  FuzzBackend(const FuzzBackend&) = delete;
  FuzzBackend& operator=(const FuzzBackend&) = delete;

  [[nodiscard]] std::string name() const override { return "fuzz back end"; }
  [[nodiscard]] unsigned queue_pairs() const override { return static_cast<unsigned>(fds_.size()); }
  [[nodiscard]] int fd(unsigned pair) const override { return fds_.at(pair); }
  [[nodiscard]] Result<std::optional<std::size_t>> receive(unsigned pair,
                                                           std::span<std::uint8_t> out) override {
    auto& frames = pending_.at(pair);
    if (frames.empty()) return std::optional<std::size_t>{};
    std::vector<std::uint8_t> frame = std::move(frames.front());
    frames.pop_front();
    if (frames.empty()) {
      std::uint64_t count = 0;
      (void)!::read(fds_[pair], &count, sizeof(count));
    }
    if (frame.size() > out.size())
      return make_error(ErrorCode::kOutOfRange, "frame larger than {} bytes", out.size());
    std::copy(frame.begin(), frame.end(), out.begin());
    return std::optional<std::size_t>{frame.size()};
  }
  [[nodiscard]] Result<bool> send(unsigned pair, std::span<const iovec> frame) override {
    if (pair >= fds_.size()) fail("send on a pair the back end does not have");
    if (full_every_other_ && (++sends_ & 1) != 0) return false;
    std::size_t length = 0;
    for (const iovec& part : frame) length += part.iov_len;
    if (length < header_size) fail("sent a frame shorter than the header");
    if (length - header_size > net::kMaxGsoFrame) fail("sent a frame over the size cap");
    return true;
  }
  [[nodiscard]] Status set_header_size(unsigned bytes) override {
    if (bytes != net::kHeaderSize && bytes != net::kLegacyHeaderSize) fail("header size");
    header_size = bytes;
    return {};
  }
  [[nodiscard]] Status set_offloads(unsigned) override { return {}; }
  [[nodiscard]] Status set_active_pairs(unsigned pairs) override {
    if (pairs < 1 || pairs > fds_.size()) fail("active pairs out of range");
    return {};
  }

  void inject(unsigned pair, std::vector<std::uint8_t> frame) {
    pending_.at(pair).push_back(std::move(frame));
    const std::uint64_t one = 1;
    (void)!::write(fds_.at(pair), &one, sizeof(one));
  }

  unsigned header_size = net::kHeaderSize;

 private:
  std::vector<int> fds_;
  std::vector<std::deque<std::vector<std::uint8_t>>> pending_;
  bool full_every_other_;
  unsigned sends_ = 0;
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

// One split ring as a driver keeps it: free descriptors, what each head in flight holds.
struct Ring {
  QueueLayout layout;
  std::vector<std::uint16_t> free;
  std::uint16_t avail_idx = 0;
  std::uint16_t used_seen = 0;
  struct InFlight {
    bool live = false;
    std::vector<std::uint16_t> descriptors;
    std::vector<Element> elements;
  };
  std::array<InFlight, kQueueSize> heads;
};

class Harness {
 public:
  explicit Harness(std::uint8_t flags) : legacy_((flags & 2) != 0) {
    fuzz::map_checked_ram(*memory_, ram_, kRamBase);
    auto loop = EventLoop::create();
    if (!loop) fail("event loop");
    loop_ = std::move(*loop);
    const unsigned pairs = (flags & 16) != 0 ? 2 : 1;
    auto backend = std::make_unique<FuzzBackend>(pairs, (flags & 64) != 0);
    backend_ = backend.get();
    NetDeviceOptions options;
    options.mac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    options.queue_pairs = static_cast<std::uint16_t>(pairs);
    options.mtu = (flags & 32) != 0 ? 9000 : 0;
    options.queue_size = kQueueSize;
    options.control_queue_size = kQueueSize;
    options.mergeable_rx_buffers = (flags & 1) != 0;
    auto device = NetDevice::create(std::move(backend), options);
    if (!device) fail("device creation");
    device_ = device->get();
    CoreOptions core_options;
    core_options.offer_ring_packed = false;
    core_options.offer_indirect_desc = (flags & 8) != 0;
    core_options.offer_event_idx = (flags & 4) != 0;
    core_ = std::make_unique<DeviceCore>(std::move(*device), memory_, &interrupts_, core_options);
    core_->set_event_loop(loop_.get());
    initialise();
  }

  void initialise() {
    for (auto& ring : rings_) ring = Ring{};
    std::fill(ram_.begin(), ram_.end(), 0);
    core_->reset();
    if (legacy_ && !core_->set_driver_interface(DriverInterface::kLegacy)) fail("legacy");
    if (!core_->write_status(status::kAcknowledge | status::kDriver)) fail("status");
    std::uint64_t features = core_->device_features();
    if (legacy_) features &= 0xffff'ffffu;
    if (!core_->set_driver_features(features)) fail("features");
    if (!legacy_ &&
        !core_->write_status(status::kAcknowledge | status::kDriver | status::kFeaturesOk))
      fail("FEATURES_OK");
    queues_ = std::min<unsigned>(core_->num_queues(), kMaxQueues);
    for (unsigned q = 0; q < queues_; ++q) {
      const GuestAddress base = kRamBase + q * kRingBytes;
      auto layout = legacy_split_layout(base, kQueueSize, 4096);
      if (!layout) fail("layout");
      Ring& ring = rings_[q];
      ring.layout = *layout;
      for (std::uint16_t d = 0; d < kQueueSize; ++d) ring.free.push_back(d);
      const auto index = static_cast<std::uint16_t>(q);
      if (legacy_) {
        if (!core_->set_legacy_queue_pfn(index, static_cast<std::uint32_t>(base >> 12)))
          fail("queue pfn");
      } else if (!core_->set_queue_size(index, kQueueSize) ||
                 !core_->set_queue_desc(index, layout->desc) ||
                 !core_->set_queue_driver(index, layout->driver) ||
                 !core_->set_queue_device(index, layout->device) || !core_->enable_queue(index)) {
        fail("queue setup");
      }
    }
    if (!core_->write_status(core_->status() | status::kDriverOk)) fail("DRIVER_OK");
    header_size_ = device_->header_size();
    if (backend_->header_size != header_size_) fail("back end and device disagree on the header");
    mergeable_ = (core_->negotiated_features() & (1ull << net::kFeatureMrgRxbuf)) != 0;
  }

  void act(fuzz::Input& in) {
    const std::uint8_t op = in.u8();
    const unsigned pair = (op >> 4) & 1;
    switch (op & 7) {
      case 0:
      case 1: transmit(in, pair); break;
      case 2: control(in); break;
      case 3:
      case 4: post_receive_buffers(in, pair); break;
      case 5: inject(in, pair); break;
      case 6: (void)core_->notify(static_cast<std::uint16_t>(in.u8() % 8)); break;
      default:
        if ((op & 0x80) != 0) initialise();  // a driver's reset and re-initialisation
        break;
    }
    for (int i = 0; i < 4; ++i) {
      if (!loop_->run_once(std::chrono::milliseconds(0))) fail("run_once");
    }
    check();
  }

 private:
  // Queue pair `pair` (the last one when the device has fewer): receiveq 2i, transmitq
  // 2i + 1 (§5.1.2).
  [[nodiscard]] unsigned clamp_pair(unsigned pair) const {
    return std::min(pair, (queues_ - 1) / 2 - 1);
  }
  [[nodiscard]] unsigned tx_queue(unsigned pair) const { return 2 * clamp_pair(pair) + 1; }
  [[nodiscard]] unsigned rx_queue(unsigned pair) const { return 2 * clamp_pair(pair); }
  [[nodiscard]] GuestAddress slot(unsigned queue, std::uint16_t descriptor) const {
    return kSlotArea + (queue * kQueueSize + descriptor) * kSlotBytes;
  }
  void write_ram(GuestAddress address, const void* data, std::size_t length) {
    if (address < kRamBase || address - kRamBase + length > kRamSize) fail("fuzzer layout");
    std::memcpy(ram_.data() + (address - kRamBase), data, length);
  }
  void read_ram(GuestAddress address, void* data, std::size_t length) const {
    if (address < kRamBase || address - kRamBase + length > kRamSize) fail("fuzzer layout");
    std::memcpy(data, ram_.data() + (address - kRamBase), length);
  }

  // Places `parts` (bytes readable by the device, or `writable` room) as one chain on
  // `queue`: direct, one descriptor per part, or `indirect`. Returns false when the ring
  // has no room (nothing placed).
  struct Part {
    std::vector<std::uint8_t> bytes;  // readable content, or empty for writable room
    std::uint32_t length = 0;
    bool writable = false;
    bool outside_ram = false;
  };
  bool place(unsigned queue, const std::vector<Part>& parts, bool indirect) {
    if (parts.empty() || queue >= queues_) return false;
    Ring& ring = rings_[queue];
    const bool use_indirect = indirect && parts.size() <= 8;
    const std::size_t needed = use_indirect ? 1 : parts.size();
    if (ring.free.size() < needed) return false;
    std::vector<std::uint16_t> descriptors(ring.free.end() - static_cast<std::ptrdiff_t>(needed),
                                           ring.free.end());
    ring.free.resize(ring.free.size() - needed);
    const std::uint16_t head = descriptors.front();
    Ring::InFlight& flight = ring.heads[head];
    flight = Ring::InFlight{true, descriptors, {}};

    // Where each part's bytes go: its own slot, or carved from the head's slot after the
    // indirect table.
    GuestAddress carve = slot(queue, head) + 16 * 8;
    std::vector<SplitDescriptor> table;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const Part& part = parts[i];
      GuestAddress address = 0;
      std::uint32_t length = part.length;
      if (part.outside_ram) {
        address = kOutsideRam;
      } else if (use_indirect) {
        const std::size_t room = slot(queue, head) + kSlotBytes - carve;
        length = static_cast<std::uint32_t>(std::min<std::size_t>(length, room));
        address = carve;
        carve += length;
      } else {
        length = std::min<std::uint32_t>(length, kSlotBytes);
        address = slot(queue, descriptors[i]);
      }
      if (!part.writable && !part.outside_ram)
        write_ram(address, part.bytes.data(), std::min<std::size_t>(length, part.bytes.size()));
      flight.elements.push_back(Element{address, length, part.writable});
      std::uint16_t desc_flags = part.writable ? desc_flags::kWrite : 0;
      if (i + 1 < parts.size()) desc_flags |= desc_flags::kNext;
      const std::uint16_t next =
          use_indirect ? static_cast<std::uint16_t>(i + 1)
                       : (i + 1 < parts.size() ? descriptors[i + 1] : std::uint16_t{0});
      table.push_back(
          SplitDescriptor{to_le(address), to_le(length), to_le(desc_flags), to_le(next)});
    }
    if (use_indirect) {
      write_ram(slot(queue, head), table.data(), table.size() * sizeof(SplitDescriptor));
      const SplitDescriptor d{to_le(slot(queue, head)),
                              to_le(static_cast<std::uint32_t>(16 * table.size())),
                              to_le(desc_flags::kIndirect), 0};
      write_ram(ring.layout.desc + 16 * head, &d, sizeof(d));
    } else {
      for (std::size_t i = 0; i < table.size(); ++i)
        write_ram(ring.layout.desc + 16 * descriptors[i], &table[i], sizeof(SplitDescriptor));
    }
    const std::uint16_t head_le = to_le(head);
    write_ram(ring.layout.driver + 4 + 2 * (ring.avail_idx % kQueueSize), &head_le, 2);
    ++ring.avail_idx;
    const std::uint16_t idx_le = to_le(ring.avail_idx);
    write_ram(ring.layout.driver + 2, &idx_le, 2);
    (void)core_->notify(static_cast<std::uint16_t>(queue));
    return true;
  }

  void transmit(fuzz::Input& in, unsigned pair) {
    const std::uint8_t shape = in.u8();
    std::vector<std::uint8_t> header(header_size_);
    for (auto& byte : header) byte = in.u8();
    // Mostly ordinary frames; sometimes up to 64 KiB (over the MTU, with or without GSO).
    std::size_t frame_length = in.u16() % 2048;
    if ((shape & 0x40) != 0) frame_length = std::size_t{in.u16()} + 1024;
    std::vector<std::uint8_t> frame(frame_length);
    for (std::size_t i = 0; i < frame.size(); ++i) frame[i] = static_cast<std::uint8_t>(i * 7);
    std::vector<Part> parts;
    if ((shape & 1) != 0) {  // header and frame as one byte stream (ANY_LAYOUT)
      header.insert(header.end(), frame.begin(), frame.end());
      frame.clear();
    }
    parts.push_back(Part{header, static_cast<std::uint32_t>(header.size())});
    const std::size_t pieces = 1 + ((shape >> 1) & 7);
    const std::size_t piece = std::max<std::size_t>(1, (frame.size() + pieces - 1) / pieces);
    for (std::size_t at = 0; at < frame.size(); at += piece) {
      const std::size_t n = std::min(piece, frame.size() - at);
      parts.push_back(
          Part{std::vector<std::uint8_t>(frame.begin() + static_cast<std::ptrdiff_t>(at),
                                         frame.begin() + static_cast<std::ptrdiff_t>(at + n)),
               static_cast<std::uint32_t>(n)});
    }
    if ((shape & 0x30) == 0x30) parts.push_back(Part{{}, 64, true});  // not allowed on TX
    if ((shape & 0x30) == 0x20) parts.back().outside_ram = true;
    (void)place(tx_queue(pair), parts, (shape & 0x80) != 0);
  }

  void control(fuzz::Input& in) {
    const std::uint8_t shape = in.u8();
    const std::array<std::uint8_t, 2> command = {static_cast<std::uint8_t>(in.u8() % 8), in.u8()};
    std::vector<std::uint8_t> data(in.u8() % 64);
    for (auto& byte : data) byte = in.u8();
    if ((shape & 0x40) != 0) data.resize(std::size_t{in.u16()} % 6000, 0x5a);  // a big table
    std::vector<Part> parts;
    if ((shape & 1) != 0) {  // class, command and data in one descriptor
      std::vector<std::uint8_t> all(command.begin(), command.end());
      all.insert(all.end(), data.begin(), data.end());
      parts.push_back(Part{all, static_cast<std::uint32_t>(all.size())});
    } else {
      parts.push_back(Part{{command.begin(), command.end()}, 2});
      if (!data.empty()) parts.push_back(Part{data, static_cast<std::uint32_t>(data.size())});
    }
    const std::uint32_t ack_room = (shape >> 1) & 3;  // 0 is a malformed command
    if (ack_room != 0) parts.push_back(Part{{}, ack_room, true});
    (void)place(queues_ - 1, parts, (shape & 0x80) != 0);
  }

  void post_receive_buffers(fuzz::Input& in, unsigned pair) {
    const std::uint8_t shape = in.u8();
    const int count = 1 + (shape & 3);
    for (int i = 0; i < count; ++i) {
      std::uint32_t length = in.u16() % 4097;
      if ((shape & 4) != 0) length = 1600;  // typical Linux receive buffers
      std::vector<Part> parts;
      const std::uint32_t pieces = 1 + ((shape >> 3) & 3);
      for (std::uint32_t p = 0; p < pieces; ++p)
        parts.push_back(Part{{}, std::max<std::uint32_t>(1, length / pieces), true});
      if ((shape & 0x60) == 0x60) parts.front() = Part{{0}, 1};  // readable: not allowed on RX
      if ((shape & 0x60) == 0x40) parts.back().outside_ram = true;
      (void)place(rx_queue(pair), parts, (shape & 0x80) != 0);
    }
  }

  void inject(fuzz::Input& in, unsigned pair) {
    const std::uint8_t shape = in.u8();
    std::size_t length = header_size_ + in.u16() % 2048;
    if ((shape & 0x40) != 0) length = header_size_ + std::size_t{in.u16()} * 2;  // up to 128 KiB
    std::vector<std::uint8_t> frame(length);
    for (std::size_t i = 0; i < frame.size(); ++i) frame[i] = static_cast<std::uint8_t>(i * 11);
    for (std::size_t i = 0; i < std::min<std::size_t>(header_size_, frame.size()); ++i)
      frame[i] = in.u8();
    // Destination: this device's MAC, broadcast, a multicast or anything.
    const std::array<std::uint8_t, 6> own = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    if (frame.size() >= header_size_ + 6) {
      std::uint8_t* destination = frame.data() + header_size_;
      switch (shape & 3) {
        case 0: std::copy(own.begin(), own.end(), destination); break;
        case 1: std::fill_n(destination, 6, 0xff); break;
        case 2: destination[0] = 0x01; break;
        default: break;
      }
    }
    backend_->inject(std::min(pair, backend_->queue_pairs() - 1), std::move(frame));
  }

  // Reclaims every used entry, checking it against what the driver placed.
  void check() {
    const bool needs_reset = (core_->status() & status::kDeviceNeedsReset) != 0;
    if (needs_reset != core_->failure().has_value()) fail("NEEDS_RESET and failure() disagree");
    for (unsigned q = 0; q < queues_; ++q) reclaim(q);
    if (needs_reset) initialise();
  }

  void reclaim(unsigned queue) {
    Ring& ring = rings_[queue];
    std::uint16_t used_idx = 0;
    read_ram(ring.layout.device + 2, &used_idx, 2);
    used_idx = from_le(used_idx);
    if (static_cast<std::uint16_t>(used_idx - ring.used_seen) > kQueueSize)
      fail("used index ran ahead of the ring");
    const bool is_control = queue == queues_ - 1;
    const bool is_receive = !is_control && queue % 2 == 0;
    unsigned continuation = 0;  // MRG_RXBUF buffers still owed to the current packet
    while (ring.used_seen != used_idx) {
      UsedElement used{};
      read_ram(ring.layout.device + 4 + 8 * (ring.used_seen % kQueueSize), &used, sizeof(used));
      ++ring.used_seen;
      const std::uint32_t id = from_le(used.id);
      const std::uint32_t length = from_le(used.len);
      if (id >= kQueueSize || !ring.heads[id].live) fail("used id is not a chain in flight");
      Ring::InFlight& flight = ring.heads[id];
      std::uint64_t writable = 0;
      for (const Element& e : flight.elements) writable += e.writable ? e.length : 0;
      if (length > writable) fail("used length beyond the writable part");
      if (!is_control && !is_receive && length != 0) fail("transmit buffer with a used length");
      if (is_control && length == 1) {
        std::uint8_t ack = 0xff;
        for (const Element& e : flight.elements) {
          if (e.writable && e.length > 0) {
            read_ram(e.address, &ack, 1);
            break;
          }
        }
        if (ack != net::kControlOk && ack != net::kControlError) fail("control ack not OK/ERR");
      }
      if (is_receive && mergeable_ && length != 0) {
        if (continuation > 0) {
          --continuation;
        } else {
          if (length < header_size_) fail("first receive buffer shorter than the header");
          const std::vector<std::uint8_t> header = writable_prefix(flight, header_size_);
          const std::uint16_t num_buffers =
              load_le<std::uint16_t>(std::span(header).subspan(net::kNumBuffersOffset));
          if (num_buffers == 0) fail("num_buffers is 0");
          continuation = num_buffers - 1u;
        }
      }
      for (const std::uint16_t d : flight.descriptors) ring.free.push_back(d);
      flight = Ring::InFlight{};
    }
    if (continuation != 0) fail("a packet's buffers were published partially");
  }

  // The first `n` bytes the device could write into a chain, across its descriptors.
  [[nodiscard]] std::vector<std::uint8_t> writable_prefix(const Ring::InFlight& flight,
                                                          std::size_t n) const {
    std::vector<std::uint8_t> out;
    for (const Element& e : flight.elements) {
      if (!e.writable || out.size() >= n) continue;
      if (e.address == kOutsideRam) fail("data written outside RAM");
      const std::size_t take = std::min<std::size_t>(e.length, n - out.size());
      std::vector<std::uint8_t> part(take);
      read_ram(e.address, part.data(), take);
      out.insert(out.end(), part.begin(), part.end());
    }
    if (out.size() < n) fail("header beyond the writable part");
    return out;
  }

  std::vector<std::uint8_t> ram_ = std::vector<std::uint8_t>(kRamSize, 0);
  std::shared_ptr<GuestMemory> memory_ = std::make_shared<GuestMemory>();
  Interrupts interrupts_;
  std::unique_ptr<EventLoop> loop_;  // before core_: the device leaves it last
  FuzzBackend* backend_ = nullptr;
  NetDevice* device_ = nullptr;
  std::unique_ptr<DeviceCore> core_;
  std::array<Ring, kMaxQueues> rings_{};
  unsigned queues_ = 0;
  unsigned header_size_ = net::kHeaderSize;
  bool legacy_;
  bool mergeable_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  fuzz::Input in(data + 1, size - 1);
  Harness harness(data[0]);
  for (int actions = 0; !in.empty() && actions < 128; ++actions) harness.act(in);
  return 0;
}
