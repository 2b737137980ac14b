// Storage behind a virtio-blk device. Offsets and lengths are in bytes; the device has
// already checked them against size_bytes(). Data moves directly between the backend
// and guest memory through host spans (zero copy).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"

namespace vpci::devices {

class BlockBackend {
 public:
  virtual ~BlockBackend() = default;

  [[nodiscard]] virtual std::uint64_t size_bytes() const = 0;
  // Names the storage in messages (a path).
  [[nodiscard]] virtual std::string name() const { return "block backend"; }
  // The descriptor io_uring submits to (devices/block_io.h), or -1 when there is none
  // and asynchronous I/O goes through the thread pool.
  [[nodiscard]] virtual int fd() const { return -1; }
  // Fills every span, in order, from `offset`; a short read is an error.
  [[nodiscard]] virtual Status read(std::uint64_t offset,
                                    std::span<const std::span<std::uint8_t>> buffers) = 0;
  // Writes every span, in order, at `offset`; a short write is an error.
  [[nodiscard]] virtual Status write(std::uint64_t offset,
                                     std::span<const std::span<std::uint8_t>> buffers) = 0;
  // Makes every completed write durable (virtio 1.3 §5.2.6.2: a write is stable once a
  // FLUSH issued after its completion has completed).
  [[nodiscard]] virtual Status flush() = 0;
  // Deallocates the range; kUnsupported if the storage cannot.
  [[nodiscard]] virtual Status discard(std::uint64_t offset, std::uint64_t length) = 0;
  // Makes the range read back as zeroes, deallocating it if `may_unmap` allows.
  [[nodiscard]] virtual Status write_zeroes(std::uint64_t offset, std::uint64_t length,
                                            bool may_unmap) = 0;
};

// A regular file or a block device, accessed with preadv/pwritev, fdatasync and
// fallocate (punch hole / zero range; block devices support both since Linux 4.9).
class FileBlockBackend final : public BlockBackend {
 public:
  // Opens `path` read-write, or read-only when `read_only`; block devices report their
  // size with BLKGETSIZE64.
  [[nodiscard]] static Result<std::unique_ptr<FileBlockBackend>> open(const std::string& path,
                                                                      bool read_only);
  // Takes ownership of `fd`, already open on a regular file or block device (closed on
  // every path); `path` names it in messages. `vpci serve` opens and locks its images
  // itself (server/image_lock.h) and hands the descriptor over.
  [[nodiscard]] static Result<std::unique_ptr<FileBlockBackend>> adopt(int fd, std::string path);
  ~FileBlockBackend() override;
  FileBlockBackend(const FileBlockBackend&) = delete;
  FileBlockBackend& operator=(const FileBlockBackend&) = delete;

  [[nodiscard]] std::uint64_t size_bytes() const override { return size_; }
  [[nodiscard]] Status read(std::uint64_t offset,
                            std::span<const std::span<std::uint8_t>> buffers) override;
  [[nodiscard]] Status write(std::uint64_t offset,
                             std::span<const std::span<std::uint8_t>> buffers) override;
  [[nodiscard]] Status flush() override;
  [[nodiscard]] Status discard(std::uint64_t offset, std::uint64_t length) override;
  [[nodiscard]] Status write_zeroes(std::uint64_t offset, std::uint64_t length,
                                    bool may_unmap) override;

  [[nodiscard]] std::string name() const override { return path_; }
  [[nodiscard]] int fd() const override { return fd_; }
  [[nodiscard]] bool is_block_device() const { return block_device_; }

 private:
  FileBlockBackend(int fd, std::uint64_t size, bool block_device, std::string path)
      : fd_(fd), size_(size), block_device_(block_device), path_(std::move(path)) {}
  [[nodiscard]] Status transfer(bool write, std::uint64_t offset,
                                std::span<const std::span<std::uint8_t>> buffers);

  int fd_;
  std::uint64_t size_;
  bool block_device_;
  std::string path_;
};

}  // namespace vpci::devices
