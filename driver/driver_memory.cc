#include "driver/driver_memory.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <sys/mman.h>

#include "base/log.h"

namespace vpci::driver {

void driver_misuse(const char* what) {
  logger().critical("virtio driver misuse: {}", what);
  std::abort();
}

Result<GuestAddress> DriverMemory::allocate(std::size_t bytes, std::size_t align) {
  const std::size_t start = (next_ + align - 1) / align * align;
  if (start > bytes_.size() || bytes > bytes_.size() - start) {
    return make_error(ErrorCode::kNoSpace, "driver memory of {} bytes has no room for {} more",
                      bytes_.size(), bytes);
  }
  next_ = start + bytes;
  std::memset(bytes_.data() + start, 0, bytes);
  return base_ + start;
}

GuestAddress DriverMemory::alloc(std::size_t bytes, std::size_t align) {
  auto address = allocate(bytes, align);
  if (!address) driver_misuse("driver memory exhausted");
  return *address;
}

std::uint8_t* DriverMemory::host(GuestAddress address, std::size_t length) const {
  if (address < base_ || address - base_ > bytes_.size() ||
      length > bytes_.size() - (address - base_))
    driver_misuse("access outside the driver's memory");
  return bytes_.data() + (address - base_);
}

void DriverMemory::write(GuestAddress address, std::span<const std::uint8_t> data) const {
  if (data.empty()) return;  // an empty span may carry a null pointer, which memcpy rejects
  std::memcpy(host(address, data.size()), data.data(), data.size());
}

std::vector<std::uint8_t> DriverMemory::read(GuestAddress address, std::size_t length) const {
  const std::uint8_t* p = host(address, length);
  return std::vector<std::uint8_t>(p, p + length);
}

bool DriverMemory::owns(const std::uint8_t* host_address, std::uint64_t length) const {
  const auto begin = reinterpret_cast<std::uintptr_t>(bytes_.data());
  const auto p = reinterpret_cast<std::uintptr_t>(host_address);
  return p >= begin && length <= bytes_.size() && p - begin <= bytes_.size() - length;
}

Result<std::unique_ptr<DmaMemory>> DmaMemory::create(GuestAddress iova, std::size_t size) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  size = (size + page - 1) / page * page;
  server::UniqueFd fd(::memfd_create("vpci-driver", MFD_CLOEXEC));
  if (!fd.valid()) return make_error(ErrorCode::kIoError, "memfd_create: {}", errno_text(errno));
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
    return make_error(ErrorCode::kIoError, "ftruncate memfd to {} bytes: {}", size,
                      errno_text(errno));
  void* mapping = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (mapping == MAP_FAILED)
    return make_error(ErrorCode::kIoError, "mmap of {} bytes: {}", size, errno_text(errno));
  return std::unique_ptr<DmaMemory>(new DmaMemory(
      iova, std::span<std::uint8_t>(static_cast<std::uint8_t*>(mapping), size), std::move(fd)));
}

DmaMemory::~DmaMemory() {
  ::munmap(bytes().data(), bytes().size());
}

}  // namespace vpci::driver
