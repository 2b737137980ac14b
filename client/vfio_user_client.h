// A vfio-user client (protocol v0.9.2, reference ../shared/reference/vfio-user.md): the
// other end of what `vpci serve` (and libvfio-user, SPDK, ...) serve. It connects to a
// server's socket, negotiates the version and capabilities, and asks what the device is
// (GET_INFO, GET_REGION_INFO with its capabilities, GET_IRQ_INFO), reads and writes its
// regions and resets it.
//
// Everything a server sends is hostile input: every reply is checked against the request
// (id, command, type, size, the fields the request fixed) before a field is used, every
// size is bounded before memory is reserved for it, every fd that arrives is owned at once
// and closed unless a caller takes it, and every wait has the client's timeout — a server
// that never answers costs `timeout`, then an error naming the command. A server's own
// request (DMA_READ/DMA_WRITE) arriving while the client waits is answered: with an error,
// since this client maps no memory for the server to reach.
//
// Not thread-safe: one caller at a time (the protocol is a request/reply stream).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "server/message_reader.h"
#include "server/unique_fd.h"

namespace vpci::client {

struct ClientOptions {
  // Every wait for the server: the connection, each reply.
  std::chrono::milliseconds timeout{5000};
  // What the client offers (VERSION "max_data_xfer_size"); reads and writes are split to
  // the smaller of this and the server's.
  std::uint32_t max_data_xfer_size = 1u << 20;
};

// The server's VERSION reply; absent capabilities take the spec's defaults.
struct ServerVersion {
  std::uint16_t major = 0;
  std::uint16_t minor = 0;
  std::uint32_t max_msg_fds = 1;
  std::uint64_t max_data_xfer_size = 1u << 20;
  std::uint64_t pgsizes = 4096;
  std::uint32_t max_dma_maps = 65535;
  bool write_multiple = false;
  bool migration = false;
  bool twin_socket = false;
  std::string capabilities_json;  // as the server sent it (empty: none)
};

struct DeviceInfo {
  std::uint32_t flags = 0;  // vfio_user::kDeviceFlagReset | kDeviceFlagPci
  std::uint32_t num_regions = 0;
  std::uint32_t num_irqs = 0;
};

struct SparseMmapArea {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

struct RegionInfo {
  std::uint32_t index = 0;
  std::uint32_t flags = 0;  // kRegionFlagRead | Write | Mmap | Caps
  std::uint64_t size = 0;
  std::uint64_t mmap_offset = 0;  // where an mmap of the region's fd starts
  bool has_fd = false;            // the server sent an fd to mmap (closed: the client maps nothing)
  std::vector<SparseMmapArea> sparse_mmap;                      // capability SPARSE_MMAP (1)
  std::optional<std::pair<std::uint32_t, std::uint32_t>> type;  // capability TYPE (2)
};

struct IrqInfo {
  std::uint32_t index = 0;
  std::uint32_t flags = 0;  // kIrqInfoEventfd | Maskable | Automasked | NoResize
  std::uint32_t count = 0;
};

// Region and IRQ indexes of a PCI device (vfio-user spec "Regions", linux/vfio.h).
inline constexpr std::uint32_t kPciBarRegionCount = 6;
inline constexpr std::uint32_t kPciRomRegion = 6;
inline constexpr std::uint32_t kPciConfigRegion = 7;
inline constexpr std::uint32_t kPciVgaRegion = 8;
// The most regions and IRQ indexes a reply may announce: what QEMU accepts (reference §6).
inline constexpr std::uint32_t kMaxRegions = 100;
inline constexpr std::uint32_t kMaxIrqIndexes = 50;

class VfioUserClient {
 public:
  // Connects to the server's socket at `path` and negotiates VERSION 0.x.
  static Result<std::unique_ptr<VfioUserClient>> connect(const std::string& path,
                                                         ClientOptions options = {});
  VfioUserClient(const VfioUserClient&) = delete;
  VfioUserClient& operator=(const VfioUserClient&) = delete;
  ~VfioUserClient();

  [[nodiscard]] const ServerVersion& version() const { return version_; }
  [[nodiscard]] const std::string& path() const { return path_; }

  Result<DeviceInfo> device_info();
  Result<RegionInfo> region_info(std::uint32_t index);
  Result<IrqInfo> irq_info(std::uint32_t index);
  // Reads `out.size()` bytes at `offset` of region `region`, in pieces of at most the
  // negotiated transfer size; every reply must carry exactly what was asked.
  Status region_read(std::uint32_t region, std::uint64_t offset, std::span<std::uint8_t> out);
  Status region_write(std::uint32_t region, std::uint64_t offset,
                      std::span<const std::uint8_t> data);
  Status reset();

 private:
  struct Reply {
    std::vector<std::uint8_t> payload;  // after the header
    std::vector<server::UniqueFd> fds;
  };
  VfioUserClient(server::UniqueFd socket, std::string path, ClientOptions options)
      : socket_(std::move(socket)), path_(std::move(path)), options_(options) {}

  Status negotiate();
  // Sends one command and waits for its reply; an error reply becomes an error naming
  // the command and the server's errno.
  Result<Reply> call(std::uint16_t command, std::span<const std::uint8_t> payload);
  Status send_all(std::span<const std::uint8_t> bytes);
  // Answers a request the server sent while a reply was awaited.
  Status answer_server_request(const server::vfio_user::Header& header);
  [[nodiscard]] std::uint32_t transfer_size() const;

  server::UniqueFd socket_;
  std::string path_;
  ClientOptions options_;
  ServerVersion version_;
  server::MessageReader reader_;
  std::uint16_t next_id_ = 1;
};

}  // namespace vpci::client
