// Little-endian loads and stores on byte buffers: PCI configuration space (PCI Local
// Bus 3.0 §6.1, PCIe Base 6.0 §7.2), virtio structures (virtio 1.3 §1.4) and the Xen
// and vfio-user wire formats are all little-endian. Byte by byte, so they hold on any
// host and never read unaligned memory; on x86-64, GCC 12 and Clang 14 at -O2 compile
// the fixed-width forms to a single load or store.
//
//   load_le<std::uint32_t>(config.subspan(0x10))   four bytes, whatever the span's size
//   store_le<std::uint16_t>(body.subspan(2), id)    two bytes
//   append_le<std::uint32_t>(body, header)          four more bytes at the end
//   load_le_bytes(data) / store_le_bytes(data, v)   as many bytes as `data` holds (0-8):
//                                                    a register access of that width
//
// A span shorter than the value is a programmer error (assert); callers check lengths
// that input controls before they get here.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace vpci {

namespace little_endian_detail {
// One expression rather than a loop: GCC recognises b[0] | b[1] << 8 | ... as one load
// only in this form.
template <typename T, std::size_t... I>
constexpr T load(std::span<const std::uint8_t> bytes, std::index_sequence<I...>) {
  return static_cast<T>(((static_cast<T>(bytes[I]) << (8 * I)) | ...));
}
}  // namespace little_endian_detail

// The first sizeof(T) bytes of `bytes`, least significant first.
template <typename T>
[[nodiscard]] constexpr T load_le(std::span<const std::uint8_t> bytes) {
  static_assert(std::is_integral_v<T> && std::is_unsigned_v<T> && sizeof(T) <= 8,
                "load_le reads unsigned integers of 1, 2, 4 or 8 bytes");
  assert(bytes.size() >= sizeof(T));
  return little_endian_detail::load<T>(bytes, std::make_index_sequence<sizeof(T)>{});
}

// Writes `value` to the first sizeof(T) bytes of `bytes`, least significant first. T is
// named at the call (store_le<std::uint16_t>) when the value's own type is wider.
template <typename T>
constexpr void store_le(std::span<std::uint8_t> bytes, T value) {
  static_assert(std::is_integral_v<T> && std::is_unsigned_v<T> && sizeof(T) <= 8,
                "store_le writes unsigned integers of 1, 2, 4 or 8 bytes");
  assert(bytes.size() >= sizeof(T));
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    bytes[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(value) >> (8 * i));
  }
}

// Appends sizeof(T) bytes holding `value`: building a structure field by field.
template <typename T>
void append_le(std::vector<std::uint8_t>& out, T value) {
  const std::size_t at = out.size();
  out.resize(at + sizeof(T));
  store_le<T>(std::span(out).subspan(at), value);
}

// All of `bytes` (at most 8) as one little-endian value: the value of an access whose
// width is only known at run time. An empty span reads 0.
[[nodiscard]] constexpr std::uint64_t load_le_bytes(std::span<const std::uint8_t> bytes) {
  assert(bytes.size() <= 8);
  std::uint64_t value = 0;
  for (std::size_t i = bytes.size(); i-- > 0;) value = (value << 8) | bytes[i];
  return value;
}

// Fills all of `bytes` (at most 8) with the low bytes of `value`, least significant
// first; higher bytes of `value` are dropped, as a narrower register write drops them.
constexpr void store_le_bytes(std::span<std::uint8_t> bytes, std::uint64_t value) {
  assert(bytes.size() <= 8);
  for (auto& byte : bytes) {
    byte = static_cast<std::uint8_t>(value);
    value >>= 8;
  }
}

}  // namespace vpci
