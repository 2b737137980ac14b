#include "dt/bind_vsids.h"

#include <algorithm>
#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace vpci::dt {
namespace {

class VsidAllocator {
 public:
  VsidAllocator(const BindPlan& plan, const BindOptions& options)
      : plan_(plan),
        options_(options),
        assigned_(plan.keys.size()),
        assigned_origin_(plan.keys.size()) {}

  Result<std::vector<std::uint32_t>> run() {
    // Chosen IDs first, so that no automatic ID takes one a user chose.
    for (const auto& m : plan_.masters) {
      if (!m.request) continue;
      std::vector<const StreamUse*> uses;
      for (const auto& u : m.uses) uses.push_back(&u);
      VPCI_TRY(apply_user_ids(uses, *m.request, m.request_origin, m.path));
    }
    for (const auto& f : plan_.functions) {
      if (f.virtio || !f.request) continue;
      VPCI_TRY(apply_user_ids({&f.use}, *f.request, f.request_origin, f.path));
    }
    // First free at or above the base, keys in order of first appearance.
    std::uint64_t cursor = options_.vsid_base;
    for (std::size_t key = 0; key < plan_.keys.size(); ++key) {
      if (assigned_[key]) continue;
      while (cursor < options_.vsid_limit &&
             vsid_owner_.count(static_cast<std::uint32_t>(cursor)) != 0)
        ++cursor;
      if (cursor >= options_.vsid_limit) {
        const std::size_t unassigned = static_cast<std::size_t>(std::count(
            assigned_.begin() + static_cast<std::ptrdiff_t>(key), assigned_.end(), std::nullopt));
        return make_error(
            ErrorCode::kNoSpace,
            "vSID space exhausted: {} more stream(s) need an ID (first: {} stream {:#x} of {}) but "
            "{:#x}-{:#x} is full",
            unassigned, plan_.keys[key].piommu, plan_.keys[key].psid, plan_.key_first_user[key],
            options_.vsid_base, options_.vsid_limit - 1);
      }
      const auto vsid = static_cast<std::uint32_t>(cursor);
      assigned_[key] = vsid;
      assigned_origin_[key] = plan_.key_first_user[key];
      vsid_owner_.emplace(vsid, key);
    }
    std::vector<std::uint32_t> vsids;
    vsids.reserve(assigned_.size());
    for (const auto& vsid : assigned_) vsids.push_back(*vsid);
    return vsids;
  }

 private:
  // Records that `key` must get `vsid`, checking range and uniqueness.
  Status request(std::size_t key, std::uint32_t vsid, const std::string& origin) {
    if (vsid >= options_.vsid_limit) {
      return make_error(ErrorCode::kOutOfRange,
                        "{}: vSID {:#x} is outside the vIOMMU's ID space 0-{:#x}", origin, vsid,
                        options_.vsid_limit - 1);
    }
    if (assigned_[key]) {
      if (*assigned_[key] != vsid) {
        return make_error(ErrorCode::kConflict,
                          "{}: vSID {:#x} conflicts with vSID {:#x} chosen by {} for the same "
                          "physical stream ({} "
                          "stream {:#x} mask {:#x})",
                          origin, vsid, *assigned_[key], assigned_origin_[key],
                          plan_.keys[key].piommu, plan_.keys[key].psid, plan_.keys[key].pmask);
      }
      return {};
    }
    if (const auto it = vsid_owner_.find(vsid); it != vsid_owner_.end()) {
      const StreamKey& other = plan_.keys[it->second];
      return make_error(ErrorCode::kAlreadyExists,
                        "ID collision: {} asks for vSID {:#x} for {} stream {:#x}, but {} already "
                        "has it for {} stream "
                        "{:#x}",
                        origin, vsid, plan_.keys[key].piommu, plan_.keys[key].psid,
                        assigned_origin_[it->second], other.piommu, other.psid);
    }
    assigned_[key] = vsid;
    assigned_origin_[key] = origin;
    vsid_owner_.emplace(vsid, key);
    return {};
  }

  Status apply_user_ids(const std::vector<const StreamUse*>& uses, const VsidRequest& req,
                        const std::string& origin, const std::string& path) {
    std::set<std::size_t> distinct;
    for (const StreamUse* u : uses) distinct.insert(u->key);
    if (req.vsids.size() == uses.size()) {
      for (std::size_t i = 0; i < uses.size(); ++i)
        VPCI_TRY(request(uses[i]->key, req.vsids[i], origin));
      return {};
    }
    if (req.vsids.size() == 1 && distinct.size() == 1)
      return request(uses.front()->key, req.vsids.front(), origin);
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: {} has {} iommus specifier(s) ({} distinct stream(s)) but {} vSID(s) "
                      "were given; give one "
                      "per specifier",
                      origin, path, uses.size(), distinct.size(), req.vsids.size());
  }

  const BindPlan& plan_;
  const BindOptions& options_;
  std::vector<std::optional<std::uint32_t>> assigned_;  // per key
  std::vector<std::string> assigned_origin_;            // who chose or first used it
  std::map<std::uint32_t, std::size_t> vsid_owner_;     // vSID -> key
};

}  // namespace

Result<std::vector<std::uint32_t>> assign_vsids(const BindPlan& plan, const BindOptions& options) {
  return VsidAllocator(plan, options).run();
}

}  // namespace vpci::dt
