// `vpci serve` end to end through the real CLI: configuration errors, --check, and a
// running server whose sockets a vfio-user test client talks to, stopped by SIGTERM.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "../server/test_client.h"
#include "cli_test_util.h"
#include "pci/capabilities.h"
#include "pci/capability_registers.h"
#include "pci/registers.h"
#include "serve_process.h"
#include "server/protocol.h"
#include "server/serve_config.h"

namespace vpci {
namespace {

using ::testing::HasSubstr;
using testing::read_text_file;
using testing::run_command;
using testing::ServeProcess;
using testing::shell_quote;
using testing::TempDir;
using testing::vpci_cli;

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::uint32_t read_config_dword(server::testing::TestClient& client, std::uint32_t offset) {
  auto reply =
      client.call(server::vfio_user::kRegionRead, server::testing::region_read(7, offset, 4));
  if (!reply || reply->is_error() ||
      reply->payload.size() < server::vfio_user::kRegionAccessSize + 4)
    return 0xFFFFFFFF;
  std::uint32_t value = 0;
  std::memcpy(&value, reply->payload.data() + server::vfio_user::kRegionAccessSize, 4);
  return value;
}

TEST(ServeCli, ConfigurationErrorsNameFileLineAndKey) {
  TempDir dir;
  const auto config = dir.path() / "serve.toml";
  write_file(
      config,
      "[[device]]\nname = \"rng0\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"
      "transprot = 1\n[[device]]\nname = \"rng0\"\nkind = \"virtio-rgn\"\ntransport = \"mmr\"\n");
  const auto result =
      run_command(std::string(VPCI_CLI_PATH) + " serve " + shell_quote(config.string()));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr(config.string() + ":5:1: device[1].transprot: unknown key "
                                                      "(did you mean \"transport\"?)"));
  EXPECT_THAT(result.err,
              HasSubstr(config.string() + ":8:8: device[2].kind: unknown kind "
                                          "\"virtio-rgn\" (did you mean \"virtio-rng\"?)"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "rng0.sock"));
}

TEST(ServeCli, MissingBackingFileAndMissingConfig) {
  TempDir dir;
  const auto config = dir.path() / "serve.toml";
  write_file(config,
             "[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = \"modern\"\n"
             "path = \"gone.img\"\n");
  auto result = run_command(std::string(VPCI_CLI_PATH) + " serve " + shell_quote(config.string()));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr(":5:8: device[1].path: backing file "));
  EXPECT_THAT(result.err, HasSubstr("gone.img does not exist"));
  result = run_command(std::string(VPCI_CLI_PATH) + " serve " +
                       shell_quote((dir.path() / "none.toml").string()));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("none.toml: cannot open: No such file"));
}

// A tap that cannot be opened is exit 1 with the device and the reason: as root, the
// kernel is asked what "lo" is; otherwise opening it is refused for want of privilege.
TEST(ServeCli, ATapThatCannotBeOpenedNamesTheDeviceAndTheReason) {
  TempDir dir;
  const auto config = dir.path() / "serve.toml";
  write_file(config,
             "[[device]]\nname = \"net0\"\nkind = \"virtio-net\"\ntransport = \"modern\"\n"
             "tap = \"lo\"\n");
  const auto result =
      run_command(std::string(VPCI_CLI_PATH) + " serve --check " + shell_quote(config.string()));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr(config.string() + ":1: device \"net0\": "));
  if (::geteuid() == 0) {
    EXPECT_THAT(result.err, HasSubstr("interface lo exists and is not a tap"));
  } else {
    // /dev/net/tun is 0600 on some machines, 0666 (then TUNSETIFF needs CAP_NET_ADMIN)
    // on others.
    EXPECT_THAT(result.err, ::testing::AnyOf(HasSubstr("/dev/net/tun: "),
                                             HasSubstr("not allowed to open tap lo")));
  }
}

TEST(ServeCli, CheckOpensBackEndsAndListsDevicesWithoutSockets) {
  TempDir dir;
  std::filesystem::resize_file((write_file(dir.path() / "d.img", ""), dir.path() / "d.img"),
                               1 << 20);
  const auto config = dir.path() / "serve.toml";
  write_file(config,
             "socket_dir = \"s\"\n"
             "[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = \"transitional\"\n"
             "path = \"d.img\"\nread_only = true\n"
             "[[device]]\nname = \"x\"\nkind = \"virtio-rng\"\ntransport = \"mmr\"\n"
             "xen_backend_domid = 7\n");
  const auto result =
      run_command(std::string(VPCI_CLI_PATH) + " serve --check " + shell_quote(config.string()));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("2 device(s) OK"));
  EXPECT_THAT(result.out, HasSubstr("b: virtio-blk, transitional, 1af4:1001 rev 0"));
  EXPECT_THAT(result.out, HasSubstr("(1 MiB, read-only)"));
  EXPECT_THAT(result.out, HasSubstr("x: virtio-rng, mmr, 1af4:10fc rev 0"));
  EXPECT_THAT(result.out, HasSubstr("Xen grants to domain 7"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "s"));
}

TEST(ServeCli, ServesEveryTransportAndStopsCleanlyOnSigterm) {
  TempDir dir;
  for (const char* image : {"a.img", "b.img", "c.img"}) {
    write_file(dir.path() / image, "");
    std::filesystem::resize_file(dir.path() / image, 1 << 20);
  }
  const auto config = dir.path() / "serve.toml";
  write_file(
      config,
      "socket_dir = \"sockets\"\n"
      "[[device]]\nname = \"rng0\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"
      "[[device]]\nname = \"blk0\"\nkind = \"virtio-blk\"\ntransport = \"transitional\"\npath = "
      "\"a.img\"\n"
      "[[device]]\nname = \"mmr0\"\nkind = \"virtio-blk\"\ntransport = \"mmr\"\npath = \"b.img\"\n"
      "[[device]]\nname = \"lom0\"\nkind = \"virtio-blk\"\ntransport = \"legacy-over-mmr\"\npath = "
      "\"c.img\"\n");
  ServeProcess serve({"serve", config.string()}, dir.path() / "serve.log");
  ASSERT_TRUE(serve.wait_ready()) << serve.output();
  const std::string output = serve.output();
  EXPECT_THAT(output, HasSubstr("\"driver\":\"vfio-user-pci\""));
  EXPECT_THAT(output, HasSubstr("memory-backend-memfd,id=mem,size=512M,share=on"));

  // (vendor, device) in config dword 0, revision in the low byte of dword 8.
  const std::vector<std::tuple<std::string, std::uint32_t, std::uint32_t>> expected = {
      {"rng0", 0x10441af4, 1},
      {"blk0", 0x10011af4, 0},
      {"mmr0", 0x10fa1af4, 0},
      {"lom0", 0x10011af4, 0}};
  for (const auto& [name, ids, revision] : expected) {
    const auto socket = dir.path() / "sockets" / (name + ".sock");
    for (int round = 0; round < 2; ++round) {  // the second round reconnects
      auto client = server::testing::TestClient::connect(socket.string());
      ASSERT_TRUE(client.has_value()) << name;
      ASSERT_TRUE(client->negotiate()) << name;
      EXPECT_EQ(read_config_dword(*client, 0), ids) << name;
      EXPECT_EQ(read_config_dword(*client, 8) & 0xFF, revision) << name;
      client->close();
    }
  }

  EXPECT_EQ(serve.stop(SIGTERM), 0);
  EXPECT_THAT(serve.output(), HasSubstr("vpci serve: stopped"));
  for (const char* name : {"rng0", "blk0", "mmr0", "lom0"}) {
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "sockets" / (std::string(name) + ".sock")))
        << name;
  }
}

TEST(ServeCli, DefaultDevicesOnAFreshImageAndSigint) {
  TempDir dir;
  const auto sockets = dir.path() / "run";
  std::filesystem::create_directories(sockets);
  write_file(sockets / "blk0.img", "stale contents from an earlier run");
  ServeProcess serve({"serve", "--socket-dir", sockets.string()}, dir.path() / "serve.log");
  ASSERT_TRUE(serve.wait_ready()) << serve.output();
  EXPECT_THAT(serve.output(), HasSubstr("rng0: virtio-rng, modern, 1af4:1044 rev 1"));
  EXPECT_THAT(serve.output(), HasSubstr("blk0: virtio-blk, modern, 1af4:1042 rev 1"));
  EXPECT_THAT(serve.output(), HasSubstr("(64 MiB)"));
  EXPECT_EQ(std::filesystem::file_size(sockets / "blk0.img"), 64u << 20);
  char first = 'x';
  std::ifstream(sockets / "blk0.img").read(&first, 1);
  EXPECT_EQ(first, '\0') << "the default image must be fresh";
  EXPECT_TRUE(std::filesystem::is_socket(sockets / "rng0.sock"));
  EXPECT_TRUE(std::filesystem::is_socket(sockets / "blk0.sock"));
  EXPECT_EQ(serve.stop(SIGINT), 0);
  EXPECT_FALSE(std::filesystem::exists(sockets / "rng0.sock"));
}

// legacy-over-admin: the guest sees a transitional device, and each legacy register access
// it makes is one admin command on the PF's admin queue, which --trace shows.
TEST(ServeCli, LegacyOverAdminTracesEachAdminCommand) {
  TempDir dir;
  write_file(dir.path() / "d.img", "");
  std::filesystem::resize_file(dir.path() / "d.img", 1 << 20);
  const auto config = dir.path() / "serve.toml";
  write_file(config,
             "socket_dir = \"s\"\n[[device]]\nname = \"loa0\"\nkind = \"virtio-blk\"\n"
             "transport = \"legacy-over-admin\"\npath = \"d.img\"\n");
  const auto trace = dir.path() / "trace.log";
  ServeProcess serve({"serve", config.string(), "--trace", trace.string()},
                     dir.path() / "serve.log");
  ASSERT_TRUE(serve.wait_ready()) << serve.output();
  EXPECT_THAT(serve.output(), HasSubstr("loa0: virtio-blk, legacy-over-admin, 1af4:1001 rev 0"));
  {
    auto client = server::testing::TestClient::connect((dir.path() / "s" / "loa0.sock").string());
    ASSERT_TRUE(client.has_value());
    ASSERT_TRUE(client->negotiate());
    EXPECT_EQ(read_config_dword(*client, 0), 0x10011af4u);
    // COMMAND.IO on, then the 4-byte host features register at BAR0 + 0.
    const std::array<std::uint8_t, 2> io_on = {pci::command::kIoSpace, 0};
    auto enabled = client->call(server::vfio_user::kRegionWrite,
                                server::testing::region_write(7, pci::reg::kCommand, io_on));
    ASSERT_TRUE(enabled && !enabled->is_error());
    auto features =
        client->call(server::vfio_user::kRegionRead, server::testing::region_read(0, 0, 4));
    ASSERT_TRUE(features && !features->is_error());
  }
  EXPECT_EQ(serve.stop(SIGTERM), 0);
  EXPECT_THAT(read_text_file(trace),
              HasSubstr("[loa0] admin LEGACY_COMMON_CFG_READ group 1 member 1: OK, used 12 bytes"));
}

// sriov-pf: the client sees the PF itself, a modern function whose extended capabilities
// hold the SR-IOV capability with TotalVFs = the configured vfs.
TEST(ServeCli, SriovPfServesThePfWithItsSriovCapability) {
  TempDir dir;
  const auto config = dir.path() / "serve.toml";
  write_file(config,
             "socket_dir = \"s\"\n[[device]]\nname = \"pf0\"\nkind = \"virtio-rng\"\n"
             "transport = \"sriov-pf\"\nvfs = 3\n");
  ServeProcess serve({"serve", config.string()}, dir.path() / "serve.log");
  ASSERT_TRUE(serve.wait_ready()) << serve.output();
  EXPECT_THAT(serve.output(), HasSubstr("pf0: virtio-rng, sriov-pf, 1af4:1044 rev 1, 3 VF(s)"));
  {
    auto client = server::testing::TestClient::connect((dir.path() / "s" / "pf0.sock").string());
    ASSERT_TRUE(client.has_value());
    ASSERT_TRUE(client->negotiate());
    EXPECT_EQ(read_config_dword(*client, 0), 0x10441af4u);
    // PCIe extended capability headers from 0x100: ID in bits 0-15, next in bits 20-31.
    std::uint32_t at = 0x100;
    std::optional<std::uint32_t> sriov;
    for (int hops = 0; at != 0 && hops < 64 && !sriov; ++hops) {
      const std::uint32_t header = read_config_dword(*client, at);
      if ((header & 0xFFFF) == pci::ext_cap_id::kSriov) sriov = at;
      at = header >> 20;
    }
    ASSERT_TRUE(sriov.has_value()) << "no SR-IOV capability";
    // TotalVFs is the upper half of the dword at +0x0C (InitialVFs, TotalVFs).
    EXPECT_EQ(read_config_dword(*client, *sriov + pci::sriov::kInitialVfs) >> 16, 3u);
  }
  EXPECT_EQ(serve.stop(SIGTERM), 0);
}

TEST(ServeCli, TraceFileAndStatsAtShutdown) {
  TempDir dir;
  const auto sockets = dir.path() / "run";
  const auto trace = dir.path() / "trace.log";
  ServeProcess serve(
      {"serve", "--socket-dir", sockets.string(), "--trace", trace.string(), "--stats"},
      dir.path() / "serve.log");
  ASSERT_TRUE(serve.wait_ready()) << serve.output();
  {
    auto client = server::testing::TestClient::connect((sockets / "rng0.sock").string());
    ASSERT_TRUE(client.has_value());
    ASSERT_TRUE(client->negotiate());
    EXPECT_EQ(read_config_dword(*client, 0), 0x10441af4u);
    EXPECT_EQ(read_config_dword(*client, 0), 0x10441af4u);
  }
  EXPECT_EQ(serve.stop(SIGTERM), 0);
  const std::string output = serve.output();
  // Exactly this client's traffic on rng0; blk0 saw none.
  EXPECT_THAT(output, HasSubstr("vpci serve: stats rng0: 3 messages"));
  EXPECT_THAT(output, HasSubstr("vpci serve: stats blk0: 0 messages"));
  EXPECT_THAT(output, ::testing::ContainsRegex("stats rng0: +REGION_READ region 7 +2 messages"));
  const std::string traced = read_text_file(trace);
  EXPECT_THAT(traced, HasSubstr("[rng0] connected"));
  EXPECT_THAT(traced, HasSubstr("[rng0] <- #"));
  EXPECT_THAT(traced, HasSubstr("REGION_READ region 7 offset 0x0 count 4"));
  EXPECT_THAT(traced, HasSubstr("[rng0] disconnected"));
}

// --- Another server is never disturbed (issue 20) ---

std::string file_bytes(const std::filesystem::path& path) {
  return read_text_file(path);
}

// Config dword 0 (vendor and device ID) of the device behind `socket`, or 0xFFFFFFFF.
std::uint32_t ids_on(const std::filesystem::path& socket) {
  auto client = server::testing::TestClient::connect(socket.string());
  if (!client || !client->negotiate()) return 0xFFFFFFFF;
  return read_config_dword(*client, 0);
}

constexpr auto kExitWait = std::chrono::seconds(10);

TEST(ServeCli, ASecondServerOnTheSameConfigExits1AndTheFirstKeepsServing) {
  TempDir dir;
  std::string image_bytes(1 << 20, '\0');
  for (std::size_t i = 0; i < image_bytes.size(); i += 4096) image_bytes.replace(i, 8, "precious");
  std::ofstream(dir.path() / "d.img", std::ios::binary) << image_bytes;
  const auto config = dir.path() / "serve.toml";
  write_file(config,
             "socket_dir = \"s\"\n"
             "[[device]]\nname = \"rng0\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"
             "[[device]]\nname = \"blk0\"\nkind = \"virtio-blk\"\ntransport = \"modern\"\n"
             "path = \"d.img\"\n");
  ServeProcess first({"serve", config.string()}, dir.path() / "first.log");
  ASSERT_TRUE(first.wait_ready()) << first.output();

  ServeProcess second({"serve", config.string()}, dir.path() / "second.log");
  EXPECT_EQ(second.wait_exit(kExitWait), std::optional<int>(1)) << second.output();
  EXPECT_THAT(second.output(), HasSubstr("cannot lock image " + (dir.path() / "d.img").string() +
                                         " for writing: process " + std::to_string(first.pid())));
  // --check opens the back ends too, so it tells the same.
  const auto check = run_command(vpci_cli() + " serve --check " + shell_quote(config.string()));
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_THAT(check.err, HasSubstr("holds a lock on it"));

  EXPECT_EQ(file_bytes(dir.path() / "d.img"), image_bytes);
  EXPECT_EQ(ids_on(dir.path() / "s" / "rng0.sock"), 0x10441af4u);
  EXPECT_EQ(ids_on(dir.path() / "s" / "blk0.sock"), 0x10421af4u);
  EXPECT_EQ(first.stop(SIGTERM), 0);
  EXPECT_EQ(file_bytes(dir.path() / "d.img"), image_bytes);
}

TEST(ServeCli, ASecondServerOnTheDefaultDevicesNeverEmptiesTheFirstOnesImage) {
  TempDir dir;
  const auto sockets = dir.path() / "run";
  ServeProcess first({"serve", "--socket-dir", sockets.string()}, dir.path() / "first.log");
  ASSERT_TRUE(first.wait_ready()) << first.output();
  {
    // What a guest wrote through the first server.
    std::fstream image(sockets / "blk0.img", std::ios::in | std::ios::out | std::ios::binary);
    image.seekp(8192);
    image << "written by the guest";
  }
  const std::string before = file_bytes(sockets / "blk0.img");
  ASSERT_EQ(before.size(), 64u << 20);

  ServeProcess second({"serve", "--socket-dir", sockets.string()}, dir.path() / "second.log");
  EXPECT_EQ(second.wait_exit(kExitWait), std::optional<int>(1)) << second.output();
  EXPECT_THAT(second.output(), HasSubstr("cannot lock image " + (sockets / "blk0.img").string() +
                                         " for writing: process " + std::to_string(first.pid())));
  const auto check =
      run_command(vpci_cli() + " serve --check --socket-dir " + shell_quote(sockets.string()));
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_THAT(check.err, HasSubstr("blk0.img for writing: process"));

  EXPECT_EQ(file_bytes(sockets / "blk0.img"), before);
  EXPECT_EQ(ids_on(sockets / "rng0.sock"), 0x10441af4u);
  EXPECT_EQ(ids_on(sockets / "blk0.sock"), 0x10421af4u);
  EXPECT_EQ(first.stop(SIGTERM), 0);
}

TEST(ServeCli, ALiveSocketIsRefusedAndAStaleOneReplaced) {
  TempDir dir;
  const auto config = dir.path() / "serve.toml";
  write_file(config,
             "socket_dir = \"s\"\n"
             "[[device]]\nname = \"rng0\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n");
  std::filesystem::create_directories(dir.path() / "s");
  const auto socket = dir.path() / "s" / "rng0.sock";
  {
    // A stale socket file: bound, never listened on, closed.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, socket.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);
  }
  ServeProcess first({"serve", config.string()}, dir.path() / "first.log");
  ASSERT_TRUE(first.wait_ready()) << first.output();

  ServeProcess second({"serve", config.string()}, dir.path() / "second.log");
  EXPECT_EQ(second.wait_exit(kExitWait), std::optional<int>(1)) << second.output();
  EXPECT_THAT(second.output(), HasSubstr("device \"rng0\": socket " + socket.string() +
                                         " is in use by a running server"));
  EXPECT_EQ(ids_on(socket), 0x10441af4u);

  // At shutdown only the socket this server bound is removed, not what replaced it.
  std::filesystem::remove(socket);
  write_file(socket, "someone else's file");
  EXPECT_EQ(first.stop(SIGTERM), 0);
  EXPECT_EQ(read_text_file(socket), "someone else's file");
}

TEST(ServeCli, TwoWritableDevicesOnOneImageAreRefusedReadOnlyOnesShareIt) {
  TempDir dir;
  std::filesystem::resize_file((write_file(dir.path() / "d.img", ""), dir.path() / "d.img"),
                               1 << 20);
  const auto device = [](const char* name, bool read_only) {
    return fmt::format(
        "[[device]]\nname = \"{}\"\nkind = \"virtio-blk\"\ntransport = \"modern\"\n"
        "path = \"d.img\"\nread_only = {}\n",
        name, read_only);
  };
  const auto config = dir.path() / "serve.toml";
  write_file(config, "socket_dir = \"s\"\n" + device("a", false) + device("b", false));
  ServeProcess serve({"serve", config.string()}, dir.path() / "serve.log");
  EXPECT_EQ(serve.wait_exit(kExitWait), std::optional<int>(1)) << serve.output();
  EXPECT_THAT(serve.output(),
              HasSubstr(":8: device \"b\": cannot lock image " + (dir.path() / "d.img").string() +
                        " for writing: another device of this configuration uses it"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "s"));
  auto check = run_command(vpci_cli() + " serve --check " + shell_quote(config.string()));
  EXPECT_EQ(check.exit_code, 1);

  write_file(config, "socket_dir = \"s\"\n" + device("a", true) + device("b", false));
  check = run_command(vpci_cli() + " serve --check " + shell_quote(config.string()));
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_THAT(check.err, HasSubstr("device \"b\": cannot lock image"));

  write_file(config, "socket_dir = \"s\"\n" + device("a", true) + device("b", true));
  check = run_command(vpci_cli() + " serve --check " + shell_quote(config.string()));
  EXPECT_EQ(check.exit_code, 0) << check.err;
  EXPECT_THAT(check.out, HasSubstr("2 device(s) OK"));
}

// --- Socket directories (issue 20 item 5) ---

TEST(ServeCli, CheckOfTheDefaultDevicesCreatesNothing) {
  TempDir dir;
  const auto fresh = dir.path() / "fresh";
  auto result =
      run_command(vpci_cli() + " serve --check --socket-dir " + shell_quote(fresh.string()));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("<default>: 2 device(s) OK"));
  EXPECT_THAT(result.out, HasSubstr("blk0: virtio-blk, modern, 1af4:1042 rev 1, " +
                                    (fresh / "blk0.img").string() + " (64 MiB)"));
  EXPECT_FALSE(std::filesystem::exists(fresh));
  // In an existing directory no image appears either.
  result =
      run_command(vpci_cli() + " serve --check --socket-dir " + shell_quote(dir.path().string()));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "blk0.img"));
}

TEST(ServeCli, ARelativeSocketDirServesAbsolutePaths) {
  TempDir dir;
  ServeProcess serve({"serve", "--socket-dir", "rel"}, dir.path() / "serve.log", dir.path());
  ASSERT_TRUE(serve.wait_ready()) << serve.output();
  const auto rel = dir.path() / "rel";
  const std::string output = serve.output();
  EXPECT_THAT(output, HasSubstr("\"path\":\"" + (rel / "rng0.sock").string() + "\""));
  EXPECT_THAT(output, HasSubstr("\"path\":\"" + (rel / "blk0.sock").string() + "\""));
  EXPECT_THAT(output, HasSubstr("blk0: virtio-blk, modern, 1af4:1042 rev 1, " +
                                (rel / "blk0.img").string() + " (64 MiB) on " +
                                (rel / "blk0.sock").string()));
  EXPECT_EQ(std::filesystem::file_size(rel / "blk0.img"), 64u << 20);
  EXPECT_FALSE(std::filesystem::exists(rel / "rel"));
  EXPECT_EQ(ids_on(rel / "rng0.sock"), 0x10441af4u);
  EXPECT_EQ(serve.stop(SIGTERM), 0);
  // What a clean run leaves: the directory and the image, no sockets.
  std::vector<std::string> left;
  for (const auto& entry : std::filesystem::directory_iterator(rel)) {
    left.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(left, std::vector<std::string>{"blk0.img"});
}

TEST(ServeCli, ASocketDirWhoseParentIsMissingIsAnError) {
  TempDir dir;
  const auto missing = dir.path() / "missing" / "x";
  ServeProcess defaults({"serve", "--socket-dir", missing.string()}, dir.path() / "a.log");
  EXPECT_EQ(defaults.wait_exit(kExitWait), std::optional<int>(1)) << defaults.output();
  EXPECT_THAT(defaults.output(),
              HasSubstr("cannot create socket directory " + missing.string() + ": " +
                        (dir.path() / "missing").string() + " does not exist"));
  const auto config = dir.path() / "serve.toml";
  write_file(config,
             "socket_dir = \"missing/x\"\n"
             "[[device]]\nname = \"rng0\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n");
  ServeProcess configured({"serve", config.string()}, dir.path() / "b.log");
  EXPECT_EQ(configured.wait_exit(kExitWait), std::optional<int>(1)) << configured.output();
  EXPECT_THAT(configured.output(), HasSubstr("cannot create socket directory " + missing.string()));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "missing"));
}

// --- Signals before ready (issue 20 item 4) ---

TEST(ServeCli, SigtermWhileReadingAFifoConfigEndsItAtOnce) {
  TempDir dir;
  const auto fifo = dir.path() / "serve.toml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto sockets = dir.path() / "s";
  ServeProcess serve({"serve", fifo.string(), "--socket-dir", sockets.string()},
                     dir.path() / "serve.log");
  // The writer's end, once serve has opened the FIFO for reading (ENXIO until then).
  int writer = -1;
  for (int i = 0; i < 500 && writer < 0; ++i) {
    writer = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (writer < 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(writer, 0) << serve.output();
  // A write after serve has gone must not kill this test with SIGPIPE.
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
  const auto trickle = [&] {
    // A writer that keeps sending, never finishing: the read never ends by itself.
    (void)::write(writer, "\n", 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  };
  (void)::write(writer, "[[device]]\n", 11);
  for (int i = 0; i < 5; ++i) trickle();
  ::kill(serve.pid(), SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  std::optional<int> status;
  while (!(status = serve.wait_exit(std::chrono::milliseconds(0))) &&
         std::chrono::steady_clock::now() < deadline) {
    trickle();
  }
  ::close(writer);
  const timespec now{};
  while (sigtimedwait(&pipe_signal, nullptr, &now) > 0) {
  }
  pthread_sigmask(SIG_UNBLOCK, &pipe_signal, nullptr);
  ASSERT_TRUE(status.has_value()) << "still running 2 s after SIGTERM";
  EXPECT_EQ(*status, 128 + SIGTERM);
  EXPECT_FALSE(std::filesystem::exists(sockets));
}

TEST(ServeCli, SigtermWhileStartingRemovesWhatItCreated) {
  TempDir dir;
  // Enough devices that binding their sockets takes a while (about 1 s here).
  std::string text = "socket_dir = \"many\"\n";
  for (std::size_t i = 0; i < server::kMaxServedDevices; ++i) {
    text += fmt::format(
        "[[device]]\nname = \"r{}\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n", i);
  }
  const auto config = dir.path() / "serve.toml";
  write_file(config, text);
  const auto sockets = dir.path() / "many";
  ServeProcess serve({"serve", config.string()}, dir.path() / "serve.log");
  // The directory is made after every device is built, before the first socket.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!std::filesystem::exists(sockets) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(std::filesystem::exists(sockets)) << serve.output();
  ::kill(serve.pid(), SIGTERM);
  EXPECT_EQ(serve.wait_exit(kExitWait), std::optional<int>(128 + SIGTERM)) << serve.output();
  EXPECT_THAT(serve.output(), HasSubstr("vpci serve: Terminated while starting"));
  EXPECT_THAT(serve.output(), ::testing::Not(HasSubstr("ready")));
  EXPECT_FALSE(std::filesystem::exists(sockets));
}

}  // namespace
}  // namespace vpci
