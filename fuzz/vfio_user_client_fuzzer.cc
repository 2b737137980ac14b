// Fuzzes the vfio-user client (client/vfio_user_client.h) with hostile server traffic: the
// input is everything the "server" sends, in order, on a socketpair whose writing end is
// then shut — replies with any ids, commands, sizes, flags and payloads, server requests
// (DMA_READ/DMA_WRITE) between them. The client runs the sequence a tool runs (VERSION,
// GET_INFO, every region's and IRQ index's info, a config read and write, a DMA map
// without an fd, SET_IRQS, served requests, RESET). Invariants:
//   * no crash, no undefined behaviour, every call returns (a short timeout bounds waits);
//   * every fd the client received is closed when it is gone (the process's open fds);
//   * what a call returns is consistent with what was asked: region info for the region
//     asked, sparse areas inside the region, reads of exactly the bytes asked;
//   * DMA requests touch only the mapped buffer (checked by a guard around it).
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include <sys/eventfd.h>
#include <sys/socket.h>

#include "client/vfio_user_client.h"
#include "fuzz/fuzz_support.h"

namespace {

using namespace vpci;

std::size_t open_fds() {
  std::size_t count = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (::readdir(dir) != nullptr) ++count;
    ::closedir(dir);
  }
  return count;
}

constexpr std::size_t kMaxInput = 192 * 1024;  // fits the socket buffer set below
constexpr std::uint8_t kGuard = 0x5A;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > kMaxInput) return 0;
  const std::size_t fds_before = open_fds();
  {
    std::array<int, 2> pair{};
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair.data()) == 0);
    server::UniqueFd client_end(pair[0]);
    server::UniqueFd server_end(pair[1]);
    const int buffer = 512 * 1024;
    (void)::setsockopt(server_end.get(), SOL_SOCKET, SO_SNDBUF, &buffer, sizeof(buffer));
    (void)::setsockopt(client_end.get(), SOL_SOCKET, SO_RCVBUF, &buffer, sizeof(buffer));
    (void)::setsockopt(client_end.get(), SOL_SOCKET, SO_SNDBUF, &buffer, sizeof(buffer));
    for (std::size_t done = 0; done < size;) {
      const ssize_t n =
          ::send(server_end.get(), data + done, size - done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::shutdown(server_end.get(), SHUT_WR);  // after the input: end of stream

    client::ClientOptions options;
    options.timeout = std::chrono::milliseconds(20);
    auto connected = client::VfioUserClient::adopt(std::move(client_end), "fuzz", options);
    if (connected) {
      auto& c = **connected;
      FUZZ_CHECK(c.version().major == 0 && c.version().minor <= 2);
      FUZZ_CHECK(c.version().max_data_xfer_size >= 4096 &&
                 c.version().max_data_xfer_size <= (64u << 20));
      auto info = c.device_info();
      if (info) FUZZ_CHECK(info->num_regions <= client::kMaxRegions);
      for (std::uint32_t region = 0; region < 9; ++region) {
        auto r = c.region_info(region);
        if (!r) continue;
        FUZZ_CHECK(r->index == region);
        for (const auto& area : r->sparse_mmap)
          FUZZ_CHECK(area.offset <= r->size && area.size <= r->size - area.offset);
      }
      for (std::uint32_t irq = 0; irq < 5; ++irq) {
        auto i = c.irq_info(irq);
        if (i) FUZZ_CHECK(i->index == irq);
      }
      std::vector<std::uint8_t> config(256, 0xEE);
      (void)c.region_read(client::kPciConfigRegion, 0, config);
      const std::array<std::uint8_t, 2> command = {6, 0};
      (void)c.region_write(client::kPciConfigRegion, 4, command);
      (void)c.region_write_posted(4, 0x3000, command);
      // A mapped buffer with guards on both sides: DMA requests must stay inside it.
      std::vector<std::uint8_t> memory(4096 + 2 * 64, kGuard);
      const std::span<std::uint8_t> mapped(memory.data() + 64, 4096);
      std::fill(mapped.begin(), mapped.end(), 0);
      (void)c.dma_map(0x10000, mapped);
      server::UniqueFd irq(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      const std::array<int, 1> irqs = {irq.get()};
      (void)c.set_irq_eventfds(2, 0, irqs);
      (void)c.serve_requests(std::chrono::milliseconds(0));
      (void)c.reset();
      (void)c.dma_unmap(0x10000, 4096);
      for (std::size_t i = 0; i < 64; ++i) {
        FUZZ_CHECK(memory[i] == kGuard);
        FUZZ_CHECK(memory[memory.size() - 1 - i] == kGuard);
      }
    }
  }
  FUZZ_CHECK(open_fds() == fds_before);
  return 0;
}
