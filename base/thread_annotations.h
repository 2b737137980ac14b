// Clang's thread-safety annotations (https://clang.llvm.org/docs/ThreadSafetyAnalysis.html)
// and a std::mutex that carries them, so `-Wthread-safety` (the clang preset) checks that
// state shared between threads is only touched under its lock. GCC ignores them.
#pragma once

#include <mutex>

#if defined(__clang__)
#define VPCI_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define VPCI_THREAD_ANNOTATION(x)
#endif

#define VPCI_CAPABILITY(name) VPCI_THREAD_ANNOTATION(capability(name))
#define VPCI_SCOPED_CAPABILITY VPCI_THREAD_ANNOTATION(scoped_lockable)
#define VPCI_GUARDED_BY(m) VPCI_THREAD_ANNOTATION(guarded_by(m))
#define VPCI_REQUIRES(...) VPCI_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define VPCI_ACQUIRE(...) VPCI_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define VPCI_RELEASE(...) VPCI_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define VPCI_EXCLUDES(...) VPCI_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))

namespace vpci {

class VPCI_CAPABILITY("mutex") Mutex {
 public:
  void lock() VPCI_ACQUIRE() { mutex_.lock(); }
  void unlock() VPCI_RELEASE() { mutex_.unlock(); }

 private:
  std::mutex mutex_;
};

class VPCI_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mutex) VPCI_ACQUIRE(mutex) : mutex_(mutex) { mutex_.lock(); }
  ~MutexLock() VPCI_RELEASE() { mutex_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mutex_;
};

}  // namespace vpci
