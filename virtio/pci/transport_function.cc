#include "virtio/pci/transport_function.h"

#include "virtio/pci/legacy_admin_path.h"
#include "virtio/pci/legacy_io_mapper.h"
#include "virtio/pci/sriov_pf.h"
#include "virtio/pci/sriov_pf_function.h"

namespace vpci::virtio::pci {

Result<std::unique_ptr<vpci::pci::Function>> make_transport_function(
    TransportKind kind, std::unique_ptr<Device> device, std::shared_ptr<GuestMemory> memory,
    VirtioPciOptions options, std::vector<std::unique_ptr<Device>> vf_devices) {
  if (kind == TransportKind::kSriovPf && vf_devices.empty())
    return make_error(ErrorCode::kInvalidArgument, "a sriov-pf function needs a VF device");
  if (kind != TransportKind::kSriovPf && !vf_devices.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "only a sriov-pf function has VFs, not {}",
                      transport_kind_name(kind));
  }
  if (kind == TransportKind::kSriovPf) {
    // The PF is the caller's device, served as a modern function; every VF shares its
    // guest memory and its options (Xen grants too: the same domain's memory) but not its
    // admin-command observer (a VF has no admin queue).
    SriovPfParts parts;
    options.kind = TransportKind::kModern;
    parts.vf_options = options;
    parts.vf_options.core.admin_observer = nullptr;
    for (auto& vf : vf_devices) {
      parts.vf_devices.push_back(std::move(vf));
      parts.vf_memories.push_back(memory);
    }
    parts.pf_device = std::move(device);
    parts.pf_memory = std::move(memory);
    parts.pf_options = std::move(options);
    VPCI_ASSIGN_OR_RETURN(auto pf, SriovPf::create(std::move(parts)));
    return std::unique_ptr<vpci::pci::Function>(std::make_unique<SriovPfFunction>(std::move(pf)));
  }
  if (kind == TransportKind::kLegacyOverAdmin) {
    // VF 1 of an SR-IOV PF that only vpci's PF driver sees (a management PF); the VF
    // takes the guest's memory and the caller's options, the PF its own memory and the
    // admin-command observer.
    SriovPfParts parts;
    parts.pf_device = std::make_unique<ManagementPfDevice>(device->device_id());
    parts.pf_memory = std::make_shared<GuestMemory>();
    parts.pf_options.core.admin_observer = std::move(options.core.admin_observer);
    options.core.admin_observer = nullptr;
    options.kind = TransportKind::kModern;
    parts.vf_devices.push_back(std::move(device));
    parts.vf_memories.push_back(std::move(memory));
    parts.vf_options = std::move(options);
    VPCI_ASSIGN_OR_RETURN(auto pf, SriovPf::create(std::move(parts)));
    VPCI_ASSIGN_OR_RETURN(auto path, LegacyAdminPath::create(std::move(pf), 1));
    VPCI_ASSIGN_OR_RETURN(auto mapper, LegacyIoMapper::create_over_admin(std::move(path)));
    return std::unique_ptr<vpci::pci::Function>(std::move(mapper));
  }
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
