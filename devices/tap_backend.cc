#include "devices/tap_backend.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

namespace vpci::devices {
namespace {

constexpr short kTapFlags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;

// Whether TUNSETIFF on `name` succeeds with these flags, on a descriptor of its own that
// is closed at once (a persistent tap is left as it was).
bool attaches_with(const std::string& name, short flags) {
  const int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  ifreq request{};
  std::memcpy(request.ifr_name, name.data(), name.size());
  request.ifr_flags = flags;
  const bool attached = ::ioctl(fd, TUNSETIFF, &request) == 0;
  ::close(fd);
  return attached;
}

// Why TUNSETIFF refused, in the user's terms (drivers/net/tun.c tun_set_iff).
std::string tunsetiff_reason(int error, const std::string& name, bool existed, unsigned pairs) {
  switch (error) {
    case EPERM:
      return existed ? fmt::format(
                           "not allowed to open tap {} (it belongs to another user; "
                           "needs CAP_NET_ADMIN or `ip tuntap add ... user`)",
                           name)
                     : fmt::format(
                           "no tap {} and no permission to create it (needs "
                           "CAP_NET_ADMIN)",
                           name);
    case EINVAL:
      // tun_set_iff refuses an interface that is not a tap (a bridge, a tun, lo) and a
      // tap whose IFF_MULTI_QUEUE differs from the request's: the other setting tells.
      if (!attaches_with(name, static_cast<short>(kTapFlags | (pairs > 1 ? 0 : IFF_MULTI_QUEUE)))) {
        return fmt::format("interface {} exists and is not a tap (a bridge, a tun device?)", name);
      }
      return pairs > 1 ? fmt::format(
                             "tap {} is single-queue; {} queue pairs need one created "
                             "with multi_queue (ip tuntap add {} mode tap multi_queue)",
                             name, pairs, name)
                       : fmt::format(
                             "tap {} is multi-queue; one queue pair needs a tap created "
                             "without multi_queue, or set queues = 2 or more",
                             name);
    case EBUSY: return fmt::format("tap {} is in use by another process", name);
    default: return fmt::format("TUNSETIFF {}: {}", name, errno_text(error));
  }
}

}  // namespace

Result<std::unique_ptr<TapBackend>> TapBackend::open(const std::string& name, unsigned pairs) {
  if (name.empty() || name.size() > kMaxNameLength || name.find('/') != std::string::npos) {
    return make_error(ErrorCode::kInvalidArgument,
                      "tap name \"{}\" is not an interface name (1 to {} characters, no '/')", name,
                      kMaxNameLength);
  }
  if (pairs == 0) return make_error(ErrorCode::kInvalidArgument, "a tap needs a queue pair");
  // Asked of the kernel in this process's network namespace: /sys/class/net shows the
  // namespace sysfs was mounted in, which differs after unshare(CLONE_NEWNET).
  const bool existed = ::if_nametoindex(name.c_str()) != 0;
  std::unique_ptr<TapBackend> tap(new TapBackend(name, !existed));
  for (unsigned pair = 0; pair < pairs; ++pair) {
    const int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      return make_error(ErrorCode::kIoError, "/dev/net/tun: {}{}", errno_text(errno),
                        errno == ENOENT ? " (no tun driver)" : "");
    }
    tap->fds_.push_back(fd);
    ifreq request{};
    std::memcpy(request.ifr_name, name.data(), name.size());
    request.ifr_flags = static_cast<short>(kTapFlags | (pairs > 1 ? IFF_MULTI_QUEUE : 0));
    if (::ioctl(fd, TUNSETIFF, &request) < 0) {
      return make_error(ErrorCode::kIoError, "{}",
                        tunsetiff_reason(errno, name, existed || pair > 0, pairs));
    }
  }
  return tap;
}

TapBackend::~TapBackend() {
  for (const int fd : fds_) ::close(fd);
}

Result<std::optional<std::size_t>> TapBackend::receive(unsigned pair, std::span<std::uint8_t> out) {
  // A tap read into a short buffer truncates silently (tun_chr_read_iter); one spare
  // byte tells a frame that did not fit from one that filled `out` exactly.
  std::uint8_t spare = 0;
  iovec parts[2] = {{out.data(), out.size()}, {&spare, 1}};
  const ssize_t n = ::readv(fds_.at(pair), parts, 2);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return std::optional<std::size_t>{};
    return make_error(ErrorCode::kIoError, "reading {}: {}", name(), errno_text(errno));
  }
  if (static_cast<std::size_t>(n) > out.size()) {
    return make_error(ErrorCode::kOutOfRange, "{} delivered a frame larger than {} bytes", name(),
                      out.size());
  }
  return std::optional<std::size_t>{static_cast<std::size_t>(n)};
}

Result<bool> TapBackend::send(unsigned pair, std::span<const iovec> frame) {
  // One writev is one frame (tun_get_user); the kernel checks the header.
  const ssize_t n = ::writev(fds_.at(pair), frame.data(), static_cast<int>(frame.size()));
  if (n >= 0) return true;
  if (errno == EAGAIN) return false;
  return make_error(errno == EINVAL ? ErrorCode::kInvalidArgument : ErrorCode::kIoError,
                    "writing to {}: {}", name(), errno_text(errno));
}

Status TapBackend::set_header_size(unsigned bytes) {
  int size = static_cast<int>(bytes);
  for (const int fd : fds_) {
    if (::ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) {
      return make_error(ErrorCode::kIoError, "TUNSETVNETHDRSZ {} on {}: {}", bytes, name(),
                        errno_text(errno));
    }
  }
  return {};
}

Status TapBackend::set_offloads(unsigned tun_offloads) {
  for (const int fd : fds_) {
    if (::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(tun_offloads)) < 0) {
      return make_error(ErrorCode::kIoError, "TUNSETOFFLOAD {:#x} on {}: {}", tun_offloads, name(),
                        errno_text(errno));
    }
  }
  return {};
}

Status TapBackend::set_active_pairs(unsigned pairs) {
  if (fds_.size() == 1) return {};  // a single-queue tap has nothing to steer
  for (unsigned pair = 0; pair < fds_.size(); ++pair) {
    ifreq request{};
    request.ifr_flags = static_cast<short>(pair < pairs ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE);
    // EINVAL: the queue already is in that state (tun_set_queue); nothing to do.
    if (::ioctl(fds_[pair], TUNSETQUEUE, &request) < 0 && errno != EINVAL) {
      return make_error(ErrorCode::kIoError, "TUNSETQUEUE on {} queue {}: {}", name(), pair,
                        errno_text(errno));
    }
  }
  return {};
}

}  // namespace vpci::devices
