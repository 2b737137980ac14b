#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/placement_fuzzer.cc from tests/data/corpus/pci.

Each seed is the fuzzer's 12-byte request header followed by one device's config
image. Run from the repository root: scripts/make-placement-seeds.py
"""
import pathlib
import re
import struct
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus" / "pci"
OUT = ROOT / "fuzz" / "corpus" / "placement_fuzzer"
VPCI = ROOT / "build" / "release" / "bin" / "vpci"


def devices(text):
    """Yields (address, bytes) from lspci -x text (the subset of pciutils' grammar we need)."""
    current, data = None, {}
    for line in text.splitlines():
        m = re.match(r"^(?:[0-9a-f]{4}:)?([0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) ", line)
        if m:
            if current:
                yield current, data
            current, data = line.split(" ")[0], {}
            continue
        m = re.match(r"^([0-9a-f]{2,3}): ((?:[0-9a-f]{2} ?)+)$", line)
        if current and m:
            base = int(m.group(1), 16)
            for i, byte in enumerate(m.group(2).split()):
                data[base + i] = int(byte, 16)
    if current:
        yield current, data


def image(data):
    size = max(data) + 1
    return bytes(data.get(i, 0xFF) for i in range(size))


def load(path, address):
    for addr, data in devices(path.read_text()):
        if addr.endswith(address):
            return image(data)
    raise SystemExit(f"{address} not in {path}")


def header(flags, width=20, at=0, hide=0, table_off=0, table_len=0, raw_len=0, subsystem=0, raw_id=0x2A):
    return struct.pack("<BBHHHBBBB", flags, width, at, hide, table_off, table_len, raw_len, subsystem, raw_id)


PASID, EXEC, PRIV = 1, 2, 4
DEFAULT, EXPLICIT, TABLE, GAPS = 0 << 3, 1 << 3, 2 << 3, 3 << 3
HIDE_ID, HIDE_OFF, RAW = 0x20, 0x40, 0x80


def with_added(path, address, spec):
    out = subprocess.run([VPCI, "place", str(path), "--device", address, "--add", spec],
                         check=True, capture_output=True, text=True).stdout
    return image(next(devices(out))[1])


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    q35 = CORPUS / "qemu72-q35.lspci"
    adl = CORPUS / "intel-adl-igpu.lspci"
    tests = CORPUS / "pciutils-tests"
    seeds = {
        "q35-root-port-default": header(PASID | EXEC) + load(q35, "00:02.0"),
        "q35-root-port-explicit": header(PASID | EXPLICIT, at=0x400) + load(q35, "00:02.0"),
        "q35-root-port-explicit-overlap": header(PASID | EXPLICIT, at=0x104) + load(q35, "00:02.0"),
        "q35-root-port-table": header(PASID | TABLE, table_off=0x800, table_len=4) + load(q35, "00:02.0"),
        "q35-empty-list-default": header(PASID | PRIV) + load(q35, "01:00.0"),
        "q35-empty-list-explicit-anchor": header(PASID | EXPLICIT, at=0x200) + load(q35, "01:00.0"),
        "adl-has-pasid": header(PASID) + load(adl, "00:02.0"),
        "adl-replace-pasid": header(PASID | EXEC | HIDE_ID, hide=0x1B) + load(adl, "00:02.0"),
        "adl-hide-offset-and-raw": header(PASID | HIDE_OFF | RAW, hide=0x300, raw_len=12) + load(adl, "00:02.0"),
        "multicast-aer-at-fb4": header(PASID | GAPS) + load(tests / "cap-multicast", "07:00.0"),
        "cxl-many-caps-gaps": header(PASID | HIDE_ID | GAPS, hide=0x1B) + load(tests / "cap-dvsec-cxl", "6b:00.0"),
        "broken-ecaps": header(PASID) + load(tests / "broken-ecaps", "00:00.0"),
        "conventional-only": header(PASID | HIDE_OFF, hide=0x40) + load(q35, "00:01.0")[:256],
        "truncated-image": header(PASID) + load(q35, "00:02.0")[:0x180],
        "gap-dvsec": header(PASID) + with_added(q35, "00:02.0", "free-space-gap,length=0x20,at=0x400"),
        "table-dvsec": header(PASID | RAW, raw_len=4) + with_added(
            q35, "00:02.0", "free-space-table,ranges=0x800+0x10/0xc0+0x10,at=0x300"),
        "blocked-tail-gap-search": header(PASID | GAPS) + with_added(q35, "00:03.0", "vsec,id=0x1234,at=0xff8"),
    }
    for name, blob in seeds.items():
        (OUT / name).write_bytes(blob)
    print(f"wrote {len(seeds)} seeds to {OUT}")


if __name__ == "__main__":
    sys.exit(main())
