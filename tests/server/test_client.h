// A vfio-user client for tests: speaks the wire format over a real AF_UNIX socket and
// can send anything, including malformed messages and fds where none belong.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "server/protocol.h"
#include "server/unique_fd.h"

namespace vpci::server::testing {

struct ReplyMessage {
  vfio_user::Header header{};
  std::vector<std::uint8_t> payload;
  std::vector<UniqueFd> fds;  // SCM_RIGHTS fds that came with it
  [[nodiscard]] bool is_error() const { return (header.flags & vfio_user::kFlagError) != 0; }
};

class TestClient {
 public:
  // Connects to `path`, retrying briefly while the server starts.
  static std::optional<TestClient> connect(const std::string& path);

  // Sends raw bytes with optional SCM_RIGHTS fds (in one sendmsg).
  bool send_raw(std::span<const std::uint8_t> bytes, std::span<const int> fds = {});
  bool send_parts(std::span<const std::uint8_t> head, std::span<const std::uint8_t> tail,
                  std::span<const int> fds);
  // Builds and sends a command; returns its msg_id.
  std::uint16_t send_command(std::uint16_t command, std::span<const std::uint8_t> payload,
                             std::span<const int> fds = {}, std::uint32_t extra_flags = 0);
  // Waits up to `timeout_ms` for one reply; nullopt on timeout or closed connection.
  std::optional<ReplyMessage> receive(int timeout_ms = 5000);
  // Command + reply in one; asserts the reply's msg_id and command match.
  std::optional<ReplyMessage> call(std::uint16_t command, std::span<const std::uint8_t> payload,
                                   std::span<const int> fds = {});
  // True if the server closed the connection (recv returns 0) within `timeout_ms`.
  bool wait_closed(int timeout_ms = 5000);
  // VERSION 0.0 with a typical QEMU capability object (max_data_xfer_size as given).
  bool negotiate(std::uint64_t max_data_xfer_size = 1048576);
  void close() { fd_.reset(); }

 private:
  explicit TestClient(UniqueFd fd) : fd_(std::move(fd)) {}
  // Collects SCM_RIGHTS fds that arrive with the bytes into `fds` (closed if null).
  bool read_exact(std::uint8_t* out, std::size_t length, int timeout_ms,
                  std::vector<UniqueFd>* fds = nullptr);

  UniqueFd fd_;
  std::uint16_t next_id_ = 1;
};

// Little payload builder: append(p, u32{...}), append(p, u64{...}).
class Payload {
 public:
  template <typename T>
  Payload& add(T value) {
    vfio_user::append(bytes_, value);
    return *this;
  }
  Payload& add_bytes(std::span<const std::uint8_t> data) {
    // resize + memcpy rather than insert: GCC 12 -O3 reports a false -Warray-bounds
    // on vector::insert of a span here.
    const std::size_t at = bytes_.size();
    bytes_.resize(at + data.size());
    if (!data.empty()) std::memcpy(bytes_.data() + at, data.data(), data.size());
    return *this;
  }
  [[nodiscard]] const std::vector<std::uint8_t>& bytes() const { return bytes_; }
  operator std::span<const std::uint8_t>() const { return bytes_; }  // NOLINT: builder

 private:
  std::vector<std::uint8_t> bytes_;
};

// Payload constructors for the commands under test.
Payload dma_map(std::uint32_t flags, std::uint64_t offset, std::uint64_t iova, std::uint64_t size);
Payload dma_unmap(std::uint32_t flags, std::uint64_t iova, std::uint64_t size);
Payload region_info(std::uint32_t index, std::uint32_t argsz = vfio_user::kRegionInfoSize);
Payload irq_info(std::uint32_t index);
Payload set_irqs(std::uint32_t flags, std::uint32_t index, std::uint32_t start,
                 std::uint32_t count);
Payload region_read(std::uint32_t region, std::uint64_t offset, std::uint32_t count);
Payload region_write(std::uint32_t region, std::uint64_t offset,
                     std::span<const std::uint8_t> data);

// Number of open fds of this process (/proc/self/fd).
std::size_t open_fd_count();

}  // namespace vpci::server::testing
