#include "virtio/pci/transport_function.h"

#include "virtio/pci/legacy_io_mapper.h"

namespace vpci::virtio::pci {

Result<std::unique_ptr<vpci::pci::Function>> make_transport_function(
    TransportKind kind, std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory,
    VirtioPciOptions options) {
  const bool mapped = kind == TransportKind::kLegacyOverMmr;
  VPCI_ASSIGN_OR_RETURN(
      auto function,
      make_virtio_pci_function(mapped ? TransportKind::kTransitionalMmr : kind, std::move(device),
                               std::move(memory), std::move(options)));
  if (!mapped) return std::unique_ptr<vpci::pci::Function>(std::move(function));
  VPCI_ASSIGN_OR_RETURN(auto mapper, LegacyIoMapper::create(std::move(function)));
  return std::unique_ptr<vpci::pci::Function>(std::move(mapper));
}

}  // namespace vpci::virtio::pci
