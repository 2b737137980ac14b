// Fuzzes the vfio-user message dispatcher (server/session.h) with arbitrary message
// sequences against the scratch function, with real fds attached where the input asks.
//
// Input: records of
//   u8  control   bits 0-1: fds to attach (0 none, 1 memfd, 2 eventfd, 3 both)
//                 bit 2: mark fds as truncated; bit 3: fix the header's message_size
//                 to the record length (so most inputs pass framing)
//   u16 length    little-endian, then `length` message bytes (header included)
// The memfd is 64 KiB, the eventfd non-blocking; both are opened per record and the
// session takes or closes them.
// Invariants:
//   * no crash, no sanitizer report;
//   * a reply exists unless the command had NO_REPLY or the session asked to close;
//     it echoes msg_id and command, its message_size is its length, and an error
//     reply is exactly a header;
//   * every fd is closed by the time the session is gone (the lowest free fd number is
//     the same before and after the input).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <sys/eventfd.h>
#include <sys/mman.h>

#include "server/protocol.h"
#include "server/scratch_function.h"
#include "server/session.h"

namespace {

using namespace vpci::server;

void check(bool condition) {
  if (!condition) std::abort();
}

int lowest_free_fd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC);
  ::close(fd);
  return fd;
}

void run(const std::uint8_t* data, std::size_t size) {
  ScratchFunction function;
  VfioUserSession session(function, function.guest_memory());
  std::size_t pos = 0;
  while (pos + 3 <= size) {
    const std::uint8_t control = data[pos];
    const std::size_t length = data[pos + 1] | (std::size_t{data[pos + 2]} << 8);
    pos += 3;
    const std::size_t take = std::min(length, size - pos);
    IncomingMessage message;
    message.bytes.assign(data + pos, data + pos + take);
    pos += take;
    if ((control & 8) != 0 && message.bytes.size() >= vfio_user::kHeaderSize) {
      vfio_user::store(message.bytes, 4, static_cast<std::uint32_t>(message.bytes.size()));
    }
    if ((control & 1) != 0) {
      UniqueFd ram(::memfd_create("fuzz-ram", MFD_CLOEXEC));
      check(ram.valid() && ::ftruncate(ram.get(), 0x10000) == 0);
      message.fds.push_back(std::move(ram));
    }
    if ((control & 2) != 0) {
      message.fds.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    }
    message.fds_truncated = (control & 4) != 0;

    const bool framed = message.bytes.size() >= vfio_user::kHeaderSize;
    vfio_user::Header request{};
    if (framed) request = vfio_user::decode_header(message.bytes);
    const DispatchResult result = session.handle(std::move(message));
    if (result.close_connection) break;
    check(framed);
    if ((request.flags & vfio_user::kFlagNoReply) != 0) {
      check(!result.reply.has_value());
      continue;
    }
    check(result.reply.has_value());
    const auto reply = vfio_user::decode_header(*result.reply);
    check(reply.msg_id == request.msg_id && reply.command == request.command);
    check(reply.message_size == result.reply->size());
    check((reply.flags & vfio_user::kFlagTypeMask) == vfio_user::kTypeReply);
    if ((reply.flags & vfio_user::kFlagError) != 0) {
      check(result.reply->size() == vfio_user::kHeaderSize && reply.error != 0);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int before = lowest_free_fd();
  run(data, size);
  check(lowest_free_fd() == before);
  return 0;
}
