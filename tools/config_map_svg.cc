#include "tools/config_map_svg.h"

#include <algorithm>

#include <fmt/format.h>

namespace vpci::tools {
namespace {

constexpr int kBytesPerRow = 64;
constexpr int kByteWidth = 8;
constexpr int kRowHeight = 14;
constexpr int kLeftMargin = 56;
constexpr int kLabelColumn = kLeftMargin + kBytesPerRow * kByteWidth + 16;
constexpr int kPanelWidth = kLabelColumn + 360;
constexpr int kTitleHeight = 28;

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

const char* fill_for(MapRegionKind kind, std::size_t index) {
  static constexpr const char* kPalette[] = {"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1",
                                             "#76b7b2", "#edc948", "#9c755f", "#e15759"};
  switch (kind) {
    case MapRegionKind::kHeader: return "#bab0ac";
    case MapRegionKind::kFree: return "url(#free)";
    case MapRegionKind::kUnknownExtent: return "url(#unknown)";
    case MapRegionKind::kAdded: return "#d62728";
    case MapRegionKind::kHidden: return "url(#hidden)";
    case MapRegionKind::kUnread: return "url(#unread)";
    case MapRegionKind::kCapability: return kPalette[index % std::size(kPalette)];
  }
  return "#000";
}

// Draws [begin, end) as one rectangle per row it spans.
void draw_range(std::string& svg, int top, std::uint32_t begin, std::uint32_t end, const char* fill,
                const std::string& tooltip) {
  for (std::uint32_t at = begin; at < end;) {
    const std::uint32_t row = at / kBytesPerRow;
    const std::uint32_t row_end = std::min<std::uint32_t>(end, (row + 1) * kBytesPerRow);
    svg += fmt::format(
        R"(<rect x="{}" y="{}" width="{}" height="{}" fill="{}" stroke="#333" stroke-width="0.5"><title>{}</title></rect>)"
        "\n",
        kLeftMargin + static_cast<int>(at % kBytesPerRow) * kByteWidth,
        top + static_cast<int>(row) * kRowHeight, static_cast<int>(row_end - at) * kByteWidth,
        kRowHeight - 2, fill, escape(tooltip));
    at = row_end;
  }
}

}  // namespace

std::string render_config_map_svg(const std::vector<MapPanel>& panels) {
  int height = 10;
  for (const auto& panel : panels) {
    height += kTitleHeight + static_cast<int>(panel.space_size / kBytesPerRow) * kRowHeight + 30;
  }
  std::string svg = fmt::format(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="monospace" font-size="11">)"
      "\n",
      kPanelWidth, height);
  svg +=
      "<defs>\n"
      R"(<pattern id="free" width="6" height="6" patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="#ffffff"/><path d="M0,6 L6,0" stroke="#9ecae1" stroke-width="1"/></pattern>)"
      "\n"
      R"(<pattern id="unknown" width="6" height="6" patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="#fdd0a2"/><path d="M0,6 L6,0" stroke="#e6550d" stroke-width="1"/></pattern>)"
      "\n"
      R"(<pattern id="hidden" width="6" height="6" patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="#dddddd"/><path d="M0,0 L6,6" stroke="#555" stroke-width="1"/></pattern>)"
      "\n"
      R"(<pattern id="unread" width="6" height="6" patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="#9e9e9e"/><path d="M0,0 L6,6 M0,6 L6,0" stroke="#616161" stroke-width="1"/></pattern>)"
      "\n</defs>\n";
  int top = 10;
  for (const auto& panel : panels) {
    svg += fmt::format(R"(<text x="4" y="{}" font-size="13" font-weight="bold">{}</text>)"
                       "\n",
                       top + 16, escape(panel.title));
    top += kTitleHeight;
    const int rows = static_cast<int>(panel.space_size / kBytesPerRow);
    for (int row = 0; row < rows; ++row) {
      svg += fmt::format(R"(<text x="4" y="{}" fill="#666">{:03x}</text>)"
                         "\n",
                         top + row * kRowHeight + 10, row * kBytesPerRow);
    }
    std::size_t colour_index = 0;
    int last_label_y = -100;
    for (const auto& region : panel.regions) {
      if (region.end <= region.begin || region.begin >= panel.space_size) continue;
      const std::uint32_t end = std::min(region.end, panel.space_size);
      const std::string tooltip = fmt::format("[{:#05x}, {:#05x}) {} bytes: {}", region.begin, end,
                                              end - region.begin, region.label);
      draw_range(svg, top, region.begin, end, fill_for(region.kind, colour_index), tooltip);
      if (region.kind == MapRegionKind::kCapability) ++colour_index;
      if (region.kind != MapRegionKind::kFree && region.kind != MapRegionKind::kHeader) {
        // Labels go beside the row where the region starts, nudged down to avoid overlap.
        int y = top + static_cast<int>(region.begin / kBytesPerRow) * kRowHeight + 10;
        y = std::max(y, last_label_y + 12);
        last_label_y = y;
        svg += fmt::format(R"(<text x="{}" y="{}">{:03x} {}</text>)"
                           "\n",
                           kLabelColumn, y, region.begin, escape(region.label));
      }
    }
    top += rows * kRowHeight + 30;
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace vpci::tools
