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
//   * DMA_READ/DMA_WRITE are server-to-client commands; this server never issues them
//     (it needs fd-backed guest memory, reference §7) and answers a client that sends
//     them with ENOTSUP. REGION_WRITE_MULTI, DEVICE_FEATURE, migration and unknown
//     commands get ENOTSUP too; write_multiple and migration are not advertised.
//   * GET_REGION_IO_FDS succeeds with zero fds: no ioeventfds, notifications arrive as
//     (posted) REGION_WRITEs.
// The server never sends fds: no region is mmappable and there is no twin socket.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "server/guest_memory.h"
#include "server/pci_function.h"
#include "server/protocol.h"
#include "server/unique_fd.h"

namespace vpci::server {

struct IncomingMessage {
  std::vector<std::uint8_t> bytes;  // header + payload; bytes.size() is what was received
  std::vector<UniqueFd> fds;        // SCM_RIGHTS fds that arrived with it, in order
  bool fds_truncated = false;       // the peer sent more fds than the server accepts
};

struct DispatchResult {
  std::optional<std::vector<std::uint8_t>> reply;  // nothing for NO_REPLY
  bool close_connection = false;
};

// Eventfds installed with SET_IRQS, and mask state, for every IRQ index of a function.
class IrqEventfds final : public InterruptTrigger {
 public:
  explicit IrqEventfds(const PciFunction& function);
  bool trigger(unsigned irq_index, unsigned vector) override;

  // Assigns fds[i] to vector start + i; an empty `fds` de-assigns the range.
  void assign(unsigned irq_index, std::uint32_t start, std::vector<UniqueFd> fds);
  void disable(unsigned irq_index);
  void set_masked(unsigned irq_index, std::uint32_t vector, bool masked);
  [[nodiscard]] bool has_eventfd(unsigned irq_index, std::uint32_t vector) const;
  [[nodiscard]] bool masked(unsigned irq_index, std::uint32_t vector) const;
  void clear();
  // Eventfd writes so far (interrupts delivered to the client), for profiling.
  [[nodiscard]] std::uint64_t signalled() const { return signalled_.load(std::memory_order_relaxed); }

 private:
  struct Vector {
    UniqueFd eventfd;
    bool masked = false;
    bool pending = false;
  };
  bool signal_locked(unsigned irq_index, Vector& vector);

  mutable std::mutex mutex_;  // trigger() may come from device worker threads
  std::vector<std::vector<Vector>> vectors_;  // [irq_index][vector]
  std::atomic<std::uint64_t> signalled_{0};
};

class VfioUserSession {
 public:
  // Starts serving `function` to a newly connected client: calls `connected()`.
  explicit VfioUserSession(PciFunction& function);
  VfioUserSession(const VfioUserSession&) = delete;
  VfioUserSession& operator=(const VfioUserSession&) = delete;
  // The client is gone: resets the function, tells it about every DMA region going
  // away, unmaps them, closes all eventfds and calls `disconnected()`.
  ~VfioUserSession();

  DispatchResult handle(IncomingMessage message);

  [[nodiscard]] bool negotiated() const { return negotiated_; }
  [[nodiscard]] const DmaMappings& memory() const { return memory_; }
  [[nodiscard]] IrqEventfds& interrupts() { return irqs_; }
  [[nodiscard]] std::uint64_t interrupts_signalled() const { return irqs_.signalled(); }
  // The reason for the most recent error reply or close, for logs and tests.
  [[nodiscard]] const std::string& last_error() const { return last_error_; }
  [[nodiscard]] std::uint64_t error_count() const { return error_count_; }

 private:
  using Payload = std::span<const std::uint8_t>;
  using Reply = Result<std::vector<std::uint8_t>>;  // reply payload (after the header)

  Reply dispatch(const vfio_user::Header& header, Payload payload, std::vector<UniqueFd>& fds);
  Reply handle_version(Payload payload);
  Reply handle_dma_map(Payload payload, std::vector<UniqueFd>& fds);
  Reply handle_dma_unmap(Payload payload);
  Reply handle_device_get_info(Payload payload);
  Reply handle_region_info(Payload payload);
  Reply handle_region_io_fds(Payload payload);
  Reply handle_irq_info(Payload payload);
  Reply handle_set_irqs(Payload payload, std::vector<UniqueFd>& fds);
  Reply handle_region_read(Payload payload);
  Reply handle_region_write(Payload payload);
  Reply handle_device_reset(Payload payload);
  Result<RegionInfo> checked_region_access(std::uint32_t region, std::uint64_t offset,
                                           std::uint32_t count, bool write) const;

  PciFunction& function_;
  DmaMappings memory_;
  IrqEventfds irqs_;
  bool negotiated_ = false;
  std::string last_error_;
  std::uint64_t error_count_ = 0;
};

// The errno an error reply carries for `code` (spec "Header": always positive).
int errno_for(ErrorCode code);

}  // namespace vpci::server
