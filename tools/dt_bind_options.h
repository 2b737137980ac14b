// The binding options of `vpci dt bind` as typed on the command line, and their
// translation into dt::BindOptions. The option syntax (PATH=ID lists, BASE,SIZE
// windows, interrupt cell lists) is the CLI's; the dt library only takes the typed
// struct, so a toolstack linking it never carries this grammar.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "dt/bind.h"

namespace vpci::tools {

// Each field holds one option's text as CLI11 stored it; empty means the option was
// not given and dt::BindOptions' default stays.
struct BindOptionText {
  std::vector<std::string> vsids;                   // --vsid, repeatable
  std::string vsid_base;                            // --vsid-base
  std::string vsid_limit;                           // --vsid-limit
  std::string viommu_base;                          // --viommu-base
  std::string viommu_size;                          // --viommu-size
  std::string viommu_interrupts;                    // --viommu-interrupts
  std::vector<std::string> viommu_interrupt_names;  // --viommu-interrupt-names
  std::string pci_ecam;                             // --pci-ecam
  std::string pci_mem32;                            // --pci-mem32
  std::string pci_mem64;                            // --pci-mem64
};

// Errors name the option whose value does not parse; a value that parses but is
// out of range for the bind (a base above the limit, say) is left for
// dt::bind_partial_tree to refuse, so this only checks the options' form.
Result<dt::BindOptions> parse_bind_options(const BindOptionText& text);

// Parses "PATH=ID[,ID...]" (IDs decimal or 0x-hex) as given to `--vsid`.
Result<dt::VsidRequest> parse_vsid_request(std::string_view text);

}  // namespace vpci::tools
