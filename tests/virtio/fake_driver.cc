#include "tests/virtio/fake_driver.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace vpci::virtio::testing {
namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fake driver: %s\n", what);
  std::abort();
}

}  // namespace

// ---- FakeGuestRam ----------------------------------------------------------------------------

// The message path of a message-backed FakeGuestRam: copies to and from the block, and
// counts the accesses (GuestMemory has already checked bounds and permissions).
class FakeGuestRam::Messages final : public MessageMemory {
 public:
  Messages(std::uint8_t* data, GuestAddress base) : data_(data), base_(base) {}
  Status read(GuestAddress address, std::span<std::uint8_t> out) override {
    ++accesses;
    if (fail)
      return make_error(ErrorCode::kIoError, "DMA_READ at {:#x}: no reply in time", address);
    std::memcpy(out.data(), data_ + (address - base_), out.size());
    return {};
  }
  Status write(GuestAddress address, std::span<const std::uint8_t> data) override {
    ++accesses;
    if (fail)
      return make_error(ErrorCode::kIoError, "DMA_WRITE at {:#x}: no reply in time", address);
    std::memcpy(data_ + (address - base_), data.data(), data.size());
    return {};
  }
  std::atomic<std::uint64_t> accesses{0};
  std::atomic<bool> fail{false};

 private:
  std::uint8_t* data_;
  GuestAddress base_;
};

FakeGuestRam::FakeGuestRam(std::shared_ptr<GuestMemory> memory, GuestAddress base, std::size_t size,
                           RamBacking backing)
    : OwnedRamBytes{std::vector<std::uint8_t>(size, 0)},
      DriverMemory(base, std::span<std::uint8_t>(owned)),
      memory_(std::move(memory)) {
  register_in(backing);
}

FakeGuestRam::FakeGuestRam(std::shared_ptr<GuestMemory> memory, GuestAddress base,
                           std::span<std::uint8_t> external)
    : DriverMemory(base, external), memory_(std::move(memory)) {
  register_in(RamBacking::kMapped);
}

void FakeGuestRam::register_in(RamBacking backing) {
  MemoryRegionSpec spec;
  spec.guest_address = base();
  spec.size = size();
  if (backing == RamBacking::kMessages) {
    messages_ = std::make_shared<Messages>(bytes().data(), base());
    spec.messages = messages_;
  } else {
    spec.host = bytes().data();
  }
  if (!memory_->add_region(std::move(spec))) die("cannot register guest RAM");
}

void FakeGuestRam::fail_messages(bool fail) {
  if (messages_) messages_->fail = fail;
}

std::uint64_t FakeGuestRam::message_accesses() const {
  return messages_ ? messages_->accesses.load() : 0;
}

FakeGuestRam::~FakeGuestRam() {
  (void)memory_->remove_range(base(), size());
}

// ---- ModernSetup
// ------------------------------------------------------------------------------------------

Status ModernSetup::initialise(DeviceCore& core, std::uint64_t features) {
  VPCI_TRY(core.write_status(0));
  VPCI_TRY(core.write_status(status::kAcknowledge));
  VPCI_TRY(core.write_status(status::kAcknowledge | status::kDriver));
  const std::uint64_t accepted =
      (features | feature_bit(feature::kVersion1)) & core.device_features();
  VPCI_TRY(core.write_driver_features_word(0, static_cast<std::uint32_t>(accepted)));
  VPCI_TRY(core.write_driver_features_word(1, static_cast<std::uint32_t>(accepted >> 32)));
  VPCI_TRY(core.write_status(status::kAcknowledge | status::kDriver | status::kFeaturesOk));
  if ((core.status() & status::kFeaturesOk) == 0) {
    return make_error(ErrorCode::kProtocolViolation, "device refused FEATURES_OK");
  }
  return {};
}

Status ModernSetup::enable_split(DeviceCore& core, std::uint16_t queue, const SplitRing& driver) {
  VPCI_TRY(core.set_queue_size(queue, driver.size()));
  VPCI_TRY(core.set_queue_desc(queue, driver.layout().desc));
  VPCI_TRY(core.set_queue_driver(queue, driver.layout().driver));
  VPCI_TRY(core.set_queue_device(queue, driver.layout().device));
  return core.enable_queue(queue);
}

Status ModernSetup::enable_packed(DeviceCore& core, std::uint16_t queue, const PackedRing& driver) {
  VPCI_TRY(core.set_queue_size(queue, driver.size()));
  VPCI_TRY(core.set_queue_desc(queue, driver.layout().desc));
  VPCI_TRY(core.set_queue_driver(queue, driver.layout().driver));
  VPCI_TRY(core.set_queue_device(queue, driver.layout().device));
  return core.enable_queue(queue);
}

Status ModernSetup::driver_ok(DeviceCore& core) {
  return core.write_status(core.status() | status::kDriverOk);
}

}  // namespace vpci::virtio::testing
