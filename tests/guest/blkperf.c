// Guest-side block throughput probe for the real-guest benchmark (bench/guest-blk.sh),
// built on the host with `gcc -static -O2` by build-initramfs.sh and run by the
// "blkperf" check of initramfs/checks.sh. busybox dd cannot seek randomly within one
// process, and timing dd from the shell would measure fork+exec; this measures one
// pattern of O_DIRECT I/O with clock_gettime and prints
//   VPCI-PERF <name> <MB/s> <IOPS> ops=<n> bytes=<n> seconds=<s>
// (MB = 10^6 bytes). Usage:
//   blkperf DEVICE NAME seqread|seqwrite|randread|randwrite BLOCK TOTAL SPAN MAXSEC [JOBS]
// Sequential patterns walk [0, SPAN) from offset 0 (wrapping); random ones pick
// BLOCK-aligned offsets uniformly in [0, SPAN) with a fixed-seed xorshift per job, so
// both runs being compared issue the same offsets. Stops after TOTAL bytes or MAXSEC
// seconds, whichever comes first (under TCG a fixed total could take minutes). JOBS
// (default 1) threads issue I/O concurrently: queue depth JOBS, where the device can
// batch notifications and interrupts (sequential jobs share one cursor).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t parse_size(const char* text) {
  char* end = NULL;
  uint64_t value = strtoull(text, &end, 10);
  if (*end == 'k' || *end == 'K')
    value <<= 10;
  else if (*end == 'm' || *end == 'M')
    value <<= 20;
  else if (*end == 'g' || *end == 'G')
    value <<= 30;
  return value;
}

struct shared {
  int fd;
  int write;
  int random;
  uint64_t block;
  uint64_t total;
  uint64_t blocks_in_span;
  double start;
  double max_seconds;
  atomic_uint_fast64_t next_sequential;
  atomic_uint_fast64_t bytes;
  atomic_uint_fast64_t ops;
  atomic_int failed;
  const char* name;
};

struct job {
  struct shared* shared;
  uint64_t seed;
};

static void* run_job(void* argument) {
  struct job* job = argument;
  struct shared* sh = job->shared;
  void* buffer = NULL;
  if (posix_memalign(&buffer, 4096, sh->block) != 0) {
    atomic_store(&sh->failed, 1);
    return NULL;
  }
  // Non-zero data, so nothing along the way can shortcut zero pages.
  for (uint64_t i = 0; i < sh->block; ++i)
    ((unsigned char*)buffer)[i] = (unsigned char)(i * 131 + 7);
  uint64_t state = job->seed;
  while (!atomic_load(&sh->failed)) {
    uint64_t index;
    if (sh->random) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      index = state % sh->blocks_in_span;
    } else {
      index = atomic_fetch_add(&sh->next_sequential, 1) % sh->blocks_in_span;
    }
    const off_t offset = (off_t)(index * sh->block);
    const ssize_t done = sh->write ? pwrite(sh->fd, buffer, sh->block, offset)
                                   : pread(sh->fd, buffer, sh->block, offset);
    if (done != (ssize_t)sh->block) {
      printf("VPCI-PERF %s error %s at %lld: %s\n", sh->name, sh->write ? "pwrite" : "pread",
             (long long)offset, done < 0 ? strerror(errno) : "short transfer");
      atomic_store(&sh->failed, 1);
      break;
    }
    atomic_fetch_add(&sh->ops, 1);
    // Checking the clock every op costs a vDSO call: negligible next to an I/O.
    if (atomic_fetch_add(&sh->bytes, sh->block) + sh->block >= sh->total) break;
    if (now() - sh->start >= sh->max_seconds) break;
  }
  free(buffer);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 8 && argc != 9) {
    fprintf(stderr,
            "usage: blkperf DEVICE NAME seqread|seqwrite|randread|randwrite BLOCK TOTAL SPAN "
            "MAXSEC [JOBS]\n");
    return 2;
  }
  const char* device = argv[1];
  const char* name = argv[2];
  const char* pattern = argv[3];
  const uint64_t block = parse_size(argv[4]);
  const uint64_t total = parse_size(argv[5]);
  const uint64_t span = parse_size(argv[6]);
  const double max_seconds = atof(argv[7]);
  const int jobs = argc == 9 ? atoi(argv[8]) : 1;
  const int write = strcmp(pattern, "seqwrite") == 0 || strcmp(pattern, "randwrite") == 0;
  const int random = strcmp(pattern, "randread") == 0 || strcmp(pattern, "randwrite") == 0;
  if (!write && !random && strcmp(pattern, "seqread") != 0) {
    fprintf(stderr, "blkperf: unknown pattern %s\n", pattern);
    return 2;
  }
  if (block == 0 || block % 512 != 0 || span < block || total < block || jobs < 1 || jobs > 64) {
    fprintf(stderr, "blkperf: bad sizes or job count\n");
    return 2;
  }
  const int fd = open(device, (write ? O_WRONLY : O_RDONLY) | O_DIRECT);
  if (fd < 0) {
    printf("VPCI-PERF %s error open %s: %s\n", name, device, strerror(errno));
    return 1;
  }
  struct shared sh = {.fd = fd,
                      .write = write,
                      .random = random,
                      .block = block,
                      .total = total,
                      .blocks_in_span = span / block,
                      .max_seconds = max_seconds,
                      .name = name};
  atomic_init(&sh.next_sequential, 0);
  atomic_init(&sh.bytes, 0);
  atomic_init(&sh.ops, 0);
  atomic_init(&sh.failed, 0);
  pthread_t threads[64];
  struct job job_of[64];
  sh.start = now();
  for (int j = 0; j < jobs; ++j) {
    job_of[j] = (struct job){&sh, 0x9E3779B97F4A7C15ull + (uint64_t)j * 0x2545F4914F6CDD1Dull};
    if (pthread_create(&threads[j], NULL, run_job, &job_of[j]) != 0) {
      printf("VPCI-PERF %s error pthread_create\n", name);
      return 1;
    }
  }
  for (int j = 0; j < jobs; ++j) pthread_join(threads[j], NULL);
  double elapsed = now() - sh.start;
  close(fd);
  if (atomic_load(&sh.failed)) return 1;
  if (elapsed <= 0) elapsed = 1e-9;
  const uint64_t ops = atomic_load(&sh.ops);
  const uint64_t bytes = ops * block;
  printf("VPCI-PERF %s %.2f %.0f ops=%llu bytes=%llu seconds=%.3f jobs=%d\n", name,
         (double)bytes / elapsed / 1e6, (double)ops / elapsed, (unsigned long long)ops,
         (unsigned long long)bytes, elapsed, jobs);
  return 0;
}
