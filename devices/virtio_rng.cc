#include "devices/virtio_rng.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <sys/random.h>

#include "virtio/spec.h"

namespace vpci::devices {

Result<std::size_t> KernelEntropySource::fill(std::span<std::uint8_t> out) {
  for (;;) {
    const ssize_t got = ::getrandom(out.data(), out.size(), 0);
    if (got >= 0) return static_cast<std::size_t>(got);
    if (errno == EINTR) continue;
    return make_error(ErrorCode::kIoError, "getrandom: {}", errno_text(errno));
  }
}

RngDevice::RngDevice(RngDeviceOptions options, std::unique_ptr<EntropySource> source)
    : options_(options), source_(std::move(source)) {}

std::uint32_t RngDevice::device_id() const {
  return virtio::device_id::kEntropy;
}

void RngDevice::process_queue(virtio::Virtqueue& queue) {
  while (auto chain = queue.pop()) serve(*chain);
}

void RngDevice::serve(virtio::DescriptorChain& chain) {
  // §5.4.6.1: "The driver MUST NOT place device-readable buffers into the queue."
  if (chain.readable_bytes() != 0) {
    chain.fail(Error{ErrorCode::kProtocolViolation,
                     fmt::format("entropy request {} has {} device-readable bytes", chain.id(),
                                 chain.readable_bytes())});
    return;
  }
  const std::uint64_t wanted =
      std::min<std::uint64_t>(chain.writable_bytes(), options_.max_bytes_per_request);
  std::uint64_t produced = 0;
  if (!chain.memory().all_host_mapped()) {
    // Guest memory the server cannot map (message-based DMA): fill a bounce buffer of at
    // most max_bytes_per_request and copy it through the chain writer.
    std::vector<std::uint8_t> bounce(static_cast<std::size_t>(wanted));
    std::span<std::uint8_t> rest(bounce);
    while (!rest.empty()) {
      auto got = source_->fill(rest);
      if (!got || *got == 0) break;  // the entropy source failed: hand back what we have
      rest = rest.subspan(*got);
    }
    produced = bounce.size() - rest.size();
    if (!chain.writer().write(std::span<const std::uint8_t>(bounce.data(), produced))) produced = 0;
    bytes_produced_ += produced;
    chain.complete(static_cast<std::uint32_t>(produced));
    return;
  }
  auto buffers = chain.writer().take_buffers(wanted);
  if (buffers) {
    for (auto span : buffers->spans) {
      while (!span.empty()) {
        auto got = source_->fill(span);
        if (!got || *got == 0) break;  // the entropy source failed: hand back what we have
        produced += *got;
        span = span.subspan(*got);
      }
      if (!span.empty()) break;
    }
  }
  bytes_produced_ += produced;
  // Only the bytes actually filled count as written (§2.7.8.2: len may not overstate).
  chain.complete(static_cast<std::uint32_t>(produced));
}

}  // namespace vpci::devices
