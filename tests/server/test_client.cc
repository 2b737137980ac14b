#include "tests/server/test_client.h"

#include <poll.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <sys/socket.h>
#include <sys/un.h>

namespace vpci::server::testing {

using namespace vfio_user;

std::optional<TestClient> TestClient::connect(const std::string& path) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
      return TestClient(std::move(fd));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

bool TestClient::send_raw(std::span<const std::uint8_t> bytes, std::span<const int> fds) {
  return send_parts(bytes, {}, fds);
}

bool TestClient::send_parts(std::span<const std::uint8_t> head, std::span<const std::uint8_t> tail,
                            std::span<const int> fds) {
  std::array<iovec, 2> iov{iovec{const_cast<std::uint8_t*>(head.data()), head.size()},
                           iovec{const_cast<std::uint8_t*>(tail.data()), tail.size()}};
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = tail.empty() ? 1 : 2;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
  return n >= 0 && static_cast<std::size_t>(n) == head.size() + tail.size();
}

std::uint16_t TestClient::send_command(std::uint16_t command, std::span<const std::uint8_t> payload,
                                       std::span<const int> fds, std::uint32_t extra_flags) {
  const std::uint16_t id = next_id_++;
  // Header and payload go out as two iovecs of one sendmsg, as QEMU sends them.
  const auto size = static_cast<std::uint32_t>(kHeaderSize + payload.size());
  const std::uint32_t flags = kTypeCommand | extra_flags;
  const std::uint32_t error = 0;
  std::array<std::uint8_t, kHeaderSize> head{};
  std::memcpy(head.data() + 0, &id, 2);
  std::memcpy(head.data() + 2, &command, 2);
  std::memcpy(head.data() + 4, &size, 4);
  std::memcpy(head.data() + 8, &flags, 4);
  std::memcpy(head.data() + 12, &error, 4);
  send_parts(head, payload, fds);
  return id;
}

bool TestClient::read_exact(std::uint8_t* out, std::size_t length, int timeout_ms,
                            std::vector<UniqueFd>* fds) {
  std::size_t done = 0;
  while (done < length) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    iovec iov{out + done, length - done};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 16)> control{};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) return false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        UniqueFd owned(fd);
        if (fds != nullptr) fds->push_back(std::move(owned));  // otherwise closed here
      }
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

std::optional<ReplyMessage> TestClient::receive(int timeout_ms) {
  std::array<std::uint8_t, kHeaderSize> head{};
  ReplyMessage reply;
  if (!read_exact(head.data(), head.size(), timeout_ms, &reply.fds)) return std::nullopt;
  reply.header = decode_header(head);
  if (reply.header.message_size < kHeaderSize) return std::nullopt;
  reply.payload.resize(reply.header.message_size - kHeaderSize);
  if (!read_exact(reply.payload.data(), reply.payload.size(), timeout_ms)) return std::nullopt;
  return reply;
}

std::optional<ReplyMessage> TestClient::call(std::uint16_t command,
                                             std::span<const std::uint8_t> payload,
                                             std::span<const int> fds) {
  const std::uint16_t id = send_command(command, payload, fds);
  auto reply = receive();
  if (reply && (reply->header.msg_id != id || reply->header.command != command ||
                (reply->header.flags & kFlagTypeMask) != kTypeReply)) {
    return std::nullopt;
  }
  return reply;
}

bool TestClient::wait_closed(int timeout_ms) {
  std::array<std::uint8_t, 256> sink{};
  while (true) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    const ssize_t n = ::recv(fd_.get(), sink.data(), sink.size(), 0);
    if (n <= 0) return true;
  }
}

bool TestClient::negotiate(std::uint64_t max_data_xfer_size) {
  const std::string json =
      R"({"capabilities":{"max_msg_fds":16,"max_data_xfer_size":)" +
      std::to_string(max_data_xfer_size) +
      R"(,"pgsizes":4096,)"
      R"("max_dma_maps":65535,"migration":{"pgsize":4096,"max_bitmap_size":268435456},)"
      R"("write_multiple":true}})";
  Payload p;
  p.add(std::uint16_t{0}).add(std::uint16_t{0});
  p.add_bytes(std::span(reinterpret_cast<const std::uint8_t*>(json.c_str()), json.size() + 1));
  auto reply = call(kVersion, p);
  return reply && !reply->is_error();
}

Payload dma_map(std::uint32_t flags, std::uint64_t offset, std::uint64_t iova, std::uint64_t size) {
  Payload p;
  p.add(std::uint32_t{kDmaMapSize}).add(flags).add(offset).add(iova).add(size);
  return p;
}

Payload dma_unmap(std::uint32_t flags, std::uint64_t iova, std::uint64_t size) {
  Payload p;
  p.add(std::uint32_t{kDmaUnmapSize}).add(flags).add(iova).add(size);
  return p;
}

Payload region_info(std::uint32_t index, std::uint32_t argsz) {
  Payload p;
  p.add(argsz)
      .add(std::uint32_t{0})
      .add(index)
      .add(std::uint32_t{0})
      .add(std::uint64_t{0})
      .add(std::uint64_t{0});
  return p;
}

Payload irq_info(std::uint32_t index) {
  Payload p;
  p.add(std::uint32_t{kIrqInfoSize}).add(std::uint32_t{0}).add(index).add(std::uint32_t{0});
  return p;
}

Payload set_irqs(std::uint32_t flags, std::uint32_t index, std::uint32_t start,
                 std::uint32_t count) {
  Payload p;
  p.add(std::uint32_t{kSetIrqsSize}).add(flags).add(index).add(start).add(count);
  return p;
}

Payload region_read(std::uint32_t region, std::uint64_t offset, std::uint32_t count) {
  Payload p;
  p.add(offset).add(region).add(count);
  return p;
}

Payload region_write(std::uint32_t region, std::uint64_t offset,
                     std::span<const std::uint8_t> data) {
  Payload p;
  p.add(offset).add(region).add(static_cast<std::uint32_t>(data.size())).add_bytes(data);
  return p;
}

std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd"))
    ++n;
  return n;
}

}  // namespace vpci::server::testing
