// The tests' virtio-pci driver: the library's (driver/virtio_pci_driver.h) over an
// in-process pci::Function (driver/function_access.h), constructed the way the tests
// hold their functions and guest RAM.
#pragma once

#include "driver/function_access.h"
#include "driver/virtio_pci_driver.h"
#include "tests/virtio/fake_driver.h"

namespace vpci::virtio::testing {

using driver::CapabilityLocation;
using driver::DriverOptions;
using driver::DriverPath;
using driver::InterruptLog;
using driver::MsixMessage;
using driver::ProbeResult;

// An InterruptOutput that records, for tests that attach one to a function directly.
class RecordingInterruptOutput final : public vpci::pci::InterruptOutput, public InterruptLog {
 public:
  void set_intx_level(bool asserted) override {
    intx = asserted;
    ++intx_changes;
  }
  void signal_msix(std::uint16_t vector, std::uint64_t address, std::uint32_t data) override {
    msix.push_back({vector, address, data});
  }
};

// The access path of a VirtioPciDriver, built before the driver that uses it.
struct InProcessAccess {
  explicit InProcessAccess(vpci::pci::Function& function) : access(function) {}
  driver::FunctionAccess access;
};

class VirtioPciDriver final : private InProcessAccess, public driver::VirtioPciDriver {
 public:
  // `ram` is registered in the device's guest memory already (FakeGuestRam).
  VirtioPciDriver(vpci::pci::Function& function, FakeGuestRam& ram)
      : InProcessAccess(function),
        driver::VirtioPciDriver(InProcessAccess::access, ram),
        fake_ram_(&ram) {}
  // The guest RAM with its device-side view (hides the library's DriverMemory accessor).
  [[nodiscard]] FakeGuestRam& ram() { return *fake_ram_; }

 private:
  FakeGuestRam* fake_ram_;
};

}  // namespace vpci::virtio::testing
