#include "server/trace.h"

#include <cstring>

#include <fmt/format.h>

#include "base/error.h"
#include "server/protocol.h"

namespace vpci::server {

using namespace vfio_user;

std::string command_name_of(std::uint16_t command) {
  switch (command) {
    case kVersion: return "VERSION";
    case kDmaMap: return "DMA_MAP";
    case kDmaUnmap: return "DMA_UNMAP";
    case kDeviceGetInfo: return "DEVICE_GET_INFO";
    case kDeviceGetRegionInfo: return "DEVICE_GET_REGION_INFO";
    case kDeviceGetRegionIoFds: return "DEVICE_GET_REGION_IO_FDS";
    case kDeviceGetIrqInfo: return "DEVICE_GET_IRQ_INFO";
    case kDeviceSetIrqs: return "DEVICE_SET_IRQS";
    case kRegionRead: return "REGION_READ";
    case kRegionWrite: return "REGION_WRITE";
    case kDmaRead: return "DMA_READ";
    case kDmaWrite: return "DMA_WRITE";
    case kDeviceReset: return "DEVICE_RESET";
    case kRegionWriteMulti: return "REGION_WRITE_MULTI";
    case kDeviceFeature: return "DEVICE_FEATURE";
    default: return fmt::format("cmd{}", command);
  }
}

namespace {

// Field reader that yields 0 past the end: a trace must describe truncated messages too.
template <typename T>
T field(std::span<const std::uint8_t> payload, std::size_t offset) {
  if (offset + sizeof(T) > payload.size()) return T{0};
  return load<T>(payload, offset);
}

std::string describe_payload(std::uint16_t command, std::span<const std::uint8_t> p) {
  switch (command) {
    case kVersion: {
      std::string json;
      if (p.size() > 4) {
        const auto* text = reinterpret_cast<const char*>(p.data() + 4);
        json = std::string(text, strnlen(text, p.size() - 4));
      }
      return fmt::format("{}.{} {}", field<std::uint16_t>(p, 0), field<std::uint16_t>(p, 2), json);
    }
    case kDmaMap:
      return fmt::format("flags {:#x} offset {:#x} iova {:#x} size {:#x}",
                         field<std::uint32_t>(p, 4), field<std::uint64_t>(p, 8),
                         field<std::uint64_t>(p, 16), field<std::uint64_t>(p, 24));
    case kDmaUnmap:
      return fmt::format("flags {:#x} iova {:#x} size {:#x}", field<std::uint32_t>(p, 4),
                         field<std::uint64_t>(p, 8), field<std::uint64_t>(p, 16));
    case kDeviceGetRegionInfo:
    case kDeviceGetRegionIoFds:
    case kDeviceGetIrqInfo:
      return fmt::format("argsz {} index {}", field<std::uint32_t>(p, 0),
                         field<std::uint32_t>(p, 8));
    case kDeviceSetIrqs:
      return fmt::format("flags {:#x} index {} start {} count {}", field<std::uint32_t>(p, 4),
                         field<std::uint32_t>(p, 8), field<std::uint32_t>(p, 12),
                         field<std::uint32_t>(p, 16));
    case kRegionRead:
    case kRegionWrite: {
      std::string text = fmt::format("region {} offset {:#x} count {}", field<std::uint32_t>(p, 8),
                                     field<std::uint64_t>(p, 0), field<std::uint32_t>(p, 12));
      if (command == kRegionWrite && p.size() > kRegionAccessSize &&
          p.size() <= kRegionAccessSize + 8) {
        std::uint64_t value = 0;
        std::memcpy(&value, p.data() + kRegionAccessSize, p.size() - kRegionAccessSize);
        text += fmt::format(" data {:#x}", value);
      }
      return text;
    }
    default: return fmt::format("{} payload bytes", p.size());
  }
}

}  // namespace

std::string describe_request(std::span<const std::uint8_t> message, std::size_t fd_count) {
  if (message.size() < kHeaderSize)
    return fmt::format("<- short message of {} bytes", message.size());
  const Header h = decode_header(message);
  std::string text = fmt::format("<- #{} {} {}", h.msg_id, command_name_of(h.command),
                                 describe_payload(h.command, message.subspan(kHeaderSize)));
  if ((h.flags & kFlagNoReply) != 0) text += " (no reply)";
  if (fd_count != 0) text += fmt::format(" +{} fd", fd_count);
  return text;
}

std::string describe_reply(std::span<const std::uint8_t> reply, const std::string& error_reason) {
  if (reply.size() < kHeaderSize) return "-> short reply";
  const Header h = decode_header(reply);
  if ((h.flags & kFlagError) != 0) {
    return fmt::format("-> #{} {} error {} ({})", h.msg_id, command_name_of(h.command),
                       errno_text(static_cast<int>(h.error)), error_reason);
  }
  const auto p = reply.subspan(kHeaderSize);
  std::string detail;
  switch (h.command) {
    case kVersion: detail = describe_payload(kVersion, p); break;
    case kDeviceGetInfo:
      detail = fmt::format("flags {:#x} regions {} irqs {}", field<std::uint32_t>(p, 4),
                           field<std::uint32_t>(p, 8), field<std::uint32_t>(p, 12));
      break;
    case kDeviceGetRegionInfo:
      detail = fmt::format("index {} flags {:#x} size {:#x}", field<std::uint32_t>(p, 8),
                           field<std::uint32_t>(p, 4), field<std::uint64_t>(p, 16));
      break;
    case kDeviceGetIrqInfo:
      detail = fmt::format("index {} flags {:#x} count {}", field<std::uint32_t>(p, 8),
                           field<std::uint32_t>(p, 4), field<std::uint32_t>(p, 12));
      break;
    case kRegionRead:
      if (p.size() > kRegionAccessSize && p.size() <= kRegionAccessSize + 8) {
        std::uint64_t value = 0;
        std::memcpy(&value, p.data() + kRegionAccessSize, p.size() - kRegionAccessSize);
        detail = fmt::format("data {:#x}", value);
      } else {
        detail = fmt::format("{} data bytes",
                             p.size() > kRegionAccessSize ? p.size() - kRegionAccessSize : 0);
      }
      break;
    default: detail = fmt::format("{} payload bytes", p.size()); break;
  }
  return fmt::format("-> #{} {} ok {}", h.msg_id, command_name_of(h.command), detail);
}

}  // namespace vpci::server
