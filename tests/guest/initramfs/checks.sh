#!/bin/sh
# Guest-side checks of the vpci real-guest test. Usage: checks.sh CHECK[,CHECK...]
# Each check finds its devices itself (through /sys/bus/pci/devices) and prints
#   VPCI-RESULT <check>[-<pci address>] PASS|FAIL <key=value detail...>
# plus informational VPCI-DEVICE / VPCI-CONFIG lines for the host. Kernel command line
# options (all optional):
#   vpci.expect=VVVV:DDDD[@driver],...  devices "enumerate" must find (and their driver)
#   vpci.blk_offset=BYTES  where "blk" writes its pattern (default 1048576)
#   vpci.blk_tag=WORD      pattern tag, so the host can regenerate it (default vpci)
#   vpci.rng_bytes=N       bytes "rng" reads from /dev/hwrng (default 256)
#   vpci.perf_seconds=S    time cap of each "blkperf" test (default 4)
#   vpci.perf_mib=N        span of the "blkperf" tests; each moves at most 8 x N MiB (default 32)
#   vpci.perf_tests=A,B    run only these "blkperf" tests (default all)
#   vpci.idle_seconds=S    "idle": how long the guest sits idle (default 5)
#   vpci.net_ip=A.B.C.D/N  "net": the guest's address on the first virtio-net interface
#   vpci.net_peer=A.B.C.D  "net": the host side of the tap (pinged; nc peer)
#   vpci.net_mib=N         "net": MiB sent each way (default 16)
cmdline=$(cat /proc/cmdline)
cmdline_value() {
  for word in $cmdline; do
    case $word in "$1"=*) echo "${word#*=}"; return;; esac
  done
  echo "$2"
}
result() { echo "VPCI-RESULT $*"; }
attr() { cat "$1/$2" 2>/dev/null || echo "?"; }
driver_of() { if [ -e "$1/driver" ]; then basename "$(readlink "$1/driver")"; else echo none; fi; }
# How virtio_pci bound a device: the BAR regions it claimed are named
# "virtio-pci-modern" or "virtio-pci-legacy" under the device in /proc/iomem or
# /proc/ioports. "none" for anything else.
iface_of() {
  found=$(grep -h -A1 " : $(basename "$1")\$" /proc/iomem /proc/ioports | grep -o 'virtio-pci-[a-z]*' | head -1)
  echo "${found#virtio-pci-}" | sed 's/^$/none/'
}
id_of() { echo "$(attr "$1" vendor | sed 's/^0x//'):$(attr "$1" device | sed 's/^0x//')"; }

# ---- enumerate: what the guest's PCI core found, like lspci -nnk --------------------
check_enumerate() {
  for dev in /sys/bus/pci/devices/*; do
    msix=no
    [ -d "$dev/msi_irqs" ] && [ -n "$(ls "$dev/msi_irqs" 2>/dev/null)" ] && msix=yes
    echo "VPCI-DEVICE $(basename "$dev") id=$(id_of "$dev") rev=$(attr "$dev" revision)" \
      "class=$(attr "$dev" class) subsys=$(attr "$dev" subsystem_vendor):$(attr "$dev" subsystem_device)" \
      "driver=$(driver_of "$dev") irq=$(attr "$dev" irq) msi=$msix iface=$(iface_of "$dev")"
  done
  for want in $(cmdline_value vpci.expect "" | tr ',' ' '); do
    id=${want%@*}
    driver=""
    case $want in *@*) driver=${want#*@};; esac
    found=""
    for dev in /sys/bus/pci/devices/*; do
      [ "$(id_of "$dev")" = "$id" ] || continue
      found=$(basename "$dev")
      if [ -n "$driver" ] && [ "$(driver_of "$dev")" != "$driver" ]; then
        result "enumerate-$id FAIL address=$found driver=$(driver_of "$dev") expected=$driver"
      else
        result "enumerate-$id PASS address=$found driver=$(driver_of "$dev")" \
          "rev=$(attr "$dev" revision) subsys=$(attr "$dev" subsystem_vendor):$(attr "$dev" subsystem_device)"
      fi
    done
    [ -n "$found" ] || result "enumerate-$id FAIL not-found"
  done
}

# Devices worth dumping/poking: everything not on QEMU's own q35 platform (vendor 8086
# host bridge/LPC/SATA/SMBus, 1234 VGA).
interesting_devices() {
  for dev in /sys/bus/pci/devices/*; do
    case $(attr "$dev" vendor) in 0x8086|0x1234) continue;; esac
    echo "$dev"
  done
}

# ---- config: full config space of each interesting device, in lspci -xxxx layout ----
# The host turns "VPCI-CONFIG <addr> <off>: <16 bytes>" back into a file for lspci -F.
check_config() {
  for dev in $(interesting_devices); do
    addr=$(basename "$dev")
    size=$(wc -c <"$dev/config")
    od -A x -t x1 -v "$dev/config" | awk -v a="$addr" 'NF > 1 {
      line = substr($1, length($1) - 2) ":"; for (i = 2; i <= NF; i++) line = line " " $i
      print "VPCI-CONFIG " a " " line }'
    if [ "$size" -ge 256 ]; then
      result "config-$addr PASS bytes=$size"
    else
      result "config-$addr FAIL bytes=$size"
    fi
  done
}

# ---- scratch: the test-only ScratchFunction (1b36:0005, server/scratch_function.h) ----
# BAR0 read/write through REGION_READ/REGION_WRITE, then the device's DMA engine copies
# 16 bytes of guest RAM (written by us at a low physical address the kernel reserves)
# into BAR0 through the server's DMA_MAP view of guest memory.
check_scratch() {
  any=""
  for dev in /sys/bus/pci/devices/*; do
    [ "$(id_of "$dev")" = "1b36:0005" ] || continue
    addr=$(basename "$dev"); any=1
    bar=$(head -1 "$dev/resource" | cut -d' ' -f1)
    if [ $((bar)) -eq 0 ]; then result "scratch-$addr FAIL bar0-unassigned"; continue; fi
    # Memory space + bus master + INTx disabled (no driver would handle the line):
    # command register 0x0406 at config offset 4 (PCI Local Bus 3.0 §6.2.2).
    printf '\006\004' | dd of="$dev/config" bs=1 seek=4 conv=notrunc 2>/dev/null
    devmem $((bar + 0x10)) 32 0x5ca7c40e
    got=$(devmem $((bar + 0x10)) 32)
    if [ "$((got))" -ne $((0x5ca7c40e)) ]; then
      result "scratch-$addr FAIL bar-readback=$got"; continue
    fi
    ram=0x600
    devmem $ram 32 0x11223344; devmem $((ram + 4)) 32 0x55667788
    devmem $((ram + 8)) 32 0x99aabbcc; devmem $((ram + 12)) 32 0xddeeff00
    devmem $((bar + 0xfe0)) 32 $ram; devmem $((bar + 0xfe4)) 32 0
    devmem $((bar + 0xfe8)) 32 16
    # Status 0 = still in flight: with plain guest RAM the copy goes through DMA_READ
    # messages to QEMU, and our length write was posted, so poll (bounded).
    status=0; polls=0
    while [ $((status)) -eq 0 ] && [ $polls -lt 200 ]; do
      status=$(devmem $((bar + 0xfec)) 32); polls=$((polls + 1))
    done
    copied="$(devmem "$bar" 32) $(devmem $((bar + 4)) 32) $(devmem $((bar + 8)) 32) $(devmem $((bar + 12)) 32)"
    # INTx: enable it (command 0x0006), ring the doorbell (level asserted), touch the BAR
    # so QEMU's vfio INTx EOI path unmasks (the server re-triggers while the level is
    # still up), then lower the level. No guest driver handles the line; the host counts
    # the triggers in the server (SCRATCH-SUMMARY interrupts=).
    printf '\006\000' | dd of="$dev/config" bs=1 seek=4 conv=notrunc 2>/dev/null
    devmem $((bar + 0xffc)) 32 1
    devmem $((bar + 0x10)) 32 >/dev/null; devmem $((bar + 0x10)) 32 >/dev/null
    devmem $((bar + 0xffc)) 32 0
    printf '\006\004' | dd of="$dev/config" bs=1 seek=4 conv=notrunc 2>/dev/null
    if [ $((status)) -eq 1 ] && [ "$copied" = "0x11223344 0x55667788 0x99AABBCC 0xDDEEFF00" ]; then
      result "scratch-$addr PASS bar0=$bar dma=ok"
    else
      result "scratch-$addr FAIL bar0=$bar dma-status=$status polls=$polls copied=$(echo "$copied" | tr ' ' ,)"
    fi
  done
  [ -n "$any" ] || result "scratch FAIL no-1b36:0005-device"
}

# Sum of the counts on every /proc/interrupts line naming $1 (e.g. "virtio0-").
interrupt_count() {
  awk -v name="$1" 'NR == 1 { cpus = NF; next }
    index($0, name) { for (i = 2; i <= cpus + 1; i++) n += $i } END { print n + 0 }' /proc/interrupts
}
interrupt_kind() {
  grep "$1" /proc/interrupts | grep -q MSI && echo msix || echo intx
}

# virtio functions of PCI device $1 bound to virtio driver $2: prints "virtioN" names.
virtio_children() {
  for v in "$1"/virtio*; do
    [ -e "$v/driver" ] && [ "$(basename "$(readlink "$v/driver")")" = "$2" ] && basename "$v"
  done
}

# ---- rng: /dev/hwrng delivers bytes, interrupts counted --------------------------------
check_rng() {
  want=$(cmdline_value vpci.rng_bytes 256)
  any=""
  for dev in /sys/bus/pci/devices/*; do
    for v in $(virtio_children "$dev" virtio_rng); do
      addr=$(basename "$dev"); any=1
      # With several RNGs the hwrng core reads only the current one, and its names
      # (virtio_rng.N) are not the virtio device names: try each until this device's
      # interrupt count moves.
      got=0; before=0; after=0; zeros=0; current=none
      for name in $(tr ' ' '\n' </sys/class/misc/hw_random/rng_available | grep '^virtio_rng'); do
        echo "$name" >/sys/class/misc/hw_random/rng_current
        current=$name
        before=$(interrupt_count "$v-")
        got=$(timeout 20 dd if=/dev/hwrng bs="$want" count=1 iflag=fullblock 2>/dev/null | tee /tmp/rng | wc -c)
        after=$(interrupt_count "$v-")
        zeros=$(od -A n -t x1 -v /tmp/rng | tr -s ' ' '\n' | grep -c '^00$')
        [ "$after" -gt "$before" ] && break
      done
      kind=$(interrupt_kind "$v-")
      if [ "$got" -eq "$want" ] && [ "$after" -gt "$before" ] && [ "$zeros" -lt "$want" ]; then
        result "rng-$addr PASS bytes=$got irqs=$before..$after kind=$kind iface=$(iface_of "$dev") rng=$current"
      else
        result "rng-$addr FAIL bytes=$got/$want irqs=$before..$after kind=$kind zeros=$zeros rng=$current"
      fi
    done
  done
  [ -n "$any" ] || result "rng FAIL no-virtio-rng-device"
}

# The pattern "blk" writes: 1024 lines of 64 bytes. The host regenerates it with the same
# printf to check the backing file (tests/guest/guest-test.sh).
make_pattern() {
  i=0
  while [ $i -lt 1024 ]; do printf '%-63s\n' "vpci-pattern $1 line $i"; i=$((i + 1)); done
}

# ---- net: ping the host side of the tap, then move N MiB each way with nc -------------
# TX: the guest sends random bytes to the host's nc on port 5001 and reports their md5.
# RX: the guest listens on port 5002, says VPCI-NET-LISTEN, and reports the md5 of what
# the host sent. The host compares both. The negotiated features (bit 0 first) tell the
# host which header the driver used.
check_net() {
  ip=$(cmdline_value vpci.net_ip ""); peer=$(cmdline_value vpci.net_peer "")
  mib=$(cmdline_value vpci.net_mib 16)
  [ -n "$ip" ] && [ -n "$peer" ] || { result "net FAIL vpci.net_ip/vpci.net_peer missing"; return; }
  for dev in /sys/bus/pci/devices/*; do
    for v in $(virtio_children "$dev" virtio_net); do
      addr=$(basename "$dev")
      ifname=$(ls "/sys/bus/virtio/devices/$v/net" 2>/dev/null | head -1)
      [ -n "$ifname" ] || { result "net-$addr FAIL no-interface"; continue; }
      features=$(cat "/sys/bus/virtio/devices/$v/features")
      ip link set lo up
      ip addr add "$ip" dev "$ifname" && ip link set "$ifname" up ||
        { result "net-$addr FAIL cannot configure $ifname"; continue; }
      n=0
      until ping -c 1 -W 2 "$peer" >/dev/null 2>&1; do
        n=$((n + 1)); [ $n -ge 10 ] && break
      done
      ping_out=$(ping -c 5 -W 5 "$peer" 2>&1 | tail -2 | tr '\n' ' ')
      case $ping_out in *" 0% packet loss"*) pinged=ok;; *) pinged=fail;; esac
      # busybox: "round-trip min/avg/max = 0.9/1.2/1.6 ms": the average, in ms.
      rtt=$(echo "$ping_out" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
      dd if=/dev/urandom of=/tmp/net-tx bs=1048576 count="$mib" 2>/dev/null
      tx_md5=$(md5sum </tmp/net-tx | cut -d' ' -f1)
      start=$(cut -d' ' -f1 /proc/uptime)
      nc -w 30 "$peer" 5001 </tmp/net-tx || tx_md5="nc-failed"
      tx_end=$(cut -d' ' -f1 /proc/uptime)
      rm -f /tmp/net-tx
      # busybox nc -l ends the connection when its stdin ends: give it one that does not.
      sleep 600 | nc -l -p 5002 >/tmp/net-rx &
      nc_pid=$!
      sleep 1
      listen_at=$(cut -d' ' -f1 /proc/uptime)
      echo "VPCI-NET-LISTEN $ip"
      n=0
      while kill -0 $nc_pid 2>/dev/null; do
        n=$((n + 1)); [ $n -ge 1200 ] && { kill $nc_pid; break; }
        sleep 0.1
      done
      rx_end=$(cut -d' ' -f1 /proc/uptime)
      killall sleep 2>/dev/null
      rx_md5=$(md5sum </tmp/net-rx | cut -d' ' -f1); rx_bytes=$(wc -c </tmp/net-rx)
      rm -f /tmp/net-rx
      stats=/sys/class/net/$ifname/statistics
      errors="rx_length_errors=$(cat $stats/rx_length_errors) rx_frame_errors=$(cat $stats/rx_frame_errors)"
      detail="if=$ifname ping=$pinged tx_md5=$tx_md5 tx_s=$start..$tx_end rx_md5=$rx_md5 rx_bytes=$rx_bytes rx_s=$listen_at..$rx_end rtt_ms=${rtt:-?} $errors queues=$(ls "/sys/class/net/$ifname/queues" | tr '\n' , | sed 's/,$//') features=$features iface=$(iface_of "$dev")"
      if [ "$pinged" = ok ] && [ "$tx_md5" != nc-failed ] && [ "$rx_bytes" -gt 0 ]; then
        result "net-$addr PASS $detail"
      else
        result "net-$addr FAIL $detail ping_out=$ping_out"
      fi
      return
    done
  done
  result "net FAIL no-virtio-net-device"
}

# ---- blk: write a pattern, drop caches, read back with direct I/O, compare ------------
check_blk() {
  offset=$(cmdline_value vpci.blk_offset 1048576)
  tag=$(cmdline_value vpci.blk_tag vpci)
  make_pattern "$tag" >/tmp/pattern
  want=$(md5sum </tmp/pattern | cut -d' ' -f1)
  any=""
  for dev in /sys/bus/pci/devices/*; do
    for v in $(virtio_children "$dev" virtio_blk); do
      addr=$(basename "$dev"); any=1
      disk=$(ls "/sys/bus/virtio/devices/$v/block" 2>/dev/null | head -1)
      n=0
      while [ -z "$disk" ] || [ ! -b "/dev/$disk" ]; do
        [ $n -ge 50 ] && break
        sleep 0.1; n=$((n + 1))
        disk=$(ls "/sys/bus/virtio/devices/$v/block" 2>/dev/null | head -1)
      done
      if [ -z "$disk" ] || [ ! -b "/dev/$disk" ]; then result "blk-$addr FAIL no-block-device"; continue; fi
      sectors=$(cat "/sys/block/$disk/size")
      before=$(interrupt_count "$v-")
      kind=$(interrupt_kind "$v-")
      if [ "$(cat "/sys/block/$disk/ro")" = 1 ]; then
        got=$(dd if="/dev/$disk" bs=4096 count=16 iflag=direct 2>/dev/null | wc -c)
        after=$(interrupt_count "$v-")
        [ "$got" -eq 65536 ] && result "blk-$addr PASS disk=$disk read-only read=$got sectors=$sectors irqs=$before..$after kind=$kind" ||
          result "blk-$addr FAIL disk=$disk read-only read=$got"
        continue
      fi
      dd if=/tmp/pattern of="/dev/$disk" bs=4096 seek=$((offset / 4096)) oflag=direct conv=fsync 2>/tmp/dd.err ||
        { result "blk-$addr FAIL disk=$disk write: $(tail -1 /tmp/dd.err)"; continue; }
      echo 3 >/proc/sys/vm/drop_caches
      got=$(dd if="/dev/$disk" bs=4096 skip=$((offset / 4096)) count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
      after=$(interrupt_count "$v-")
      if [ "$got" = "$want" ] && [ "$after" -gt "$before" ]; then
        result "blk-$addr PASS disk=$disk md5=$got offset=$offset sectors=$sectors irqs=$before..$after kind=$kind iface=$(iface_of "$dev") queues=$(ls "/sys/block/$disk/mq" | wc -l)"
      else
        result "blk-$addr FAIL disk=$disk md5=$got expected=$want irqs=$before..$after kind=$kind"
      fi
    done
  done
  [ -n "$any" ] || result "blk FAIL no-virtio-blk-device"
}

# ---- blkperf: O_DIRECT throughput on the first virtio-blk disk (bench/guest-blk.sh) ----
# DESTROYS the first perf_mib MiB of the disk. Each test is one /bin/blkperf run
# (blkperf.c) that prints "VPCI-PERF <test> <MB/s> <IOPS> ...": queue depth 1 like dd,
# and the -qd4 tests with 4 threads (4 requests in flight). Writes come before the
# reads of the same region so the reads find written (allocated) blocks.
check_blkperf() {
  seconds=$(cmdline_value vpci.perf_seconds 4)
  mib=$(cmdline_value vpci.perf_mib 32)
  disk=""
  n=0
  while [ -z "$disk" ] && [ $n -lt 50 ]; do
    for dev in /sys/bus/pci/devices/*; do
      for v in $(virtio_children "$dev" virtio_blk); do
        [ -n "$disk" ] && break
        d=$(ls "/sys/bus/virtio/devices/$v/block" 2>/dev/null | head -1)
        [ -n "$d" ] && [ -b "/dev/$d" ] && disk=$d addr=$(basename "$dev") virtio=$v
      done
    done
    [ -z "$disk" ] && { sleep 0.1; n=$((n + 1)); }
  done
  if [ -z "$disk" ]; then result "blkperf FAIL no-virtio-blk-disk"; return; fi
  if [ ! -x /bin/blkperf ]; then result "blkperf FAIL no-blkperf-tool"; return; fi
  span=$((mib * 1048576))
  before=$(interrupt_count "$virtio-")
  failed=""
  only=",$(cmdline_value vpci.perf_tests all),"
  # name pattern block jobs (queue depth); each moves at most 8 x span bytes
  for test in "seqwrite-1M seqwrite 1M 1" "seqread-1M seqread 1M 1" \
              "seqwrite-4k seqwrite 4k 1" "seqread-4k seqread 4k 1" \
              "randwrite-4k randwrite 4k 1" "randread-4k randread 4k 1" \
              "randwrite-4k-qd4 randwrite 4k 4" "randread-4k-qd4 randread 4k 4"; do
    set -- $test
    case $only in ,all,|*,"$1",*) ;; *) continue ;; esac
    blkperf "/dev/$disk" "$1" "$2" "$3" $((span * 8)) "$span" "$seconds" "$4" || failed="$failed $1"
  done
  after=$(interrupt_count "$virtio-")
  if [ -z "$failed" ]; then
    result "blkperf-$addr PASS disk=$disk span=${mib}MiB seconds=$seconds irqs=$before..$after kind=$(interrupt_kind "$virtio-")"
  else
    result "blkperf-$addr FAIL disk=$disk failed:$failed"
  fi
}

# ---- idle: the guest does nothing for a while (bench/guest-blk.sh measures what an idle
# device costs the host between the two markers; the host reads them from the console) ----
check_idle() {
  seconds=$(cmdline_value vpci.idle_seconds 5)
  echo "VPCI-IDLE-START"
  sleep "$seconds"
  echo "VPCI-IDLE-END"
  sleep 1  # the host samples every 0.2 s: let it see the end marker before power-off
  result "idle PASS seconds=$seconds"
}

for check in $(echo "$1" | tr ',' ' '); do
  case $check in
    enumerate|config|scratch|rng|blk|blkperf|net|idle) "check_$check" ;;
    *) result "$check FAIL unknown-check" ;;
  esac
done
