#include "tools/pci_names.h"

#include <array>
#include <cstdarg>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include <fmt/format.h>

extern "C" {
#include <pci/pci.h>
}

namespace vpci::tools {
namespace {

// Names are a nicety: a missing pci.ids must only cost us the names, so warnings
// are dropped. (libpci's fatal `error` handler stays: it is declared noreturn and
// fires only for a corrupt pci.ids.)
void ignore_message(char* /*format*/, ...) {}

// Where systemd-udev keeps the compiled hardware database (hwdb(7)).
bool have_udev_hwdb() {
  for (const char* path : {"/etc/systemd/hwdb/hwdb.bin", "/etc/udev/hwdb.bin",
                           "/usr/lib/udev/hwdb.bin", "/lib/udev/hwdb.bin"}) {
    std::error_code error;
    if (std::filesystem::exists(path, error)) return true;
  }
  return false;
}

}  // namespace

PciNames::PciNames() : access_(pci_alloc()) {
  access_->warning = ignore_message;
  access_->debug = ignore_message;
  access_->numeric_ids = 0;
  // libpci prefers udev's hwdb (/lib/udev/hwdb.bin) to pci.ids where it exists, and the
  // two name some devices differently. VPCI_PCI_NAMES=pci.ids pins the source, so golden
  // outputs do not depend on the machine (the tests set it, as they run lspci with
  // -O hwdb.disable=1).
  // Without a compiled hwdb, libpci's udev lookup finds nothing and leaks the udev
  // context it opened for every name asked (libpci 3.9: 16 bytes a lookup, what ASan's
  // leak check reported for devices missing from pci.ids); pci.ids alone is then the
  // same answer.
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts
  if (const char* source = std::getenv("VPCI_PCI_NAMES");
      (source != nullptr && std::string_view(source) == "pci.ids") || !have_udev_hwdb()) {
    char name[] = "hwdb.disable";
    char value[] = "1";
    pci_set_param(access_, name, value);
  }
}

PciNames::~PciNames() {
  pci_cleanup(access_);
}

std::string PciNames::device(std::uint16_t vendor_id, std::uint16_t device_id) {
  std::array<char, 256> buffer{};
  const char* name = pci_lookup_name(access_, buffer.data(), static_cast<int>(buffer.size()),
                                     PCI_LOOKUP_VENDOR | PCI_LOOKUP_DEVICE | PCI_LOOKUP_NO_NUMBERS,
                                     vendor_id, device_id);
  return name != nullptr ? name : "Unknown device";
}

std::string PciNames::subsystem(std::uint16_t vendor_id, std::uint16_t device_id,
                                std::uint16_t subsystem_vendor_id, std::uint16_t subsystem_id) {
  std::array<char, 256> buffer{};
  const char* name = pci_lookup_name(access_, buffer.data(), static_cast<int>(buffer.size()),
                                     PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_VENDOR | PCI_LOOKUP_DEVICE,
                                     vendor_id, device_id, subsystem_vendor_id, subsystem_id);
  return name != nullptr
             ? name
             : fmt::format("Subsystem {:04x}:{:04x}", subsystem_vendor_id, subsystem_id);
}

std::string PciNames::device_class(std::uint8_t base_class, std::uint8_t subclass) {
  std::array<char, 256> buffer{};
  const char* name =
      pci_lookup_name(access_, buffer.data(), static_cast<int>(buffer.size()),
                      PCI_LOOKUP_CLASS | PCI_LOOKUP_NO_NUMBERS, (base_class << 8) | subclass);
  if (name == nullptr) return fmt::format("Class {:02x}{:02x}", base_class, subclass);
  return name;
}

}  // namespace vpci::tools
