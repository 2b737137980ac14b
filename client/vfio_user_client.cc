#include "client/vfio_user_client.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "server/trace.h"

namespace vpci::client {
namespace {

namespace wire = vpci::server::vfio_user;
using server::UniqueFd;
using Clock = std::chrono::steady_clock;

// The versions this client speaks: major 0, minors up to 2 (the spec's and libvfio-user's).
constexpr std::uint16_t kMajor = 0;
constexpr std::uint16_t kMinor = 2;
// A region-info reply with capabilities is retried once at the size the server asks
// for; more than this is not a region description.
constexpr std::uint32_t kMaxRegionInfoSize = 64 * 1024;
// Largest capability JSON accepted in a VERSION reply.
constexpr std::size_t kMaxVersionJson = std::size_t{16} * 1024;

using wire::CapabilityHeader;
using wire::kCapSparseMmap;
using wire::kCapType;
using wire::kRegionFlagCaps;
using wire::SparseMmapEntry;
using wire::SparseMmapHeader;
using wire::TypeCapability;

std::string command_name(std::uint16_t command) {
  return server::command_name_of(command);
}

Error protocol_error(const std::string& path, const std::string& what) {
  return Error{ErrorCode::kProtocolViolation, fmt::format("vfio-user server {}: {}", path, what)};
}

// Reads the region-info capability chain that starts at `offset` in `payload`.
Status parse_region_caps(std::span<const std::uint8_t> payload, std::uint32_t offset,
                         RegionInfo& info, const std::string& path) {
  // Each capability must start after the previous one: a chain that points back loops.
  std::uint32_t floor = sizeof(wire::RegionInfoPayload);
  for (int hops = 0; offset != 0; ++hops) {
    if (hops == 64 || offset < floor || offset > payload.size() ||
        payload.size() - offset < sizeof(CapabilityHeader)) {
      return tl::unexpected(protocol_error(
          path, fmt::format("region {}: capability at offset {} outside the {}-byte reply or "
                            "out of order",
                            info.index, offset, payload.size())));
    }
    const auto header = wire::read_wire<CapabilityHeader>(payload.subspan(offset));
    const auto body = payload.subspan(offset + sizeof(CapabilityHeader));
    if (header.id == kCapSparseMmap) {
      if (body.size() < sizeof(SparseMmapHeader))
        return tl::unexpected(protocol_error(path, "SPARSE_MMAP capability truncated"));
      const auto sparse = wire::read_wire<SparseMmapHeader>(body);
      const auto areas = body.subspan(sizeof(SparseMmapHeader));
      if (sparse.nr_areas > areas.size() / sizeof(SparseMmapEntry)) {
        return tl::unexpected(protocol_error(
            path,
            fmt::format("region {}: SPARSE_MMAP announces {} areas, the reply holds {}", info.index,
                        sparse.nr_areas, areas.size() / sizeof(SparseMmapEntry))));
      }
      for (std::uint32_t i = 0; i < sparse.nr_areas; ++i) {
        const auto area =
            wire::read_wire<SparseMmapEntry>(areas.subspan(i * sizeof(SparseMmapEntry)));
        if (area.offset > info.size || area.size > info.size - area.offset) {
          return tl::unexpected(protocol_error(
              path, fmt::format("region {}: sparse area {:#x}+{:#x} beyond the {:#x}-byte region",
                                info.index, area.offset, area.size, info.size)));
        }
        info.sparse_mmap.push_back({area.offset, area.size});
      }
    } else if (header.id == kCapType) {
      if (body.size() < sizeof(TypeCapability))
        return tl::unexpected(protocol_error(path, "TYPE capability truncated"));
      const auto type = wire::read_wire<TypeCapability>(body);
      info.type = std::pair{type.type, type.subtype};
    }
    // Other capabilities are skipped: a client need not know every one.
    floor = offset + static_cast<std::uint32_t>(sizeof(CapabilityHeader));
    offset = header.next;
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<VfioUserClient>> VfioUserClient::connect(const std::string& path,
                                                                ClientOptions options) {
  sockaddr_un address{};
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "vfio-user socket path \"{}\" must be 1 to {} characters", path,
                      sizeof(address.sun_path) - 1);
  }
  address.sun_family = AF_UNIX;
  std::copy(path.begin(), path.end(), address.sun_path);
  // Non-blocking while connecting: a server whose listen backlog is full makes a blocking
  // AF_UNIX connect wait for ever; this one retries until the timeout.
  UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!socket.valid())
    return make_error(ErrorCode::kIoError, "socket(AF_UNIX): {}", errno_text(errno));
  const auto deadline = Clock::now() + options.timeout;
  while (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) !=
         0) {
    if ((errno == EAGAIN || errno == EINTR) && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    return make_error(
        ErrorCode::kIoError, "cannot connect to vfio-user server {}: {}", path,
        errno == EAGAIN ? fmt::format("its backlog stayed full for {} ms", options.timeout.count())
                        : errno_text(errno));
  }
  return adopt(std::move(socket), path, options);
}

Result<std::unique_ptr<VfioUserClient>> VfioUserClient::adopt(UniqueFd socket, std::string name,
                                                              ClientOptions options) {
  // Replies are bounded by what one message may hold (server/protocol.h).
  options.max_data_xfer_size = std::min(options.max_data_xfer_size, wire::kMaxDataXferSize);
  const int flags = ::fcntl(socket.get(), F_GETFL);
  if (flags < 0 || ::fcntl(socket.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
    return make_error(ErrorCode::kIoError, "fcntl(O_NONBLOCK): {}", errno_text(errno));
  std::unique_ptr<VfioUserClient> client(
      new VfioUserClient(std::move(socket), std::move(name), options));
  VPCI_TRY(client->negotiate());
  return client;
}

VfioUserClient::~VfioUserClient() = default;

std::uint32_t VfioUserClient::transfer_size() const {
  return static_cast<std::uint32_t>(
      std::min<std::uint64_t>(options_.max_data_xfer_size, version_.max_data_xfer_size));
}

Status VfioUserClient::negotiate() {
  const nlohmann::json offer = {
      {"capabilities",
       {{"max_msg_fds", wire::kMaxMsgFds}, {"max_data_xfer_size", options_.max_data_xfer_size}}}};
  std::vector<std::uint8_t> payload;
  wire::append_wire(payload, wire::VersionPayload{kMajor, kMinor});
  const std::string text = offer.dump();
  payload.insert(payload.end(), text.begin(), text.end());
  payload.push_back(0);
  VPCI_ASSIGN_OR_RETURN(const Reply reply, call(wire::kVersion, payload));
  if (reply.payload.size() < sizeof(wire::VersionPayload))
    return tl::unexpected(protocol_error(path_, "VERSION reply shorter than 4 bytes"));
  const auto version = wire::read_wire<wire::VersionPayload>(reply.payload);
  if (version.major != kMajor || version.minor > kMinor) {
    return tl::unexpected(
        protocol_error(path_, fmt::format("VERSION reply {}.{}: this client speaks {}.0 to {}.{}",
                                          version.major, version.minor, kMajor, kMajor, kMinor)));
  }
  version_.major = version.major;
  version_.minor = version.minor;
  const auto json = std::span(reply.payload).subspan(sizeof(wire::VersionPayload));
  if (json.empty()) return {};
  if (json.size() > kMaxVersionJson || json.back() != 0) {
    return tl::unexpected(protocol_error(
        path_, "VERSION capabilities are not a NUL-terminated JSON object of at most 16 KiB"));
  }
  version_.capabilities_json.assign(json.begin(), json.end() - 1);
  const auto parsed = nlohmann::json::parse(version_.capabilities_json, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object())
    return tl::unexpected(protocol_error(path_, "VERSION capabilities are not a JSON object"));
  const auto caps = parsed.find("capabilities");
  if (caps == parsed.end()) return {};
  if (!caps->is_object())
    return tl::unexpected(protocol_error(path_, "VERSION \"capabilities\" is not an object"));
  // An unsigned number within [low, high], or the capability is refused.
  const auto number = [&](const char* key, std::uint64_t low, std::uint64_t high,
                          auto& out) -> Status {
    const auto it = caps->find(key);
    if (it == caps->end()) return {};
    if (!it->is_number_unsigned() || it->template get<std::uint64_t>() < low ||
        it->template get<std::uint64_t>() > high) {
      return tl::unexpected(
          protocol_error(path_, fmt::format("VERSION capability {} = {}: expected {} to {}", key,
                                            it->dump(), low, high)));
    }
    out = static_cast<std::remove_reference_t<decltype(out)>>(it->template get<std::uint64_t>());
    return {};
  };
  VPCI_TRY(number("max_msg_fds", 0, 253, version_.max_msg_fds));  // SCM_MAX_FD
  // A transfer below a page could not read a config space in reasonable time; above
  // 64 MiB is what QEMU refuses too (reference §2).
  VPCI_TRY(number("max_data_xfer_size", 4096, 64u << 20, version_.max_data_xfer_size));
  VPCI_TRY(number("pgsizes", 4096, UINT64_MAX, version_.pgsizes));
  VPCI_TRY(number("max_dma_maps", 1, 65535, version_.max_dma_maps));
  if (const auto it = caps->find("write_multiple"); it != caps->end())
    version_.write_multiple = it->is_boolean() && it->get<bool>();
  version_.migration = caps->contains("migration");
  if (const auto it = caps->find("twin_socket"); it != caps->end() && it->is_object())
    version_.twin_socket = it->value("supported", false);
  return {};
}

Status VfioUserClient::send_all(std::span<const std::uint8_t> bytes, std::span<const int> fds) {
  const auto deadline = Clock::now() + options_.timeout;
  std::size_t done = 0;
  while (done < bytes.size()) {
    iovec iov{const_cast<std::uint8_t*>(bytes.data() + done), bytes.size() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    // The fds travel with the message's first bytes (SCM_RIGHTS, reference §3).
    std::vector<char> control;
    if (done == 0 && !fds.empty()) {
      control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      cmsghdr* header = CMSG_FIRSTHDR(&msg);
      header->cmsg_level = SOL_SOCKET;
      header->cmsg_type = SCM_RIGHTS;
      header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t n = ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return make_error(ErrorCode::kIoError,
                          "vfio-user server {}: not reading (timed out after {} ms)", path_,
                          options_.timeout.count());
      }
      pollfd p{socket_.get(), POLLOUT, 0};
      (void)::poll(&p, 1, static_cast<int>(left.count()));
      continue;
    }
    return make_error(ErrorCode::kIoError, "vfio-user server {}: send: {}", path_,
                      errno_text(errno));
  }
  return {};
}

std::uint16_t VfioUserClient::send_command(std::uint16_t command,
                                           std::span<const std::uint8_t> payload,
                                           std::span<const int> fds, std::uint32_t extra_flags,
                                           Status& sent) {
  const std::uint16_t id = next_id_++;
  std::vector<std::uint8_t> message;
  wire::Header header;
  header.msg_id = id;
  header.command = command;
  header.message_size = static_cast<std::uint32_t>(wire::kHeaderSize + payload.size());
  header.flags = wire::kTypeCommand | extra_flags;
  wire::encode_header(message, header);
  message.resize(wire::kHeaderSize + payload.size());
  if (!payload.empty())
    std::memcpy(message.data() + wire::kHeaderSize, payload.data(), payload.size());
  sent = send_all(message, fds);
  return id;
}

Result<VfioUserClient::Reply> VfioUserClient::call(std::uint16_t command,
                                                   std::span<const std::uint8_t> payload,
                                                   std::span<const int> fds) {
  if (!socket_.valid()) {
    return make_error(ErrorCode::kIoError, "vfio-user server {}: connection closed earlier", path_);
  }
  Status sent;
  const std::uint16_t id = send_command(command, payload, fds, 0, sent);
  VPCI_TRY(sent);

  const auto deadline = Clock::now() + options_.timeout;
  const auto fail = [&](const std::string& what) -> Result<Reply> {
    socket_.reset();  // the stream can no longer be trusted to be in step
    return tl::unexpected(
        protocol_error(path_, fmt::format("{}: {}", command_name(command), what)));
  };
  while (true) {
    std::span<const std::uint8_t> bytes;
    std::vector<UniqueFd> received;
    bool truncated = false;
    switch (reader_.next(socket_.get(), bytes, received, truncated, deadline)) {
      case server::MessageReader::Status::kMessage: break;
      case server::MessageReader::Status::kClosed:
        socket_.reset();
        return make_error(ErrorCode::kIoError,
                          "vfio-user server {}: closed the connection during {}", path_,
                          command_name(command));
      case server::MessageReader::Status::kTooLarge:
        return fail(fmt::format("a message larger than {} bytes", wire::kMaxMessageSize));
      case server::MessageReader::Status::kTimedOut:
        socket_.reset();
        return make_error(ErrorCode::kIoError, "vfio-user server {}: no reply to {} within {} ms",
                          path_, command_name(command), options_.timeout.count());
    }
    if (truncated) return fail("more file descriptors than a message may carry");
    const wire::Header reply = wire::decode_header(bytes);
    if ((reply.flags & wire::kFlagTypeMask) == wire::kTypeCommand) {
      // The server's own request (DMA_READ/DMA_WRITE) while the reply is awaited.
      if (!received.empty()) return fail("a request of the server with file descriptors");
      VPCI_TRY(answer_server_request(bytes));
      continue;
    }
    if ((reply.flags & wire::kFlagTypeMask) != wire::kTypeReply)
      return fail(fmt::format("a message of type {}", reply.flags & wire::kFlagTypeMask));
    if (reply.msg_id != id || reply.command != command) {
      return fail(fmt::format("a reply to message {} ({}) while {} was awaited", reply.msg_id,
                              command_name(reply.command), id));
    }
    if ((reply.flags & wire::kFlagError) != 0) {
      if (bytes.size() != wire::kHeaderSize) return fail("an error reply with a payload");
      return make_error(ErrorCode::kIoError, "vfio-user server {}: {} failed: {}", path_,
                        command_name(command), errno_text(static_cast<int>(reply.error)));
    }
    Reply result;
    result.payload.assign(bytes.begin() + wire::kHeaderSize, bytes.end());
    result.fds = std::move(received);
    return result;
  }
}

std::optional<std::span<std::uint8_t>> VfioUserClient::dma_target(std::uint64_t iova,
                                                                  std::uint64_t length,
                                                                  bool write) const {
  for (const DmaRegion& region : dma_) {
    if (iova < region.iova || iova - region.iova > region.memory.size()) continue;
    const std::uint64_t at = iova - region.iova;
    if (length > region.memory.size() - at) return std::nullopt;  // runs past this map
    if (write && !region.device_writable) return std::nullopt;
    return region.memory.subspan(at, length);
  }
  return std::nullopt;
}

Status VfioUserClient::answer_server_request(std::span<const std::uint8_t> message) {
  const wire::Header header = wire::decode_header(message);
  const auto payload = message.subspan(wire::kHeaderSize);
  ++dma_requests_;
  wire::Header reply;
  reply.msg_id = header.msg_id;
  reply.command = header.command;
  reply.flags = wire::kTypeReply;
  std::vector<std::uint8_t> bytes(wire::kHeaderSize);
  // DMA_READ / DMA_WRITE (spec layout): u64 address, u64 count, then (write) the data.
  const bool dma = header.command == wire::kDmaRead || header.command == wire::kDmaWrite;
  int error = dma ? 0 : EINVAL;  // nothing else is a request a server may send
  std::uint64_t address = 0;
  std::uint64_t count = 0;
  if (dma && payload.size() >= 16) {
    address = wire::load<std::uint64_t>(payload, 0);
    count = wire::load<std::uint64_t>(payload, 8);
    const bool write = header.command == wire::kDmaWrite;
    const auto target = count <= transfer_size() ? dma_target(address, count, write) : std::nullopt;
    if (!target) {
      error = EFAULT;
    } else if (write && payload.size() != 16 + count) {
      error = EINVAL;
    } else {
      wire::append(bytes, address);
      wire::append(bytes, count);
      if (write) {
        if (count != 0) std::memcpy(target->data(), payload.data() + 16, count);
      } else {
        const std::size_t at = bytes.size();
        bytes.resize(at + count);
        if (count != 0) std::memcpy(bytes.data() + at, target->data(), count);
      }
    }
  } else if (dma) {
    error = EINVAL;
  }
  if (error != 0) {
    ++dma_refused_;
    bytes.resize(wire::kHeaderSize);
    reply.flags |= wire::kFlagError;
    reply.error = static_cast<std::uint32_t>(error);
  }
  reply.message_size = static_cast<std::uint32_t>(bytes.size());
  wire::encode_header(bytes, reply);
  return send_all(bytes);
}

Status VfioUserClient::serve_requests(std::chrono::milliseconds wait) {
  if (!socket_.valid()) {
    return make_error(ErrorCode::kIoError, "vfio-user server {}: connection closed earlier", path_);
  }
  const auto deadline = Clock::now() + wait;
  while (true) {
    if (!reader_.has_buffered_message()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{socket_.get(), POLLIN, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return {};
    }
    std::span<const std::uint8_t> bytes;
    std::vector<UniqueFd> fds;
    bool truncated = false;
    switch (reader_.next(socket_.get(), bytes, fds, truncated, Clock::now() + options_.timeout)) {
      case server::MessageReader::Status::kMessage: break;
      case server::MessageReader::Status::kClosed:
        socket_.reset();
        return make_error(ErrorCode::kIoError, "vfio-user server {}: closed the connection", path_);
      case server::MessageReader::Status::kTooLarge:
      case server::MessageReader::Status::kTimedOut:
        socket_.reset();
        return tl::unexpected(
            protocol_error(path_, "a request cut short or larger than any valid"));
    }
    const wire::Header header = wire::decode_header(bytes);
    if ((header.flags & wire::kFlagTypeMask) != wire::kTypeCommand || truncated || !fds.empty()) {
      socket_.reset();
      return tl::unexpected(
          protocol_error(path_, fmt::format("an unexpected {} (msg_id {}) with nothing awaited",
                                            command_name(header.command), header.msg_id)));
    }
    VPCI_TRY(answer_server_request(bytes));
  }
}

Result<DeviceInfo> VfioUserClient::device_info() {
  std::vector<std::uint8_t> payload;
  wire::append_wire(payload, wire::DeviceInfoPayload{sizeof(wire::DeviceInfoPayload), 0, 0, 0});
  VPCI_ASSIGN_OR_RETURN(const Reply reply, call(wire::kDeviceGetInfo, payload));
  if (reply.payload.size() < sizeof(wire::DeviceInfoPayload))
    return tl::unexpected(protocol_error(path_, "GET_INFO reply shorter than 16 bytes"));
  const auto info = wire::read_wire<wire::DeviceInfoPayload>(reply.payload);
  if (info.num_regions > kMaxRegions || info.num_irqs > kMaxIrqIndexes) {
    return tl::unexpected(protocol_error(
        path_, fmt::format("GET_INFO announces {} regions and {} IRQ indexes (at most {} and {})",
                           info.num_regions, info.num_irqs, kMaxRegions, kMaxIrqIndexes)));
  }
  return DeviceInfo{info.flags, info.num_regions, info.num_irqs};
}

Result<RegionInfo> VfioUserClient::region_info(std::uint32_t index) {
  std::uint32_t argsz = sizeof(wire::RegionInfoPayload);
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::vector<std::uint8_t> payload;
    wire::append_wire(payload, wire::RegionInfoPayload{argsz, 0, index, 0, 0, 0});
    VPCI_ASSIGN_OR_RETURN(const Reply reply, call(wire::kDeviceGetRegionInfo, payload));
    if (reply.payload.size() < sizeof(wire::RegionInfoPayload))
      return tl::unexpected(protocol_error(path_, "GET_REGION_INFO reply shorter than 32 bytes"));
    const auto fixed = wire::read_wire<wire::RegionInfoPayload>(reply.payload);
    if (fixed.index != index) {
      return tl::unexpected(protocol_error(
          path_,
          fmt::format("GET_REGION_INFO for region {} answered for region {}", index, fixed.index)));
    }
    if (reply.fds.size() > 1) {
      return tl::unexpected(protocol_error(
          path_, fmt::format("GET_REGION_INFO region {} came with {} fds (at most 1)", index,
                             reply.fds.size())));
    }
    // The server needs more room for the capabilities: ask once more with that much.
    if (fixed.argsz > argsz && reply.payload.size() <= argsz && attempt == 0) {
      if (fixed.argsz > kMaxRegionInfoSize) {
        return tl::unexpected(protocol_error(
            path_, fmt::format("GET_REGION_INFO region {} needs {} bytes (at most {})", index,
                               fixed.argsz, kMaxRegionInfoSize)));
      }
      argsz = fixed.argsz;
      continue;
    }
    RegionInfo info;
    info.index = index;
    info.flags = fixed.flags;
    info.size = fixed.size;
    info.mmap_offset = fixed.offset;
    info.has_fd = !reply.fds.empty();  // closed with the reply: this client maps nothing
    if ((fixed.flags & kRegionFlagCaps) != 0 && fixed.cap_offset != 0)
      VPCI_TRY(parse_region_caps(reply.payload, fixed.cap_offset, info, path_));
    return info;
  }
  return tl::unexpected(
      protocol_error(path_, fmt::format("GET_REGION_INFO region {}: the reply grew twice", index)));
}

Result<IrqInfo> VfioUserClient::irq_info(std::uint32_t index) {
  std::vector<std::uint8_t> payload;
  wire::append_wire(payload, wire::IrqInfoPayload{sizeof(wire::IrqInfoPayload), 0, index, 0});
  VPCI_ASSIGN_OR_RETURN(const Reply reply, call(wire::kDeviceGetIrqInfo, payload));
  if (reply.payload.size() < sizeof(wire::IrqInfoPayload))
    return tl::unexpected(protocol_error(path_, "GET_IRQ_INFO reply shorter than 16 bytes"));
  const auto info = wire::read_wire<wire::IrqInfoPayload>(reply.payload);
  if (info.index != index) {
    return tl::unexpected(protocol_error(
        path_, fmt::format("GET_IRQ_INFO for index {} answered for index {}", index, info.index)));
  }
  return IrqInfo{index, info.flags, info.count};
}

Status VfioUserClient::region_read(std::uint32_t region, std::uint64_t offset,
                                   std::span<std::uint8_t> out) {
  const std::uint32_t piece = transfer_size();
  for (std::size_t done = 0; done < out.size();) {
    const auto count = static_cast<std::uint32_t>(std::min<std::size_t>(piece, out.size() - done));
    std::vector<std::uint8_t> payload;
    wire::append_wire(payload, wire::RegionAccessPayload{offset + done, region, count});
    VPCI_ASSIGN_OR_RETURN(const Reply reply, call(wire::kRegionRead, payload));
    if (reply.payload.size() != sizeof(wire::RegionAccessPayload) + count) {
      return tl::unexpected(protocol_error(
          path_, fmt::format("REGION_READ of {} bytes at region {} offset {:#x} answered with {} "
                             "payload bytes",
                             count, region, offset + done, reply.payload.size())));
    }
    const auto echoed = wire::read_wire<wire::RegionAccessPayload>(reply.payload);
    if (echoed.region != region || echoed.offset != offset + done || echoed.count != count) {
      return tl::unexpected(protocol_error(
          path_, fmt::format("REGION_READ reply names region {} offset {:#x} count {}, not what "
                             "was asked",
                             echoed.region, echoed.offset, echoed.count)));
    }
    std::memcpy(out.data() + done, reply.payload.data() + sizeof(wire::RegionAccessPayload), count);
    done += count;
  }
  return {};
}

Status VfioUserClient::region_write(std::uint32_t region, std::uint64_t offset,
                                    std::span<const std::uint8_t> data) {
  const std::uint32_t piece = transfer_size();
  for (std::size_t done = 0; done < data.size();) {
    const auto count = static_cast<std::uint32_t>(std::min<std::size_t>(piece, data.size() - done));
    std::vector<std::uint8_t> payload;
    wire::append_wire(payload, wire::RegionAccessPayload{offset + done, region, count});
    const std::size_t at = payload.size();
    payload.resize(at + count);
    std::memcpy(payload.data() + at, data.data() + done, count);
    VPCI_ASSIGN_OR_RETURN(const Reply reply, call(wire::kRegionWrite, payload));
    if (reply.payload.size() < sizeof(wire::RegionAccessPayload)) {
      return tl::unexpected(
          protocol_error(path_, "REGION_WRITE reply shorter than its 16-byte header"));
    }
    done += count;
  }
  return {};
}

Status VfioUserClient::region_write_posted(std::uint32_t region, std::uint64_t offset,
                                           std::span<const std::uint8_t> data) {
  if (!socket_.valid()) {
    return make_error(ErrorCode::kIoError, "vfio-user server {}: connection closed earlier", path_);
  }
  if (data.size() > transfer_size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "a posted write of {} bytes is larger than the transfer size {}", data.size(),
                      transfer_size());
  }
  std::vector<std::uint8_t> payload;
  wire::append_wire(
      payload, wire::RegionAccessPayload{offset, region, static_cast<std::uint32_t>(data.size())});
  const std::size_t at = payload.size();
  payload.resize(at + data.size());
  if (!data.empty()) std::memcpy(payload.data() + at, data.data(), data.size());
  Status sent;
  (void)send_command(wire::kRegionWrite, payload, {}, wire::kFlagNoReply, sent);
  return sent;
}

Status VfioUserClient::dma_map(std::uint64_t iova, std::span<std::uint8_t> memory, int fd,
                               std::uint64_t fd_offset, bool device_writable) {
  if (memory.empty() || iova + memory.size() < iova) {
    return make_error(ErrorCode::kInvalidArgument, "DMA_MAP of {} bytes at {:#x}", memory.size(),
                      iova);
  }
  for (const DmaRegion& region : dma_) {
    if (iova < region.iova + region.memory.size() && region.iova < iova + memory.size()) {
      return make_error(ErrorCode::kConflict, "DMA_MAP at {:#x}+{:#x} overlaps the map at {:#x}",
                        iova, memory.size(), region.iova);
    }
  }
  std::vector<std::uint8_t> payload;
  wire::append_wire(
      payload, wire::DmaMapPayload{sizeof(wire::DmaMapPayload),
                                   wire::kDmaMapRead | (device_writable ? wire::kDmaMapWrite : 0u),
                                   fd >= 0 ? fd_offset : 0, iova, memory.size()});
  const std::array<int, 1> fds = {fd};
  VPCI_ASSIGN_OR_RETURN(
      const Reply reply,
      call(wire::kDmaMap, payload, fd >= 0 ? std::span<const int>(fds) : std::span<const int>()));
  (void)reply;
  dma_.push_back({iova, memory, device_writable});
  return {};
}

Status VfioUserClient::dma_unmap(std::uint64_t iova, std::uint64_t size) {
  std::vector<std::uint8_t> payload;
  wire::append_wire(payload, wire::DmaUnmapPayload{sizeof(wire::DmaUnmapPayload), 0, iova, size});
  VPCI_ASSIGN_OR_RETURN(const Reply reply, call(wire::kDmaUnmap, payload));
  (void)reply;
  std::erase_if(dma_,
                [&](const DmaRegion& r) { return r.iova == iova && r.memory.size() == size; });
  return {};
}

Status VfioUserClient::set_irq_eventfds(std::uint32_t index, std::uint32_t start,
                                        std::span<const int> eventfds) {
  const std::size_t piece = std::max<std::uint32_t>(version_.max_msg_fds, 1);
  for (std::size_t done = 0; done < eventfds.size(); done += piece) {
    const auto count = static_cast<std::uint32_t>(std::min(piece, eventfds.size() - done));
    VPCI_TRY(set_irqs(wire::kIrqSetDataEventfd | wire::kIrqSetActionTrigger, index,
                      static_cast<std::uint32_t>(start + done), count,
                      eventfds.subspan(done, count)));
  }
  return {};
}

Status VfioUserClient::set_irqs(std::uint32_t flags, std::uint32_t index, std::uint32_t start,
                                std::uint32_t count, std::span<const int> fds) {
  std::vector<std::uint8_t> payload;
  wire::append_wire(payload,
                    wire::SetIrqsPayload{sizeof(wire::SetIrqsPayload), flags, index, start, count});
  VPCI_ASSIGN_OR_RETURN(const Reply reply, call(wire::kDeviceSetIrqs, payload, fds));
  (void)reply;
  return {};
}

Status VfioUserClient::disable_irqs(std::uint32_t index) {
  return set_irqs(wire::kIrqSetDataNone | wire::kIrqSetActionTrigger, index, 0, 0, {});
}

Status VfioUserClient::unmask_irq(std::uint32_t index, std::uint32_t start) {
  return set_irqs(wire::kIrqSetDataNone | wire::kIrqSetActionUnmask, index, start, 1, {});
}

Status VfioUserClient::reset() {
  VPCI_ASSIGN_OR_RETURN(const Reply reply, call(wire::kDeviceReset, {}));
  (void)reply;
  return {};
}

}  // namespace vpci::client
