#include "driver/eventfd_interrupts.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include <sys/eventfd.h>

namespace vpci::driver {
namespace {

Result<server::UniqueFd> make_eventfd() {
  server::UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!fd.valid()) return make_error(ErrorCode::kIoError, "eventfd: {}", errno_text(errno));
  return fd;
}

// The count an eventfd holds (0 if none), read without blocking.
std::uint64_t drain(int fd) {
  std::uint64_t count = 0;
  return ::read(fd, &count, sizeof(count)) == sizeof(count) ? count : 0;
}

}  // namespace

Status EventfdInterrupts::create(bool intx, std::uint16_t vectors) {
  clear();
  if (intx) {
    VPCI_ASSIGN_OR_RETURN(intx_, make_eventfd());
  }
  for (std::uint16_t v = 0; v < vectors; ++v) {
    VPCI_ASSIGN_OR_RETURN(auto fd, make_eventfd());
    msix_.push_back(std::move(fd));
  }
  return {};
}

void EventfdInterrupts::clear() {
  intx_.reset();
  msix_.clear();
}

std::vector<int> EventfdInterrupts::msix_fds() const {
  std::vector<int> fds;
  for (const auto& fd : msix_) fds.push_back(fd.get());
  return fds;
}

bool EventfdInterrupts::collect(InterruptLog* log) {
  if (log == nullptr) return false;
  bool any = false;
  if (intx_.valid() && drain(intx_.get()) != 0) {
    log->intx = true;
    ++log->intx_changes;
    any = true;
  }
  for (std::size_t v = 0; v < msix_.size(); ++v) {
    for (std::uint64_t n = drain(msix_[v].get()); n > 0; --n) {
      log->msix.push_back({static_cast<std::uint16_t>(v), 0, 0});
      any = true;
    }
  }
  return any;
}

void EventfdInterrupts::wait(std::chrono::milliseconds wait) const {
  std::vector<pollfd> fds;
  if (intx_.valid()) fds.push_back({intx_.get(), POLLIN, 0});
  for (const auto& fd : msix_) fds.push_back({fd.get(), POLLIN, 0});
  if (fds.empty()) return;
  (void)::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
}

}  // namespace vpci::driver
