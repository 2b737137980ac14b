#include "driver/pci_access.h"

#include "pci/registers.h"

namespace vpci::driver {

vpci::pci::BarInfo bar_from_register(std::uint32_t raw, std::uint64_t size) {
  namespace bar = vpci::pci::bar;
  vpci::pci::BarInfo info;
  info.size = size;
  if (size == 0) return info;  // kAbsent
  if ((raw & bar::kIoSpaceFlag) != 0) {
    info.kind = vpci::pci::BarKind::kIo;
    return info;
  }
  info.kind = (raw & bar::kMemoryTypeMask) == bar::kMemoryType64 ? vpci::pci::BarKind::kMemory64
                                                                 : vpci::pci::BarKind::kMemory32;
  info.prefetchable = (raw & bar::kPrefetchable) != 0;
  return info;
}

}  // namespace vpci::driver
