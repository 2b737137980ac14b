// A PCI/PCIe configuration space with per-bit register semantics.
//
// Every byte carries three things: its stored value, and masks saying which of its
// bits a guest write may set (RW), clear by writing 1 (RW1C), or must read as zero
// (RsvdZ). Everything else is read-only to the guest (RO, HwInit, RsvdP). The device
// model writes through the `raw_*` accessors, which ignore the masks, in the same way
// hardware updates its own status bits.
//
// Guest accesses (`read`/`write`) take 1, 2 or 4 bytes at any offset, aligned or not,
// and are applied byte by byte, so a 4-byte write that straddles Command and Status
// behaves exactly as the two registers would: Command's RW bits change, Status's RW1C
// bits clear. Little-endian throughout (PCI Local Bus 3.0 §6.1).
//
// BARs use the same masks: a BAR of size S has RW bits ~(S-1) above its flag bits,
// so writing all-ones reads back the size mask — the sizing protocol of PCI Local Bus
// 3.0 §6.2.5.1 — for any access width, and both halves of a 64-bit BAR size together.
//
// Registers whose value is computed on access (a virtio pci_cfg window, an MSI-X
// control word owned by the transport) are served by `RegisterHooks`; registers that
// only need to be noticed after a write use `add_write_observer`.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "base/error.h"
#include "pci/registers.h"

namespace vpci::pci {

// Guest-visible semantics of one bit (PCIe Base 6.0 §7.4, "Configuration Register Types").
enum class BitKind : std::uint8_t {
  kReadOnly,          // RO: writes have no effect
  kReadWrite,         // RW
  kWrite1ToClear,     // RW1C: a 1 clears the bit, a 0 leaves it
  kHardwareInit,      // HwInit: fixed by firmware/the device model, RO to the guest
  kReservedPreserve,  // RsvdP: reads the stored value, writes ignored
  kReservedZero,      // RsvdZ: reads 0, writes ignored
};

enum class BarType : std::uint8_t { kIo, kMemory32, kMemory64 };

struct BarSpec {
  BarType type = BarType::kMemory32;
  std::uint64_t size = 0;  // power of two; memory >= 16, I/O 4..256
  bool prefetchable = false;
};

// The IDs and class fields every header type carries.
struct HeaderIdentity {
  std::uint16_t vendor_id = 0;
  std::uint16_t device_id = 0;
  std::uint8_t revision = 0;
  std::uint32_t class_code = 0;           // base class << 16 | subclass << 8 | prog-if
  std::uint16_t subsystem_vendor_id = 0;  // type 0 only
  std::uint16_t subsystem_id = 0;         // type 0 only
  std::uint8_t interrupt_pin = 0;         // 0 none, 1..4 INTA..INTD
  bool multifunction = false;
};

struct RegisterHooks {
  // Returns the value of `width` bytes at absolute config offset `offset`.
  std::function<std::uint32_t(std::uint32_t offset, unsigned width)> read;
  // Receives a guest write of `width` bytes at absolute config offset `offset`.
  std::function<void(std::uint32_t offset, unsigned width, std::uint32_t value)> write;
};

using WriteObserver = std::function<void(std::uint32_t offset, unsigned width)>;

class ConfigSpace {
 public:
  // An all-zero, all-read-only space of 256 (conventional) or 4096 (PCIe) bytes.
  explicit ConfigSpace(std::uint32_t size);

  // A read-only image of `bytes` (e.g. a dump); size becomes 256 or 4096 and any
  // bytes past the image read 0xFF, as a dump reader shows missing bytes.
  static Result<ConfigSpace> from_image(std::span<const std::uint8_t> bytes);

  // Endpoint (type 0) and bridge (type 1) headers with the attributes of PCIe Base
  // 6.0 §7.5.1: Command RW bits, Status RW1C bits, Cache Line Size and Interrupt Line
  // RW, bridge bus numbers and windows RW. BARs start undefined (all RO zero).
  static ConfigSpace make_endpoint(std::uint32_t size, const HeaderIdentity& ids);
  static ConfigSpace make_bridge(std::uint32_t size, const HeaderIdentity& ids);

  [[nodiscard]] std::uint32_t size() const { return static_cast<std::uint32_t>(bytes_.size()); }
  [[nodiscard]] bool is_extended() const { return size() == kExtendedConfigSize; }
  [[nodiscard]] std::uint8_t header_layout() const {
    return bytes_[reg::kHeaderType] & header_type::kLayoutMask;
  }

  // ---- guest view -------------------------------------------------------------
  // `width` must be 1, 2 or 4 and [offset, offset + width) inside the space.
  [[nodiscard]] Result<std::uint32_t> read(std::uint32_t offset, unsigned width) const;
  Status write(std::uint32_t offset, unsigned width, std::uint32_t value);
  // An access of any length inside the space, split into the naturally aligned 4-, 2-
  // and 1-byte accesses above, in address order (a bus may read the whole space in one
  // request: vfio-user REGION_READ, lspci over sysfs). Little-endian.
  Status read_bytes(std::uint32_t offset, std::span<std::uint8_t> out) const;
  Status write_bytes(std::uint32_t offset, std::span<const std::uint8_t> data);

  // ---- device-model view (no masks; offsets must be in range) --------------------
  [[nodiscard]] std::uint8_t raw8(std::uint32_t offset) const;
  [[nodiscard]] std::uint16_t raw16(std::uint32_t offset) const;
  [[nodiscard]] std::uint32_t raw32(std::uint32_t offset) const;
  void set_raw8(std::uint32_t offset, std::uint8_t value);
  void set_raw16(std::uint32_t offset, std::uint16_t value);
  void set_raw32(std::uint32_t offset, std::uint32_t value);
  void set_raw_bytes(std::uint32_t offset, std::span<const std::uint8_t> data);
  [[nodiscard]] std::span<const std::uint8_t> bytes() const { return bytes_; }

  // ---- attributes ---------------------------------------------------------------
  // Gives the bits set in `mask` of the `width`-byte register at `offset` the kind `kind`.
  void set_bit_kind(std::uint32_t offset, unsigned width, std::uint32_t mask, BitKind kind);
  [[nodiscard]] BitKind bit_kind(std::uint32_t offset, unsigned bit) const;
  // The guest-writable (RW) bits of one byte; used by overlays that report write masks.
  [[nodiscard]] std::uint8_t writable_mask(std::uint32_t offset) const { return rw_[offset]; }

  // ---- BARs -----------------------------------------------------------------------
  // Defines BAR `index` (0-5 for type 0, 0-1 for type 1); a 64-bit BAR also takes
  // index + 1. Refuses overlapping definitions, bad sizes and out-of-range indexes.
  Status define_bar(unsigned index, const BarSpec& spec);
  // Defines the expansion ROM BAR (0x30, or 0x38 on bridges); size >= 2 KiB, power of 2.
  Status define_expansion_rom(std::uint32_t size);
  [[nodiscard]] std::optional<BarSpec> bar_spec(unsigned index) const;
  // The address the guest programmed into BAR `index` (flags masked; both halves of
  // a 64-bit BAR). nullopt when the BAR is undefined or is the upper half of a pair.
  [[nodiscard]] std::optional<std::uint64_t> bar_address(unsigned index) const;
  [[nodiscard]] unsigned bar_count() const {
    return header_layout() == header_type::kBridge ? 2 : 6;
  }

  // ---- dynamic registers ------------------------------------------------------------
  // Serves [offset, offset + length) from `hooks` instead of the stored bytes.
  Status set_hooks(std::uint32_t offset, std::uint32_t length, RegisterHooks hooks);
  // Calls `observer` after any guest write that touches [offset, offset + length).
  void add_write_observer(std::uint32_t offset, std::uint32_t length, WriteObserver observer);

  // ---- reset ----------------------------------------------------------------------
  // Remembers the current bytes as the power-on state that `reset()` restores.
  void capture_reset_state() { reset_bytes_ = bytes_; }
  void reset();

 private:
  struct HookedRange {
    std::uint32_t begin;
    std::uint32_t end;
    RegisterHooks hooks;
  };
  struct ObservedRange {
    std::uint32_t begin;
    std::uint32_t end;
    WriteObserver observer;
  };

  [[nodiscard]] Status check_access(std::uint32_t offset, unsigned width) const;
  [[nodiscard]] const HookedRange* hook_for(std::uint32_t offset, unsigned width) const;
  [[nodiscard]] std::uint8_t read_byte(std::uint32_t offset) const;
  void write_byte(std::uint32_t offset, std::uint8_t value);
  // A guest write of one byte through the RW and RW1C masks (no hooks).
  void apply_write(std::uint32_t offset, std::uint8_t value);
  void set_mask_bits(std::vector<std::uint8_t>& masks, std::uint32_t offset, unsigned width,
                     std::uint32_t mask, bool on);
  [[nodiscard]] std::uint32_t rom_register() const;

  std::vector<std::uint8_t> bytes_;
  std::vector<std::uint8_t> reset_bytes_;
  std::vector<std::uint8_t> rw_;      // guest may write
  std::vector<std::uint8_t> w1c_;     // guest clears by writing 1
  std::vector<std::uint8_t> rsvdz_;   // reads as 0
  std::vector<std::uint8_t> hwinit_;  // bookkeeping only: RO to the guest
  std::vector<std::uint8_t> rsvdp_;   // bookkeeping only: RO to the guest
  std::array<std::optional<BarSpec>, 6> bars_{};
  std::vector<HookedRange> hooks_;
  std::vector<ObservedRange> observers_;
};

}  // namespace vpci::pci
