// A minimal blocking vfio-user client for the benchmarks, and a raw AF_UNIX echo peer
// that answers the same message sizes without any protocol work (the floor).
//
// Both benchmark sides use the same client code, so a ratio our-server / raw-peer
// measures the server alone. The client does what QEMU's does per access: one sendmsg
// of header + payload, then a blocking receive of the reply (header, then payload).
#pragma once

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "server/protocol.h"
#include "server/unique_fd.h"

namespace vpci::bench {

namespace vu = vpci::server::vfio_user;
using vpci::server::UniqueFd;

inline bool send_all(int fd, std::span<const iovec> parts) {
  std::array<iovec, 4> iov{};
  std::size_t count = 0;
  std::size_t total = 0;
  for (const iovec& part : parts) {
    if (part.iov_len == 0) continue;
    iov[count++] = part;
    total += part.iov_len;
  }
  std::size_t done = 0;
  while (done < total) {
    // Skip what has already gone out (a short write is rare on AF_UNIX).
    std::size_t skip = done;
    std::size_t first = 0;
    while (skip >= iov[first].iov_len) skip -= iov[first++].iov_len;
    std::array<iovec, 4> rest{};
    for (std::size_t i = first; i < count; ++i) rest[i - first] = iov[i];
    rest[0].iov_base = static_cast<std::uint8_t*>(rest[0].iov_base) + skip;
    rest[0].iov_len -= skip;
    msghdr msg{};
    msg.msg_iov = rest.data();
    msg.msg_iovlen = count - first;
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

inline bool recv_all(int fd, std::uint8_t* out, std::size_t length) {
  std::size_t done = 0;
  while (done < length) {
    const ssize_t n = ::recv(fd, out + done, length - done, MSG_WAITALL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

class BenchClient {
 public:
  static std::optional<BenchClient> connect(const std::string& path) {
    for (int attempt = 0; attempt < 500; ++attempt) {
      UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
      if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
        return BenchClient(std::move(fd));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return std::nullopt;
  }
  explicit BenchClient(UniqueFd fd) : fd_(std::move(fd)) {}

  [[nodiscard]] int fd() const { return fd_.get(); }

  // Sends one command; `posted` sets NO_REPLY.
  bool send(std::uint16_t command, std::span<const std::uint8_t> payload,
            std::span<const std::uint8_t> data = {}, bool posted = false) {
    const std::uint16_t id = next_id_++;
    const auto size = static_cast<std::uint32_t>(vu::kHeaderSize + payload.size() + data.size());
    const std::uint32_t flags = vu::kTypeCommand | (posted ? vu::kFlagNoReply : 0u);
    std::array<std::uint8_t, vu::kHeaderSize> head{};
    std::memcpy(head.data() + 0, &id, 2);
    std::memcpy(head.data() + 2, &command, 2);
    std::memcpy(head.data() + 4, &size, 4);
    std::memcpy(head.data() + 8, &flags, 4);
    const std::array<iovec, 3> parts{
        iovec{head.data(), head.size()},
        iovec{const_cast<std::uint8_t*>(payload.data()), payload.size()},
        iovec{const_cast<std::uint8_t*>(data.data()), data.size()}};
    return send_all(fd_.get(), parts);
  }

  // Receives one reply into `reply_` (header included); false on EOF or an error reply.
  bool receive() {
    reply_.resize(vu::kHeaderSize);
    if (!recv_all(fd_.get(), reply_.data(), vu::kHeaderSize)) return false;
    std::uint32_t size = 0;
    std::uint32_t flags = 0;
    std::memcpy(&size, reply_.data() + 4, 4);
    std::memcpy(&flags, reply_.data() + 8, 4);
    if (size < vu::kHeaderSize || size > vu::kMaxMessageSize) return false;
    reply_.resize(size);
    if (!recv_all(fd_.get(), reply_.data() + vu::kHeaderSize, size - vu::kHeaderSize)) return false;
    return (flags & vu::kFlagError) == 0;
  }

  bool negotiate() {
    static constexpr char kJson[] = R"({"capabilities":{"max_msg_fds":8,"pgsizes":4096}})";
    std::vector<std::uint8_t> payload{0, 0, 2, 0};                // major 0, minor 2
    payload.insert(payload.end(), kJson, kJson + sizeof(kJson));  // with the NUL
    return send(vu::kVersion, payload) && receive();
  }

  static std::array<std::uint8_t, vu::kRegionAccessSize> access(std::uint32_t region,
                                                                std::uint64_t offset,
                                                                std::uint32_t count) {
    std::array<std::uint8_t, vu::kRegionAccessSize> a{};
    std::memcpy(a.data(), &offset, 8);
    std::memcpy(a.data() + 8, &region, 4);
    std::memcpy(a.data() + 12, &count, 4);
    return a;
  }

  bool region_read(std::uint32_t region, std::uint64_t offset, std::uint32_t count) {
    const auto a = access(region, offset, count);
    return send(vu::kRegionRead, a) && receive() &&
           reply_.size() == vu::kHeaderSize + vu::kRegionAccessSize + count;
  }
  bool region_write(std::uint32_t region, std::uint64_t offset, std::span<const std::uint8_t> data,
                    bool posted) {
    const auto a = access(region, offset, static_cast<std::uint32_t>(data.size()));
    if (!send(vu::kRegionWrite, a, data, posted)) return false;
    return posted || receive();
  }

  [[nodiscard]] const std::vector<std::uint8_t>& reply() const { return reply_; }

 private:
  UniqueFd fd_;
  std::uint16_t next_id_ = 0;
  std::vector<std::uint8_t> reply_;
};

// The floor: a peer that reads requests of a known size and answers each `reply_every`th
// one with `reply_bytes`, doing nothing else (no framing, no dispatch). Runs on its
// own thread until the client closes its end.
class RawEchoPeer {
 public:
  RawEchoPeer(std::size_t request_bytes, std::size_t reply_bytes, unsigned reply_every = 1,
              std::size_t sync_request_bytes = 0)
      : request_bytes_(request_bytes),
        reply_bytes_(reply_bytes),
        reply_every_(reply_every),
        sync_request_bytes_(sync_request_bytes == 0 ? request_bytes : sync_request_bytes) {
    std::array<int, 2> fds{};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds.data()) != 0) return;
    client_ = UniqueFd(fds[0]);
    peer_ = UniqueFd(fds[1]);
    thread_ = std::thread([this] { run(); });
  }
  // Destroy the client first; shutting down our end also wakes a peer still waiting.
  ~RawEchoPeer() {
    if (peer_.valid()) ::shutdown(peer_.get(), SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }
  RawEchoPeer(const RawEchoPeer&) = delete;
  RawEchoPeer& operator=(const RawEchoPeer&) = delete;

  // The client end, to wrap in a BenchClient.
  UniqueFd take_client() { return std::move(client_); }

 private:
  void run() {
    std::vector<std::uint8_t> in(std::max(request_bytes_, sync_request_bytes_));
    std::vector<std::uint8_t> out(reply_bytes_, 0);
    // The reply needs a well-formed header so the client's framing works.
    const auto size = static_cast<std::uint32_t>(reply_bytes_);
    const std::uint32_t flags = vu::kTypeReply;
    std::memcpy(out.data() + 4, &size, 4);
    std::memcpy(out.data() + 8, &flags, 4);
    for (unsigned n = 1;; ++n) {
      const bool replies = n % reply_every_ == 0;
      if (!recv_all(peer_.get(), in.data(), replies ? sync_request_bytes_ : request_bytes_)) return;
      if (replies) {
        const iovec part{out.data(), out.size()};
        if (!send_all(peer_.get(), std::span<const iovec>(&part, 1))) return;
      }
    }
  }

  std::size_t request_bytes_;
  std::size_t reply_bytes_;
  unsigned reply_every_;
  std::size_t sync_request_bytes_;
  UniqueFd client_;
  UniqueFd peer_;
  std::thread thread_;
};

}  // namespace vpci::bench
