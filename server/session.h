// The vfio-user message dispatcher for one client connection, independent of sockets:
// whole messages (bytes + received fds) in, reply bytes out. `VfioUserServer`
// (socket_server.h) feeds it from an AF_UNIX socket; tests and the fuzzer feed it
// directly.
//
// Rules it enforces (spec = qemu/qemu docs/interop/vfio-user.rst, v0.9.x):
//   * VERSION comes first; any other command before it gets an EINVAL error reply.
//   * Every length, offset, index and fd count is checked before use; a bad request
//     gets an error reply (header only, positive errno, spec "Header") and the
//     connection continues. A message that cannot be framed (size field disagrees
//     with the bytes, or the peer sends a reply although this server never sends
//     commands) asks the caller to close the connection.
//   * fds are accepted only on DMA_MAP (0 or 1) and SET_IRQS with DATA_EVENTFD; fds
//     anywhere else, or on a request that fails, are closed (they are UniqueFds).
//   * A command with NO_REPLY never gets a reply, not even an error (reference §7).
//   * DMA_READ/DMA_WRITE are server-to-client commands: a client that sends them gets
//     ENOTSUP. REGION_WRITE_MULTI, DEVICE_FEATURE, migration and unknown commands get
//     ENOTSUP too; write_multiple and migration are not advertised.
//   * GET_REGION_IO_FDS succeeds with zero fds: no ioeventfds, notifications arrive as
//     (posted) REGION_WRITEs. The server never sends fds: no region is mmappable and
//     there is no twin socket.
//
// The device. The session drives a `pci::Function` (pci/function.h) directly: region
// and IRQ numbering from server/vfio_regions.h; DMA_MAP/UNMAP feed the device's one
// `virtio::GuestMemory` (server/dma_maps.h), maps without an fd through message-based
// DMA (server/message_dma.h); the session is the function's `pci::InterruptOutput`:
// MSI-X vector messages become eventfd triggers (QEMU emulates the MSI-X table, so the
// function is built with MsixTableOwner::kBus), and the INTx level becomes vfio's
// automasked edge — asserting triggers once, and every unmask from the client while the
// level is still asserted triggers again (reference vfio-user.md §5).
//
// When the device first touches memory that is not shared (a map without an fd), the
// session logs one notice for the connection (base/log.h) saying what it costs and how to
// share guest RAM; maps nobody touches (QEMU's ROM areas) cause no message.
//
// Threading: every call comes from the device's loop thread (socket_server.h); handle()
// may run nested inside a DMA wait of an outer handle() (server/connection.h), with its
// own reply buffer.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "pci/function.h"
#include "server/dma_maps.h"
#include "server/irq_eventfds.h"
#include "server/message_dma.h"
#include "server/protocol.h"
#include "server/unique_fd.h"
#include "server/vfio_regions.h"
#include "virtio/guest_memory.h"

namespace vpci::server {

struct IncomingMessage {
  std::vector<std::uint8_t> bytes;  // header + payload; bytes.size() is what was received
  std::vector<UniqueFd> fds;        // SCM_RIGHTS fds that arrived with it, in order
  bool fds_truncated = false;       // the peer sent more fds than the server accepts
};

struct DispatchResult {
  std::optional<std::vector<std::uint8_t>> reply;  // nothing for NO_REPLY
  int reply_fd = -1;  // to pass with the reply (the session's; valid while it lives)
  bool close_connection = false;
};

class VfioUserSession final : private pci::InterruptOutput {
 public:
  // Starts serving `function`, whose device reaches guest memory through `memory`, to a
  // newly connected client: becomes the function's interrupt output. `label` names the
  // device in log messages (the socket path).
  VfioUserSession(pci::Function& function, std::shared_ptr<virtio::GuestMemory> memory,
                  std::string label = {});
  VfioUserSession(const VfioUserSession&) = delete;
  VfioUserSession& operator=(const VfioUserSession&) = delete;
  // The client is gone: resets the function, detaches its interrupt output, removes
  // every DMA map (waiting for in-flight users) and closes all eventfds.
  ~VfioUserSession();

  DispatchResult handle(IncomingMessage message);

  // The same without allocating per message, for the socket server: `bytes` is one
  // whole message, `fds` the descriptors that came with it (taken or closed before
  // returning). The reply, if any, is written to `reply` (its capacity is reused).
  enum class Disposition { kReply, kNoReply, kClose };
  Disposition handle(std::span<const std::uint8_t> bytes, std::vector<UniqueFd>& fds,
                     bool fds_truncated, std::vector<std::uint8_t>& reply);
  // The descriptor to pass with the reply handle() just produced (SCM_RIGHTS), or -1:
  // the shared file behind a region's mappable areas (GET_REGION_INFO with MMAP). Owned
  // by the session; the peer gets its own copy.
  [[nodiscard]] int reply_fd() const { return reply_fd_; }

  // Enables message-based DMA through `channel` (which must outlive the session) for
  // calls made on the calling thread, which must be the one calling handle().
  void set_client_channel(ClientChannel* channel);

  [[nodiscard]] bool negotiated() const { return negotiated_; }
  // DMA_READ/DMA_WRITE requests sent to the client (tests).
  [[nodiscard]] std::uint64_t dma_requests_sent() const { return messages_->requests_sent(); }
  [[nodiscard]] const DmaMaps& dma_maps() const { return maps_; }
  [[nodiscard]] IrqEventfds& interrupts() { return irqs_; }
  [[nodiscard]] std::uint64_t interrupts_signalled() const { return irqs_.signalled(); }
  // The reason for the most recent error reply or close, for logs and tests.
  [[nodiscard]] const std::string& last_error() const { return last_error_; }
  [[nodiscard]] std::uint64_t error_count() const {
    return error_count_ + messages_->error_count();
  }

 private:
  using Payload = std::span<const std::uint8_t>;
  using Reply = Result<std::vector<std::uint8_t>>;  // reply payload (after the header)

  Status dispatch_into(const vfio_user::Header& header, Payload payload, std::vector<UniqueFd>& fds,
                       std::vector<std::uint8_t>& out);
  Reply dispatch(const vfio_user::Header& header, Payload payload, std::vector<UniqueFd>& fds);
  Reply handle_version(Payload payload);
  Reply handle_dma_map(Payload payload, std::vector<UniqueFd>& fds);
  Reply handle_dma_unmap(Payload payload);
  Reply handle_device_get_info(Payload payload);
  Reply handle_region_info(Payload payload);
  Reply handle_region_io_fds(Payload payload);
  Reply handle_irq_info(Payload payload);
  Reply handle_set_irqs(Payload payload, std::vector<UniqueFd>& fds);
  Status handle_region_read(Payload payload, std::vector<std::uint8_t>& out);
  Status handle_region_write(Payload payload, std::vector<std::uint8_t>& out);
  Reply handle_device_reset(Payload payload);
  Result<RegionInfo> checked_region_access(std::uint32_t region, std::uint64_t offset,
                                           std::uint32_t count, bool write) const;

  // pci::InterruptOutput
  void set_intx_level(bool asserted) override;
  void signal_msix(std::uint16_t vector, std::uint64_t address, std::uint32_t data) override;
  void notice_unshared_memory(std::uint64_t address);
  // The file a client maps for the mappable areas of BAR `bar` (pci::BarInfo): a memfd
  // of the BAR's size, created on first use; the device never reads it.
  Result<int> mappable_area_file(unsigned bar, std::uint64_t size);

  pci::Function& function_;
  std::string label_;
  std::shared_ptr<MessageDma> messages_;
  DmaMaps maps_;
  IrqEventfds irqs_;
  bool intx_asserted_ = false;
  bool negotiated_ = false;
  std::uint64_t dma_errors_seen_ = 0;
  std::string last_error_;
  std::uint64_t error_count_ = 0;
  std::array<UniqueFd, pci::kBarCount> mappable_files_;
  int reply_fd_ = -1;
};

// The errno an error reply carries for `code` (spec "Header": always positive).
int errno_for(ErrorCode code);

}  // namespace vpci::server
