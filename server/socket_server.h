// Serves one pci::Function on one AF_UNIX stream socket (spec "Connection Initiation":
// the server listens, the client connects).
//
// Threading: each server owns one EventLoop (base/event_loop.h) and `start()` spawns
// the one thread that runs it. The listening socket and the connection are sources on
// that loop, and every call into the pci::Function — register accesses, DMA map changes,
// reset — happens in one of its callbacks, so calls are serialised there; a device's
// back end registers its own fds, timers and deferred work on the same loop
// (event_loop()), so it runs on that thread too. One client at a time; several devices
// in one process are several VfioUserServers, each with its own socket, loop and
// thread, so a broken peer on one never affects the others. When the client
// disconnects (or breaks framing), the session is destroyed — which resets the
// function and releases all DMA maps and eventfds — and the listener is watched again,
// so a guest reboot or QEMU restart just reconnects. `stop()` (also from the
// destructor) ends any connection and the loop, and joins.
//
// Message-based DMA (guest memory mapped without an fd, server/message_dma.h): while a
// call into the function waits for a DMA_READ/DMA_WRITE reply, the same thread reads the
// connection with a deadline (set_dma_timeout, 5 s like QEMU's x-msg-timeout), serving
// register accesses at once and queueing maps, unmaps and resets (server/connection.h
// says why). A client that never answers costs its own device one timeout per access;
// other sockets have their own loops and are unaffected.
//
// Per readable event the thread makes one epoll_wait and one recvmsg (which may carry several
// messages: they are cut out of a reused per-connection buffer) and one send for the
// reply, and allocates nothing once the buffers have grown (bench/vfio_user_bench.cc,
// docs/PERFORMANCE.md). A loop and thread per device scales to thousands of devices:
// 4096 of them start in about 0.5 s (socket directory on tmpfs) at about 40 KiB resident
// each, 53 KiB with a client (bench/scale_bench.cc).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include "base/error.h"
#include "base/event_loop.h"
#include "pci/function.h"
#include "server/unique_fd.h"
#include "virtio/guest_memory.h"

namespace vpci::server {

// The inode a server bound at its socket path.
struct BoundSocket {
  dev_t dev = 0;
  ino_t ino = 0;
};

class VfioUserServer {
 public:
  // Binds and listens on `socket_path`. An existing socket file is replaced only when
  // nothing listens on it (a stale file of an earlier run: connect() is refused);
  // a socket a running server listens on is refused with kConflict, and any other
  // existing file with kAlreadyExists.
  // `memory` is the guest memory `function`'s device reads (fed from DMA_MAP/UNMAP).
  static Result<std::unique_ptr<VfioUserServer>> create(
      std::string socket_path, pci::Function& function,
      std::shared_ptr<virtio::GuestMemory> memory);
  VfioUserServer(const VfioUserServer&) = delete;
  VfioUserServer& operator=(const VfioUserServer&) = delete;
  // Stops, joins and removes the socket file, if it is still the one this server bound
  // (never a file that replaced it).
  ~VfioUserServer();

  // Message trace for interop debugging: every request, reply, connect and disconnect
  // as one line (server/trace.h). Set before start(); called on the server thread.
  using TraceSink = std::function<void(const std::string& line)>;
  void set_trace(TraceSink sink) { trace_ = std::move(sink); }

  // How long a DMA_READ/DMA_WRITE to the client may take before the access fails.
  // Set before start().
  void set_dma_timeout(std::chrono::milliseconds timeout) { dma_timeout_ = timeout; }

  // Per-message accounting for profiling (`vpci serve --stats`): messages and the
  // server-side time of each (from the whole request read to its reply sent) by
  // command, REGION_READ/REGION_WRITE also by region index and posted (NO_REPLY) or
  // not, plus the interrupts signalled. Off by default (its table is ~10 KiB per
  // server, and the scale goal counts bytes per device). Enable before start().
  void enable_stats();
  struct StatsRow {
    std::string what;  // "REGION_WRITE region 4 posted"
    std::uint64_t messages = 0;
    std::uint64_t nanoseconds = 0;
  };
  // Rows with at least one message, in command order; empty when stats are off.
  // Safe to call while serving (relaxed counters).
  [[nodiscard]] std::vector<StatsRow> stats() const;
  // Interrupts signalled by sessions that have ended, plus the current one's so far
  // once it ends (counted in every mode).
  [[nodiscard]] std::uint64_t interrupts_signalled() const { return interrupts_signalled_.load(); }
  // DMA_READ/DMA_WRITE requests sent by sessions that have ended (message-based DMA for
  // guest memory mapped without an fd, server/message_dma.h).
  [[nodiscard]] std::uint64_t dma_requests_sent() const { return dma_requests_sent_.load(); }

  void start();
  void stop();

  // The loop the device runs on: register back-end sources before start(), or from the
  // loop thread afterwards; post() from anywhere.
  [[nodiscard]] EventLoop& event_loop() { return *loop_; }

  [[nodiscard]] const std::string& socket_path() const { return socket_path_; }
  // Clients that connected and have gone again (tests wait on this).
  [[nodiscard]] std::uint64_t connections_closed() const { return connections_closed_.load(); }
  // Error replies and closes over the server's lifetime (from each session).
  [[nodiscard]] std::uint64_t protocol_errors() const { return protocol_errors_.load(); }

 private:
  struct Client;
  VfioUserServer(std::string socket_path, pci::Function& function,
                 std::shared_ptr<virtio::GuestMemory> memory, UniqueFd listener,
                 std::unique_ptr<EventLoop> loop, BoundSocket bound);
  void listen_for_client();
  void accept_client();
  void serve(bool socket_ready);
  bool handle_one(std::span<const std::uint8_t> message, std::vector<UniqueFd>& fds,
                  bool fds_truncated, std::vector<std::uint8_t>& reply);
  void end_client();

  std::string socket_path_;
  pci::Function& function_;
  std::shared_ptr<virtio::GuestMemory> memory_;
  UniqueFd listener_;
  std::unique_ptr<EventLoop> loop_;
  EventLoop::SourceId listener_source_ = 0;
  std::unique_ptr<Client> client_;  // loop thread only
  BoundSocket bound_;
  TraceSink trace_;
  std::chrono::milliseconds dma_timeout_{5000};
  std::thread thread_;
  std::mutex connection_mutex_;  // guards connection_ and stopping_ against stop()
  int connection_ = -1;          // the connection being served, for stop() to shut down
  bool stopping_ = false;
  std::atomic<std::uint64_t> connections_closed_{0};
  std::atomic<std::uint64_t> protocol_errors_{0};
  std::atomic<std::uint64_t> interrupts_signalled_{0};
  std::atomic<std::uint64_t> dma_requests_sent_{0};
  struct Stats;
  std::unique_ptr<Stats> stats_;
};

}  // namespace vpci::server
