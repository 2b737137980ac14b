// Pieces shared by the files that implement pci/capabilities.h:
// capability_catalog.cc (names and structure sizes), capability_scan.cc (the walker)
// and capability_editor.cc (adding, hiding, relinking). Internal to pci/.
#pragma once

#include <cstdint>
#include <span>

#include "pci/capabilities.h"

namespace vpci::pci::capability_detail {

// Capabilities lie on DWORD boundaries: next pointers ignore their two low bits (PCI
// Local Bus 3.0 §6.7, PCIe Base 6.0 §7.6.3), so layouts are sized in DWORDs.
inline std::uint32_t round_up4(std::uint32_t v) {
  return (v + 3u) & ~3u;
}

// Walks the extended chain from 0x100 into `scan` and marks it walked. The scanner
// calls it only behind a PCIe/PCI-X capability; the editor always, on a 4 KiB space.
void scan_extended(std::span<const std::uint8_t> config, CapabilityScan& scan);

}  // namespace vpci::pci::capability_detail
