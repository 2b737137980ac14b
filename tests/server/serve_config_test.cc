#include "server/serve_config.h"

#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "../cli/cli_test_util.h"

namespace vpci::server {
namespace {

using ::testing::HasSubstr;

Result<ServeConfig> parse(std::string_view text,
                          const std::filesystem::path& dir = "/nonexistent") {
  return parse_serve_config(text, "serve.toml", dir, /*check_files=*/false);
}

std::string error_of(std::string_view text) {
  auto config = parse(text);
  EXPECT_FALSE(config.has_value()) << text;
  return config.has_value() ? std::string() : config.error().message;
}

TEST(ServeConfig, ReadsTheIssueExample) {
  auto config = parse(R"(
socket_dir = "/run/vpci"
[[device]]
name = "rng0"
kind = "virtio-rng"
transport = "modern"
[[device]]
name = "blk0"
kind = "virtio-blk"
transport = "transitional"
path = "disk.img"
read_only = false
xen_backend_domid = 1
)",
                      "/etc/vpci");
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_EQ(config->socket_dir, std::filesystem::path("/run/vpci"));
  ASSERT_EQ(config->devices.size(), 2u);
  EXPECT_EQ(config->devices[0].name, "rng0");
  EXPECT_EQ(config->devices[0].kind, DeviceKind::kVirtioRng);
  EXPECT_EQ(config->devices[0].transport, TransportKind::kModern);
  EXPECT_FALSE(config->devices[0].xen_backend_domid.has_value());
  EXPECT_EQ(config->devices[1].kind, DeviceKind::kVirtioBlk);
  EXPECT_EQ(config->devices[1].transport, TransportKind::kTransitional);
  EXPECT_EQ(config->devices[1].path, std::filesystem::path("/etc/vpci/disk.img"));
  EXPECT_FALSE(config->devices[1].read_only);
  EXPECT_EQ(config->devices[1].xen_backend_domid, std::optional<std::uint16_t>(1));
  EXPECT_EQ(config->devices[1].line, 7u);
}

TEST(ServeConfig, EveryTransportNameParses) {
  for (auto [name, kind] : {std::pair{"modern", TransportKind::kModern},
                            std::pair{"transitional", TransportKind::kTransitional},
                            std::pair{"legacy", TransportKind::kLegacy},
                            std::pair{"mmr", TransportKind::kTransitionalMmr},
                            std::pair{"legacy-over-mmr", TransportKind::kLegacyOverMmr},
                            std::pair{"legacy-over-admin", TransportKind::kLegacyOverAdmin},
                            std::pair{"sriov-pf", TransportKind::kSriovPf}}) {
    auto config =
        parse(fmt::format("[[device]]\nname = \"d\"\nkind = \"virtio-rng\"\n"
                          "transport = \"{}\"\n{}",
                          name, kind == TransportKind::kSriovPf ? "vfs = 1\n" : ""));
    ASSERT_TRUE(config.has_value()) << name;
    EXPECT_EQ(config->devices[0].transport, kind);
    EXPECT_EQ(transport_kind_name(kind), name);
  }
}

TEST(ServeConfig, BlkQueuesAndIoEngine) {
  const std::string blk =
      "[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = \"modern\"\npath = \"x\"\n";
  auto defaults = parse(blk);
  ASSERT_TRUE(defaults.has_value()) << defaults.error().message;
  EXPECT_EQ(defaults->devices[0].queues, 1u);
  EXPECT_EQ(defaults->devices[0].io, devices::BlockIoMode::kAuto);
  auto set = parse(blk + "queues = 4\nio = \"threads\"\n");
  ASSERT_TRUE(set.has_value()) << set.error().message;
  EXPECT_EQ(set->devices[0].queues, 4u);
  EXPECT_EQ(set->devices[0].io, devices::BlockIoMode::kThreads);
  EXPECT_EQ(parse(blk + "io = \"io_uring\"\n")->devices[0].io, devices::BlockIoMode::kIoUring);

  EXPECT_THAT(error_of(blk + "queues = 0\n"),
              HasSubstr("serve.toml:6:10: device[1].queues: 0 queues; expected 1 to 64"));
  EXPECT_THAT(error_of(blk + "queues = 65\n"), HasSubstr("65 queues"));
  EXPECT_THAT(error_of(blk + "queues = \"2\"\n"),
              HasSubstr("device[1].queues: expected an integer, found a string"));
  EXPECT_THAT(
      error_of(blk + "io = \"iouring\"\n"),
      HasSubstr("device[1].io: unknown I/O engine \"iouring\" (did you mean \"io_uring\"?)"));
  const std::string rng =
      "[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n";
  EXPECT_THAT(error_of(rng + "queues = 2\n"),
              HasSubstr("device[1].queues: a virtio-rng device has no such key (only virtio-blk "
                        "and virtio-net devices have it)"));
  EXPECT_THAT(error_of(rng + "io = \"auto\"\n"),
              HasSubstr("device[1].io: a virtio-rng device has no such key (only virtio-blk "
                        "devices have it)"));
}

TEST(ServeConfig, NetTapMacMtuAndQueuePairs) {
  const std::string net =
      "[[device]]\nname = \"net0\"\nkind = \"virtio-net\"\ntransport = \"modern\"\n";
  auto minimal = parse(net + "tap = \"vtap0\"\n");
  ASSERT_TRUE(minimal.has_value()) << minimal.error().message;
  const ServedDeviceSpec& spec = minimal->devices[0];
  EXPECT_EQ(spec.kind, DeviceKind::kVirtioNet);
  EXPECT_EQ(spec.tap, "vtap0");
  EXPECT_EQ(spec.queues, 1u);
  EXPECT_EQ(spec.mtu, 0u);
  // The default MAC is locally administered, unicast and stable per name.
  ASSERT_TRUE(spec.mac.has_value());
  EXPECT_EQ((*spec.mac)[0], 0x02);
  EXPECT_EQ(parse(net + "tap = \"vtap0\"\n")->devices[0].mac, spec.mac);
  auto other = parse(
      "[[device]]\nname = \"net1\"\nkind = \"virtio-net\"\ntransport = "
      "\"modern\"\ntap = \"t\"\n");
  EXPECT_NE(other->devices[0].mac, spec.mac);

  auto full = parse(net + "tap = \"vtap0\"\nmac = \"52:54:00:12:34:56\"\nqueues = 4\nmtu = 9000\n");
  ASSERT_TRUE(full.has_value()) << full.error().message;
  EXPECT_EQ(full->devices[0].mac, (std::array<std::uint8_t, 6>{0x52, 0x54, 0, 0x12, 0x34, 0x56}));
  EXPECT_EQ(full->devices[0].queues, 4u);
  EXPECT_EQ(full->devices[0].mtu, 9000u);
  EXPECT_TRUE(full->devices[0].mergeable_rx_buffers);
  EXPECT_FALSE(
      parse(net + "tap = \"t\"\nmergeable_rx_buffers = false\n")->devices[0].mergeable_rx_buffers);

  EXPECT_THAT(error_of(net),
              HasSubstr("missing required key \"tap\" (a virtio-net device needs it)"));
  EXPECT_THAT(error_of(net + "tap = \"a/b\"\n"),
              HasSubstr("device[1].tap: \"a/b\" is not an interface name"));
  EXPECT_THAT(error_of(net + "tap = \"sixteen-chars-xx\"\n"), HasSubstr("1 to 15 characters"));
  EXPECT_THAT(error_of(net + "tap = \"t\"\nmac = \"52:54:00:12:34\"\n"),
              HasSubstr("device[1].mac: \"52:54:00:12:34\" is not a MAC address"));
  EXPECT_THAT(error_of(net + "tap = \"t\"\nmac = \"01:00:5e:00:00:01\"\n"),
              HasSubstr("is a multicast address"));
  EXPECT_THAT(error_of(net + "tap = \"t\"\nmtu = 67\n"),
              HasSubstr("device[1].mtu: 67 MTU; expected 68 to 65535"));
  EXPECT_THAT(error_of(net + "tap = \"t\"\nqueues = 17\n"),
              HasSubstr("17 queue pairs; a virtio-net device has 1 to 16"));
  EXPECT_THAT(error_of(net + "tap = \"t\"\npath = \"x\"\n"),
              HasSubstr("device[1].path: a virtio-net device has no such key"));
  EXPECT_THAT(error_of("[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = \"modern\"\n"
                       "path = \"x\"\ntap = \"t\"\n"),
              HasSubstr("device[1].tap: a virtio-blk device has no such key (only virtio-net"));
}

// sriov-pf (issue 16): `vfs` is required there and nowhere else; a net PF's VFs take taps
// named after its own, which must still be interface names; a blk device has no VFs.
TEST(ServeConfig, SriovPfVfs) {
  const std::string pf =
      "[[device]]\nname = \"pf0\"\nkind = \"virtio-net\"\ntransport = \"sriov-pf\"\n";
  auto config = parse(pf + "vfs = 2\ntap = \"vtap1\"\n");
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_EQ(config->devices[0].transport, TransportKind::kSriovPf);
  EXPECT_EQ(config->devices[0].vfs, 2u);
  EXPECT_EQ(vf_tap_name("vtap1", 2), "vtap1v2");
  EXPECT_TRUE(parse(pf + "vfs = 64\ntap = \"vtap1234567\"\n").has_value());  // 14 characters

  EXPECT_THAT(error_of(pf + "tap = \"vtap1\"\n"),
              HasSubstr("serve.toml:1:1: device[1]: missing required key \"vfs\" (a sriov-pf "
                        "device needs it: its number of VFs)"));
  EXPECT_THAT(error_of(pf + "vfs = 0\ntap = \"t\"\n"),
              HasSubstr("serve.toml:5:7: device[1].vfs: 0 VFs; expected 1 to 64"));
  EXPECT_THAT(error_of(pf + "vfs = 65\ntap = \"t\"\n"), HasSubstr("65 VFs; expected 1 to 64"));
  EXPECT_THAT(error_of(pf + "vfs = 10\ntap = \"vtap123456789\"\n"),
              HasSubstr("device[1].tap: \"vtap123456789\" leaves no room for the VFs' taps "
                        "(\"vtap123456789v10\" is longer than 15 characters)"));
  EXPECT_THAT(error_of("[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\ntransport = "
                       "\"modern\"\nvfs = 1\n"),
              HasSubstr("serve.toml:5:7: device[1].vfs: only a sriov-pf device has VFs (this one "
                        "is modern)"));
  EXPECT_THAT(error_of("[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = "
                       "\"sriov-pf\"\npath = \"x\"\n"),
              HasSubstr("device[1].transport: a virtio-blk device cannot be sriov-pf: each VF "
                        "needs a back end of its own (only virtio-rng and virtio-net devices "
                        "have it)"));
}

// poll_us (issue 19): any kind, 0 (off, the default) to a second.
TEST(ServeConfig, PollWindow) {
  const std::string rng =
      "[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n";
  EXPECT_EQ(parse(rng)->devices[0].poll_us, 0u);
  EXPECT_EQ(parse(rng + "poll_us = 50\n")->devices[0].poll_us, 50u);
  EXPECT_EQ(parse(rng + "poll_us = 1000000\n")->devices[0].poll_us, 1000000u);
  EXPECT_THAT(error_of(rng + "poll_us = 1000001\n"),
              HasSubstr("serve.toml:5:11: device[1].poll_us: 1000001 microseconds; expected 0 to "
                        "1000000"));
  EXPECT_THAT(error_of(rng + "poll_us = -1\n"), HasSubstr("-1 microseconds"));
}

// interrupt_delay_us / interrupt_batch (issue 19): off by default; a batch limit needs a
// delay, since alone it would hold a lone completion for ever.
TEST(ServeConfig, InterruptCoalescing) {
  const std::string rng =
      "[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n";
  const auto off = parse(rng);
  ASSERT_TRUE(off.has_value());
  EXPECT_EQ(off->devices[0].interrupt_delay_us, 0u);
  EXPECT_EQ(off->devices[0].interrupt_batch, 0u);
  const auto on = parse(rng + "interrupt_delay_us = 50\ninterrupt_batch = 4\n");
  ASSERT_TRUE(on.has_value());
  EXPECT_EQ(on->devices[0].interrupt_delay_us, 50u);
  EXPECT_EQ(on->devices[0].interrupt_batch, 4u);
  EXPECT_THAT(error_of(rng + "interrupt_delay_us = 10001\n"),
              HasSubstr("device[1].interrupt_delay_us: 10001 microseconds; expected 0 to 10000"));
  EXPECT_THAT(error_of(rng + "interrupt_delay_us = 50\ninterrupt_batch = 0\n"),
              HasSubstr("device[1].interrupt_batch: 0 buffers; expected 1 to 32768"));
  EXPECT_THAT(error_of(rng + "interrupt_batch = 4\n"),
              HasSubstr("serve.toml:5:19: device[1].interrupt_batch: needs interrupt_delay_us "
                        "(the most a held interrupt may wait)"));
}

// notify (issue 19): "message" (default) or "mapped", the latter only where the modern
// notification area is what the guest rings.
TEST(ServeConfig, NotifyMode) {
  const auto device = [](const std::string& transport) {
    return "[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\ntransport = \"" + transport + "\"\n";
  };
  EXPECT_EQ(parse(device("modern"))->devices[0].notify, NotifyMode::kMessage);
  EXPECT_EQ(parse(device("modern") + "notify = \"message\"\n")->devices[0].notify,
            NotifyMode::kMessage);
  EXPECT_EQ(parse(device("modern") + "notify = \"mapped\"\n")->devices[0].notify,
            NotifyMode::kMapped);
  EXPECT_EQ(parse(device("transitional") + "notify = \"mapped\"\n")->devices[0].notify,
            NotifyMode::kMapped);
  EXPECT_THAT(error_of(device("legacy") + "notify = \"mapped\"\n"),
              HasSubstr("serve.toml:5:10: device[1].notify: \"mapped\" needs the modern "
                        "notification area: transport \"modern\" or \"transitional\", not "
                        "\"legacy\""));
  EXPECT_THAT(error_of(device("mmr") + "notify = \"mapped\"\n"), HasSubstr("not \"mmr\""));
  EXPECT_THAT(error_of(device("modern") + "notify = \"mmap\"\n"),
              HasSubstr("device[1].notify: unknown notification mode \"mmap\""));
  EXPECT_THAT(error_of(device("modern") + "notify = 1\n"), HasSubstr("device[1].notify"));
}

TEST(ServeConfig, UnknownKeyNamesFileLineKeyAndSuggests) {
  const std::string message = error_of(
      "[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\n"
      "transport = \"modern\"\ntransprot = 1\n");
  EXPECT_THAT(message, HasSubstr("serve.toml:5:1: device[1].transprot: unknown key"));
  EXPECT_THAT(message, HasSubstr("did you mean \"transport\"?"));
  EXPECT_THAT(error_of("sockets = \"/x\"\n"), HasSubstr("serve.toml:1:1: sockets: unknown key"));
}

TEST(ServeConfig, WrongTypesAreNamed) {
  EXPECT_THAT(error_of("[[device]]\nname = 7\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"),
              HasSubstr("serve.toml:2:8: device[1].name: expected a string, found an integer"));
  EXPECT_THAT(
      error_of("[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = \"modern\"\n"
               "path = \"x\"\nread_only = \"yes\"\n"),
      HasSubstr("serve.toml:6:13: device[1].read_only: expected a boolean, found a string"));
  EXPECT_THAT(error_of("device = 3\n"),
              HasSubstr("device: expected an array of tables ([[device]]), found an integer"));
  EXPECT_THAT(error_of("socket_dir = true\n[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\n"
                       "transport = \"modern\"\n"),
              HasSubstr("socket_dir: expected a string, found a boolean"));
}

TEST(ServeConfig, UnknownKindAndTransportSuggest) {
  EXPECT_THAT(
      error_of("[[device]]\nname = \"r\"\nkind = \"virtio-rgn\"\ntransport = \"modern\"\n"),
      HasSubstr("device[1].kind: unknown kind \"virtio-rgn\" (did you mean \"virtio-rng\"?)"));
  EXPECT_THAT(error_of("[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\ntransport = \"mdoern\"\n"),
              HasSubstr("unknown transport \"mdoern\" (did you mean \"modern\"?)"));
}

TEST(ServeConfig, DuplicateNamesAndBadNames) {
  const std::string dup = error_of(
      "[[device]]\nname = \"a\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"
      "[[device]]\nname = \"a\"\nkind = \"virtio-rng\"\ntransport = \"mmr\"\n");
  EXPECT_THAT(dup, HasSubstr("serve.toml:6:8: device[2].name: duplicate device name \"a\""));
  EXPECT_THAT(
      error_of("[[device]]\nname = \"../x\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"),
      HasSubstr("must not start with '.'"));
  EXPECT_THAT(
      error_of("[[device]]\nname = \"a/b\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"),
      HasSubstr("has '/'"));
  EXPECT_THAT(error_of("[[device]]\nname = \"\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"),
              HasSubstr("1 to 64 characters, not 0"));
}

TEST(ServeConfig, MissingKeysAndKindRules) {
  const std::string message = error_of("[[device]]\nkind = \"virtio-blk\"\n");
  EXPECT_THAT(message, HasSubstr("device[1]: missing required key \"name\""));
  EXPECT_THAT(message, HasSubstr("device[1]: missing required key \"transport\""));
  EXPECT_THAT(message, HasSubstr("device[1]: missing required key \"path\""));
  EXPECT_THAT(error_of("[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"
                       "path = \"x\"\n"),
              HasSubstr("device[1].path: a virtio-rng device has no such key (only virtio-blk "
                        "devices have it)"));
  EXPECT_THAT(error_of("socket_dir = \"/tmp\"\n"), HasSubstr("no devices"));
  EXPECT_THAT(error_of("[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"
                       "xen_backend_domid = 32752\n"),
              HasSubstr("32752 is not a backend domain ID"));
}

TEST(ServeConfig, NulInPathsIsRefused) {
  // Found by serve_config_fuzzer: a TOML "\u0000" escape made open() serve "disk.img".
  auto config = parse(
      "[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = \"modern\"\n"
      "path = \"disk.img\\u0000/etc/shadow\"\n");
  ASSERT_FALSE(config.has_value());
  EXPECT_THAT(config.error().message,
              HasSubstr("serve.toml:5:8: device[1].path: must not contain a NUL"));
  auto dir = parse(
      "socket_dir = \"/run\\u0000x\"\n[[device]]\nname = \"r\"\nkind = \"virtio-rng\"\n"
      "transport = \"modern\"\n");
  ASSERT_FALSE(dir.has_value());
  EXPECT_THAT(dir.error().message, HasSubstr("socket_dir: must not contain a NUL"));
}

TEST(ServeConfig, SyntaxErrorsCarryPosition) {
  EXPECT_THAT(error_of("[[device]\nname = 1\n"), HasSubstr("serve.toml:1:"));
}

TEST(ServeConfig, MissingBackingFileIsReportedWithItsLine) {
  vpci::testing::TempDir dir;
  const auto file = dir.path() / "serve.toml";
  std::ofstream(file) << "[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = \"modern\"\n"
                         "path = \"missing.img\"\n";
  auto config = load_serve_config(file);
  ASSERT_FALSE(config.has_value());
  EXPECT_THAT(config.error().message,
              HasSubstr(file.string() + ":5:8: device[1].path: backing file"));
  EXPECT_THAT(config.error().message, HasSubstr("missing.img does not exist"));
  std::ofstream(dir.path() / "missing.img") << std::string(4096, '\0');
  auto again = load_serve_config(file);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(again->devices[0].path, dir.path() / "missing.img");
  EXPECT_THAT(load_serve_config(dir.path() / "nope.toml").error().message,
              HasSubstr("nope.toml: cannot open: No such file"));
}

TEST(ServeConfig, DefaultConfigParsesAndQuotesThePath) {
  auto config = parse(default_serve_config_text("/tmp/dir with \"quote\"/blk0.img"));
  ASSERT_TRUE(config.has_value()) << config.error().message;
  ASSERT_EQ(config->devices.size(), 2u);
  EXPECT_EQ(config->devices[0].kind, DeviceKind::kVirtioRng);
  EXPECT_EQ(config->devices[1].kind, DeviceKind::kVirtioBlk);
  EXPECT_EQ(config->devices[1].path, std::filesystem::path("/tmp/dir with \"quote\"/blk0.img"));
}

}  // namespace
}  // namespace vpci::server
