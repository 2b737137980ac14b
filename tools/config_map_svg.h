// Renders configuration-space layouts as SVG: one panel per device, one row per 64
// bytes, capabilities coloured and labelled, free ranges hatched, unread ranges grey.
// People read a picture of a layout faster than a list of offsets.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vpci::tools {

// kUnread: bytes the source did not hold (a truncated dump): unknown, never free.
enum class MapRegionKind { kHeader, kCapability, kUnknownExtent, kFree, kAdded, kHidden, kUnread };

struct MapRegion {
  std::uint32_t begin;  // inclusive
  std::uint32_t end;    // exclusive
  MapRegionKind kind;
  std::string label;
};

struct MapPanel {
  std::string title;
  std::uint32_t space_size;  // 256 or 4096
  std::vector<MapRegion> regions;
};

std::string render_config_map_svg(const std::vector<MapPanel>& panels);

}  // namespace vpci::tools
