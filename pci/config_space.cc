#include "pci/config_space.h"

#include <algorithm>
#include <bit>
#include <cassert>

#include "base/little_endian.h"

namespace vpci::pci {
ConfigSpace::ConfigSpace(std::uint32_t size)
    : bytes_(size, 0),
      reset_bytes_(size, 0),
      rw_(size, 0),
      w1c_(size, 0),
      rsvdz_(size, 0),
      hwinit_(size, 0),
      rsvdp_(size, 0) {
  assert(size == kConventionalConfigSize || size == kExtendedConfigSize);
}

Result<ConfigSpace> ConfigSpace::from_image(std::span<const std::uint8_t> bytes) {
  if (bytes.size() > kExtendedConfigSize) {
    return make_error(ErrorCode::kOutOfRange, "config image of {} bytes exceeds {} bytes",
                      bytes.size(), kExtendedConfigSize);
  }
  const std::uint32_t size =
      bytes.size() > kConventionalConfigSize ? kExtendedConfigSize : kConventionalConfigSize;
  ConfigSpace space(size);
  std::fill(space.bytes_.begin(), space.bytes_.end(), 0xFF);
  std::copy(bytes.begin(), bytes.end(), space.bytes_.begin());
  space.capture_reset_state();
  return space;
}

namespace {

void write_identity(ConfigSpace& space, const HeaderIdentity& ids, std::uint8_t layout) {
  space.set_raw16(reg::kVendorId, ids.vendor_id);
  space.set_raw16(reg::kDeviceId, ids.device_id);
  space.set_raw8(reg::kRevisionId, ids.revision);
  space.set_raw8(reg::kClassProgIf, static_cast<std::uint8_t>(ids.class_code));
  space.set_raw8(reg::kSubclass, static_cast<std::uint8_t>(ids.class_code >> 8));
  space.set_raw8(reg::kBaseClass, static_cast<std::uint8_t>(ids.class_code >> 16));
  space.set_raw8(
      reg::kHeaderType,
      static_cast<std::uint8_t>(layout | (ids.multifunction ? header_type::kMultiFunction : 0)));
  space.set_raw8(reg::kInterruptPin, ids.interrupt_pin);
}

// Attributes shared by both header layouts (PCIe Base 6.0 §7.5.1.1).
void apply_common_header_attributes(ConfigSpace& space) {
  // Command: I/O, Memory, Bus Master, Parity Error Response, SERR#, Interrupt
  // Disable are RW. Bits 3, 4, 5, 7, 9 are hardwired 0 on PCIe; 15:11 are RsvdP.
  space.set_bit_kind(reg::kCommand, 2,
                     command::kIoSpace | command::kMemorySpace | command::kBusMaster |
                         command::kParityErrorResponse | command::kSerrEnable |
                         command::kInterruptDisable,
                     BitKind::kReadWrite);
  space.set_bit_kind(reg::kCommand, 2, 0xF800, BitKind::kReservedPreserve);
  space.set_bit_kind(reg::kStatus, 2, status::kWrite1ToClearMask, BitKind::kWrite1ToClear);
  space.set_bit_kind(reg::kStatus, 2, status::kReservedZeroMask, BitKind::kReservedZero);
  space.set_bit_kind(reg::kCacheLineSize, 1, 0xFF, BitKind::kReadWrite);
  space.set_bit_kind(reg::kInterruptLine, 1, 0xFF, BitKind::kReadWrite);
}

}  // namespace

ConfigSpace ConfigSpace::make_endpoint(std::uint32_t size, const HeaderIdentity& ids) {
  ConfigSpace space(size);
  write_identity(space, ids, header_type::kEndpoint);
  space.set_raw16(reg::kSubsystemVendorId, ids.subsystem_vendor_id);
  space.set_raw16(reg::kSubsystemId, ids.subsystem_id);
  apply_common_header_attributes(space);
  space.capture_reset_state();
  return space;
}

ConfigSpace ConfigSpace::make_bridge(std::uint32_t size, const HeaderIdentity& ids) {
  ConfigSpace space(size);
  write_identity(space, ids, header_type::kBridge);
  apply_common_header_attributes(space);
  // Bus numbers (PCIe Base 6.0 §7.5.1.3.1-3) are RW; Secondary Latency Timer is RO 0.
  space.set_bit_kind(reg::kPrimaryBus, 1, 0xFF, BitKind::kReadWrite);
  space.set_bit_kind(reg::kSecondaryBus, 1, 0xFF, BitKind::kReadWrite);
  space.set_bit_kind(reg::kSubordinateBus, 1, 0xFF, BitKind::kReadWrite);
  // I/O window: bits 7:4 RW, 3:0 = 1 (32-bit I/O decode, so the upper-16 registers exist).
  space.set_raw8(reg::kIoBase, 0x01);
  space.set_raw8(reg::kIoLimit, 0x01);
  space.set_bit_kind(reg::kIoBase, 1, 0xF0, BitKind::kReadWrite);
  space.set_bit_kind(reg::kIoLimit, 1, 0xF0, BitKind::kReadWrite);
  space.set_bit_kind(reg::kIoBaseUpper, 2, 0xFFFF, BitKind::kReadWrite);
  space.set_bit_kind(reg::kIoLimitUpper, 2, 0xFFFF, BitKind::kReadWrite);
  space.set_bit_kind(reg::kSecondaryStatus, 2, status::kWrite1ToClearMask, BitKind::kWrite1ToClear);
  // Memory window: 15:4 RW, 3:0 RsvdZ... stored as 0, RO.
  space.set_bit_kind(reg::kMemoryBase, 2, 0xFFF0, BitKind::kReadWrite);
  space.set_bit_kind(reg::kMemoryLimit, 2, 0xFFF0, BitKind::kReadWrite);
  // Prefetchable window: 15:4 RW, 3:0 = 1 (64-bit), upper halves RW.
  space.set_raw16(reg::kPrefetchBase, 0x0001);
  space.set_raw16(reg::kPrefetchLimit, 0x0001);
  space.set_bit_kind(reg::kPrefetchBase, 2, 0xFFF0, BitKind::kReadWrite);
  space.set_bit_kind(reg::kPrefetchLimit, 2, 0xFFF0, BitKind::kReadWrite);
  space.set_bit_kind(reg::kPrefetchBaseUpper, 4, 0xFFFFFFFF, BitKind::kReadWrite);
  space.set_bit_kind(reg::kPrefetchLimitUpper, 4, 0xFFFFFFFF, BitKind::kReadWrite);
  // Bridge Control: parity, SERR#, ISA, VGA, VGA 16-bit, master abort mode,
  // secondary bus reset are RW; the rest is RsvdP on PCIe (§7.5.1.3.13).
  space.set_bit_kind(reg::kBridgeControl, 2, 0x007F, BitKind::kReadWrite);
  space.set_bit_kind(reg::kBridgeControl, 2, 0xFF80, BitKind::kReservedPreserve);
  space.capture_reset_state();
  return space;
}

Status ConfigSpace::check_access(std::uint32_t offset, unsigned width) const {
  if (width != 1 && width != 2 && width != 4) {
    return make_error(ErrorCode::kInvalidArgument, "config access width {} (must be 1, 2 or 4)",
                      width);
  }
  if (offset >= size() || width > size() - offset) {
    return make_error(ErrorCode::kOutOfRange,
                      "config access of {} bytes at {:#x} is outside the {}-byte space", width,
                      offset, size());
  }
  return {};
}

const ConfigSpace::HookedRange* ConfigSpace::hook_for(std::uint32_t offset, unsigned width) const {
  for (const auto& range : hooks_) {
    if (offset < range.end && offset + width > range.begin) return &range;
  }
  return nullptr;
}

std::uint8_t ConfigSpace::read_byte(std::uint32_t offset) const {
  if (const HookedRange* range = hook_for(offset, 1); range != nullptr && range->hooks.read) {
    return static_cast<std::uint8_t>(range->hooks.read(offset, 1));
  }
  return static_cast<std::uint8_t>(bytes_[offset] & ~rsvdz_[offset]);
}

void ConfigSpace::write_byte(std::uint32_t offset, std::uint8_t value) {
  if (const HookedRange* range = hook_for(offset, 1); range != nullptr) {
    if (range->hooks.write) range->hooks.write(offset, 1, value);
    return;
  }
  apply_write(offset, value);
}

void ConfigSpace::apply_write(std::uint32_t offset, std::uint8_t value) {
  const std::uint8_t old = bytes_[offset];
  std::uint8_t next = static_cast<std::uint8_t>((old & ~rw_[offset]) | (value & rw_[offset]));
  next = static_cast<std::uint8_t>(next & ~(value & w1c_[offset]));
  bytes_[offset] = next;
}

namespace {

// The widest naturally aligned access (4, 2 or 1) at `offset` that fits in `remaining`.
unsigned piece_width(std::uint32_t offset, std::size_t remaining) {
  if (offset % 4 == 0 && remaining >= 4) return 4;
  if (offset % 2 == 0 && remaining >= 2) return 2;
  return 1;
}

}  // namespace

Status ConfigSpace::read_bytes(std::uint32_t offset, std::span<std::uint8_t> out) const {
  if (offset > size() || out.size() > size() - offset) {
    return make_error(ErrorCode::kOutOfRange, "config read of {} bytes at {:#x} (space of {})",
                      out.size(), offset, size());
  }
  for (std::size_t done = 0; done < out.size();) {
    const auto at = static_cast<std::uint32_t>(offset + done);
    const unsigned width = piece_width(at, out.size() - done);
    VPCI_ASSIGN_OR_RETURN(const std::uint32_t value, read(at, width));
    store_le_bytes(out.subspan(done, width), value);
    done += width;
  }
  return {};
}

Status ConfigSpace::write_bytes(std::uint32_t offset, std::span<const std::uint8_t> data) {
  if (offset > size() || data.size() > size() - offset) {
    return make_error(ErrorCode::kOutOfRange, "config write of {} bytes at {:#x} (space of {})",
                      data.size(), offset, size());
  }
  for (std::size_t done = 0; done < data.size();) {
    const auto at = static_cast<std::uint32_t>(offset + done);
    const unsigned width = piece_width(at, data.size() - done);
    const auto value = static_cast<std::uint32_t>(load_le_bytes(data.subspan(done, width)));
    VPCI_TRY(write(at, width, value));
    done += width;
  }
  return {};
}

Result<std::uint32_t> ConfigSpace::read(std::uint32_t offset, unsigned width) const {
  VPCI_TRY(check_access(offset, width));
  const HookedRange* range = hook_for(offset, width);
  if (range != nullptr && range->hooks.read && offset >= range->begin &&
      offset + width <= range->end) {
    return range->hooks.read(offset, width);
  }
  std::uint32_t value = 0;
  if (range == nullptr) {
    // No hook anywhere in the access (the common case): stored bytes through the RsvdZ
    // mask, without looking for a hook once per byte.
    for (unsigned i = 0; i < width; ++i) {
      value |= static_cast<std::uint32_t>(bytes_[offset + i] & ~rsvdz_[offset + i]) << (8 * i);
    }
    return value;
  }
  for (unsigned i = 0; i < width; ++i) {
    value |= static_cast<std::uint32_t>(read_byte(offset + i)) << (8 * i);
  }
  return value;
}

Status ConfigSpace::write(std::uint32_t offset, unsigned width, std::uint32_t value) {
  VPCI_TRY(check_access(offset, width));
  const HookedRange* range = hook_for(offset, width);
  if (range != nullptr && offset >= range->begin && offset + width <= range->end) {
    if (range->hooks.write) range->hooks.write(offset, width, value);
  } else if (range == nullptr) {
    // No hook anywhere in the access: apply the masks without a hook look-up per byte.
    for (unsigned i = 0; i < width; ++i)
      apply_write(offset + i, static_cast<std::uint8_t>(value >> (8 * i)));
  } else {
    for (unsigned i = 0; i < width; ++i) {
      write_byte(offset + i, static_cast<std::uint8_t>(value >> (8 * i)));
    }
  }
  for (const auto& observed : observers_) {
    if (offset < observed.end && offset + width > observed.begin) observed.observer(offset, width);
  }
  return {};
}

std::uint8_t ConfigSpace::raw8(std::uint32_t offset) const {
  assert(offset < size());
  return bytes_[offset];
}

std::uint16_t ConfigSpace::raw16(std::uint32_t offset) const {
  assert(offset + 2 <= size());
  return load_le<std::uint16_t>(std::span(bytes_).subspan(offset));
}

std::uint32_t ConfigSpace::raw32(std::uint32_t offset) const {
  assert(offset + 4 <= size());
  return load_le<std::uint32_t>(std::span(bytes_).subspan(offset));
}

void ConfigSpace::set_raw8(std::uint32_t offset, std::uint8_t value) {
  assert(offset < size());
  bytes_[offset] = value;
}

void ConfigSpace::set_raw16(std::uint32_t offset, std::uint16_t value) {
  assert(offset + 2 <= size());
  store_le(std::span(bytes_).subspan(offset), value);
}

void ConfigSpace::set_raw32(std::uint32_t offset, std::uint32_t value) {
  assert(offset + 4 <= size());
  store_le(std::span(bytes_).subspan(offset), value);
}

void ConfigSpace::set_raw_bytes(std::uint32_t offset, std::span<const std::uint8_t> data) {
  assert(offset <= size() && data.size() <= size() - offset);
  std::copy(data.begin(), data.end(), bytes_.begin() + offset);
}

void ConfigSpace::set_mask_bits(std::vector<std::uint8_t>& masks, std::uint32_t offset,
                                unsigned width, std::uint32_t mask, bool on) {
  for (unsigned i = 0; i < width; ++i) {
    const auto byte_mask = static_cast<std::uint8_t>(mask >> (8 * i));
    if (on) {
      masks[offset + i] = static_cast<std::uint8_t>(masks[offset + i] | byte_mask);
    } else {
      masks[offset + i] = static_cast<std::uint8_t>(masks[offset + i] & ~byte_mask);
    }
  }
}

void ConfigSpace::set_bit_kind(std::uint32_t offset, unsigned width, std::uint32_t mask,
                               BitKind kind) {
  assert((width == 1 || width == 2 || width == 4) && offset + width <= size());
  set_mask_bits(rw_, offset, width, mask, kind == BitKind::kReadWrite);
  set_mask_bits(w1c_, offset, width, mask, kind == BitKind::kWrite1ToClear);
  set_mask_bits(rsvdz_, offset, width, mask, kind == BitKind::kReservedZero);
  set_mask_bits(hwinit_, offset, width, mask, kind == BitKind::kHardwareInit);
  set_mask_bits(rsvdp_, offset, width, mask, kind == BitKind::kReservedPreserve);
}

BitKind ConfigSpace::bit_kind(std::uint32_t offset, unsigned bit) const {
  assert(offset < size() && bit < 8);
  const auto m = static_cast<std::uint8_t>(1u << bit);
  if (rw_[offset] & m) return BitKind::kReadWrite;
  if (w1c_[offset] & m) return BitKind::kWrite1ToClear;
  if (rsvdz_[offset] & m) return BitKind::kReservedZero;
  if (hwinit_[offset] & m) return BitKind::kHardwareInit;
  if (rsvdp_[offset] & m) return BitKind::kReservedPreserve;
  return BitKind::kReadOnly;
}

Status ConfigSpace::define_bar(unsigned index, const BarSpec& spec) {
  const unsigned count = bar_count();
  const unsigned slots = spec.type == BarType::kMemory64 ? 2 : 1;
  if (header_layout() != header_type::kEndpoint && header_layout() != header_type::kBridge) {
    return make_error(ErrorCode::kUnsupported, "BARs need a type 0 or type 1 header");
  }
  if (index >= count || index + slots > count) {
    return make_error(ErrorCode::kOutOfRange, "BAR{}{} does not exist in a type {} header", index,
                      slots == 2 ? " (64-bit pair)" : "", header_layout());
  }
  if (!std::has_single_bit(spec.size)) {
    return make_error(ErrorCode::kInvalidArgument, "BAR{} size {:#x} is not a power of two", index,
                      spec.size);
  }
  if (spec.type == BarType::kIo) {
    if (spec.size < 4 || spec.size > 256) {
      return make_error(ErrorCode::kInvalidArgument,
                        "I/O BAR{} size {:#x} outside 4..256 bytes (PCI 3.0 §6.2.5.1)", index,
                        spec.size);
    }
    if (spec.prefetchable) {
      return make_error(ErrorCode::kInvalidArgument, "I/O BAR{} cannot be prefetchable", index);
    }
  } else if (spec.size < 16 || (spec.type == BarType::kMemory32 && spec.size > (1ull << 31))) {
    return make_error(ErrorCode::kInvalidArgument, "memory BAR{} size {:#x} out of range", index,
                      spec.size);
  }
  for (unsigned i = 0; i < count; ++i) {
    if (!bars_[i]) continue;
    const unsigned other_slots = bars_[i]->type == BarType::kMemory64 ? 2 : 1;
    if (index < i + other_slots && i < index + slots) {
      return make_error(ErrorCode::kConflict, "BAR{} overlaps the already defined BAR{}", index, i);
    }
  }
  bars_[index] = spec;
  const std::uint32_t offset = reg::kBar0 + 4 * index;
  const std::uint64_t address_mask = ~(spec.size - 1);
  std::uint32_t flags = 0;
  std::uint32_t flag_bits = bar::kMemoryFlagsMask;
  if (spec.type == BarType::kIo) {
    flags = bar::kIoSpaceFlag;
    flag_bits = bar::kIoFlagsMask;
  } else {
    if (spec.type == BarType::kMemory64) flags |= bar::kMemoryType64;
    if (spec.prefetchable) flags |= bar::kPrefetchable;
  }
  set_raw32(offset, flags);
  set_bit_kind(offset, 4, 0xFFFFFFFF, BitKind::kReadOnly);
  set_bit_kind(offset, 4, static_cast<std::uint32_t>(address_mask) & ~flag_bits,
               BitKind::kReadWrite);
  if (spec.type == BarType::kMemory64) {
    set_raw32(offset + 4, 0);
    set_bit_kind(offset + 4, 4, static_cast<std::uint32_t>(address_mask >> 32),
                 BitKind::kReadWrite);
  }
  capture_reset_state();
  return {};
}

std::uint32_t ConfigSpace::rom_register() const {
  return header_layout() == header_type::kBridge ? reg::kBridgeRomAddress : reg::kRomAddress;
}

Status ConfigSpace::define_expansion_rom(std::uint32_t size) {
  if (header_layout() != header_type::kEndpoint && header_layout() != header_type::kBridge) {
    return make_error(ErrorCode::kUnsupported, "an expansion ROM needs a type 0 or type 1 header");
  }
  if (!std::has_single_bit(size) || size < 2048) {
    return make_error(ErrorCode::kInvalidArgument,
                      "expansion ROM size {:#x} must be a power of two >= 2 KiB", size);
  }
  const std::uint32_t offset = rom_register();
  set_raw32(offset, 0);
  set_bit_kind(offset, 4, 0xFFFFFFFF, BitKind::kReadOnly);
  set_bit_kind(offset, 4, (~(size - 1) & bar::kRomAddressMask) | bar::kRomEnable,
               BitKind::kReadWrite);
  capture_reset_state();
  return {};
}

std::optional<BarSpec> ConfigSpace::bar_spec(unsigned index) const {
  if (index >= bars_.size()) return std::nullopt;
  return bars_[index];
}

std::optional<std::uint64_t> ConfigSpace::bar_address(unsigned index) const {
  const auto spec = bar_spec(index);
  if (!spec) return std::nullopt;
  const std::uint32_t offset = reg::kBar0 + 4 * index;
  const std::uint32_t low = raw32(offset);
  if (spec->type == BarType::kIo) return low & ~bar::kIoFlagsMask;
  std::uint64_t address = low & ~bar::kMemoryFlagsMask;
  if (spec->type == BarType::kMemory64)
    address |= static_cast<std::uint64_t>(raw32(offset + 4)) << 32;
  return address;
}

Status ConfigSpace::set_hooks(std::uint32_t offset, std::uint32_t length, RegisterHooks hooks) {
  if (length == 0 || offset >= size() || length > size() - offset) {
    return make_error(ErrorCode::kOutOfRange, "hook range [{:#x}, +{:#x}) outside config space",
                      offset, length);
  }
  for (const auto& range : hooks_) {
    if (offset < range.end && offset + length > range.begin) {
      return make_error(ErrorCode::kConflict, "hook range [{:#x}, {:#x}) overlaps [{:#x}, {:#x})",
                        offset, offset + length, range.begin, range.end);
    }
  }
  hooks_.push_back({offset, offset + length, std::move(hooks)});
  return {};
}

void ConfigSpace::add_write_observer(std::uint32_t offset, std::uint32_t length,
                                     WriteObserver observer) {
  observers_.push_back({offset, offset + length, std::move(observer)});
}

void ConfigSpace::reset() {
  bytes_ = reset_bytes_;
}

}  // namespace vpci::pci
