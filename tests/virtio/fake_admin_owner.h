// Test support: the smallest SR-IOV group owner (virtio::admin::LegacyMembers) — one
// member, always enabled, whose every legacy read returns 0x5a and every write succeeds.
// For tests of the admin queue's plumbing rather than of legacy registers.
#pragma once

#include <algorithm>
#include <span>
#include <vector>

#include "virtio/admin_commands.h"

namespace vpci::virtio::testing {

class OneMemberOwner final : public admin::LegacyMembers {
 public:
  static constexpr std::uint8_t kReadValue = 0x5a;

  [[nodiscard]] bool group_enabled() const override { return true; }
  [[nodiscard]] std::uint64_t member_count() const override { return 1; }
  Status legacy_write(std::uint64_t, admin::LegacyRegion, std::uint32_t,
                      std::span<const std::uint8_t>) override {
    return {};
  }
  Status legacy_read(std::uint64_t, admin::LegacyRegion, std::uint32_t,
                     std::span<std::uint8_t> out) override {
    std::fill(out.begin(), out.end(), kReadValue);
    return {};
  }
  std::vector<admin::NotifyInfoEntry> legacy_notify_info(std::uint64_t) override { return {}; }
};

}  // namespace vpci::virtio::testing
