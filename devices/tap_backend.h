// A Linux tap as a virtio-net back end (devices/packet_backend.h): one /dev/net/tun
// descriptor per queue pair, opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (and
// IFF_MULTI_QUEUE for more than one pair), non-blocking. The virtio-net header passes
// through untranslated because TUNSETVNETHDRSZ is set to the negotiated size; receive
// offloads follow the guest's GUEST_* features (TUNSETOFFLOAD); VQ_PAIRS_SET attaches and
// detaches queues (TUNSETQUEUE) so flows only land on queues the guest serves.
//
// An existing tap is opened by name. A name that does not exist is created if the
// process may (CAP_NET_ADMIN), as a non-persistent tap that disappears with the last
// descriptor — so with the server. Anything else is an error saying why (no tun driver,
// permission, a tap in use, flags that do not match the existing tap's).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "devices/packet_backend.h"

namespace vpci::devices {

class TapBackend final : public PacketBackend {
 public:
  // Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
  static constexpr std::size_t kMaxNameLength = 15;

  [[nodiscard]] static Result<std::unique_ptr<TapBackend>> open(const std::string& name,
                                                                unsigned pairs);
  ~TapBackend() override;
  TapBackend(const TapBackend&) = delete;
  TapBackend& operator=(const TapBackend&) = delete;

  [[nodiscard]] std::string name() const override { return "tap " + name_; }
  [[nodiscard]] unsigned queue_pairs() const override { return static_cast<unsigned>(fds_.size()); }
  [[nodiscard]] int fd(unsigned pair) const override { return fds_.at(pair); }
  [[nodiscard]] Result<std::optional<std::size_t>> receive(unsigned pair,
                                                           std::span<std::uint8_t> out) override;
  [[nodiscard]] Result<bool> send(unsigned pair, std::span<const iovec> frame) override;
  [[nodiscard]] Status set_header_size(unsigned bytes) override;
  [[nodiscard]] Status set_offloads(unsigned tun_offloads) override;
  [[nodiscard]] Status set_active_pairs(unsigned pairs) override;
  // Whether open() created the interface (it then goes away with this object).
  [[nodiscard]] bool created() const { return created_; }

 private:
  TapBackend(std::string name, bool created) : name_(std::move(name)), created_(created) {}

  std::string name_;
  bool created_;
  std::vector<int> fds_;
};

}  // namespace vpci::devices
