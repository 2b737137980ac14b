// Guest memory as a device sees it: the only way vpci device code touches memory the
// driver controls.
//
// A `GuestMemory` owns a set of regions, each mapping a range of bus addresses
// (guest-physical, or IOVA when VIRTIO_F_ACCESS_PLATFORM is negotiated) to host memory.
// Readers never look at the set directly: they take a `MemoryMap` snapshot and do every
// access through it. A snapshot is immutable and keeps every region it lists alive, so
// a region removed while a request is in flight stays mapped until the last snapshot
// holding it is gone; only then does the region's `on_release` hook run (where a
// vfio-user server calls munmap for DMA_UNMAP).
//
// Threading contract
//   * `GuestMemory` methods may be called from any thread, concurrently.
//   * A `MemoryMap` is immutable; any number of threads may use one snapshot at once.
//   * `on_release` runs on whichever thread drops the last reference (a device thread
//     completing a request, or the thread calling `remove_range`), never while
//     `GuestMemory`'s internal lock is held, so it may call back into `GuestMemory`.
//   * A server that must not acknowledge an unmap before the mapping is really gone
//     (e.g. vfio-user DMA_UNMAP replies) waits for its `on_release` hook to run.
//   * The guest may write its memory concurrently with device reads. Device code copies
//     every guest-controlled structure exactly once into local memory and validates the
//     copy (no double fetch); ring code adds the acquire/release fences of virtio 1.3
//     §2.7.13 and §2.8.21.
//
// Memory the host cannot map (a vfio-user client that sent DMA_MAP without an fd, as
// QEMU does for guest RAM that is not memory-backend-memfd,share=on) is a region with a
// `MessageMemory` instead of a host pointer: read() and write() reach it through that
// object (DMA_READ/DMA_WRITE messages), one round trip per piece; host_buffers() refuses
// it, so zero-copy users check `all_host_mapped()` and fall back to bounce buffers.
//
// Address translation: a pluggable `AddressTranslator` is consulted first for the
// addresses it claims (for Xen, bit 63 set: a grant reference and offset, see
// virtio/xen_grant.h); all other addresses are looked up in the regions.
//
// Every access is bounds-checked and overflow-safe: a range that wraps past 2^64, is
// partly unmapped, or writes into a read-only region is an error and nothing is copied.
// An optional `AccessObserver` sees every host range actually touched, which lets fuzz
// targets assert that no access leaves the buffers they mapped.
#pragma once

#include <concepts>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <type_traits>
#include <vector>

#include "base/error.h"

namespace vpci::virtio {

// A bus address as the driver wrote it into a ring or register.
using GuestAddress = std::uint64_t;

enum class Access : std::uint8_t { kRead, kWrite };

// Objects that may be copied to or from guest memory: trivially copyable and without
// padding, so every byte has a meaning and nothing uninitialised leaks to the guest.
template <typename T>
concept GuestPod = std::is_trivially_copyable_v<T> && std::has_unique_object_representations_v<T>;

// Moves the bytes of a region that has no host mapping (see the file comment). The
// range lies inside one region and its permissions have been checked. Implementations
// decide from which threads they can be used and fail (kUnsupported) elsewhere.
class MessageMemory {
 public:
  virtual Status read(GuestAddress address, std::span<std::uint8_t> out) = 0;
  virtual Status write(GuestAddress address, std::span<const std::uint8_t> data) = 0;

 protected:
  ~MessageMemory() = default;
};

struct MemoryRegionSpec {
  GuestAddress guest_address = 0;  // first bus address of the region
  std::uint64_t size = 0;          // bytes; > 0 and guest_address + size - 1 must not wrap
  // Exactly one of `host` and `messages`: the host mapping of all `size` bytes (valid
  // until on_release), or the message path to memory this process cannot map.
  std::uint8_t* host = nullptr;
  std::shared_ptr<MessageMemory> messages;
  bool writable = true;  // false: device writes fail (vfio-user DMA_MAP without WRITE)
  // Optional description of the backing, for forwarding the mapping elsewhere (a
  // vhost-user backend, a sandboxed device process). Not owned: close it in on_release.
  int fd = -1;
  std::uint64_t fd_offset = 0;
  // Runs once, when the region has been removed and no snapshot uses it any more.
  std::function<void()> on_release;
};

class MemoryRegion {
 public:
  explicit MemoryRegion(MemoryRegionSpec spec) : spec_(std::move(spec)) {}
  ~MemoryRegion() {
    if (spec_.on_release) spec_.on_release();
  }
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;

  [[nodiscard]] GuestAddress guest_address() const { return spec_.guest_address; }
  [[nodiscard]] std::uint64_t size() const { return spec_.size; }
  // Last address inside the region (inclusive), so a region ending at 2^64 - 1 is
  // representable.
  [[nodiscard]] GuestAddress last_address() const { return spec_.guest_address + (spec_.size - 1); }
  [[nodiscard]] bool contains(GuestAddress address) const {
    return address >= spec_.guest_address && address <= last_address();
  }
  // nullptr for a message-backed region.
  [[nodiscard]] std::uint8_t* host() const { return spec_.host; }
  [[nodiscard]] MessageMemory* messages() const { return spec_.messages.get(); }
  [[nodiscard]] bool writable() const { return spec_.writable; }
  [[nodiscard]] int fd() const { return spec_.fd; }
  [[nodiscard]] std::uint64_t fd_offset() const { return spec_.fd_offset; }

 private:
  MemoryRegionSpec spec_;
};

// What a translator returns: host bytes for a prefix (at least one byte) of the
// requested range, and whatever keeps that host mapping alive while it is used.
struct TranslatedRange {
  std::span<std::uint8_t> host;
  std::shared_ptr<const void> pin;
};

// Shared by every snapshot, so called from any thread that accesses guest memory:
// implementations must be thread-safe.
class AddressTranslator {
 public:
  virtual ~AddressTranslator() = default;
  // True if `address` belongs to this translator's address space (e.g. bit 63 set).
  [[nodiscard]] virtual bool handles(GuestAddress address) const = 0;
  // Maps [address, address + length) or a non-empty prefix of it. Called only for
  // addresses `handles()` accepted, with length > 0 and no wrap past 2^64.
  [[nodiscard]] virtual Result<TranslatedRange> translate(GuestAddress address,
                                                          std::uint64_t length, Access access) = 0;
};

struct AccessRecord {
  GuestAddress guest_address;
  const std::uint8_t* host;
  std::uint64_t length;
  Access access;
};
// Called for every host range a MemoryMap reads, writes or hands out, on the thread
// doing the access (possibly several at once). For tests and fuzzing.
using AccessObserver = std::function<void(const AccessRecord&)>;

// Host memory for a guest range, possibly in several pieces (the range crossed regions
// or grant pages). `pins` keep translator mappings alive; region mappings are kept
// alive by the snapshot that produced the list, which the caller must hold as long.
struct HostBufferList {
  std::vector<std::span<std::uint8_t>> spans;
  std::vector<std::shared_ptr<const void>> pins;

  [[nodiscard]] std::uint64_t total_bytes() const {
    std::uint64_t total = 0;
    for (const auto& span : spans) total += span.size();
    return total;
  }
};

// An immutable view of guest memory: the one bounds-checked API for guest accesses.
class MemoryMap {
 public:
  MemoryMap() = default;
  MemoryMap(std::vector<std::shared_ptr<const MemoryRegion>> regions,
            std::shared_ptr<AddressTranslator> translator,
            std::shared_ptr<const AccessObserver> observer, std::uint64_t generation)
      : regions_(std::move(regions)),
        translator_(std::move(translator)),
        observer_(std::move(observer)),
        generation_(generation) {
    for (const auto& region : regions_) {
      if (region->host() == nullptr) {
        all_host_mapped_ = false;
      } else {
        any_host_mapped_ = true;
      }
    }
  }

  // Copies guest bytes [address, address + out.size()) to `out`. All or nothing.
  Status read(GuestAddress address, std::span<std::uint8_t> out) const;
  // Copies `data` to guest bytes at `address`. All or nothing.
  Status write(GuestAddress address, std::span<const std::uint8_t> data) const;

  template <GuestPod T>
  [[nodiscard]] Result<T> read_obj(GuestAddress address) const {
    T value{};
    VPCI_TRY(
        read(address, std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(&value), sizeof(T))));
    return value;
  }
  template <GuestPod T>
  Status write_obj(GuestAddress address, const T& value) const {
    return write(address, std::span<const std::uint8_t>(
                              reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)));
  }

  // Succeeds if every byte of the range is mapped for `access`. Does not report to the
  // access observer (nothing is touched).
  [[nodiscard]] Status check_range(GuestAddress address, std::uint64_t length, Access access) const;

  // Host memory for the guest range, for zero-copy I/O (preadv/pwritev). The spans stay
  // valid while this snapshot (and the returned pins) live. A range touching a
  // message-backed region fails with kUnsupported.
  [[nodiscard]] Result<HostBufferList> host_buffers(GuestAddress address, std::uint64_t length,
                                                    Access access) const;

  // False if some region is message-backed: host_buffers() may then fail where read()
  // and write() work, so zero-copy users should copy through a bounce buffer instead.
  [[nodiscard]] bool all_host_mapped() const { return all_host_mapped_; }
  // True if some region is host-mapped: the client shares (some of) guest RAM. QEMU maps
  // its ROMs without a file even when RAM is shared, so all_host_mapped() says nothing
  // about RAM; with QEMU's default RAM no region is host-mapped at all.
  [[nodiscard]] bool any_host_mapped() const { return any_host_mapped_; }

  [[nodiscard]] const MemoryRegion* find_region(GuestAddress address) const;
  [[nodiscard]] std::span<const std::shared_ptr<const MemoryRegion>> regions() const {
    return regions_;
  }
  // Increases with every change to the region set.
  [[nodiscard]] std::uint64_t generation() const { return generation_; }

 private:
  struct Chunk {
    std::uint8_t* host;  // nullptr: reach the bytes through `messages`
    std::uint64_t length;
    std::shared_ptr<const void> pin;
    MessageMemory* messages = nullptr;
  };
  // The longest host-contiguous prefix (<= length bytes, >= 1) of the range at `address`.
  [[nodiscard]] Result<Chunk> resolve(GuestAddress address, std::uint64_t length,
                                      Access access) const;
  // Resolves the whole range into chunks; fails without side effects if any byte is bad.
  [[nodiscard]] Status collect(GuestAddress address, std::uint64_t length, Access access,
                               std::vector<Chunk>& chunks) const;
  void report(GuestAddress address, const std::uint8_t* host, std::uint64_t length,
              Access access) const {
    if (observer_) (*observer_)(AccessRecord{address, host, length, access});
  }

  std::vector<std::shared_ptr<const MemoryRegion>> regions_;  // sorted by guest_address
  std::shared_ptr<AddressTranslator> translator_;
  std::shared_ptr<const AccessObserver> observer_;
  std::uint64_t generation_ = 0;
  bool all_host_mapped_ = true;
  bool any_host_mapped_ = false;
};

// The mutable, thread-safe owner of the region set.
class GuestMemory {
 public:
  GuestMemory() : current_(std::make_shared<const MemoryMap>()) {}

  // Adds a region; refuses empty, wrapping or overlapping regions, and regions with
  // neither or both of a host mapping and a message path.
  Status add_region(MemoryRegionSpec spec);
  // Removes every region inside [address, address + size). A region that only partly
  // overlaps the range is refused (regions are never split) and nothing is removed;
  // so is a range that covers no region. Returns the number of regions removed. Their
  // memory stays mapped until in-flight users drop their snapshots.
  Result<std::size_t> remove_range(GuestAddress address, std::uint64_t size);
  void set_translator(std::shared_ptr<AddressTranslator> translator);
  void set_access_observer(AccessObserver observer);

  [[nodiscard]] std::shared_ptr<const MemoryMap> snapshot() const {
    std::lock_guard lock(mutex_);
    return current_;
  }

 private:
  // Publishes a new map built from `regions`; the old map is released after unlocking.
  std::shared_ptr<const MemoryMap> replace_locked(
      std::vector<std::shared_ptr<const MemoryRegion>> regions);

  mutable std::mutex mutex_;
  std::shared_ptr<const MemoryMap> current_;
  std::shared_ptr<AddressTranslator> translator_;
  std::shared_ptr<const AccessObserver> observer_;
  std::uint64_t generation_ = 0;
};

}  // namespace vpci::virtio
