// Synthetic devices and invariant checks shared by the placement unit tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "pci/capabilities.h"
#include "pci/config_space.h"
#include "pci/placement.h"

namespace vpci::pci::testing {

inline constexpr std::uint16_t kVendor = 0x1af4;
inline constexpr std::uint16_t kDevice = 0x1234;
inline constexpr std::uint16_t kSubVendor = 0x1028;
inline constexpr std::uint16_t kSubDevice = 0x0b1c;

// A PCIe v2 endpoint with a PCI Express capability at 0x40 and nothing in extended
// space, built with the engine so the tests do not depend on the corpus.
inline ConfigSpace make_express_endpoint(std::uint32_t size = kExtendedConfigSize) {
  ConfigSpace space = ConfigSpace::make_endpoint(
      size, HeaderIdentity{kVendor, kDevice, 1, 0x028000, kSubVendor, kSubDevice, 1, false});
  std::vector<std::uint8_t> express(0x3C - 2, 0);
  express[0] = 0x02;  // capability version 2, device/port type 0 (endpoint)
  EXPECT_TRUE(add_standard_capability(space, cap_id::kPciExpress, express, 0x40));
  std::vector<std::uint8_t> pm(6, 0);
  EXPECT_TRUE(add_standard_capability(space, cap_id::kPowerManagement, pm, 0x80));
  return space;
}

// Adds an extended capability of `total` bytes (header included) at `offset`.
inline void add_ext(ConfigSpace& space, std::uint16_t id, std::uint16_t offset, std::uint32_t total,
                    std::uint8_t fill = 0) {
  std::vector<std::uint8_t> body(total - 4, fill);
  const auto added = add_extended_capability(space, id, 1, body, offset);
  ASSERT_TRUE(added) << added.error().message;
}

// An 8-byte VSEC (VSEC ID 0x1234, length 8) at `offset`.
inline void add_vsec8(ConfigSpace& space, std::uint16_t offset) {
  const std::vector<std::uint8_t> body{0x34, 0x12, 0x80, 0x00};  // id 0x1234, rev 0, length 8
  ASSERT_TRUE(add_extended_capability(space, ext_cap_id::kVendorSpecific, 1, body, offset));
}

// The usual test device: PCIe endpoint, AER at 0x100 (0x2c bytes), ATS at 0x200.
inline ConfigSpace make_device_with_aer_ats() {
  ConfigSpace space = make_express_endpoint();
  add_ext(space, ext_cap_id::kAer, 0x100, 0x2C);
  add_ext(space, ext_cap_id::kAts, 0x200, 0x08);
  return space;
}

inline std::vector<std::uint8_t> image(const ConfigSpace& space) {
  return {space.bytes().begin(), space.bytes().end()};
}

inline const Capability* find_cap(const CapabilityScan& scan, CapabilitySpace space,
                                  std::uint16_t offset) {
  for (const auto& cap : scan.capabilities) {
    if (cap.space == space && cap.offset == offset) return &cap;
  }
  return nullptr;
}

// The invariants every successful placement must keep (the fuzzer checks the same):
// chain walkable without errors, each placed capability at its reported offset with its
// requested bytes, no overlap with any other capability, every source capability not
// hidden still linked at its offset with its ID, and every changed bit covered by the
// overlay.
inline void expect_invariants(std::span<const std::uint8_t> source, const PlacementRequest& request,
                              const PlacementResult& result) {
  const CapabilityScan before = scan_capabilities(source);
  const CapabilityScan after = scan_capabilities(result.guest.bytes());
  for (const auto& d : after.diagnostics) {
    EXPECT_NE(d.severity, Severity::kError) << d.message;
  }
  ASSERT_EQ(result.placed.size(), request.add.size());
  for (std::size_t i = 0; i < result.placed.size(); ++i) {
    const auto& p = result.placed[i];
    const auto& want = request.add[i];
    const Capability* cap = find_cap(after, CapabilitySpace::kExtended, p.offset);
    ASSERT_NE(cap, nullptr) << want.label << " not linked at " << p.offset;
    EXPECT_EQ(cap->id, want.id);
    EXPECT_EQ(cap->version, want.version);
    EXPECT_EQ(p.offset % 4, 0);
    EXPECT_GE(p.offset, 0x100);
    EXPECT_LE(p.offset + want.length(), 0x1000u);
    for (std::size_t b = 0; b < want.body.size(); ++b) {
      EXPECT_EQ(result.guest.raw8(p.offset + 4 + static_cast<std::uint32_t>(b)), want.body[b]);
    }
    for (const auto& other : after.capabilities) {
      if (other.space != CapabilitySpace::kExtended || other.offset == p.offset) continue;
      const std::uint32_t end = other.offset + occupied_length(after, other, kExtendedConfigSize);
      EXPECT_FALSE(p.offset < end && other.offset < p.offset + want.length())
          << want.label << " at " << p.offset << " overlaps cap " << other.id << " at "
          << other.offset;
    }
  }
  for (const auto& cap : before.capabilities) {
    const bool hidden = std::any_of(
        result.hidden.begin(), result.hidden.end(),
        [&](const HiddenCapability& h) { return h.space == cap.space && h.offset == cap.offset; });
    const Capability* now = find_cap(after, cap.space, cap.offset);
    // A Null header (ID 0) only carries a next pointer; when what followed it is hidden
    // it becomes an all-zero header, i.e. an empty list, or a capability takes its place.
    if (cap.id == 0 && cap.space == CapabilitySpace::kExtended) continue;
    if (!hidden) {
      ASSERT_NE(now, nullptr) << "capability " << cap.id << " at " << cap.offset << " lost";
      EXPECT_EQ(now->id, cap.id);
    } else if (cap.space == CapabilitySpace::kExtended && cap.offset == 0x100) {
      // ID zeroed: a Null header, or no list at all when version and next were 0 too.
      if (now != nullptr) {
        EXPECT_EQ(now->id, 0);
      }
    } else {
      // Hidden and unlinked, unless an added capability took its place.
      const bool replaced =
          std::any_of(result.placed.begin(), result.placed.end(),
                      [&](const PlacedCapability& p) { return p.offset == cap.offset; });
      if (!replaced) {
        EXPECT_EQ(now, nullptr) << "hidden capability at " << cap.offset << " still linked";
      }
    }
  }
  std::vector<std::uint8_t> emulated(result.guest.size(), 0);
  for (const auto& field : result.overlay) {
    for (std::size_t i = 0; i < field.value.size(); ++i) {
      emulated[field.offset + i] = field.emulated_mask[i];
      EXPECT_EQ(field.value[i], result.guest.raw8(field.offset + static_cast<std::uint32_t>(i)));
      EXPECT_EQ(field.write_mask[i] & ~field.emulated_mask[i], 0);
    }
  }
  for (std::uint32_t b = 0; b < result.guest.size(); ++b) {
    const std::uint8_t was = b < source.size() ? source[b] : 0xFF;
    const auto changed = static_cast<std::uint8_t>(was ^ result.guest.raw8(b));
    EXPECT_EQ(changed & ~emulated[b], 0) << "byte " << b << " changed outside the overlay";
  }
}

}  // namespace vpci::pci::testing
