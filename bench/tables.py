#!/usr/bin/env python3
"""Turns the JSON that bench/run-all.sh collected into the Markdown tables of
docs/PERFORMANCE.md. Every figure is the median over the repetitions; every ratio is
against a baseline measured in the same run.

    bench/tables.py RESULTS_DIR
"""
import json
import statistics
import sys
from pathlib import Path


def medians(path):
    """{run_name: median aggregate} of a Google Benchmark JSON file."""
    data = json.loads(Path(path).read_text())
    runs = {b["run_name"]: b for b in data["benchmarks"] if b.get("aggregate_name") == "median"}
    if not runs:
        # One repetition: Google Benchmark writes no aggregates, the single run is the median.
        runs = {b.get("run_name", b["name"]): b for b in data["benchmarks"]
                if b.get("run_type", "iteration") == "iteration"}
    return runs


def virtqueue_table(path):
    runs = medians(path)
    out = ["| chain × buffer | ring | device | Mdesc/s | GB/s | memcpy GB/s (same batches) | of memcpy |",
           "|---|---|---|---:|---:|---:|---:|"]
    shapes = []
    for name in runs:
        if name.startswith("BM_SplitDeviceReads/"):
            shapes.append(name[len("BM_SplitDeviceReads/"):])
    for shape in shapes:
        parts = dict(p.split(":") for p in shape.split("/") if ":" in p)
        label = f"{parts['chain']} × {int(parts['buf']) // 1024} KiB" if int(parts["buf"]) >= 1024 \
            else f"{parts['chain']} × {parts['buf']} B"
        first = True
        for ring in ("Split", "Packed"):
            for direction, what in (("Reads", "reads"), ("Writes", "writes")):
                b = runs.get(f"BM_{ring}Device{direction}/{shape}")
                if b is None:
                    continue
                t = b["device_s"]
                gbs = b["bytes"] / t / 1e9
                memcpy_gbs = b["bytes"] / b["memcpy_s"] / 1e9
                out.append(f"| {label if first else ''} | {ring.lower()} | {what} | "
                           f"{b['descriptors'] / t / 1e6:.2f} | {gbs:.2f} | {memcpy_gbs:.1f} | "
                           f"**{b['of_memcpy']:.2f}** |")
                first = False
    return "\n".join(out)


def register_table(path, before_path=None):
    """register_path_bench: one row per access, direct and through the server's region
    code (server/vfio_regions.h); the "before" columns are the FunctionAdapter era."""
    runs = medians(path)
    before = medians(before_path) if before_path else {}
    out = ["| access | bytes | floor ns | direct ns | direct / floor | server ns | server / floor |"
           + (" direct ns before (ddfca28) | adapter ns before (ddfca28) |" if before else ""),
           "|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if before else "")]
    for name, b in runs.items():
        if not name.startswith("direct/"):
            continue
        access = name[len("direct/"):].removesuffix("/manual_time")
        kind, what, width = access.split("/")
        adapter = runs.get(f"server/{access}/manual_time")
        floor = statistics.median([b["floor_ns"]] + ([adapter["floor_ns"]] if adapter else []))
        row = (f"| {kind} {what} | {width} | {floor:.2f} | {b['ns']:.1f} | **{b['ns'] / floor:.0f}** | "
               + (f"{adapter['ns']:.1f} | **{adapter['ns'] / floor:.0f}** |" if adapter else " | |"))
        if before:
            old = before.get(name)
            old_adapter = before.get(f"adapter/{access}/manual_time")
            row += (f" {old['ns']:.1f} |" if old else " |") + (f" {old_adapter['ns']:.1f} |" if old_adapter else " |")
        out.append(row)
    return "\n".join(out)


def vfio_user_table(path, before_path=None):
    runs = medians(path)
    before = medians(before_path) if before_path else {}
    names = {"BM_RegionRead": "REGION_READ BAR0", "BM_ConfigRead": "REGION_READ config",
             "BM_RegionWrite": "REGION_WRITE BAR0", "BM_PostedWrite": "REGION_WRITE posted ×256 + read"}
    header = "| request | CPUs | bytes | raw µs/msg | vpci µs/msg | vpci / raw |"
    rule = "|---|---|---:|---:|---:|---:|"
    if before:
        header += " before (35bbd94) |"
        rule += "---:|"
    out = [header, rule]
    for name, b in runs.items():
        base, *args = name.split("/")
        parts = dict(a.split(":") for a in args if ":" in a)
        placement = "same" if parts.get("cpus") == "0" else "split"
        row = (f"| {names.get(base, base)} | {placement} | {parts.get('bytes')} | {b['raw_us']:.2f} | "
               f"{b['vpci_us']:.2f} | **{b['ratio']:.2f}** |")
        if before:
            old = before.get(name)
            row += f" {old['ratio']:.2f} |" if old else " |"
        out.append(row)
    return "\n".join(out)


def scale_table(path):
    rows = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rows.setdefault((r.get("device", "scratch"), r.get("socket_fs", "?"), r["devices"]), []).append(r)
    out = ["| device | sockets on | devices | startup s | of which sockets s | stop s | KiB/device idle | KiB/device connected | p50 µs | p99 µs "
           "| raw p50 µs | raw p99 µs | p50 / raw p50 | runs ok |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key in sorted(rows, key=lambda k: (k[0] != "virtio-rng", k[1] != "tmpfs", k[2])):
        device, fs, devices = key
        rs = rows[key]
        med = lambda key: statistics.median(r[key] for r in rs)
        ok = sum(1 for r in rs if r["ok"])
        out.append(f"| {device} | {fs} | {devices} | {med('startup_s'):.3f} | {med('create_s'):.3f} | {med('stop_s'):.3f} | "
                   f"{med('kib_per_device_idle'):.1f} | {med('kib_per_device_connected'):.1f} | "
                   f"{med('p50_us'):.1f} | {med('p99_us'):.1f} | {med('raw_p50_us'):.1f} | "
                   f"{med('raw_p99_us'):.1f} | {med('p50_us') / med('raw_p50_us'):.2f} | {ok}/{len(rs)} |")
    return "\n".join(out)


def dt_table(path):
    runs = medians(path)
    out = ["| benchmark | median wall ms | median CPU ms |", "|---|---:|---:|"]
    for name, b in runs.items():
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
        out.append(f"| {name} | {b['real_time'] * scale:.1f} | {b['cpu_time'] * scale:.1f} |")
    return "\n".join(out)


def main():
    results = Path(sys.argv[1])
    print("### Register path, in process (`register_path_bench`)\n")
    before = results / "register_path_before.json"
    if not before.exists():
        before = Path(__file__).resolve().parent / "baseline" / "register_path_before.json"
    print(register_table(results / "register_path.json", before if before.exists() else None))
    print("\n### Virtqueue path (`virtqueue_bench`)\n")
    print(virtqueue_table(results / "virtqueue.json"))
    print("\n### vfio-user path (`vfio_user_bench`)\n")
    # The ratios the server had before the changes of docs/PERFORMANCE.md (same
    # benchmark, server of commit 35bbd94, 3 repetitions); a file in the results
    # directory takes precedence.
    before = results / "vfio_user_before.json"
    if not before.exists():
        before = Path(__file__).resolve().parent / "baseline" / "vfio_user_before.json"
    print(vfio_user_table(results / "vfio_user.json", before if before.exists() else None))
    print("\n### Scale (`scale_bench`)\n")
    print(scale_table(results / "scale.jsonl"))
    print("\n### Device tree binding (`dt_bind_bench`)\n")
    print(dt_table(results / "dt_bind.json"))
    dtc = results / "dt_vs_dtc.md"
    if dtc.exists():
        print("\n### Device tree binding against dtc (`bench/dt_vs_dtc.sh`)\n")
        print(dtc.read_text().strip())


if __name__ == "__main__":
    main()
