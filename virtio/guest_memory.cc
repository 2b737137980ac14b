#include "virtio/guest_memory.h"

#include <algorithm>
#include <iterator>
#include <limits>

namespace vpci::virtio {
namespace {

// True if [address, address + length) wraps past 2^64 (length > 0).
bool range_wraps(GuestAddress address, std::uint64_t length) {
  return length != 0 && address > std::numeric_limits<std::uint64_t>::max() - (length - 1);
}

const char* access_name(Access access) {
  return access == Access::kWrite ? "write" : "read";
}

}  // namespace

// ---- MemoryMap ---------------------------------------------------------------------------

const MemoryRegion* MemoryMap::find_region(GuestAddress address) const {
  // The last region whose base is <= address, if it contains address.
  auto it = std::upper_bound(
      regions_.begin(), regions_.end(), address,
      [](GuestAddress a, const auto& region) { return a < region->guest_address(); });
  if (it == regions_.begin()) return nullptr;
  const MemoryRegion* region = std::prev(it)->get();
  return region->contains(address) ? region : nullptr;
}

Result<MemoryMap::Chunk> MemoryMap::resolve(GuestAddress address, std::uint64_t length,
                                            Access access) const {
  if (translator_ && translator_->handles(address)) {
    VPCI_ASSIGN_OR_RETURN(TranslatedRange range, translator_->translate(address, length, access));
    // A translator that returns nothing or more than asked breaks its contract; refuse
    // rather than loop forever or overrun.
    if (range.host.empty() || range.host.size() > length || range.host.data() == nullptr) {
      return make_error(ErrorCode::kIoError,
                        "address translator returned {} bytes for a {}-byte {} at {:#x}",
                        range.host.size(), length, access_name(access), address);
    }
    return Chunk{range.host.data(), range.host.size(), std::move(range.pin)};
  }
  const MemoryRegion* region = find_region(address);
  if (region == nullptr) {
    return make_error(ErrorCode::kOutOfRange, "guest address {:#x} is not mapped", address);
  }
  if (access == Access::kWrite && !region->writable()) {
    return make_error(ErrorCode::kOutOfRange, "guest address {:#x} is in a read-only region",
                      address);
  }
  const std::uint64_t offset = address - region->guest_address();
  const std::uint64_t available = region->last_address() - address + 1;  // <= size, no wrap
  if (region->host() == nullptr) {
    return Chunk{nullptr, std::min(available, length), nullptr, region->messages()};
  }
  return Chunk{region->host() + offset, std::min(available, length), nullptr};
}

Status MemoryMap::collect(GuestAddress address, std::uint64_t length, Access access,
                          std::vector<Chunk>& chunks) const {
  if (range_wraps(address, length)) {
    return make_error(ErrorCode::kOutOfRange,
                      "guest range {:#x}+{:#x} wraps past the address space", address, length);
  }
  while (length > 0) {
    auto chunk = resolve(address, length, access);
    if (!chunk) {
      return tl::unexpected(std::move(chunk).error().with_context(
          fmt::format("{} of {:#x} bytes at {:#x}", access_name(access), length, address)));
    }
    address += chunk->length;  // cannot wrap: the whole range was checked above
    length -= chunk->length;
    chunks.push_back(std::move(*chunk));
  }
  return {};
}

Status MemoryMap::read(GuestAddress address, std::span<std::uint8_t> out) const {
  if (out.empty()) return {};
  // Fast path: one region holds the whole range (the common case for ring fields).
  if (!(translator_ && translator_->handles(address)) && !range_wraps(address, out.size())) {
    const MemoryRegion* region = find_region(address);
    if (region != nullptr && region->host() != nullptr &&
        out.size() - 1 <= region->last_address() - address) {
      const std::uint8_t* host = region->host() + (address - region->guest_address());
      report(address, host, out.size(), Access::kRead);
      std::memcpy(out.data(), host, out.size());
      return {};
    }
  }
  std::vector<Chunk> chunks;
  VPCI_TRY(collect(address, out.size(), Access::kRead, chunks));
  std::size_t done = 0;
  for (const Chunk& chunk : chunks) {
    const auto piece = out.subspan(done, static_cast<std::size_t>(chunk.length));
    if (chunk.host == nullptr) {
      VPCI_TRY(chunk.messages->read(address + done, piece));
    } else {
      report(address + done, chunk.host, chunk.length, Access::kRead);
      std::memcpy(piece.data(), chunk.host, piece.size());
    }
    done += chunk.length;
  }
  return {};
}

Status MemoryMap::write(GuestAddress address, std::span<const std::uint8_t> data) const {
  if (data.empty()) return {};
  if (!(translator_ && translator_->handles(address)) && !range_wraps(address, data.size())) {
    const MemoryRegion* region = find_region(address);
    if (region != nullptr && region->host() != nullptr && region->writable() &&
        data.size() - 1 <= region->last_address() - address) {
      std::uint8_t* host = region->host() + (address - region->guest_address());
      report(address, host, data.size(), Access::kWrite);
      std::memcpy(host, data.data(), data.size());
      return {};
    }
  }
  std::vector<Chunk> chunks;
  VPCI_TRY(collect(address, data.size(), Access::kWrite, chunks));
  std::size_t done = 0;
  // All-or-nothing holds for mapped memory; a message that fails midway may leave the
  // pieces before it written (the peer owns that memory and already failed us).
  for (const Chunk& chunk : chunks) {
    const auto piece = data.subspan(done, static_cast<std::size_t>(chunk.length));
    if (chunk.host == nullptr) {
      VPCI_TRY(chunk.messages->write(address + done, piece));
    } else {
      report(address + done, chunk.host, chunk.length, Access::kWrite);
      std::memcpy(chunk.host, piece.data(), piece.size());
    }
    done += chunk.length;
  }
  return {};
}

Status MemoryMap::check_range(GuestAddress address, std::uint64_t length, Access access) const {
  if (range_wraps(address, length)) {
    return make_error(ErrorCode::kOutOfRange,
                      "guest range {:#x}+{:#x} wraps past the address space", address, length);
  }
  while (length > 0) {
    if (translator_ && translator_->handles(address)) {
      // Translated ranges are validated by mapping them; the pins are dropped at once.
      VPCI_ASSIGN_OR_RETURN(Chunk chunk, resolve(address, length, access));
      address += chunk.length;
      length -= chunk.length;
      continue;
    }
    const MemoryRegion* region = find_region(address);
    if (region == nullptr) {
      return make_error(ErrorCode::kOutOfRange, "guest address {:#x} is not mapped", address);
    }
    if (access == Access::kWrite && !region->writable()) {
      return make_error(ErrorCode::kOutOfRange, "guest address {:#x} is in a read-only region",
                        address);
    }
    const std::uint64_t available = region->last_address() - address + 1;
    const std::uint64_t step = std::min(available, length);
    address += step;
    length -= step;
  }
  return {};
}

Result<HostBufferList> MemoryMap::host_buffers(GuestAddress address, std::uint64_t length,
                                               Access access) const {
  std::vector<Chunk> chunks;
  VPCI_TRY(collect(address, length, access, chunks));
  HostBufferList list;
  list.spans.reserve(chunks.size());
  std::uint64_t done = 0;
  for (Chunk& chunk : chunks) {
    if (chunk.host == nullptr) {
      return make_error(ErrorCode::kUnsupported,
                        "guest address {:#x} is not shared with this process (mapped without a "
                        "file descriptor): no zero-copy access",
                        address + done);
    }
    report(address + done, chunk.host, chunk.length, access);
    list.spans.emplace_back(chunk.host, static_cast<std::size_t>(chunk.length));
    // A pin may own a mapping while pointing at nothing (a deleter-only token).
    if (chunk.pin.use_count() != 0) list.pins.push_back(std::move(chunk.pin));
    done += chunk.length;
  }
  return list;
}

// ---- GuestMemory -------------------------------------------------------------------------

std::shared_ptr<const MemoryMap> GuestMemory::replace_locked(
    std::vector<std::shared_ptr<const MemoryRegion>> regions) {
  std::shared_ptr<const MemoryMap> old = std::move(current_);
  current_ =
      std::make_shared<const MemoryMap>(std::move(regions), translator_, observer_, ++generation_);
  return old;
}

Status GuestMemory::add_region(MemoryRegionSpec spec) {
  if (spec.size == 0) {
    return make_error(ErrorCode::kInvalidArgument, "memory region at {:#x} is empty",
                      spec.guest_address);
  }
  if ((spec.host == nullptr) == (spec.messages == nullptr)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "memory region at {:#x} needs exactly one of a host mapping and a message "
                      "path",
                      spec.guest_address);
  }
  if (range_wraps(spec.guest_address, spec.size)) {
    return make_error(ErrorCode::kOutOfRange,
                      "memory region {:#x}+{:#x} wraps past the address space", spec.guest_address,
                      spec.size);
  }
  const GuestAddress first = spec.guest_address;
  const GuestAddress last = spec.guest_address + (spec.size - 1);
  // The region is created outside the lock: should it be refused, its on_release
  // hook (run by the destructor) must not run under our lock either.
  auto region = std::make_shared<const MemoryRegion>(std::move(spec));
  std::shared_ptr<const MemoryMap> old;
  {
    std::lock_guard lock(mutex_);
    for (const auto& existing : current_->regions()) {
      if (first <= existing->last_address() && existing->guest_address() <= last) {
        return make_error(ErrorCode::kConflict, "memory region {:#x}..{:#x} overlaps {:#x}..{:#x}",
                          first, last, existing->guest_address(), existing->last_address());
      }
    }
    std::vector<std::shared_ptr<const MemoryRegion>> regions(current_->regions().begin(),
                                                             current_->regions().end());
    auto pos =
        std::upper_bound(regions.begin(), regions.end(), first,
                         [](GuestAddress a, const auto& r) { return a < r->guest_address(); });
    regions.insert(pos, std::move(region));
    old = replace_locked(std::move(regions));
  }
  return {};
}

Result<std::size_t> GuestMemory::remove_range(GuestAddress address, std::uint64_t size) {
  if (size == 0 || range_wraps(address, size)) {
    return make_error(ErrorCode::kInvalidArgument, "cannot unmap {:#x}+{:#x}", address, size);
  }
  const GuestAddress last = address + (size - 1);
  std::shared_ptr<const MemoryMap> old;
  std::vector<std::shared_ptr<const MemoryRegion>> removed;  // released after unlocking
  {
    std::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<const MemoryRegion>> kept;
    for (const auto& region : current_->regions()) {
      const bool overlaps = address <= region->last_address() && region->guest_address() <= last;
      if (!overlaps) {
        kept.push_back(region);
        continue;
      }
      const bool inside = region->guest_address() >= address && region->last_address() <= last;
      if (!inside) {
        return make_error(ErrorCode::kConflict,
                          "unmap of {:#x}..{:#x} would split region {:#x}..{:#x}", address, last,
                          region->guest_address(), region->last_address());
      }
      removed.push_back(region);
    }
    if (removed.empty()) {
      return make_error(ErrorCode::kNotFound, "no memory region inside {:#x}..{:#x}", address,
                        last);
    }
    old = replace_locked(std::move(kept));
  }
  return removed.size();
}

void GuestMemory::set_translator(std::shared_ptr<AddressTranslator> translator) {
  std::shared_ptr<const MemoryMap> old;
  std::lock_guard lock(mutex_);
  translator_ = std::move(translator);
  std::vector<std::shared_ptr<const MemoryRegion>> regions(current_->regions().begin(),
                                                           current_->regions().end());
  old = replace_locked(std::move(regions));
}

void GuestMemory::set_access_observer(AccessObserver observer) {
  std::shared_ptr<const MemoryMap> old;
  std::lock_guard lock(mutex_);
  observer_ = observer ? std::make_shared<const AccessObserver>(std::move(observer)) : nullptr;
  std::vector<std::shared_ptr<const MemoryRegion>> regions(current_->regions().begin(),
                                                           current_->regions().end());
  old = replace_locked(std::move(regions));
}

}  // namespace vpci::virtio
