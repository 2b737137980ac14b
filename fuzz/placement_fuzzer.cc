// Fuzzes pci/placement over random config images x random requests and checks the
// invariants every successful placement must keep:
//   * the guest chain walks without errors (no loop, nothing truncated);
//   * each requested capability is linked at the reported offset, with its ID, version
//     and bytes, DWORD aligned inside [0x100, 0x1000);
//   * it overlaps no other capability;
//   * every source capability that was not hidden is still linked at its offset with its
//     ID (one hidden at 0x100 reads as Null);
//   * every bit that differs from the source is emulated by the overlay, and write
//     masks only cover emulated bits;
//   * the guest view survives the lspci dump writer and reader unchanged.
// On error the source must be untouched and the message non-empty.
//
// Input: a 12-byte request header, then the config image (up to 4096 bytes):
//   [0] flags: 0 PASID, 1 exec, 2 priv, 3-4 rule (0 default, 1 explicit, 2 table,
//       3 search gaps), 5 hide by extended ID, 6 hide by offset, 7 add a raw capability
//   [1] PASID width (mod 24: 21-23 exercise the refusal)
//   [2-3] explicit offset   [4-5] hide ID / offset   [6-7] table range offset
//   [8] table range length / 4   [9] raw capability body length (mod 64)
//   [10] bit 0: key the table by subsystem too   [11] raw capability ID
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/little_endian.h"
#include "pci/capabilities.h"
#include "pci/dump.h"
#include "pci/placement.h"

namespace {

using namespace vpci::pci;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "placement invariant broken: %s\n", what.c_str());
  std::abort();
}

void check(bool condition, const std::string& what) {
  if (!condition) fail(what);
}

const Capability* find(const CapabilityScan& scan, CapabilitySpace space, std::uint32_t offset) {
  for (const auto& cap : scan.capabilities) {
    if (cap.space == space && cap.offset == offset) return &cap;
  }
  return nullptr;
}

std::uint16_t le16(const std::uint8_t* p) {
  return vpci::load_le<std::uint16_t>(std::span(p, 2));
}

void check_success(std::span<const std::uint8_t> source, const PlacementRequest& request,
                   const PlacementResult& result) {
  const ConfigSpace& guest = result.guest;
  // The library reads a short image as padded with 0xff (ConfigSpace::from_image); so
  // must the comparison.
  const auto padded = ConfigSpace::from_image(source);
  check(padded.has_value(), "image accepted by placement but not by from_image");
  const CapabilityScan before = scan_capabilities(padded->bytes());
  const CapabilityScan after = scan_capabilities(guest.bytes());
  for (const auto& d : after.diagnostics) {
    const bool inherited =
        std::any_of(before.diagnostics.begin(), before.diagnostics.end(),
                    [&](const Diagnostic& b) { return b.code == d.code && b.offset == d.offset; });
    check(d.severity != Severity::kError || inherited || d.space == CapabilitySpace::kStandard,
          "new chain error: " + d.message);
  }
  check(result.placed.size() == request.add.size(), "placed count");
  for (std::size_t i = 0; i < result.placed.size(); ++i) {
    const auto& p = result.placed[i];
    const auto& want = request.add[i];
    check(p.offset % 4 == 0 && p.offset >= 0x100 && p.offset + want.length() <= 0x1000,
          "placed range");
    if (want.offset) check(p.offset == *want.offset, "explicit offset not honoured");
    const Capability* cap = find(after, CapabilitySpace::kExtended, p.offset);
    check(cap != nullptr, fmt::format("{} not linked at {:#x}", want.label, p.offset));
    check(cap->id == want.id && cap->version == want.version, "placed header");
    for (std::size_t b = 0; b < want.body.size(); ++b) {
      check(guest.raw8(p.offset + 4 + static_cast<std::uint32_t>(b)) == want.body[b],
            "placed body");
    }
    for (const auto& other : after.capabilities) {
      if (other.space != CapabilitySpace::kExtended || other.offset == p.offset) continue;
      const std::uint32_t end = other.offset + occupied_length(after, other, kExtendedConfigSize);
      check(!(p.offset < end && other.offset < p.offset + want.length()),
            fmt::format("{} at {:#x} overlaps capability at {:#x}", want.label, p.offset,
                        other.offset));
    }
  }
  for (const auto& cap : before.capabilities) {
    bool hidden = false;
    for (const auto& h : result.hidden)
      hidden = hidden || (h.space == cap.space && h.offset == cap.offset);
    bool replaced = false;
    for (const auto& p : result.placed)
      replaced = replaced || (cap.space == CapabilitySpace::kExtended && p.offset == cap.offset);
    const Capability* now = find(after, cap.space, cap.offset);
    // A Null header (ID 0) only carries a next pointer; when what followed it is hidden
    // it becomes an all-zero header, i.e. an empty list, or a capability takes its place.
    if (cap.id == 0 && cap.space == CapabilitySpace::kExtended) continue;
    if (!hidden) {
      check(now != nullptr && now->id == cap.id,
            fmt::format("capability at {:#x} lost", cap.offset));
    } else if (cap.space == CapabilitySpace::kExtended && cap.offset == 0x100 && !replaced) {
      // ID zeroed: a Null header, or no list at all when version and next were 0 too.
      check(now == nullptr || now->id == 0, "hidden 0x100 is not Null");
    } else if (!replaced) {
      check(now == nullptr, fmt::format("hidden capability at {:#x} still linked", cap.offset));
    }
  }
  std::vector<std::uint8_t> emulated(guest.size(), 0);
  for (const auto& field : result.overlay) {
    for (std::size_t i = 0; i < field.value.size(); ++i) {
      const std::uint32_t at = field.offset + static_cast<std::uint32_t>(i);
      check(at < guest.size(), "overlay past the space");
      emulated[at] = field.emulated_mask[i];
      check(field.value[i] == guest.raw8(at), "overlay value");
      check((field.write_mask[i] & ~field.emulated_mask[i]) == 0,
            "write mask outside emulated bits");
    }
  }
  for (std::uint32_t b = 0; b < guest.size(); ++b) {
    const std::uint8_t was = b < source.size() ? source[b] : 0xFF;
    check(((was ^ guest.raw8(b)) & ~emulated[b]) == 0,
          fmt::format("byte {:#x} changed outside the overlay", b));
  }
  const std::string dump = format_lspci_dump(DeviceAddress{}, guest.bytes());
  const auto reread = parse_lspci_text(dump);
  check(reread && reread->size() == 1, "dump does not parse");
  check(std::equal(guest.bytes().begin(), guest.bytes().end(), (*reread)[0].config.begin(),
                   (*reread)[0].config.end()),
        "dump does not round-trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr std::size_t kHeader = 12;
  if (size < kHeader || size - kHeader > kExtendedConfigSize) return 0;
  const std::uint8_t flags = data[0];
  const std::vector<std::uint8_t> image(data + kHeader, data + size);
  const std::vector<std::uint8_t> original = image;

  PlacementRequest request;
  const unsigned rule = (flags >> 3) & 3;
  if (flags & 1) {
    const PasidFields fields{static_cast<unsigned>(data[1] % 24), (flags & 2) != 0,
                             (flags & 4) != 0};
    if (!validate_pasid_fields(fields)) return 0;
    std::optional<std::uint16_t> at;
    if (rule == 1) at = le16(data + 2);
    request.add.push_back(make_pasid_request(fields, at));
  }
  if (flags & 0x80) {
    ExtendedCapabilityRequest raw;
    raw.id = data[11] == 0 ? 0x2A : data[11];
    raw.body.assign(data[9] % 64, 0xA5);
    raw.body_write_mask.assign(raw.body.size() / 2, 0x0F);
    raw.label = "raw";
    if (rule == 1 && !(flags & 1)) raw.offset = le16(data + 2);
    request.add.push_back(std::move(raw));
  }
  if (flags & 0x20)
    request.hide.push_back(
        {HideRequest::Kind::kExtendedId, std::max<std::uint16_t>(1, le16(data + 4))});
  if (flags & 0x40)
    request.hide.push_back(
        {HideRequest::Kind::kOffset, static_cast<std::uint16_t>(le16(data + 4) & 0xFFF)});
  if (rule == 2 && image.size() >= 0x30) {
    std::string key = fmt::format("{:04x}:{:04x}", le16(image.data()), le16(image.data() + 2));
    if (data[10] & 1)
      key += fmt::format(":{:04x}:{:04x}", le16(image.data() + 0x2C), le16(image.data() + 0x2E));
    const std::string text =
        fmt::format("[devices.\"{}\"]\nfree = [ {{ offset = {}, length = {} }} ]\n", key,
                    le16(data + 6), 4u * data[8]);
    auto table = parse_free_space_table(text, "fuzz.toml");
    if (table) request.table = std::move(*table);
  }
  request.search_gaps = rule == 3;

  const auto result = place_capabilities(image, request);
  check(image == original, "source modified");
  // PLACEMENT_FUZZER_VERBOSE=1 shows what each input exercised (to judge the seeds).
  static const bool verbose = std::getenv("PLACEMENT_FUZZER_VERBOSE") != nullptr;
  if (!result) {
    check(!result.error().message.empty(), "empty error message");
    if (verbose) std::fprintf(stderr, "error: %s\n", result.error().message.c_str());
    return 0;
  }
  check_success(image, request, *result);
  if (verbose) {
    for (const auto& p : result->placed) {
      std::fprintf(stderr, "placed %s at %#x by %s\n", p.label.c_str(), p.offset,
                   std::string(placement_rule_name(p.rule)).c_str());
    }
    for (const auto& h : result->hidden) std::fprintf(stderr, "hidden %#x\n", h.offset);
  }
  return 0;
}
