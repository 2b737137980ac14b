#include "server/session.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <string_view>

#include <nlohmann/json.hpp>

#include "server/trace.h"

namespace vpci::server {

using namespace vfio_user;

int errno_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kOutOfRange:
    case ErrorCode::kMalformedInput:
    case ErrorCode::kProtocolViolation:
      return EINVAL;
    case ErrorCode::kNotFound:
      return ENOENT;
    case ErrorCode::kAlreadyExists:
      return EEXIST;
    case ErrorCode::kNoSpace:
      return ENOSPC;
    case ErrorCode::kConflict:
      return EBUSY;
    case ErrorCode::kUnsupported:
      return ENOTSUP;
    case ErrorCode::kIoError:
      return EIO;
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
  return n > 0 && std::string_view(link.data(), static_cast<std::size_t>(n)) == "anon_inode:[eventfd]";
}

}  // namespace

// ---- IrqEventfds ------------------------------------------------------------------

IrqEventfds::IrqEventfds(const PciFunction& function) {
  vectors_.resize(kIrqIndexCount);
  for (unsigned i = 0; i < kIrqIndexCount; ++i) vectors_[i].resize(function.irq_count(i));
}

bool IrqEventfds::signal_locked(unsigned irq_index, Vector& vector) {
  if (!vector.eventfd.valid()) return false;
  if (vector.masked) {
    // INTx is level-triggered: the source re-asserts from irq_unmasked() instead of
    // being remembered, or the guest would see one spurious interrupt per EOI.
    if (irq_index != kIrqIntx) vector.pending = true;
    return false;
  }
  const std::uint64_t one = 1;
  // An eventfd write only fails when the counter would overflow, i.e. the client has
  // not consumed ~2^64 signals: the interrupt is pending anyway.
  [[maybe_unused]] const ssize_t written = ::write(vector.eventfd.get(), &one, sizeof(one));
  signalled_.fetch_add(1, std::memory_order_relaxed);
  // vfio INTx is automasked (GET_IRQ_INFO reports AUTOMASKED): masked until unmask.
  if (irq_index == kIrqIntx) vector.masked = true;
  return true;
}

bool IrqEventfds::trigger(unsigned irq_index, unsigned vector) {
  std::lock_guard lock(mutex_);
  if (irq_index >= vectors_.size() || vector >= vectors_[irq_index].size()) return false;
  return signal_locked(irq_index, vectors_[irq_index][vector]);
}

void IrqEventfds::assign(unsigned irq_index, std::uint32_t start, std::vector<UniqueFd> fds) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < fds.size(); ++i) {
    vectors_[irq_index][start + i].eventfd = std::move(fds[i]);
  }
}

void IrqEventfds::disable(unsigned irq_index) {
  std::lock_guard lock(mutex_);
  for (Vector& v : vectors_[irq_index]) v = Vector{};
}

void IrqEventfds::set_masked(unsigned irq_index, std::uint32_t vector, bool masked) {
  std::lock_guard lock(mutex_);
  Vector& v = vectors_[irq_index][vector];
  v.masked = masked;
  if (!masked && v.pending) {
    v.pending = false;
    signal_locked(irq_index, v);
  }
}

bool IrqEventfds::has_eventfd(unsigned irq_index, std::uint32_t vector) const {
  std::lock_guard lock(mutex_);
  return vectors_[irq_index][vector].eventfd.valid();
}

bool IrqEventfds::masked(unsigned irq_index, std::uint32_t vector) const {
  std::lock_guard lock(mutex_);
  return vectors_[irq_index][vector].masked;
}

void IrqEventfds::clear() {
  std::lock_guard lock(mutex_);
  for (auto& index : vectors_) {
    for (Vector& v : index) v = Vector{};
  }
}

// ---- VfioUserSession -------------------------------------------------------------

VfioUserSession::VfioUserSession(PciFunction& function) : function_(function), irqs_(function) {
  function_.connected(irqs_, memory_);
}

VfioUserSession::~VfioUserSession() {
  // The client is gone (or being dropped): nothing may wait on it any more.
  channel_ = nullptr;
  memory_.set_message_dma(nullptr);
  // Reset first so the device stops DMA and interrupts, then take memory away.
  function_.reset();
  for (const GuestMemoryRegion& region : memory_.regions()) function_.dma_region_removed(region);
  memory_.clear();
  irqs_.clear();
  function_.disconnected();
}

DispatchResult VfioUserSession::handle(IncomingMessage message) {
  DispatchResult result;
  std::vector<std::uint8_t> out;
  switch (handle(message.bytes, message.fds, message.fds_truncated, out)) {
    case Disposition::kReply: result.reply = std::move(out); break;
    case Disposition::kNoReply: break;
    case Disposition::kClose: result.close_connection = true; break;
  }
  return result;
}

VfioUserSession::Disposition VfioUserSession::handle(std::span<const std::uint8_t> bytes,
                                                     std::vector<UniqueFd>& fds,
                                                     bool fds_truncated,
                                                     std::vector<std::uint8_t>& out) {
  // Whatever fds the handler does not take are closed on every path (UniqueFd).
  struct CloseFds {
    std::vector<UniqueFd>& fds;
    ~CloseFds() { fds.clear(); }
  } close_fds{fds};
  if (bytes.size() < kHeaderSize) {
    last_error_ = "message shorter than the header";
    ++error_count_;
    return Disposition::kClose;
  }
  const Header header = decode_header(bytes);
  if (header.message_size != bytes.size()) {
    last_error_ = fmt::format("message_size {} but {} bytes received", header.message_size,
                              bytes.size());
    ++error_count_;
    return Disposition::kClose;
  }
  if ((header.flags & kFlagTypeMask) != kTypeCommand) {
    // This server sends no commands, so a reply (or an unknown type) means the peer
    // has lost track of the conversation.
    last_error_ = fmt::format("message type {} where a command was expected",
                              header.flags & kFlagTypeMask);
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
  // A DMA exchange inside the command found the connection unusable (last_error_ says
  // why): nothing more can be said on it.
  if (channel_lost_) return Disposition::kClose;
  if ((header.flags & kFlagNoReply) != 0) return Disposition::kNoReply;  // spec "Header": No_reply

  Header reply_header{header.msg_id, header.command, 0, kTypeReply, 0};
  if (!status) {
    out.resize(kHeaderSize);
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
    case kRegionRead:
      VPCI_TRY(check_no_fds(fds));
      return handle_region_read(payload, out);
    case kRegionWrite:
      VPCI_TRY(check_no_fds(fds));
      return handle_region_write(payload, out);
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
                        "DMA_READ/DMA_WRITE are server-to-client commands; this server uses "
                        "fd-backed guest memory only");
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
  const auto major = load<std::uint16_t>(payload, 0);
  const auto minor = load<std::uint16_t>(payload, 2);
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
            return make_error(ErrorCode::kMalformedInput, "capability \"{}\" is not an unsigned number",
                              key);
          }
        }
        // Our DMA_READ/DMA_WRITE pieces must fit the client's limit (spec "Version":
        // max_data_xfer_size, default 1 MiB).
        if (auto it = caps->find("max_data_xfer_size"); it != caps->end()) {
          if (it->get<std::uint64_t>() == 0) {
            return make_error(ErrorCode::kInvalidArgument, "max_data_xfer_size 0");
          }
          client_max_data_xfer_ = it->get<std::uint64_t>();
        }
        // The client's DMA page sizes must include ours (spec "Version": pgsizes).
        if (auto it = caps->find("pgsizes"); it != caps->end() &&
                                             (it->get<std::uint64_t>() & kPageSize) == 0) {
          return make_error(ErrorCode::kUnsupported, "client pgsizes {:#x} lack {:#x}",
                            it->get<std::uint64_t>(), kPageSize);
        }
        // Unknown capabilities (migration, twin_socket, write_multiple, ...) are simply
        // not echoed: the reply's set is what both sides then use.
      }
    }
  }
  const nlohmann::json reply_caps = {
      {"capabilities",
       {{"max_msg_fds", kMaxMsgFds},
        {"max_data_xfer_size", kMaxDataXferSize},
        {"max_dma_maps", kMaxDmaMaps},
        {"pgsizes", kPageSize}}}};
  const std::string text = reply_caps.dump();
  std::vector<std::uint8_t> out;
  append(out, kMajorVersion);
  append(out, std::min<std::uint16_t>(minor, kMaxMinorVersion));
  out.insert(out.end(), text.begin(), text.end());
  out.push_back(0);
  negotiated_ = true;
  return out;
}

// Spec "VFIO_USER_DMA_MAP": argsz, flags, offset, address, size; 0 or 1 fd.
VfioUserSession::Reply VfioUserSession::handle_dma_map(Payload payload, std::vector<UniqueFd>& fds) {
  VPCI_TRY(check_argsz_payload(payload, kDmaMapSize));
  const auto flags = load<std::uint32_t>(payload, 4);
  const auto file_offset = load<std::uint64_t>(payload, 8);
  const auto iova = load<std::uint64_t>(payload, 16);
  const auto size = load<std::uint64_t>(payload, 24);
  if (fds.size() > 1) {
    return make_error(ErrorCode::kInvalidArgument, "{} file descriptors, at most 1", fds.size());
  }
  if ((flags & ~(kDmaMapRead | kDmaMapWrite)) != 0 || (flags & kDmaMapRead) == 0) {
    return make_error(ErrorCode::kInvalidArgument, "DMA map flags {:#x}", flags);
  }
  const int fd = fds.empty() ? -1 : fds[0].get();
  VPCI_ASSIGN_OR_RETURN(const GuestMemoryRegion region,
                        memory_.add(iova, size, file_offset, fd, (flags & kDmaMapWrite) != 0));
  function_.dma_region_added(region);
  return std::vector<std::uint8_t>{};  // spec: the reply has no payload
}

// Spec "VFIO_USER_DMA_UNMAP": argsz, flags, address, size; the reply echoes the request.
VfioUserSession::Reply VfioUserSession::handle_dma_unmap(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, kDmaUnmapSize));
  const auto flags = load<std::uint32_t>(payload, 4);
  const auto iova = load<std::uint64_t>(payload, 8);
  const auto size = load<std::uint64_t>(payload, 16);
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
    // Drop every reference before replying (spec: the client may reuse the memory).
    for (const GuestMemoryRegion& region : memory_.regions()) function_.dma_region_removed(region);
    memory_.clear();
  } else {
    VPCI_ASSIGN_OR_RETURN(const std::size_t index, memory_.find_exact(iova, size));
    function_.dma_region_removed(memory_.regions()[index]);
    memory_.erase(index);
  }
  std::vector<std::uint8_t> out(payload.begin(), payload.begin() + kDmaUnmapSize);
  store(out, 0, static_cast<std::uint32_t>(kDmaUnmapSize));
  return out;
}

// Spec "VFIO_USER_DEVICE_GET_INFO": a PCI device that can be reset, 9 regions, 5 IRQ
// indexes (reference §5 suggests exactly this).
VfioUserSession::Reply VfioUserSession::handle_device_get_info(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, kDeviceInfoSize));
  std::vector<std::uint8_t> out;
  append(out, static_cast<std::uint32_t>(kDeviceInfoSize));
  append(out, kDeviceFlagReset | kDeviceFlagPci);
  append(out, static_cast<std::uint32_t>(kRegionCount));
  append(out, static_cast<std::uint32_t>(kIrqIndexCount));
  return out;
}

// Spec "VFIO_USER_DEVICE_GET_REGION_INFO". No region has capabilities, so the
// structure is always 32 bytes and the "argsz too small, retry with the size in the
// reply" case cannot arise; a request smaller than the structure is malformed. No
// region is MMAP (see RegionInfo), so the reply never carries an fd.
VfioUserSession::Reply VfioUserSession::handle_region_info(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, kRegionInfoSize));
  const auto index = load<std::uint32_t>(payload, 8);
  if (index >= kRegionCount) {
    return make_error(ErrorCode::kInvalidArgument, "region index {} (device has {})", index,
                      kRegionCount);
  }
  const RegionInfo info = function_.region_info(index);
  std::uint32_t flags = 0;
  if (info.size != 0) {
    flags |= info.readable ? kRegionFlagRead : 0;
    flags |= info.writable ? kRegionFlagWrite : 0;
  }
  std::vector<std::uint8_t> out;
  append(out, static_cast<std::uint32_t>(kRegionInfoSize));
  append(out, flags);
  append(out, index);
  append(out, std::uint32_t{0});  // cap_offset
  append(out, info.size);
  append(out, std::uint64_t{0});  // mmap offset: unused, nothing is mmappable
  return out;
}

// Spec "VFIO_USER_DEVICE_GET_REGION_IO_FDS": this server offers no ioeventfds, so the
// answer for any present region is an empty list.
VfioUserSession::Reply VfioUserSession::handle_region_io_fds(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, kRegionIoFdsSize));
  const auto index = load<std::uint32_t>(payload, 8);
  if (index >= kRegionCount || function_.region_info(index).size == 0) {
    return make_error(ErrorCode::kInvalidArgument, "region index {} does not exist", index);
  }
  std::vector<std::uint8_t> out;
  append(out, static_cast<std::uint32_t>(kRegionIoFdsSize));
  append(out, std::uint32_t{0});
  append(out, index);
  append(out, std::uint32_t{0});  // count
  return out;
}

// Spec "VFIO_USER_DEVICE_GET_IRQ_INFO". INTx is maskable and automasked (vfio INTx
// semantics; QEMU sends UNMASK after each interrupt). MSI and MSI-X have a fixed
// vector count; their per-vector masking is QEMU's (it emulates the MSI-X table), so
// they are not reported MASKABLE.
VfioUserSession::Reply VfioUserSession::handle_irq_info(Payload payload) {
  VPCI_TRY(check_argsz_payload(payload, kIrqInfoSize));
  const auto index = load<std::uint32_t>(payload, 8);
  if (index >= kIrqIndexCount) {
    return make_error(ErrorCode::kInvalidArgument, "IRQ index {} (device has {})", index,
                      kIrqIndexCount);
  }
  std::uint32_t flags = kIrqInfoEventfd;
  if (index == kIrqIntx) flags |= kIrqInfoMaskable | kIrqInfoAutomasked;
  if (index == kIrqMsi || index == kIrqMsix) flags |= kIrqInfoNoResize;
  std::vector<std::uint8_t> out;
  append(out, static_cast<std::uint32_t>(kIrqInfoSize));
  append(out, flags);
  append(out, index);
  append(out, function_.irq_count(index));
  return out;
}

// Spec "VFIO_USER_DEVICE_SET_IRQS" (semantics of linux/vfio.h VFIO_DEVICE_SET_IRQS):
// exactly one DATA_ and one ACTION_ flag; [start, start + count) within the index;
// DATA_NONE + TRIGGER with count 0 disables the index; DATA_EVENTFD carries `count`
// fds (none de-assigns the range); DATA_BOOL carries `count` bytes.
VfioUserSession::Reply VfioUserSession::handle_set_irqs(Payload payload, std::vector<UniqueFd>& fds) {
  VPCI_TRY(check_argsz_payload(payload, kSetIrqsSize));
  const auto flags = load<std::uint32_t>(payload, 4);
  const auto index = load<std::uint32_t>(payload, 8);
  const auto start = load<std::uint32_t>(payload, 12);
  const auto count = load<std::uint32_t>(payload, 16);
  const std::uint32_t data = flags & kIrqSetDataMask;
  const std::uint32_t action = flags & kIrqSetActionMaskAll;
  if ((flags & ~(kIrqSetDataMask | kIrqSetActionMaskAll)) != 0 || std::popcount(data) != 1 ||
      std::popcount(action) != 1) {
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
  const std::uint64_t vectors = function_.irq_count(index);
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
        return make_error(ErrorCode::kInvalidArgument, "SET_IRQS file descriptor is not an eventfd");
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
      function_.irq_unmasked(index, vector);
    }
  }
  return std::vector<std::uint8_t>{};
}

Result<RegionInfo> VfioUserSession::checked_region_access(std::uint32_t region, std::uint64_t offset,
                                                          std::uint32_t count, bool write) const {
  if (region >= kRegionCount) {
    return make_error(ErrorCode::kInvalidArgument, "region index {} (device has {})", region,
                      kRegionCount);
  }
  if (count > kMaxDataXferSize) {
    return make_error(ErrorCode::kInvalidArgument, "count {} exceeds max_data_xfer_size {}", count,
                      kMaxDataXferSize);
  }
  const RegionInfo info = function_.region_info(region);
  if (info.size == 0) return make_error(ErrorCode::kInvalidArgument, "region {} does not exist", region);
  if (write ? !info.writable : !info.readable) {
    return make_error(ErrorCode::kInvalidArgument, "region {} is not {}", region,
                      write ? "writable" : "readable");
  }
  if (offset > info.size || count > info.size - offset) {
    return make_error(ErrorCode::kOutOfRange, "access [{:#x}, +{:#x}) outside region {} of {:#x} bytes",
                      offset, count, region, info.size);
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
  const auto offset = load<std::uint64_t>(payload, 0);
  const auto region = load<std::uint32_t>(payload, 8);
  const auto count = load<std::uint32_t>(payload, 12);
  VPCI_TRY(checked_region_access(region, offset, count, /*write=*/false));
  // Reply payload: the request's offset/region/count, then the data.
  const std::size_t at = out.size();
  out.resize(at + kRegionAccessSize + count);
  std::memcpy(out.data() + at, payload.data(), kRegionAccessSize);
  const std::span<std::uint8_t> data(out.data() + at + kRegionAccessSize, count);
  if (region == kRegionConfig) {
    VPCI_TRY(function_.config_read(static_cast<std::uint32_t>(offset), data));
  } else {
    VPCI_TRY(function_.region_read(region, offset, data));
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
  const auto offset = load<std::uint64_t>(payload, 0);
  const auto region = load<std::uint32_t>(payload, 8);
  const auto count = load<std::uint32_t>(payload, 12);
  if (payload.size() - kRegionAccessSize != count) {
    return make_error(ErrorCode::kMalformedInput, "REGION_WRITE count {} but {} data bytes", count,
                      payload.size() - kRegionAccessSize);
  }
  VPCI_TRY(checked_region_access(region, offset, count, /*write=*/true));
  const auto data = payload.subspan(kRegionAccessSize);
  if (region == kRegionConfig) {
    VPCI_TRY(function_.config_write(static_cast<std::uint32_t>(offset), data));
  } else {
    VPCI_TRY(function_.region_write(region, offset, data));
  }
  // Reply payload: the request's offset/region/count, no data.
  out.insert(out.end(), payload.begin(), payload.begin() + kRegionAccessSize);
  return {};
}

// Spec "VFIO_USER_DEVICE_RESET": no payload.
VfioUserSession::Reply VfioUserSession::handle_device_reset(Payload payload) {
  if (!payload.empty()) {
    return make_error(ErrorCode::kMalformedInput, "DEVICE_RESET with {} payload bytes", payload.size());
  }
  function_.reset();
  return std::vector<std::uint8_t>{};
}

// ---- message-based DMA (spec "VFIO_USER_DMA_READ", "VFIO_USER_DMA_WRITE") ---------

void VfioUserSession::set_client_channel(ClientChannel* channel) {
  channel_ = channel;
  channel_thread_ = std::this_thread::get_id();
  memory_.set_message_dma(channel == nullptr ? nullptr : this);
}

Status VfioUserSession::check_message_dma() const {
  if (channel_ == nullptr) {
    return make_error(ErrorCode::kUnsupported,
                      "guest memory without a file descriptor needs a client connection");
  }
  if (std::this_thread::get_id() != channel_thread_) {
    return make_error(ErrorCode::kUnsupported,
                      "guest memory without a file descriptor is only reachable from the server "
                      "thread");
  }
  if (channel_lost_) return make_error(ErrorCode::kIoError, "the client connection is gone");
  if (in_dma_exchange_) {
    return make_error(ErrorCode::kProtocolViolation, "nested DMA exchange");  // cannot happen
  }
  return {};
}

Error VfioUserSession::dma_protocol_error(Error error) {
  last_error_ = error.message;
  ++error_count_;
  return error;
}

namespace {

// The server's transfer size: the client's max_data_xfer_size, capped by our own
// receive limit (a DMA_READ reply must fit kMaxMessageSize).
std::size_t dma_piece(std::uint64_t client_max) {
  return static_cast<std::size_t>(std::min<std::uint64_t>(client_max, kMaxDataXferSize));
}

}  // namespace

Status VfioUserSession::dma_read(std::uint64_t iova, std::span<std::uint8_t> data) {
  VPCI_TRY(check_message_dma());
  const std::size_t piece = dma_piece(client_max_data_xfer_);
  for (std::size_t done = 0; done < data.size(); done += piece) {
    const std::size_t n = std::min(piece, data.size() - done);
    VPCI_TRY(dma_read_transfer(iova + done, data.subspan(done, n)));
  }
  return {};
}

Status VfioUserSession::dma_write(std::uint64_t iova, std::span<const std::uint8_t> data) {
  VPCI_TRY(check_message_dma());
  if (dma_layout_ == DmaLayout::kUnknown && !data.empty()) {
    // Learn the client's layout before sending data it could misplace (see session.h).
    std::uint8_t probe = 0;
    VPCI_TRY(dma_read_transfer(iova, std::span(&probe, 1)));
  }
  const std::size_t piece = dma_piece(client_max_data_xfer_);
  for (std::size_t done = 0; done < data.size(); done += piece) {
    const std::size_t n = std::min(piece, data.size() - done);
    VPCI_TRY(dma_write_transfer(iova + done, data.subspan(done, n)));
  }
  return {};
}

Result<VfioUserSession::Payload> VfioUserSession::dma_exchange(std::uint16_t command) {
  const std::uint16_t msg_id = next_dma_msg_id_++;
  encode_header(dma_request_, Header{msg_id, command, static_cast<std::uint32_t>(dma_request_.size()),
                                     kTypeCommand, 0});
  std::size_t reply_fds = 0;
  std::string detail;
  in_dma_exchange_ = true;
  ++dma_requests_sent_;
  const ClientChannel::Outcome outcome =
      channel_->exchange(dma_request_, msg_id, dma_reply_, reply_fds, detail);
  in_dma_exchange_ = false;
  switch (outcome) {
    case ClientChannel::Outcome::kReply: break;
    case ClientChannel::Outcome::kTimedOut:
      return tl::unexpected(dma_protocol_error(Error{
          ErrorCode::kIoError,
          fmt::format("{} msg_id {}: no reply from the client in time", command_name_of(command),
                      msg_id)}));
    case ClientChannel::Outcome::kLost:
      channel_lost_ = true;
      return tl::unexpected(dma_protocol_error(Error{
          ErrorCode::kIoError,
          fmt::format("{} msg_id {}: {}", command_name_of(command), msg_id, detail)}));
  }
  // The channel guarantees a whole reply message with our msg_id.
  const Header header = decode_header(dma_reply_);
  const Payload payload = Payload(dma_reply_).subspan(kHeaderSize);
  if (header.command != command || reply_fds != 0) {
    return tl::unexpected(dma_protocol_error(Error{
        ErrorCode::kMalformedInput,
        fmt::format("{} msg_id {}: reply for command {} with {} fds", command_name_of(command),
                    msg_id, header.command, reply_fds)}));
  }
  if ((header.flags & kFlagError) != 0) {
    // A well-formed refusal (QEMU: EFAULT/ENODEV/EPERM from its DMA API): the access
    // fails, the conversation is fine.
    last_error_ = fmt::format("{} msg_id {}: the client answered errno {}", command_name_of(command),
                              msg_id, header.error);
    return make_error(ErrorCode::kIoError, "{}", last_error_);
  }
  return payload;
}

Status VfioUserSession::dma_read_transfer(std::uint64_t iova, std::span<std::uint8_t> data) {
  const std::size_t n = data.size();
  dma_request_.resize(kHeaderSize);
  append(dma_request_, iova);
  append(dma_request_, static_cast<std::uint64_t>(n));  // spec layout; QEMU reads the low u32
  VPCI_ASSIGN_OR_RETURN(const Payload payload, dma_exchange(kDmaRead));
  // Layout detection rule: see session.h.
  std::size_t data_offset = 0;
  if (payload.size() == 16 + n && load<std::uint64_t>(payload, 8) == n) {
    data_offset = 16;
    dma_layout_ = DmaLayout::kSpec;
  } else if (payload.size() == 12 + n && load<std::uint32_t>(payload, 8) == n) {
    data_offset = 12;
    dma_layout_ = DmaLayout::kQemu;
  } else {
    return tl::unexpected(dma_protocol_error(Error{
        ErrorCode::kMalformedInput,
        fmt::format("DMA_READ reply of {} payload bytes for {} bytes at {:#x}", payload.size(), n,
                    iova)}));
  }
  if (load<std::uint64_t>(payload, 0) != iova) {
    return tl::unexpected(dma_protocol_error(Error{
        ErrorCode::kMalformedInput,
        fmt::format("DMA_READ reply for address {:#x}, asked {:#x}", load<std::uint64_t>(payload, 0),
                    iova)}));
  }
  std::memcpy(data.data(), payload.data() + data_offset, n);
  return {};
}

Status VfioUserSession::dma_write_transfer(std::uint64_t iova, std::span<const std::uint8_t> data) {
  const std::size_t n = data.size();
  dma_request_.resize(kHeaderSize);
  append(dma_request_, iova);
  if (dma_layout_ == DmaLayout::kQemu) {
    append(dma_request_, static_cast<std::uint32_t>(n));
  } else {
    append(dma_request_, static_cast<std::uint64_t>(n));
  }
  const std::size_t at = dma_request_.size();
  dma_request_.resize(at + n);
  std::memcpy(dma_request_.data() + at, data.data(), n);
  VPCI_ASSIGN_OR_RETURN(const Payload payload, dma_exchange(kDmaWrite));
  // QEMU replies with the header only; otherwise address and count are echoed.
  bool valid = payload.empty();
  if (payload.size() == 12) {
    valid = load<std::uint64_t>(payload, 0) == iova && load<std::uint32_t>(payload, 8) == n;
  } else if (payload.size() == 16) {
    valid = load<std::uint64_t>(payload, 0) == iova && load<std::uint64_t>(payload, 8) == n;
  }
  if (!valid) {
    return tl::unexpected(dma_protocol_error(Error{
        ErrorCode::kMalformedInput,
        fmt::format("DMA_WRITE reply of {} payload bytes does not echo {} bytes at {:#x}",
                    payload.size(), n, iova)}));
  }
  return {};
}

}  // namespace vpci::server
