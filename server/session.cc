#include "server/session.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <string_view>

#include <nlohmann/json.hpp>
#include <sys/mman.h>

#include "base/log.h"
#include "server/trace.h"

namespace vpci::server {

using namespace vfio_user;

int errno_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kOutOfRange:
    case ErrorCode::kMalformedInput:
    case ErrorCode::kProtocolViolation: return EINVAL;
    case ErrorCode::kNotFound: return ENOENT;
    case ErrorCode::kAlreadyExists: return EEXIST;
    case ErrorCode::kNoSpace: return ENOSPC;
    case ErrorCode::kConflict: return EBUSY;
    case ErrorCode::kUnsupported: return ENOTSUP;
    case ErrorCode::kIoError: return EIO;
  }
  return EINVAL;
}

namespace {

// A payload must hold at least `size` bytes, and its argsz field (always the first
// u32 of an argsz-style structure, spec "Message Format") must cover them too.
Status check_argsz_payload(std::span<const std::uint8_t> payload, std::size_t size) {
  if (payload.size() < size) {
    return make_error(ErrorCode::kMalformedInput, "payload of {} bytes, need {}", payload.size(),
                      size);
  }
  const auto argsz = load<std::uint32_t>(payload, 0);
  if (argsz < size) {
    return make_error(ErrorCode::kMalformedInput, "argsz {} smaller than the structure ({})", argsz,
                      size);
  }
  return {};
}

Status check_no_fds(const std::vector<UniqueFd>& fds) {
  if (!fds.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "{} unexpected file descriptors", fds.size());
  }
  return {};
}

// True when `fd` is an eventfd: triggering writes 8 bytes to it from the server
// thread, which must never block on a pipe or socket the peer passed instead.
bool is_eventfd(int fd) {
  std::array<char, 64> link{};
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(path.c_str(), link.data(), link.size() - 1);
  return n > 0 &&
         std::string_view(link.data(), static_cast<std::size_t>(n)) == "anon_inode:[eventfd]";
}

}  // namespace

// ---- VfioUserSession -------------------------------------------------------------

VfioUserSession::VfioUserSession(pci::Function& function,
                                 std::shared_ptr<virtio::GuestMemory> memory, std::string label)
    : function_(function),
      label_(std::move(label)),
      messages_(std::make_shared<MessageDma>()),
      maps_(std::move(memory), messages_),
      irqs_(function) {
  messages_->set_first_use_hook([this](std::uint64_t address) { notice_unshared_memory(address); });
  function_.set_interrupt_output(this);
}

VfioUserSession::~VfioUserSession() {
  // The client is gone (or being dropped): nothing may wait on it any more, and regions
  // that outlive the session in a snapshot must not call back into it.
  messages_->attach(nullptr);
  messages_->set_first_use_hook(nullptr);
  // Reset first so the device stops DMA and interrupts, then take memory away.
  function_.reset();
  function_.set_interrupt_output(nullptr);
  maps_.clear();
  irqs_.clear();
}

void VfioUserSession::notice_unshared_memory(std::uint64_t address) {
  logger().info(
      "{}{}guest memory at {:#x} is not shared with vpci (the client mapped it without a file "
      "descriptor): every ring and buffer access costs a DMA_READ/DMA_WRITE round trip over the "
      "socket. For the fast path give QEMU shared guest RAM: -object "
      "memory-backend-memfd,id=mem,size=<RAM>,share=on -machine memory-backend=mem",
      label_, label_.empty() ? "" : ": ", address);
}

void VfioUserSession::set_intx_level(bool asserted) {
  intx_asserted_ = asserted;
  if (asserted) irqs_.trigger(kIrqIntx, 0);  // vfio has no de-assert: QEMU lowers the line at EOI
}

void VfioUserSession::signal_msix(std::uint16_t vector, std::uint64_t /*address*/,
                                  std::uint32_t /*data*/) {
  // QEMU owns the MSI-X table (address/data, masking): only the vector number travels.
  irqs_.trigger(kIrqMsix, vector);
}

DispatchResult VfioUserSession::handle(IncomingMessage message) {
  DispatchResult result;
  std::vector<std::uint8_t> out;
  switch (handle(message.bytes, message.fds, message.fds_truncated, out)) {
    case Disposition::kReply:
      result.reply = std::move(out);
      result.reply_fd = reply_fd_;
      break;
    case Disposition::kNoReply: break;
    case Disposition::kClose: result.close_connection = true; break;
  }
  return result;
}

VfioUserSession::Disposition VfioUserSession::handle(std::span<const std::uint8_t> bytes,
                                                     std::vector<UniqueFd>& fds, bool fds_truncated,
                                                     std::vector<std::uint8_t>& out) {
  // Whatever fds the handler does not take are closed on every path (UniqueFd).
  struct CloseFds {
    std::vector<UniqueFd>& fds;
    ~CloseFds() { fds.clear(); }
  } close_fds{fds};
  reply_fd_ = -1;
  if (bytes.size() < kHeaderSize) {
    last_error_ = "message shorter than the header";
    ++error_count_;
    return Disposition::kClose;
  }
  const Header header = decode_header(bytes);
  if (header.message_size != bytes.size()) {
    last_error_ =
        fmt::format("message_size {} but {} bytes received", header.message_size, bytes.size());
    ++error_count_;
    return Disposition::kClose;
  }
  if ((header.flags & kFlagTypeMask) != kTypeCommand) {
    // This server sends no commands, so a reply (or an unknown type) means the peer
    // has lost track of the conversation.
    last_error_ =
        fmt::format("message type {} where a command was expected", header.flags & kFlagTypeMask);
    ++error_count_;
    return Disposition::kClose;
  }

  // The reply payload is built in place after room for the header, so the common
  // requests (REGION_READ/WRITE) cost no allocation once `out` has grown.
  out.resize(kHeaderSize);
  Status status;
  if (fds_truncated) {
    status = make_error(ErrorCode::kInvalidArgument, "more than {} file descriptors", kMaxMsgFds);
  } else if (!negotiated_ && header.command != kVersion) {
    status = make_error(ErrorCode::kProtocolViolation, "{} before VERSION",
                        command_name_of(header.command));
  } else {
    status = dispatch_into(header, bytes.subspan(kHeaderSize), fds, out);
  }
  fds.clear();

  if (!status) {
    last_error_ = fmt::format("{} (msg_id {}): {}", command_name_of(header.command), header.msg_id,
                              status.error().message);
    ++error_count_;
  }
  if (messages_->error_count() != dma_errors_seen_) {
    dma_errors_seen_ = messages_->error_count();
    last_error_ = messages_->last_error();
  }
  // A DMA exchange inside the command found the connection unusable (last_error_ says
  // why): nothing more can be said on it.
  if (messages_->lost()) return Disposition::kClose;
  if ((header.flags & kFlagNoReply) != 0) return Disposition::kNoReply;  // spec "Header": No_reply

  Header reply_header{header.msg_id, header.command, 0, kTypeReply, 0};
  if (!status) {
    out.resize(kHeaderSize);
    reply_fd_ = -1;
    reply_header.flags |= kFlagError;
    reply_header.error = static_cast<std::uint32_t>(errno_for(status.error().code));
  }
  reply_header.message_size = static_cast<std::uint32_t>(out.size());
  encode_header(out, reply_header);
  return Disposition::kReply;
}

Status VfioUserSession::dispatch_into(const Header& header, Payload payload,
                                      std::vector<UniqueFd>& fds, std::vector<std::uint8_t>& out) {
  switch (header.command) {
    // The register path writes its reply straight into `out`.
    case kRegionRead: VPCI_TRY(check_no_fds(fds)); return handle_region_read(payload, out);
    case kRegionWrite: VPCI_TRY(check_no_fds(fds)); return handle_region_write(payload, out);
    default: {
      VPCI_ASSIGN_OR_RETURN(const std::vector<std::uint8_t> reply, dispatch(header, payload, fds));
      out.insert(out.end(), reply.begin(), reply.end());
      return {};
    }
  }
}

VfioUserSession::Reply VfioUserSession::dispatch(const Header& header, Payload payload,
                                                 std::vector<UniqueFd>& fds) {
  // fds belong only to DMA_MAP and SET_IRQS (spec "File Descriptors"); everything else
  // must come without them.
  if (header.command != kDmaMap && header.command != kDeviceSetIrqs) VPCI_TRY(check_no_fds(fds));
  switch (header.command) {
    case kVersion: return handle_version(payload);
    case kDmaMap: return handle_dma_map(payload, fds);
    case kDmaUnmap: return handle_dma_unmap(payload);
    case kDeviceGetInfo: return handle_device_get_info(payload);
    case kDeviceGetRegionInfo: return handle_region_info(payload);
    case kDeviceGetRegionIoFds: return handle_region_io_fds(payload);
    case kDeviceGetIrqInfo: return handle_irq_info(payload);
    case kDeviceSetIrqs: return handle_set_irqs(payload, fds);
    case kDeviceReset: return handle_device_reset(payload);
    case kDmaRead:
    case kDmaWrite:
      return make_error(ErrorCode::kUnsupported,
                        "DMA_READ/DMA_WRITE are server-to-client commands");
    default:
      return make_error(ErrorCode::kUnsupported, "command {} is not supported", header.command);
  }
}

// Spec "VFIO_USER_VERSION": u16 major, u16 minor, optional NUL-terminated JSON
// {"capabilities": {...}}. The reply's major equals the client's, its minor is at
// most the client's, and its capabilities are what this server offers.
VfioUserSession::Reply VfioUserSession::handle_version(Payload payload) {
  if (negotiated_) return make_error(ErrorCode::kProtocolViolation, "VERSION sent twice");
  if (payload.size() < 4) {
    return make_error(ErrorCode::kMalformedInput, "payload of {} bytes, need 4", payload.size());
  }
  const auto [major, minor] = read_wire<VersionPayload>(payload);
  if (major != kMajorVersion) {
    return make_error(ErrorCode::kUnsupported, "major version {} (this server speaks {})", major,
                      kMajorVersion);
  }
  if (payload.size() > 4) {
    const auto json_bytes = payload.subspan(4);
    const auto nul = std::find(json_bytes.begin(), json_bytes.end(), std::uint8_t{0});
    if (nul == json_bytes.end()) {
      return make_error(ErrorCode::kMalformedInput, "version JSON is not NUL-terminated");
    }
    const std::string_view text(reinterpret_cast<const char*>(json_bytes.data()),
                                static_cast<std::size_t>(nul - json_bytes.begin()));
    if (!text.empty()) {
      const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (doc.is_discarded() || !doc.is_object()) {
        return make_error(ErrorCode::kMalformedInput, "version JSON is not a JSON object");
      }
      if (auto caps = doc.find("capabilities"); caps != doc.end()) {
        if (!caps->is_object()) {
          return make_error(ErrorCode::kMalformedInput, "\"capabilities\" is not an object");
        }
        for (const char* key : {"max_msg_fds", "max_data_xfer_size", "max_dma_maps", "pgsizes"}) {
          if (auto it = caps->find(key); it != caps->end() && !it->is_number_unsigned()) {
            return make_error(ErrorCode::kMalformedInput,
                              "capability \"{}\" is not an unsigned number", key);
          }
        }
        // Our DMA_READ/DMA_WRITE pieces must fit the client's limit (spec "Version":
        // max_data_xfer_size, default 1 MiB).
        if (auto it = caps->find("max_data_xfer_size"); it != caps->end()) {
          if (it->get<std::uint64_t>() == 0) {
            return make_error(ErrorCode::kInvalidArgument, "max_data_xfer_size 0");
          }
          messages_->set_client_max_transfer(it->get<std::uint64_t>());
        }
        // The client's DMA page sizes must include ours (spec "Version": pgsizes).
        if (auto it = caps->find("pgsizes");
            it != caps->end() && (it->get<std::uint64_t>() & kPageSize) == 0) {
          return make_error(ErrorCode::kUnsupported, "client pgsizes {:#x} lack {:#x}",
                            it->get<std::uint64_t>(), kPageSize);
        }
        // Unknown capabilities (migration, twin_socket, write_multiple, ...) are simply
        // not echoed: the reply's set is what both sides then use.
      }
    }
  }
  const nlohmann::json reply_caps = {{"capabilities",
                                      {{"max_msg_fds", kMaxMsgFds},
                                       {"max_data_xfer_size", kMaxDataXferSize},
                                       {"max_dma_maps", kMaxDmaMaps},
                                       {"pgsizes", kPageSize}}}};
  const std::string text = reply_caps.dump();
  std::vector<std::uint8_t> out;
  append_wire(out, VersionPayload{kMajorVersion, std::min<std::uint16_t>(minor, kMaxMinorVersion)});
  out.insert(out.end(), text.begin(), text.end());
  out.push_back(0);
  negotiated_ = true;
  return out;
}

// Spec "VFIO_USER_DMA_MAP": argsz, flags, offset, address, size; 0 or 1 fd.
VfioUserSession::Reply VfioUserSession::handle_dma_map(Payload payload,
                                                       std::vector<UniqueFd>& fds) {
  VPCI_TRY(check_argsz_payload(payload, sizeof(DmaMapPayload)));
  const auto map = read_wire<DmaMapPayload>(payload);
  const std::uint32_t flags = map.flags;
  if (fds.size() > 1) {
    return make_error(ErrorCode::kInvalidArgument, "{} file descriptors, at most 1", fds.size());
  }
  if ((flags & ~(kDmaMapRead | kDmaMapWrite)) != 0 || (flags & kDmaMapRead) == 0) {
    return make_error(ErrorCode::kInvalidArgument, "DMA map flags {:#x}", flags);
  }
  const int fd = fds.empty() ? -1 : fds[0].get();
  VPCI_TRY(maps_.add(map.address, map.size, map.offset, fd, (flags & kDmaMapWrite) != 0));
  return std::vector<std::uint8_t>{};  // spec: the reply has no payload
}

// Spec "VFIO_USER_DMA_UNMAP": argsz, flags, address, size; the reply echoes the request.
VfioUserSession::Reply VfioUserSession::handle_dma_unmap(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, sizeof(DmaUnmapPayload)));
  auto unmap = read_wire<DmaUnmapPayload>(payload);
  const std::uint32_t flags = unmap.flags;
  const std::uint64_t iova = unmap.address;
  const std::uint64_t size = unmap.size;
  if ((flags & kDmaUnmapGetDirtyBitmap) != 0) {
    return make_error(ErrorCode::kUnsupported, "dirty page tracking is not supported");
  }
  if ((flags & ~kDmaUnmapAll) != 0) {
    return make_error(ErrorCode::kInvalidArgument, "DMA unmap flags {:#x}", flags);
  }
  if ((flags & kDmaUnmapAll) != 0) {
    if (iova != 0 || size != 0) {
      return make_error(ErrorCode::kInvalidArgument, "unmap-all with address {:#x} size {:#x}",
                        iova, size);
    }
    // Every map is gone before the reply (spec: the client may reuse the memory), so
    // no request in flight may still be reading or writing it.
    function_.quiesce();
    maps_.clear();
  } else {
    function_.quiesce();
    VPCI_TRY(maps_.remove(iova, size));
  }
  unmap.argsz = sizeof(DmaUnmapPayload);
  std::vector<std::uint8_t> out;
  append_wire(out, unmap);
  return out;
}

// Spec "VFIO_USER_DEVICE_GET_INFO": a PCI device that can be reset, 9 regions, 5 IRQ
// indexes (reference §5 suggests exactly this).
VfioUserSession::Reply VfioUserSession::handle_device_get_info(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, sizeof(DeviceInfoPayload)));
  std::vector<std::uint8_t> out;
  append_wire(out, DeviceInfoPayload{sizeof(DeviceInfoPayload), kDeviceFlagReset | kDeviceFlagPci,
                                     kRegionCount, kIrqIndexCount});
  return out;
}

// Spec "VFIO_USER_DEVICE_GET_REGION_INFO" (semantics of linux/vfio.h
// VFIO_DEVICE_GET_REGION_INFO). A region without a mappable range is the bare 32-byte
// structure. One with a mappable range is MMAP and CAPS with one SPARSE_MMAP capability
// naming that range, and the reply carries the file to map (file offset = region offset,
// the structure's `offset` 0); a request whose argsz cannot hold the capability gets the
// bare MMAP structure with the size it needs in argsz and no capability, CAPS flag or
// file — "retry larger". A request smaller than the structure is malformed.
VfioUserSession::Reply VfioUserSession::handle_region_info(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, sizeof(RegionInfoPayload)));
  const auto request = read_wire<RegionInfoPayload>(payload);
  const std::uint32_t index = request.index;
  if (index >= kRegionCount) {
    return make_error(ErrorCode::kInvalidArgument, "region index {} (device has {})", index,
                      kRegionCount);
  }
  const RegionInfo info = region_info(function_, index);
  std::uint32_t flags = 0;
  if (info.size != 0) {
    flags |= info.readable ? kRegionFlagRead : 0;
    flags |= info.writable ? kRegionFlagWrite : 0;
  }
  std::vector<std::uint8_t> out;
  // Doorbells the device never hears of need a device that polls its rings, which it
  // does only in shared guest RAM (DeviceCore: CoreOptions::idle_poll): a look through
  // DMA_READ messages, at moments of the device's choosing, would reach QEMU while it
  // holds its lock for a memory update and waits for this server (seen: SeaBIOS stuck
  // in its disk probe). So with RAM reached by messages (no map with a file; QEMU maps
  // its ROMs without one either way) the area is not offered and doorbells stay
  // messages. A client that has mapped nothing yet is offered it.
  const bool shared_ram = maps_.size() == 0 || maps_.unshared_count() < maps_.size();
  if (info.mappable_size == 0 || !shared_ram) {
    append_wire(out, RegionInfoPayload{sizeof(RegionInfoPayload), flags, index, 0, info.size, 0});
    return out;
  }
  constexpr auto kFullSize =
      static_cast<std::uint32_t>(sizeof(RegionInfoPayload) + sizeof(CapabilityHeader) +
                                 sizeof(SparseMmapHeader) + sizeof(SparseMmapEntry));
  flags |= kRegionFlagMmap;
  if (request.argsz < kFullSize) {
    // CAPS only with the capabilities (as libvfio-user answers): QEMU refuses a CAPS
    // reply whose cap_offset lies outside the structure.
    append_wire(out, RegionInfoPayload{kFullSize, flags, index, 0, info.size, 0});
    return out;
  }
  flags |= kRegionFlagCaps;
  VPCI_ASSIGN_OR_RETURN(reply_fd_, mappable_area_file(index, info.size));
  append_wire(
      out, RegionInfoPayload{kFullSize, flags, index,
                             static_cast<std::uint32_t>(sizeof(RegionInfoPayload)), info.size, 0});
  append_wire(out, CapabilityHeader{kCapSparseMmap, 1, 0});  // version 1, last in the chain
  append_wire(out, SparseMmapHeader{1, 0});
  append_wire(out, SparseMmapEntry{info.mappable_offset, info.mappable_size});
  return out;
}

Result<int> VfioUserSession::mappable_area_file(unsigned bar, std::uint64_t size) {
  UniqueFd& file = mappable_files_.at(bar);
  if (!file.valid()) {
    UniqueFd created(::memfd_create("vpci-mappable-bar", MFD_CLOEXEC));
    if (!created.valid())
      return make_error(ErrorCode::kIoError, "memfd_create: {}", errno_text(errno));
    if (::ftruncate(created.get(), static_cast<off_t>(size)) != 0)
      return make_error(ErrorCode::kIoError, "ftruncate of the BAR{} file: {}", bar,
                        errno_text(errno));
    file = std::move(created);
  }
  return file.get();
}

// Spec "VFIO_USER_DEVICE_GET_REGION_IO_FDS": this server offers no ioeventfds, so the
// answer for any present region is an empty list.
VfioUserSession::Reply VfioUserSession::handle_region_io_fds(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, sizeof(RegionIoFdsPayload)));
  const std::uint32_t index = read_wire<RegionIoFdsPayload>(payload).index;
  if (index >= kRegionCount || region_info(function_, index).size == 0) {
    return make_error(ErrorCode::kInvalidArgument, "region index {} does not exist", index);
  }
  std::vector<std::uint8_t> out;
  append_wire(out, RegionIoFdsPayload{sizeof(RegionIoFdsPayload), 0, index, 0});  // count 0
  return out;
}

// Spec "VFIO_USER_DEVICE_GET_IRQ_INFO". INTx is maskable and automasked (vfio INTx
// semantics; QEMU sends UNMASK after each interrupt). MSI and MSI-X have a fixed
// vector count; their per-vector masking is QEMU's (it emulates the MSI-X table), so
// they are not reported MASKABLE.
VfioUserSession::Reply VfioUserSession::handle_irq_info(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, sizeof(IrqInfoPayload)));
  const std::uint32_t index = read_wire<IrqInfoPayload>(payload).index;
  if (index >= kIrqIndexCount) {
    return make_error(ErrorCode::kInvalidArgument, "IRQ index {} (device has {})", index,
                      kIrqIndexCount);
  }
  std::uint32_t flags = kIrqInfoEventfd;
  if (index == kIrqIntx) flags |= kIrqInfoMaskable | kIrqInfoAutomasked;
  if (index == kIrqMsi || index == kIrqMsix) flags |= kIrqInfoNoResize;
  std::vector<std::uint8_t> out;
  append_wire(out,
              IrqInfoPayload{sizeof(IrqInfoPayload), flags, index, irq_count(function_, index)});
  return out;
}

// Spec "VFIO_USER_DEVICE_SET_IRQS" (semantics of linux/vfio.h VFIO_DEVICE_SET_IRQS):
// exactly one DATA_ and one ACTION_ flag; [start, start + count) within the index;
// DATA_NONE + TRIGGER with count 0 disables the index; DATA_EVENTFD carries `count`
// fds (none de-assigns the range); DATA_BOOL carries `count` bytes.
VfioUserSession::Reply VfioUserSession::handle_set_irqs(Payload payload,
                                                        std::vector<UniqueFd>& fds) {
  VPCI_TRY(check_argsz_payload(payload, sizeof(SetIrqsPayload)));
  const auto [argsz, flags, index, start, count] = read_wire<SetIrqsPayload>(payload);
  (void)argsz;  // checked above
  const std::uint32_t data = flags & kIrqSetDataMask;
  const std::uint32_t action = flags & kIrqSetActionMaskAll;
  if ((flags & ~(kIrqSetDataMask | kIrqSetActionMaskAll)) != 0 || !std::has_single_bit(data) ||
      !std::has_single_bit(action)) {
    return make_error(ErrorCode::kInvalidArgument, "SET_IRQS flags {:#x}", flags);
  }
  if (index >= kIrqIndexCount) {
    return make_error(ErrorCode::kInvalidArgument, "IRQ index {} (device has {})", index,
                      kIrqIndexCount);
  }
  if (data != kIrqSetDataEventfd && !fds.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "{} file descriptors without DATA_EVENTFD",
                      fds.size());
  }
  if (count == 0) {
    if (data == kIrqSetDataNone && action == kIrqSetActionTrigger) {
      irqs_.disable(index);
      return std::vector<std::uint8_t>{};
    }
    return make_error(ErrorCode::kInvalidArgument, "SET_IRQS count 0 with flags {:#x}", flags);
  }
  const std::uint64_t vectors = irq_count(function_, index);
  if (std::uint64_t{start} + count > vectors) {
    return make_error(ErrorCode::kInvalidArgument,
                      "SET_IRQS vectors [{}, +{}) of IRQ index {} with {} vectors", start, count,
                      index, vectors);
  }

  if (data == kIrqSetDataEventfd) {
    if (action != kIrqSetActionTrigger) {
      // A resample/unmask eventfd is a KVM irqfd feature; QEMU only asks for it when
      // KVM drives INTx, and falls back without it.
      return make_error(ErrorCode::kUnsupported, "eventfds are only supported for ACTION_TRIGGER");
    }
    if (!fds.empty() && fds.size() != count) {
      return make_error(ErrorCode::kInvalidArgument, "SET_IRQS count {} with {} file descriptors",
                        count, fds.size());
    }
    for (const UniqueFd& fd : fds) {
      if (!is_eventfd(fd.get())) {
        return make_error(ErrorCode::kInvalidArgument,
                          "SET_IRQS file descriptor is not an eventfd");
      }
    }
    if (fds.empty()) {
      std::vector<UniqueFd> none(count);
      irqs_.assign(index, start, std::move(none));
    } else {
      irqs_.assign(index, start, std::move(fds));
      fds.clear();
    }
    return std::vector<std::uint8_t>{};
  }

  std::vector<bool> selected(count, true);
  if (data == kIrqSetDataBool) {
    if (payload.size() < kSetIrqsSize + count) {
      return make_error(ErrorCode::kMalformedInput, "SET_IRQS DATA_BOOL needs {} bytes, got {}",
                        count, payload.size() - kSetIrqsSize);
    }
    for (std::uint32_t i = 0; i < count; ++i) selected[i] = payload[kSetIrqsSize + i] != 0;
  }
  for (std::uint32_t i = 0; i < count; ++i) {
    if (!selected[i]) continue;
    const std::uint32_t vector = start + i;
    if (action == kIrqSetActionTrigger) {
      irqs_.trigger(index, vector);
    } else if (action == kIrqSetActionMask) {
      irqs_.set_masked(index, vector, true);
    } else {
      irqs_.set_masked(index, vector, false);
      // vfio INTx is automasked: QEMU unmasks at the guest's EOI; a level still asserted
      // means the device still wants service, so it fires again.
      if (index == kIrqIntx && intx_asserted_) irqs_.trigger(kIrqIntx, 0);
    }
  }
  return std::vector<std::uint8_t>{};
}

Result<RegionInfo> VfioUserSession::checked_region_access(std::uint32_t region,
                                                          std::uint64_t offset, std::uint32_t count,
                                                          bool write) const {
  if (region >= kRegionCount) {
    return make_error(ErrorCode::kInvalidArgument, "region index {} (device has {})", region,
                      kRegionCount);
  }
  if (count > kMaxDataXferSize) {
    return make_error(ErrorCode::kInvalidArgument, "count {} exceeds max_data_xfer_size {}", count,
                      kMaxDataXferSize);
  }
  const RegionInfo info = region_info(function_, region);
  if (info.size == 0)
    return make_error(ErrorCode::kInvalidArgument, "region {} does not exist", region);
  if (write ? !info.writable : !info.readable) {
    return make_error(ErrorCode::kInvalidArgument, "region {} is not {}", region,
                      write ? "writable" : "readable");
  }
  if (offset > info.size || count > info.size - offset) {
    return make_error(ErrorCode::kOutOfRange,
                      "access [{:#x}, +{:#x}) outside region {} of {:#x} bytes", offset, count,
                      region, info.size);
  }
  return info;
}

// Spec "VFIO_USER_REGION_READ": offset, region, count; the reply repeats them and
// carries `count` bytes.
Status VfioUserSession::handle_region_read(Payload payload, std::vector<std::uint8_t>& out) {
  if (payload.size() != kRegionAccessSize) {
    return make_error(ErrorCode::kMalformedInput, "REGION_READ payload of {} bytes, need {}",
                      payload.size(), kRegionAccessSize);
  }
  const auto [offset, region, count] = read_wire<RegionAccessPayload>(payload);
  VPCI_TRY(checked_region_access(region, offset, count, /*write=*/false));
  // Reply payload: the request's offset/region/count, then the data.
  const std::size_t at = out.size();
  out.resize(at + kRegionAccessSize + count);
  std::memcpy(out.data() + at, payload.data(), kRegionAccessSize);
  const std::span<std::uint8_t> data(out.data() + at + kRegionAccessSize, count);
  if (region == kRegionConfig) {
    VPCI_TRY(function_.config_read(static_cast<std::uint32_t>(offset), data));
  } else {
    VPCI_TRY(bar_read(function_, region, offset, data));
  }
  return {};
}

// Spec "VFIO_USER_REGION_WRITE": offset, region, count, data; the reply repeats the
// first three. The message length must agree with count exactly.
Status VfioUserSession::handle_region_write(Payload payload, std::vector<std::uint8_t>& out) {
  if (payload.size() < kRegionAccessSize) {
    return make_error(ErrorCode::kMalformedInput, "REGION_WRITE payload of {} bytes, need {}",
                      payload.size(), kRegionAccessSize);
  }
  const auto [offset, region, count] = read_wire<RegionAccessPayload>(payload);
  if (payload.size() - kRegionAccessSize != count) {
    return make_error(ErrorCode::kMalformedInput, "REGION_WRITE count {} but {} data bytes", count,
                      payload.size() - kRegionAccessSize);
  }
  VPCI_TRY(checked_region_access(region, offset, count, /*write=*/true));
  const auto data = payload.subspan(kRegionAccessSize);
  if (region == kRegionConfig) {
    VPCI_TRY(function_.config_write(static_cast<std::uint32_t>(offset), data));
  } else {
    VPCI_TRY(bar_write(function_, region, offset, data));
  }
  // Reply payload: the request's offset/region/count, no data.
  out.insert(out.end(), payload.begin(), payload.begin() + kRegionAccessSize);
  return {};
}

// Spec "VFIO_USER_DEVICE_RESET": no payload.
VfioUserSession::Reply VfioUserSession::handle_device_reset(Payload payload) {
  if (!payload.empty()) {
    return make_error(ErrorCode::kMalformedInput, "DEVICE_RESET with {} payload bytes",
                      payload.size());
  }
  function_.reset();
  intx_asserted_ = false;
  return std::vector<std::uint8_t>{};
}

void VfioUserSession::set_client_channel(ClientChannel* channel) {
  messages_->attach(channel);
}

}  // namespace vpci::server
