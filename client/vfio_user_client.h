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
// request (DMA_READ/DMA_WRITE) is answered from the memory the client mapped (an access
// outside every map: EFAULT), whenever the client reads the socket: while it waits for a
// reply, or in serve_requests() while its caller waits for something else (an interrupt).
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
  // The same over a connected stream socket (socket activation, socketpair); `name`
  // stands for the path in messages.
  static Result<std::unique_ptr<VfioUserClient>> adopt(server::UniqueFd socket, std::string name,
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
  // A posted write (NO_REPLY, spec "Header"): nothing comes back, so a refused write is
  // silent — for doorbells, as QEMU sends them.
  Status region_write_posted(std::uint32_t region, std::uint64_t offset,
                             std::span<const std::uint8_t> data);
  Status reset();

  // DMA_MAP of client memory at `iova`: with `fd` (>= 0; `memory` maps it from
  // `fd_offset`) the server maps the same pages; without, it reaches them only through
  // DMA_READ/DMA_WRITE, which this client answers from `memory`. `memory` must stay valid
  // until dma_unmap (or the client's end).
  Status dma_map(std::uint64_t iova, std::span<std::uint8_t> memory, int fd = -1,
                 std::uint64_t fd_offset = 0, bool device_writable = true);
  Status dma_unmap(std::uint64_t iova, std::uint64_t size);

  // SET_IRQS: `eventfds` signal vectors start.. of IRQ index `index` (ACTION_TRIGGER,
  // DATA_EVENTFD), sent in pieces of the server's max_msg_fds.
  Status set_irq_eventfds(std::uint32_t index, std::uint32_t start, std::span<const int> eventfds);
  // SET_IRQS DATA_NONE with count 0: every vector of `index` disabled.
  Status disable_irqs(std::uint32_t index);
  // SET_IRQS ACTION_UNMASK for vector `start` of `index` (INTx is automasked: unmask
  // after each interrupt, as QEMU does).
  Status unmask_irq(std::uint32_t index, std::uint32_t start);

  // Answers the server's DMA requests that arrive within `wait`; returns when `wait` has
  // passed without one (at once for 0) or on an error.
  Status serve_requests(std::chrono::milliseconds wait);
  // DMA requests answered so far, and how many of them were refused.
  [[nodiscard]] std::uint64_t dma_requests() const { return dma_requests_; }
  [[nodiscard]] std::uint64_t dma_refused() const { return dma_refused_; }

 private:
  struct Reply {
    std::vector<std::uint8_t> payload;  // after the header
    std::vector<server::UniqueFd> fds;
  };
  VfioUserClient(server::UniqueFd socket, std::string path, ClientOptions options)
      : socket_(std::move(socket)), path_(std::move(path)), options_(options) {}

  struct DmaRegion {
    std::uint64_t iova = 0;
    std::span<std::uint8_t> memory;
    bool device_writable = true;
  };

  Status negotiate();
  // One SET_IRQS (spec "VFIO_USER_DEVICE_SET_IRQS") with `fds` attached.
  Status set_irqs(std::uint32_t flags, std::uint32_t index, std::uint32_t start,
                  std::uint32_t count, std::span<const int> fds);
  // Sends one command and waits for its reply; an error reply becomes an error naming
  // the command and the server's errno.
  Result<Reply> call(std::uint16_t command, std::span<const std::uint8_t> payload,
                     std::span<const int> fds = {});
  std::uint16_t send_command(std::uint16_t command, std::span<const std::uint8_t> payload,
                             std::span<const int> fds, std::uint32_t extra_flags, Status& sent);
  Status send_all(std::span<const std::uint8_t> bytes, std::span<const int> fds = {});
  // Answers a request (`message`, header included) the server sent.
  Status answer_server_request(std::span<const std::uint8_t> message);
  // The client memory behind [iova, iova + length), if one map holds all of it.
  [[nodiscard]] std::optional<std::span<std::uint8_t>> dma_target(std::uint64_t iova,
                                                                  std::uint64_t length,
                                                                  bool write) const;
  [[nodiscard]] std::uint32_t transfer_size() const;

  server::UniqueFd socket_;
  std::string path_;
  ClientOptions options_;
  ServerVersion version_;
  server::MessageReader reader_;
  std::uint16_t next_id_ = 1;
  std::vector<DmaRegion> dma_;
  std::uint64_t dma_requests_ = 0;
  std::uint64_t dma_refused_ = 0;
};

}  // namespace vpci::client
