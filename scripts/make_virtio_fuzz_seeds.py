#!/usr/bin/env python3
"""Writes the seed corpora of the virtio fuzz targets (fuzz/corpus/{split_chain,
packed_chain,blk_request}_fuzzer/). The input formats are described at the top of
each fuzzer; seeds cover a valid chain, an indirect chain and each hostile case, so
the fuzzer starts from every branch of the chain walkers."""
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus")
RAM = 0x10000
NEXT, WRITE, INDIRECT = 1, 2, 4
AVAIL, USED = 1 << 7, 1 << 15


def write(fuzzer, name, data):
    path = os.path.join(ROOT, fuzzer, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(bytes(data))


class Image:
    def __init__(self, size=0x1000):
        self.b = bytearray(size)

    def put(self, offset, fmt, *values):
        struct.pack_into("<" + fmt, self.b, offset, *values)


# ---- split ---------------------------------------------------------------------------
def split_seed(log2, flags, build, script=b""):
    n = 1 << log2
    img = Image()
    desc, avail = 0, 16 * n
    used = (avail + 6 + 2 * n + 3) & ~3
    build(img, n, desc, avail, used)
    return bytes([log2, flags]) + struct.pack("<H", len(img.b)) + bytes(img.b) + script


def sdesc(img, index, addr, length, flags, nxt=0, table=0):
    img.put(table + 16 * index, "QIHH", addr, length, flags, nxt)


def publish(img, avail, n, heads):
    for i, h in enumerate(heads):
        img.put(avail + 4 + 2 * (i % n), "H", h)
    img.put(avail + 2, "H", len(heads))


def simple(img, n, desc, avail, used):
    sdesc(img, 0, RAM + 0x400, 16, NEXT, 1)
    sdesc(img, 1, RAM + 0x500, 32, WRITE)
    publish(img, avail, n, [0])


def indirect(img, n, desc, avail, used):
    t = 0x600
    sdesc(img, 0, RAM + 0x400, 8, NEXT, 1, t)
    sdesc(img, 1, RAM + 0x408, 8, NEXT, 2, t)
    sdesc(img, 2, RAM + 0x500, 64, WRITE, 0, t)
    sdesc(img, 0, RAM + t, 48, INDIRECT)
    sdesc(img, 1, RAM + 0x700, 4, WRITE)
    publish(img, avail, n, [0, 1])


def loop(img, n, desc, avail, used):
    sdesc(img, 0, RAM + 0x400, 8, NEXT, 1)
    sdesc(img, 1, RAM + 0x400, 8, NEXT, 0)
    publish(img, avail, n, [0])


def nested(img, n, desc, avail, used):
    sdesc(img, 0, RAM + 0x600, 16, INDIRECT, 0, 0x600)
    sdesc(img, 0, RAM + 0x600, 16, INDIRECT)
    publish(img, avail, n, [0])


def jump(img, n, desc, avail, used):
    simple(img, n, desc, avail, used)
    img.put(avail + 2, "H", 100)


def writable_then_readable(img, n, desc, avail, used):
    sdesc(img, 0, RAM + 0x400, 8, WRITE | NEXT, 1)
    sdesc(img, 1, RAM + 0x500, 8, 0)
    publish(img, avail, n, [0])


def outside(img, n, desc, avail, used):
    sdesc(img, 0, 0xFFFFFFFFFFFFFFF0, 32, 0)
    sdesc(img, 1, 0x40000 + 0xF00, 0x200, WRITE)  # read-only region, writable: refused
    publish(img, avail, n, [0])


write("split_chain_fuzzer", "simple", split_seed(3, 0b011, simple))
write("split_chain_fuzzer", "indirect_script", split_seed(3, 0b011, indirect, bytes([1, 1, 3, 2, 10, 3, 0])))
write("split_chain_fuzzer", "loop", split_seed(2, 0b010, loop))
write("split_chain_fuzzer", "nested_indirect", split_seed(3, 0b010, nested))
write("split_chain_fuzzer", "avail_jump", split_seed(3, 0b000, jump))
write("split_chain_fuzzer", "writable_then_readable", split_seed(3, 0b000, writable_then_readable))
write("split_chain_fuzzer", "outside_memory", split_seed(3, 0b100, outside))
write("split_chain_fuzzer", "poke", split_seed(3, 0b001, simple, bytes([1, 4, 0x02, 0x00, 2, 0, 3])))


# ---- packed ------------------------------------------------------------------------------
def packed_seed(size, flags, build, script=b""):
    img = Image()
    build(img, size)
    return bytes([size - 1, flags]) + struct.pack("<H", len(img.b)) + bytes(img.b) + script


def pdesc(img, index, addr, length, buffer_id, flags, table=0):
    img.put(table + 16 * index, "QIHH", addr, length, buffer_id, flags)


def p_simple(img, n):
    pdesc(img, 0, RAM + 0x400, 16, 5, NEXT | AVAIL)
    pdesc(img, 1, RAM + 0x500, 32, 5, WRITE | AVAIL)


def p_indirect(img, n):
    t = 0x600
    pdesc(img, 0, RAM + 0x400, 8, 0, 0, t)
    pdesc(img, 1, RAM + 0x500, 8, 0, WRITE, t)
    pdesc(img, 0, RAM + t, 32, 1, INDIRECT | AVAIL)
    pdesc(img, 1, RAM + 0x700, 4, 2, WRITE | AVAIL)
    pdesc(img, 2, RAM + 0x708, 4, 3, WRITE | AVAIL)


def p_endless(img, n):
    for i in range(n):
        pdesc(img, i, RAM + 0x400, 8, i, NEXT | AVAIL)


def p_unavailable_continuation(img, n):
    pdesc(img, 0, RAM + 0x400, 8, 0, NEXT | AVAIL)


def p_nested(img, n):
    pdesc(img, 0, RAM + 0x600, 16, 0, INDIRECT, 0x600)
    pdesc(img, 0, RAM + 0x600, 16, 9, INDIRECT | AVAIL)


write("packed_chain_fuzzer", "simple", packed_seed(8, 0b011, p_simple))
write("packed_chain_fuzzer", "indirect_out_of_order", packed_seed(5, 0b011, p_indirect, bytes([1, 1, 1, 10, 2, 2, 3, 0])))
write("packed_chain_fuzzer", "endless_list", packed_seed(4, 0b010, p_endless))
write("packed_chain_fuzzer", "unavailable_continuation", packed_seed(7, 0b000, p_unavailable_continuation))
write("packed_chain_fuzzer", "nested_indirect", packed_seed(8, 0b010, p_nested))
write("packed_chain_fuzzer", "event_desc", packed_seed(3, 0b001, p_simple, bytes([0, 3, 4, 0x80, 0x00, 0, 3])))


# ---- blk -------------------------------------------------------------------------------------
def request(kind, sector_sel, out=b"", in_length=0, sector64=None, type64=None):
    """One request in the order blk_request_fuzzer reads it: kind, sector selector,
    out length, in length, then (kind 6) a u64 type, then (selector bit 7) a u64
    sector, then the out data."""
    b = bytes([kind, sector_sel]) + struct.pack("<HH", len(out), in_length)
    if kind & 7 == 6:
        b += struct.pack("<Q", type64 or 0)
    if sector_sel & 0x80:
        b += struct.pack("<Q", sector64 or 0)
    return b + out


def segment(sector, count, flags=0):
    return struct.pack("<QII", sector, count, flags)


data = bytes((i * 7) & 0xFF for i in range(512))
write("blk_request_fuzzer", "every_type", bytes([0b110])
      + request(1, 3, data) + request(0, 3, b"", 512) + request(2, 0)
      + request(3, 0, b"", 20) + request(4, 0, segment(3, 1)) + request(5, 0, segment(2, 2, 1)))
write("blk_request_fuzzer", "read_only", bytes([0b001]) + request(1, 1, data) + request(0, 1, b"", 512))
write("blk_request_fuzzer", "malformed_framing", bytes([0b000])
      + request(0x08 | 0, 5, b"", 16) + request(0x18 | 2, 0) + request(0, 1, b"", 512))
write("blk_request_fuzzer", "indirect_pieces", bytes([0b100]) + request(0xE0 | 1, 7, data) + request(0xE0 | 0, 7, b"", 512))
write("blk_request_fuzzer", "odd_types_and_sectors", bytes([0b010])
      + request(6, 0, b"", 8, type64=14) + request(0, 0x80, b"", 512, sector64=(1 << 63) + 5)
      + request(1, 0x7F, data + data) + request(4, 0, segment(0, 8, 1) + segment(120, 9)))
sys.exit(0)
