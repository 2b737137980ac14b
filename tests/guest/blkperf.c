// Guest-side block throughput probe for the real-guest benchmark (bench/guest-blk.sh),
// built on the host with `gcc -static -O2` by build-initramfs.sh and run by the
// "blkperf" check of initramfs/checks.sh. busybox dd cannot seek randomly within one
// process, and timing dd from the shell would measure fork+exec; this measures one
// pattern of O_DIRECT I/O with clock_gettime and prints
//   VPCI-PERF <name> <MB/s> <IOPS> ops=<n> bytes=<n> seconds=<s>
// (MB = 10^6 bytes). Usage:
//   blkperf DEVICE NAME seqread|seqwrite|randread|randwrite BLOCK TOTAL SPAN MAXSEC
// Sequential patterns walk [0, SPAN) from offset 0 (wrapping); random ones pick
// BLOCK-aligned offsets uniformly in [0, SPAN) with a fixed-seed xorshift, so both runs
// being compared issue the same offsets. Stops after TOTAL bytes or MAXSEC seconds,
// whichever comes first (under TCG a fixed total could take minutes).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
  if (*end == 'k' || *end == 'K') value <<= 10;
  else if (*end == 'm' || *end == 'M') value <<= 20;
  else if (*end == 'g' || *end == 'G') value <<= 30;
  return value;
}

int main(int argc, char** argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: blkperf DEVICE NAME seqread|seqwrite|randread|randwrite BLOCK TOTAL SPAN MAXSEC\n");
    return 2;
  }
  const char* device = argv[1];
  const char* name = argv[2];
  const char* pattern = argv[3];
  const uint64_t block = parse_size(argv[4]);
  const uint64_t total = parse_size(argv[5]);
  const uint64_t span = parse_size(argv[6]);
  const double max_seconds = atof(argv[7]);
  const int write = strcmp(pattern, "seqwrite") == 0 || strcmp(pattern, "randwrite") == 0;
  const int random = strcmp(pattern, "randread") == 0 || strcmp(pattern, "randwrite") == 0;
  if (!write && !random && strcmp(pattern, "seqread") != 0) {
    fprintf(stderr, "blkperf: unknown pattern %s\n", pattern);
    return 2;
  }
  if (block == 0 || block % 512 != 0 || span < block || total < block) {
    fprintf(stderr, "blkperf: bad sizes\n");
    return 2;
  }
  const int fd = open(device, (write ? O_WRONLY : O_RDONLY) | O_DIRECT);
  if (fd < 0) {
    printf("VPCI-PERF %s error open %s: %s\n", name, device, strerror(errno));
    return 1;
  }
  void* buffer = NULL;
  if (posix_memalign(&buffer, 4096, block) != 0) return 1;
  // Non-zero, per-block-varying data, so nothing along the way can shortcut zero pages.
  for (uint64_t i = 0; i < block; ++i) ((unsigned char*)buffer)[i] = (unsigned char)(i * 131 + 7);

  const uint64_t blocks_in_span = span / block;
  uint64_t state = 0x9E3779B97F4A7C15ull;
  uint64_t ops = 0, bytes = 0, next_sequential = 0;
  const double start = now();
  double elapsed = 0;
  while (bytes < total) {
    uint64_t index;
    if (random) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      index = state % blocks_in_span;
    } else {
      index = next_sequential++ % blocks_in_span;
    }
    const off_t offset = (off_t)(index * block);
    const ssize_t done = write ? pwrite(fd, buffer, block, offset) : pread(fd, buffer, block, offset);
    if (done != (ssize_t)block) {
      printf("VPCI-PERF %s error %s at %lld: %s\n", name, write ? "pwrite" : "pread",
             (long long)offset, done < 0 ? strerror(errno) : "short transfer");
      return 1;
    }
    ++ops;
    bytes += block;
    // Checking the clock every op costs a vDSO call: negligible next to an I/O.
    elapsed = now() - start;
    if (elapsed >= max_seconds) break;
  }
  if (elapsed <= 0) elapsed = 1e-9;
  printf("VPCI-PERF %s %.2f %.0f ops=%llu bytes=%llu seconds=%.3f\n", name,
         (double)bytes / elapsed / 1e6, (double)ops / elapsed, (unsigned long long)ops,
         (unsigned long long)bytes, elapsed);
  close(fd);
  free(buffer);
  return 0;
}
