// virtio-net wire formats and constants (virtio 1.3 §5.1), named once for the device
// (devices/virtio_net.h) and its tests. Facts and sources: ../shared/reference/virtio-net.md.
#pragma once

#include <cstdint>

namespace vpci::devices::net {

// ---- feature bits (§5.1.3) -------------------------------------------------------------
inline constexpr unsigned kFeatureCsum = 0;
inline constexpr unsigned kFeatureGuestCsum = 1;
inline constexpr unsigned kFeatureCtrlGuestOffloads = 2;
inline constexpr unsigned kFeatureMtu = 3;
inline constexpr unsigned kFeatureMac = 5;
inline constexpr unsigned kFeatureGuestTso4 = 7;
inline constexpr unsigned kFeatureGuestTso6 = 8;
inline constexpr unsigned kFeatureGuestEcn = 9;
inline constexpr unsigned kFeatureGuestUfo = 10;
inline constexpr unsigned kFeatureHostTso4 = 11;
inline constexpr unsigned kFeatureHostTso6 = 12;
inline constexpr unsigned kFeatureMrgRxbuf = 15;
inline constexpr unsigned kFeatureStatus = 16;
inline constexpr unsigned kFeatureCtrlVq = 17;
inline constexpr unsigned kFeatureCtrlRx = 18;
inline constexpr unsigned kFeatureMq = 22;
inline constexpr unsigned kFeatureCtrlMacAddr = 23;

// ---- device configuration (§5.1.4), little-endian ---------------------------------------
namespace config {
inline constexpr std::uint32_t kMac = 0;                // u8[6]
inline constexpr std::uint32_t kStatus = 6;             // le16, with STATUS
inline constexpr std::uint32_t kMaxVirtqueuePairs = 8;  // le16, with MQ
inline constexpr std::uint32_t kMtu = 10;               // le16, with MTU
inline constexpr std::uint32_t kSize = 12;              // up to and including mtu
}  // namespace config
inline constexpr std::uint16_t kStatusLinkUp = 1;
inline constexpr std::uint32_t kMacBytes = 6;
// §5.1.4.1: max_virtqueue_pairs is 1..0x8000; vpci serves far fewer (one tap fd each).
inline constexpr std::uint16_t kMaxQueuePairs = 16;
// §5.1.4.1: the device MUST NOT offer an mtu below 68; above 65535 cannot be expressed.
inline constexpr std::uint16_t kMinMtu = 68;
inline constexpr std::uint16_t kDefaultMtu = 1500;

// ---- struct virtio_net_hdr (§5.1.6) ------------------------------------------------------
// The 12-byte header of VERSION_1 or MRG_RXBUF; a legacy driver without MRG_RXBUF uses
// the first 10 bytes only (§5.1.6.1 legacy interface: "2 bytes shorter").
struct Header {
  std::uint8_t flags;
  std::uint8_t gso_type;
  std::uint16_t hdr_len;
  std::uint16_t gso_size;
  std::uint16_t csum_start;
  std::uint16_t csum_offset;
  std::uint16_t num_buffers;
};
static_assert(sizeof(Header) == 12);
inline constexpr std::uint32_t kHeaderSize = sizeof(Header);
inline constexpr std::uint32_t kLegacyHeaderSize = 10;
inline constexpr std::uint32_t kNumBuffersOffset = 10;
inline constexpr std::uint8_t kHeaderFlagNeedsCsum = 1;
inline constexpr std::uint8_t kHeaderFlagDataValid = 2;
inline constexpr std::uint8_t kGsoNone = 0;
inline constexpr std::uint8_t kGsoTcpv4 = 1;
inline constexpr std::uint8_t kGsoEcn = 0x80;

// ---- frames -------------------------------------------------------------------------------
inline constexpr std::uint32_t kEthernetHeader = 14;
inline constexpr std::uint32_t kVlanTag = 4;
// The largest frame a GSO header may describe: 64 KiB of IP datagram plus the Ethernet
// and VLAN headers (the reference's §8 caps).
inline constexpr std::uint32_t kMaxGsoFrame = 65535 + kEthernetHeader + kVlanTag;

// ---- control virtqueue (§5.1.6.5) ---------------------------------------------------------
struct ControlHeader {
  std::uint8_t class_id;
  std::uint8_t command;
};
static_assert(sizeof(ControlHeader) == 2);
inline constexpr std::uint8_t kControlOk = 0;
inline constexpr std::uint8_t kControlError = 1;

inline constexpr std::uint8_t kClassRx = 0;
inline constexpr std::uint8_t kRxPromisc = 0;
inline constexpr std::uint8_t kRxAllMulti = 1;
inline constexpr std::uint8_t kClassMac = 1;
inline constexpr std::uint8_t kMacTableSet = 0;
inline constexpr std::uint8_t kMacAddrSet = 1;
inline constexpr std::uint8_t kClassMq = 4;
inline constexpr std::uint8_t kMqVqPairsSet = 0;
inline constexpr std::uint8_t kClassGuestOffloads = 5;
inline constexpr std::uint8_t kGuestOffloadsSet = 0;
// MAC filter entries kept per class; more turn the class into "accept all", as QEMU does.
inline constexpr std::uint32_t kMacTableEntries = 64;

// ---- tap offloads (linux/if_tun.h TUN_F_*) -----------------------------------------------
inline constexpr unsigned kTunOffloadCsum = 0x01;
inline constexpr unsigned kTunOffloadTso4 = 0x02;
inline constexpr unsigned kTunOffloadTso6 = 0x04;
inline constexpr unsigned kTunOffloadTsoEcn = 0x08;

}  // namespace vpci::devices::net
