// Vendor, device and class names from the system's pci.ids through libpci.
#pragma once

#include <cstdint>
#include <string>

struct pci_access;  // libpci

namespace vpci::tools {

class PciNames {
 public:
  PciNames();
  ~PciNames();
  PciNames(const PciNames&) = delete;
  PciNames& operator=(const PciNames&) = delete;

  // "Red Hat, Inc. Virtio 1.0 block device"; falls back to "Device 1af4:1042".
  std::string device(std::uint16_t vendor_id, std::uint16_t device_id);
  // The subsystem's name as lspci prints it: "Red Hat, Inc. QEMU Virtual Machine", or
  // with what pci.ids lacks given by number ("Red Hat, Inc. Device 1100").
  std::string subsystem(std::uint16_t vendor_id, std::uint16_t device_id,
                        std::uint16_t subsystem_vendor_id, std::uint16_t subsystem_id);
  // "Mass storage controller: SCSI storage controller"; falls back to "Class 0108".
  std::string device_class(std::uint8_t base_class, std::uint8_t subclass);

 private:
  ::pci_access* access_;
};

}  // namespace vpci::tools
