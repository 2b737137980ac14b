// Builds the pci::Function for any transport kind: a VirtioPciFunction for modern,
// transitional, legacy and transitional MMR, and for legacy-over-mmr the transitional MMR
// function wrapped in the LegacyIoMapper (the hypervisor-side mapper of seed 004).
#pragma once

#include <memory>

#include "base/error.h"
#include "pci/function.h"
#include "virtio/device.h"
#include "virtio/guest_memory.h"
#include "virtio/pci/virtio_pci_function.h"

namespace vpci::virtio::pci {

Result<std::unique_ptr<vpci::pci::Function>> make_transport_function(
    TransportKind kind, std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory,
    VirtioPciOptions options = {});

}  // namespace vpci::virtio::pci
