// Locks on the backing images of `vpci serve`, so a running server's images are never
// written by another server (or by a second device of the same one).
//
// Like QEMU's file-posix driver, every image is held with an open file description
// (OFD) lock from `fcntl(F_OFD_SETLK)` for as long as it is served: exclusive for a
// writable image, shared for a read-only one. So one image is either writable in one
// device or read-only in any number of devices. OFD locks belong to the open file, not
// the process: two devices of one process that open the same image conflict as two
// processes do, the lock goes away with the last descriptor (also on a crash), and they
// conflict with QEMU's own image locks and with classic POSIX record locks.
//
// Locks are advisory: they stop cooperating programs (vpci, QEMU), not `dd`. A file
// system that cannot lock (some network file systems) makes the image unservable:
// serving it unprotected is exactly what these locks exist to prevent.
#pragma once

#include <cstdint>
#include <filesystem>

#include "base/error.h"
#include "server/unique_fd.h"

namespace vpci::server {

// Opens `path` (a regular file or a block device) read-only or read-write and locks the
// whole of it, shared when `read_only`, exclusive otherwise. A held lock is refused with
// kConflict naming the image and, where it can be found, the holder ("process 1234
// (qemu-system-x86) holds a lock on it", or "another device of this configuration
// uses it").
Result<UniqueFd> open_locked_image(const std::filesystem::path& path, bool read_only);

// Locks the whole of the already open `fd` (which `path` names in messages) as
// open_locked_image() does.
Status lock_image(int fd, const std::filesystem::path& path, bool read_only);

// The default image of `vpci serve`: created if missing (0644, never through a symbolic
// link), locked exclusively before anything about it is changed, and only then emptied
// and resized to `bytes` (sparse), so an image another process holds is never
// truncated. `created` says whether this call made the file, so a start that fails
// later can remove it again.
Result<UniqueFd> open_fresh_image(const std::filesystem::path& path, std::uint64_t bytes,
                                  bool& created);

// Whether open_fresh_image() could lock `path` now, without creating, locking or
// changing anything (for `vpci serve --check`); a missing file is fine.
Status check_image_lockable(const std::filesystem::path& path);

}  // namespace vpci::server
