#include "driver/device_probe.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>

#include "base/little_endian.h"
#include "devices/net_spec.h"
#include "devices/virtio_blk.h"
#include "virtio/spec.h"

namespace vpci::driver {
namespace {

namespace blk = vpci::devices::blk;
namespace net = vpci::devices::net;
using virtio::has_feature;
using virtio::to_le;
using virtio::device_id::kBlock;
using virtio::device_id::kEntropy;
using virtio::device_id::kNetwork;

// Where the probe's memory appears to the device, and how much: rings for a few queues
// of up to 256 entries and a few sector-sized buffers.
constexpr GuestAddress kProbeIova = 0x4000'0000;
constexpr std::size_t kProbeMemory = std::size_t{2} << 20;
constexpr std::uint16_t kProbeQueueSize = 64;
constexpr std::uint32_t kRngBytes = 64;

std::string type_name(std::uint32_t type) {
  switch (type) {
    case kNetwork: return "network";
    case kBlock: return "block";
    case kEntropy: return "entropy";
    default: return fmt::format("virtio type {}", type);
  }
}

std::string hex(std::span<const std::uint8_t> bytes) {
  std::string out;
  for (const auto b : bytes) out += fmt::format("{:02x}", b);
  return out;
}

// One request on queue 0: `readable` then `writable` bytes; the bytes written back.
Result<std::vector<std::uint8_t>> request(VirtioPciDriver& driver,
                                          std::span<const std::uint8_t> readable,
                                          std::uint32_t writable, std::chrono::milliseconds timeout,
                                          std::uint32_t& used_length) {
  ChainBuilder chain(driver.ram());
  if (!readable.empty()) chain.readable(readable);
  chain.writable(writable);
  const std::uint16_t head = driver.submit(0, chain);
  const auto used = driver.wait_used(0, timeout);
  if (!used) {
    return make_error(ErrorCode::kIoError, "no completion on queue 0 within {} ms",
                      timeout.count());
  }
  if (used->id != head) {
    return make_error(ErrorCode::kProtocolViolation, "queue 0 completed buffer {} for {}", used->id,
                      head);
  }
  // The used buffer must come with its interrupt (no EVENT_IDX is negotiated: every
  // completion interrupts, §2.7.10).
  if (!driver.wait_queue_interrupt(0, timeout)) {
    return make_error(ErrorCode::kIoError,
                      "queue 0 completed a buffer but no interrupt came "
                      "within {} ms",
                      timeout.count());
  }
  used_length = used->length;
  return chain.written_bytes();
}

// A blk request: type and sector, `data` out (write) or `data.size()` bytes in (read);
// returns the data read and fails on a status other than OK.
Result<std::vector<std::uint8_t>> blk_request(VirtioPciDriver& driver, std::uint32_t type,
                                              std::uint64_t sector,
                                              std::span<const std::uint8_t> data,
                                              std::uint32_t read_bytes,
                                              std::chrono::milliseconds timeout) {
  blk::RequestHeader header{to_le(type), 0, to_le(sector)};
  std::vector<std::uint8_t> readable(sizeof(header));
  std::memcpy(readable.data(), &header, sizeof(header));
  readable.insert(readable.end(), data.begin(), data.end());
  std::uint32_t used = 0;
  VPCI_ASSIGN_OR_RETURN(auto written, request(driver, readable, read_bytes + 1, timeout, used));
  const std::uint8_t status = written.back();
  if (status != blk::kStatusOk) {
    return make_error(ErrorCode::kIoError, "{} of sector {}: status {}",
                      type == blk::kTypeIn ? "read" : "write", sector, status);
  }
  written.pop_back();
  return written;
}

Status self_test(VirtioPciDriver& driver, const ProbeOptions& options, ProbeReport& report) {
  const auto timeout = options.timeout;
  switch (report.virtio_type) {
    case kEntropy: {
      std::uint32_t used = 0;
      VPCI_ASSIGN_OR_RETURN(auto bytes, request(driver, {}, kRngBytes, timeout, used));
      if (used == 0) return make_error(ErrorCode::kIoError, "the entropy device returned 0 bytes");
      report.facts.emplace_back("read", fmt::format("{} bytes", used));
      report.facts.emplace_back("first bytes",
                                hex(std::span(bytes).first(std::min<std::size_t>(used, 16))));
      return {};
    }
    case kBlock: {
      VPCI_ASSIGN_OR_RETURN(auto capacity_bytes,
                            driver.read_device_config(blk::config::kCapacity, 8));
      const auto capacity = load_le<std::uint64_t>(capacity_bytes);
      report.facts.emplace_back(
          "capacity", fmt::format("{} sectors ({} bytes)", capacity, capacity * blk::kSectorSize));
      VPCI_ASSIGN_OR_RETURN(auto sector0,
                            blk_request(driver, blk::kTypeIn, 0, {}, blk::kSectorSize, timeout));
      report.facts.emplace_back("sector 0",
                                "read, first bytes " + hex(std::span(sector0).first(16)));
      if (!options.blk_scratch_sector) return {};
      const std::uint64_t sector = *options.blk_scratch_sector;
      if (sector >= capacity) {
        return make_error(ErrorCode::kOutOfRange, "scratch sector {} is beyond the capacity of {}",
                          sector, capacity);
      }
      if (has_feature(report.features, blk::kFeatureReadOnly))
        return make_error(ErrorCode::kUnsupported, "the device is read-only: no write test");
      VPCI_ASSIGN_OR_RETURN(
          auto original, blk_request(driver, blk::kTypeIn, sector, {}, blk::kSectorSize, timeout));
      std::vector<std::uint8_t> pattern(blk::kSectorSize);
      for (std::size_t i = 0; i < pattern.size(); ++i)
        pattern[i] = static_cast<std::uint8_t>((sector * 131 + i * 7) ^ 0xA5);
      VPCI_TRY(blk_request(driver, blk::kTypeOut, sector, pattern, 0, timeout));
      VPCI_ASSIGN_OR_RETURN(
          auto back, blk_request(driver, blk::kTypeIn, sector, {}, blk::kSectorSize, timeout));
      VPCI_TRY(blk_request(driver, blk::kTypeOut, sector, original, 0, timeout));  // restore
      if (back != pattern) {
        return make_error(ErrorCode::kIoError, "sector {} read back differs from what was written",
                          sector);
      }
      report.facts.emplace_back("scratch sector",
                                fmt::format("{}: written, read back, restored", sector));
      return {};
    }
    case kNetwork: {
      if (has_feature(report.features, net::kFeatureMac)) {
        VPCI_ASSIGN_OR_RETURN(auto mac,
                              driver.read_device_config(net::config::kMac, net::kMacBytes));
        report.facts.emplace_back(
            "mac", fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2],
                               mac[3], mac[4], mac[5]));
      } else {
        report.facts.emplace_back("mac", "not offered");
      }
      if (has_feature(report.features, net::kFeatureStatus)) {
        VPCI_ASSIGN_OR_RETURN(auto status, driver.read_device_config(net::config::kStatus, 2));
        report.facts.emplace_back(
            "link", (load_le<std::uint16_t>(status) & net::kStatusLinkUp) != 0 ? "up" : "down");
      } else {
        report.facts.emplace_back("link", "up (no status field)");
      }
      report.facts.emplace_back("queues", fmt::format("{}", driver.queue_count()));
      return {};
    }
    default: report.facts.emplace_back("self-test", "none for this device type"); return {};
  }
}

}  // namespace

Result<ProbeReport> probe_device(PciAccess& access, const ProbeOptions& options) {
  ProbeReport report;
  std::array<std::uint8_t, 4> ids{};
  VPCI_TRY(access.config_read(0, ids));
  report.vendor_id = load_le<std::uint16_t>(std::span(ids).first(2));
  report.device_id = load_le<std::uint16_t>(std::span(ids).subspan(2));
  VPCI_ASSIGN_OR_RETURN(auto memory, DmaMemory::create(kProbeIova, kProbeMemory));
  VirtioPciDriver driver(access, *memory);
  auto probed = driver.probe();
  if (!probed) {
    // The access worked; the function is just not one virtio_pci would bind.
    report.type_name = "not virtio";
    report.passed = true;
    report.facts.emplace_back("why", probed.error().message);
    return report;
  }
  report.virtio = true;
  report.virtio_type = probed->virtio_id;
  report.type_name = type_name(probed->virtio_id);
  VPCI_TRY(access.map_dma(*memory));
  DriverOptions driver_options;
  const bool modern = probed->common && probed->notify && probed->isr;
  if (options.legacy || !modern) {
    driver_options.path = probed->legacy_io_bar ? DriverPath::kLegacyIo : DriverPath::kLegacyMmr;
    if (!probed->legacy_io_bar && !probed->legacy_mmr) {
      report.failure = "the device has no legacy interface (no I/O BAR0, no MMR window)";
      return report;
    }
  }
  driver_options.use_msix = options.use_msix && probed->msix_vectors > 0;
  driver_options.queue_size = kProbeQueueSize;
  report.interface = driver_options.path == DriverPath::kModern     ? "modern"
                     : driver_options.path == DriverPath::kLegacyIo ? "legacy I/O"
                                                                    : "legacy MMR";
  if (auto up = driver.initialise(driver_options); !up) {
    report.failure = "initialisation: " + up.error().message;
    (void)driver.reset_device();
    return report;
  }
  report.features = driver.negotiated_features();
  if (auto tested = self_test(driver, options, report); !tested) {
    report.failure = tested.error().message;
  } else {
    report.passed = true;
  }
  report.facts.emplace_back(
      "interrupts", driver_options.use_msix
                        ? fmt::format("MSI-X, {} message(s)", driver.interrupts().msix.size())
                        : fmt::format("INTx, {} event(s)", driver.interrupts().intx_changes));
  // Leave it as found: the driver's reset, then a function-level reset.
  (void)driver.reset_device();
  VPCI_TRY(access.reset());
  return report;
}

}  // namespace vpci::driver
