#include "server/message_dma.h"

#include <algorithm>
#include <cstring>

#include "server/trace.h"

namespace vpci::server {

using namespace vfio_user;

void MessageDma::attach(ClientChannel* channel) {
  channel_ = channel;
  channel_thread_ = std::this_thread::get_id();
}

Status MessageDma::check_usable() {
  if (channel_ == nullptr) {
    return make_error(ErrorCode::kUnsupported,
                      "guest memory without a file descriptor needs a client connection");
  }
  if (std::this_thread::get_id() != channel_thread_) {
    return make_error(ErrorCode::kUnsupported,
                      "guest memory without a file descriptor is only reachable from the server "
                      "thread");
  }
  if (lost_) return make_error(ErrorCode::kIoError, "the client connection is gone");
  return {};
}

Error MessageDma::protocol_error(Error error) {
  last_error_ = error.message;
  ++error_count_;
  return error;
}

// Our transfer size: the client's max_data_xfer_size, capped by our own receive limit
// (a DMA_READ reply must fit kMaxMessageSize).
std::size_t MessageDma::piece_size() const {
  return static_cast<std::size_t>(std::min<std::uint64_t>(client_max_transfer_, kMaxDataXferSize));
}

Status MessageDma::read(virtio::GuestAddress address, std::span<std::uint8_t> out) {
  VPCI_TRY(check_usable());
  if (!used_) {
    used_ = true;
    if (first_use_) first_use_(address);
  }
  const std::size_t piece = piece_size();
  for (std::size_t done = 0; done < out.size(); done += piece) {
    const std::size_t n = std::min(piece, out.size() - done);
    VPCI_TRY(read_transfer(address + done, out.subspan(done, n)));
  }
  return {};
}

Status MessageDma::write(virtio::GuestAddress address, std::span<const std::uint8_t> data) {
  VPCI_TRY(check_usable());
  if (!used_) {
    used_ = true;
    if (first_use_) first_use_(address);
  }
  if (layout_ == Layout::kUnknown && !data.empty()) {
    // Learn the client's layout before sending data it could misplace (file comment).
    std::uint8_t probe = 0;
    VPCI_TRY(read_transfer(address, std::span(&probe, 1)));
  }
  const std::size_t piece = piece_size();
  for (std::size_t done = 0; done < data.size(); done += piece) {
    const std::size_t n = std::min(piece, data.size() - done);
    VPCI_TRY(write_transfer(address + done, data.subspan(done, n)));
  }
  return {};
}

Result<MessageDma::Payload> MessageDma::exchange(std::uint16_t command) {
  const std::uint16_t msg_id = next_msg_id_++;
  encode_header(request_, Header{msg_id, command, static_cast<std::uint32_t>(request_.size()),
                                 kTypeCommand, 0});
  std::size_t reply_fds = 0;
  std::string detail;
  ++requests_sent_;
  const ClientChannel::Outcome outcome =
      channel_->exchange(request_, msg_id, reply_, reply_fds, detail);
  switch (outcome) {
    case ClientChannel::Outcome::kReply: break;
    case ClientChannel::Outcome::kTimedOut:
      return tl::unexpected(protocol_error(
          Error{ErrorCode::kIoError, fmt::format("{} msg_id {}: no reply from the client in time",
                                                 command_name_of(command), msg_id)}));
    case ClientChannel::Outcome::kLost:
      lost_ = true;
      return tl::unexpected(protocol_error(
          Error{ErrorCode::kIoError,
                fmt::format("{} msg_id {}: {}", command_name_of(command), msg_id, detail)}));
  }
  // The channel guarantees a whole reply message with our msg_id.
  const Header header = decode_header(reply_);
  const Payload payload = Payload(reply_).subspan(kHeaderSize);
  if (header.command != command || reply_fds != 0) {
    return tl::unexpected(protocol_error(
        Error{ErrorCode::kMalformedInput,
              fmt::format("{} msg_id {}: reply for command {} with {} fds",
                          command_name_of(command), msg_id, header.command, reply_fds)}));
  }
  if ((header.flags & kFlagError) != 0) {
    // A well-formed refusal (QEMU: EFAULT/ENODEV/EPERM from its DMA API): the access
    // fails, the conversation is fine.
    last_error_ = fmt::format("{} msg_id {}: the client answered errno {}",
                              command_name_of(command), msg_id, header.error);
    return make_error(ErrorCode::kIoError, "{}", last_error_);
  }
  return payload;
}

Status MessageDma::read_transfer(std::uint64_t address, std::span<std::uint8_t> data) {
  const std::size_t n = data.size();
  request_.resize(kHeaderSize);
  append(request_, address);
  append(request_, static_cast<std::uint64_t>(n));  // spec layout; QEMU reads the low u32
  VPCI_ASSIGN_OR_RETURN(const Payload payload, exchange(kDmaRead));
  // Layout detection rule: see the file comment.
  std::size_t data_offset = 0;
  if (payload.size() == 16 + n && load<std::uint64_t>(payload, 8) == n) {
    data_offset = 16;
    layout_ = Layout::kSpec;
  } else if (payload.size() == 12 + n && load<std::uint32_t>(payload, 8) == n) {
    data_offset = 12;
    layout_ = Layout::kQemu;
  } else {
    return tl::unexpected(
        protocol_error(Error{ErrorCode::kMalformedInput,
                             fmt::format("DMA_READ reply of {} payload bytes for {} bytes at {:#x}",
                                         payload.size(), n, address)}));
  }
  if (load<std::uint64_t>(payload, 0) != address) {
    return tl::unexpected(protocol_error(Error{
        ErrorCode::kMalformedInput, fmt::format("DMA_READ reply for address {:#x}, asked {:#x}",
                                                load<std::uint64_t>(payload, 0), address)}));
  }
  std::memcpy(data.data(), payload.data() + data_offset, n);
  return {};
}

Status MessageDma::write_transfer(std::uint64_t address, std::span<const std::uint8_t> data) {
  const std::size_t n = data.size();
  request_.resize(kHeaderSize);
  append(request_, address);
  if (layout_ == Layout::kQemu) {
    append(request_, static_cast<std::uint32_t>(n));
  } else {
    append(request_, static_cast<std::uint64_t>(n));
  }
  const std::size_t at = request_.size();
  request_.resize(at + n);
  std::memcpy(request_.data() + at, data.data(), n);
  VPCI_ASSIGN_OR_RETURN(const Payload payload, exchange(kDmaWrite));
  // QEMU replies with the header only; otherwise address and count are echoed.
  bool valid = payload.empty();
  if (payload.size() == 12) {
    valid = load<std::uint64_t>(payload, 0) == address && load<std::uint32_t>(payload, 8) == n;
  } else if (payload.size() == 16) {
    valid = load<std::uint64_t>(payload, 0) == address && load<std::uint64_t>(payload, 8) == n;
  }
  if (!valid) {
    return tl::unexpected(protocol_error(
        Error{ErrorCode::kMalformedInput,
              fmt::format("DMA_WRITE reply of {} payload bytes does not echo {} bytes at {:#x}",
                          payload.size(), n, address)}));
  }
  return {};
}

}  // namespace vpci::server
