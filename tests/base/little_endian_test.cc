// base/little_endian.h: byte order, widths, and that the loads and stores touch exactly
// the bytes they name.
#include "base/little_endian.h"

#include <array>
#include <cstdint>

#include <gtest/gtest.h>

namespace vpci {
namespace {

constexpr std::array<std::uint8_t, 8> kBytes = {0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF};

// Usable in constant expressions: register layouts can be checked at compile time.
static_assert(load_le<std::uint16_t>(kBytes) == 0x2301);
static_assert(load_le<std::uint32_t>(std::span(kBytes).subspan(4)) == 0xEFCDAB89u);
static_assert(load_le_bytes(std::span(kBytes).first(3)) == 0x452301u);
static_assert([] {
  std::array<std::uint8_t, 4> out{};
  store_le<std::uint32_t>(out, 0x11223344u);
  return out[0] == 0x44 && out[3] == 0x11;
}());

TEST(LittleEndian, LoadsEachWidthLeastSignificantByteFirst) {
  EXPECT_EQ(load_le<std::uint8_t>(kBytes), 0x01u);
  EXPECT_EQ(load_le<std::uint16_t>(kBytes), 0x2301u);
  EXPECT_EQ(load_le<std::uint32_t>(kBytes), 0x67452301u);
  EXPECT_EQ(load_le<std::uint64_t>(kBytes), 0xEFCDAB8967452301ull);
}

TEST(LittleEndian, LoadReadsOnlyTheFirstBytesOfALongerSpan) {
  EXPECT_EQ(load_le<std::uint16_t>(std::span(kBytes).subspan(6)), 0xEFCDu);
  EXPECT_EQ(load_le<std::uint32_t>(std::span(kBytes).subspan(1)), 0x89674523u);
}

TEST(LittleEndian, StoreWritesExactlyItsWidth) {
  std::array<std::uint8_t, 8> out;
  out.fill(0xAA);
  store_le<std::uint16_t>(std::span(out).subspan(1), 0xBEEF);
  EXPECT_EQ(out, (std::array<std::uint8_t, 8>{0xAA, 0xEF, 0xBE, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA}));
  store_le<std::uint32_t>(std::span(out).subspan(4), 0x12345678u);
  EXPECT_EQ(out, (std::array<std::uint8_t, 8>{0xAA, 0xEF, 0xBE, 0xAA, 0x78, 0x56, 0x34, 0x12}));
  store_le<std::uint64_t>(out, 0x0807060504030201ull);
  EXPECT_EQ(out, (std::array<std::uint8_t, 8>{1, 2, 3, 4, 5, 6, 7, 8}));
  store_le<std::uint8_t>(out, 0xFF);
  EXPECT_EQ(out[0], 0xFF);
  EXPECT_EQ(out[1], 2);
}

TEST(LittleEndian, NamedTypeTruncatesAWiderValue) {
  std::array<std::uint8_t, 4> out{};
  const std::uint32_t id = 0x12345678u;
  store_le<std::uint16_t>(out, static_cast<std::uint16_t>(id));
  EXPECT_EQ(out, (std::array<std::uint8_t, 4>{0x78, 0x56, 0, 0}));
}

TEST(LittleEndian, StoreThenLoadRoundTrips) {
  std::array<std::uint8_t, 8> buffer{};
  for (const std::uint64_t value :
       {0ull, 1ull, 0x8000000000000000ull, 0xFFFFFFFFFFFFFFFFull, 0x0123456789ABCDEFull}) {
    store_le<std::uint64_t>(buffer, value);
    EXPECT_EQ(load_le<std::uint64_t>(buffer), value);
    store_le<std::uint32_t>(buffer, static_cast<std::uint32_t>(value));
    EXPECT_EQ(load_le<std::uint32_t>(buffer), static_cast<std::uint32_t>(value));
  }
}

TEST(LittleEndian, VariableWidthFollowsTheSpanSize) {
  EXPECT_EQ(load_le_bytes({}), 0u);
  EXPECT_EQ(load_le_bytes(std::span(kBytes).first(1)), 0x01u);
  EXPECT_EQ(load_le_bytes(std::span(kBytes).first(2)), 0x2301u);
  EXPECT_EQ(load_le_bytes(std::span(kBytes).first(4)), 0x67452301u);
  EXPECT_EQ(load_le_bytes(kBytes), 0xEFCDAB8967452301ull);
  EXPECT_EQ(load_le_bytes(std::span(kBytes).subspan(5, 3)), 0xEFCDABu);
}

TEST(LittleEndian, VariableWidthStoreDropsHighBytes) {
  std::array<std::uint8_t, 8> out;
  out.fill(0xAA);
  store_le_bytes(std::span(out).subspan(2, 2), 0x11223344u);
  EXPECT_EQ(out, (std::array<std::uint8_t, 8>{0xAA, 0xAA, 0x44, 0x33, 0xAA, 0xAA, 0xAA, 0xAA}));
  store_le_bytes(out, 0x0102030405060708ull);
  EXPECT_EQ(load_le_bytes(out), 0x0102030405060708ull);
  store_le_bytes({}, 0x1234);  // an empty span writes nothing
}

TEST(LittleEndian, AgreesWithTheFixedWidthForms) {
  std::array<std::uint8_t, 4> a{};
  std::array<std::uint8_t, 4> b{};
  store_le<std::uint32_t>(a, 0xCAFEF00Du);
  store_le_bytes(b, 0xCAFEF00Du);
  EXPECT_EQ(a, b);
  EXPECT_EQ(load_le<std::uint32_t>(a), load_le_bytes(a));
}

}  // namespace
}  // namespace vpci
