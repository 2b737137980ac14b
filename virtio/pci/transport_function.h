// Builds the pci::Function for any transport kind: a VirtioPciFunction for modern,
// transitional, legacy and transitional MMR, and for legacy-over-mmr the transitional MMR
// function wrapped in the LegacyIoMapper (the hypervisor-side mapper of seed 004), and for
// legacy-over-admin VF 1 of a management SR-IOV PF behind the mapper's admin backend
// (virtio 1.3 §2.12.1.2; options.core.admin_observer then sees the PF's commands), and for
// sriov-pf the PF itself with `vf_devices` as its VFs (sriov_pf_function.h; the observer
// sees the commands of the PF's own driver).
#pragma once

#include <memory>
#include <vector>

#include "base/error.h"
#include "pci/function.h"
#include "virtio/device.h"
#include "virtio/guest_memory.h"
#include "virtio/pci/virtio_pci_function.h"

namespace vpci::virtio::pci {

Result<std::unique_ptr<vpci::pci::Function>> make_transport_function(
    TransportKind kind, std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory,
    VirtioPciOptions options = {}, std::vector<std::unique_ptr<Device>> vf_devices = {});

}  // namespace vpci::virtio::pci
