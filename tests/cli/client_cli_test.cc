// `vpci inspect vfio-user:SOCKET` and `vpci dump vfio-user:SOCKET` (issue 18) against a
// running `vpci serve` with every transport: the dump decodes with the real lspci as the
// device each transport presents, inspect shows the server's regions and IRQs, and both
// leave the device untouched (read-only); a missing or silent server is a clear error.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/un.h>

#include "cli_test_util.h"
#include "serve_process.h"
#include "tests/support/lspci.h"

namespace vpci {
namespace {

using ::testing::HasSubstr;
using testing::read_text_file;
using testing::run_command;
using testing::ServeProcess;
using testing::shell_quote;
using testing::TempDir;
using testing::vpci_cli;

struct Served {
  const char* name;
  const char* transport;
  const char* lspci_line;  // what `lspci -F` says of the device
};

constexpr Served kServed[] = {
    {"modern", "modern", "Red Hat, Inc. Virtio 1.0 RNG (rev 01)"},
    {"transitional", "transitional", "Red Hat, Inc. Virtio RNG"},
    {"legacy", "legacy", "Red Hat, Inc. Virtio RNG"},
    {"mmr", "mmr", "Red Hat, Inc. Device 10fc"},
    {"overmmr", "legacy-over-mmr", "Red Hat, Inc. Virtio RNG"},
    {"overadmin", "legacy-over-admin", "Red Hat, Inc. Virtio RNG"},
    {"pf", "sriov-pf", "Red Hat, Inc. Virtio 1.0 RNG (rev 01)"},
};

class ClientCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::string config = "socket_dir = \"s\"\n";
    for (const auto& s : kServed) {
      config +=
          fmt::format("[[device]]\nname = \"{}\"\nkind = \"virtio-rng\"\ntransport = \"{}\"\n",
                      s.name, s.transport);
      if (std::string_view(s.transport) == "sriov-pf") config += "vfs = 2\n";
    }
    // Block devices for probe, each on an image of its own.
    for (const char* transport : {"transitional", "legacy", "mmr", "legacy-over-admin"}) {
      const std::string name = std::string("blk-") + transport;
      std::filesystem::resize_file(
          (std::ofstream(dir_->path() / (name + ".img")), dir_->path() / (name + ".img")),
          std::uintmax_t{1} << 20);
      config += fmt::format(
          "[[device]]\nname = \"{}\"\nkind = \"virtio-blk\"\ntransport = \"{}\"\npath = "
          "\"{}.img\"\n",
          name, transport, name);
    }
    std::ofstream(dir_->path() / "serve.toml") << config;
    serve_ = new ServeProcess({"serve", (dir_->path() / "serve.toml").string()},
                              dir_->path() / "serve.log");
    ASSERT_TRUE(serve_->wait_ready()) << serve_->output();
  }
  static void TearDownTestSuite() {
    delete serve_;
    delete dir_;
  }
  static std::string socket(const char* name) {
    return (dir_->path() / "s" / (std::string(name) + ".sock")).string();
  }

  static TempDir* dir_;
  static ServeProcess* serve_;
};
TempDir* ClientCli::dir_ = nullptr;
ServeProcess* ClientCli::serve_ = nullptr;

TEST_F(ClientCli, DumpDecodesWithLspciForEveryTransport) {
  for (const auto& s : kServed) {
    SCOPED_TRACE(s.transport);
    const auto file = dir_->path() / (std::string(s.name) + ".lspci");
    auto dumped = run_command(vpci_cli() + " dump vfio-user:" + shell_quote(socket(s.name)) +
                              " -o " + shell_quote(file.string()));
    ASSERT_EQ(dumped.exit_code, 0) << dumped.out;
    EXPECT_THAT(read_text_file(file),
                HasSubstr("read by vpci dump from vfio-user server " + socket(s.name)));
    auto decoded = run_command(std::string(vpci::testing::kLspci) + " -F " +
                               shell_quote(file.string()) + " -vvv");
    ASSERT_EQ(decoded.exit_code, 0) << decoded.out;
    EXPECT_THAT(decoded.out, HasSubstr(s.lspci_line)) << decoded.out;
    if (std::string_view(s.transport) == "sriov-pf") {
      EXPECT_THAT(decoded.out, HasSubstr("Single Root I/O Virtualization (SR-IOV)"));
      EXPECT_THAT(decoded.out, HasSubstr("Initial VFs: 2, Total VFs: 2"));
    }
  }
}

TEST_F(ClientCli, InspectShowsRegionsAndIrqsAndChangesNothing) {
  const std::string before = read_text_file(dir_->path() / "serve.log");
  auto text = run_command(vpci_cli() + " inspect vfio-user:" + shell_quote(socket("transitional")));
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_THAT(text.out, HasSubstr("vfio-user server " + socket("transitional") +
                                  ": protocol 0.2, max_msg_fds 16"));
  EXPECT_THAT(text.out, HasSubstr("device: flags reset,pci, 9 regions, 5 IRQ indexes"));
  EXPECT_THAT(text.out, HasSubstr("region 0 (BAR0): 0x20 bytes, read,write"));
  EXPECT_THAT(text.out, HasSubstr("region 7 (config): 0x1000 bytes, read,write"));
  EXPECT_THAT(text.out, HasSubstr("irq 2 (MSI-X): 2 vector(s), eventfd,noresize"));
  EXPECT_THAT(text.out, HasSubstr("Virtio RNG [1af4:1005] rev 00"));

  auto json =
      run_command(vpci_cli() + " inspect --json vfio-user:" + shell_quote(socket("modern")));
  ASSERT_EQ(json.exit_code, 0) << json.out;
  const auto parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["vfio_user"]["device"]["num_regions"], 9);
  EXPECT_EQ(parsed["vfio_user"]["regions"][7]["size"], 4096);
  EXPECT_EQ(parsed["vfio_user"]["irqs"][2]["name"], "MSI-X");
  EXPECT_EQ(parsed["devices"][0]["vendor_id"], 0x1af4);

  // Read-only: a second read sees the same bytes (the first changed nothing), and the
  // server logged no reset or error.
  auto first = run_command(vpci_cli() + " dump vfio-user:" + shell_quote(socket("modern")));
  auto second = run_command(vpci_cli() + " dump vfio-user:" + shell_quote(socket("modern")));
  EXPECT_EQ(first.out, second.out);
  const std::string after = read_text_file(dir_->path() / "serve.log");
  EXPECT_EQ(after.find("error", before.size()), std::string::npos) << after;
}

// `vpci probe`: every rng and blk device passes its self-test through the interface it
// is asked for, with MSI-X or INTx, fd-backed or message DMA; the device is left reset.
TEST_F(ClientCli, ProbePassesForRngAndBlkOnEveryInterface) {
  struct Probe {
    const char* device;
    const char* flags;
    const char* expected;
  };
  const Probe probes[] = {
      {"modern", "", "entropy (modern interface"},
      {"transitional", "--legacy", "entropy (legacy I/O interface"},
      {"legacy", "--legacy --intx", "entropy (legacy I/O interface"},
      {"mmr", "--legacy", "entropy (legacy MMR interface"},
      {"overmmr", "--legacy", "entropy (legacy I/O interface"},
      {"overadmin", "--legacy --intx", "entropy (legacy I/O interface"},
      {"pf", "--message-dma", "entropy (modern interface"},
      {"blk-transitional", "--write 100", "block (modern interface"},
      {"blk-transitional", "--legacy --intx --message-dma", "block (legacy I/O interface"},
      {"blk-legacy", "--write 3", "block (legacy I/O interface"},
      {"blk-mmr", "--legacy", "block (legacy MMR interface"},
      {"blk-mmr", "--intx", "block (modern interface"},
      {"blk-legacy-over-admin", "--legacy --write 1", "block (legacy I/O interface"},
  };
  for (const auto& p : probes) {
    SCOPED_TRACE(std::string(p.device) + " " + p.flags);
    auto probed = run_command(vpci_cli() + " probe " + p.flags +
                              " vfio-user:" + shell_quote(socket(p.device)));
    EXPECT_EQ(probed.exit_code, 0) << probed.out << probed.err;
    EXPECT_THAT(probed.out, HasSubstr(p.expected));
    EXPECT_THAT(probed.out, HasSubstr("result: pass"));
    if (std::string_view(p.device).starts_with("blk")) {
      EXPECT_THAT(probed.out, HasSubstr("capacity: 2048 sectors (1048576 bytes)"));
    }
    if (std::string_view(p.flags).find("--write") != std::string_view::npos) {
      EXPECT_THAT(probed.out, HasSubstr(": written, read back, restored"));
    }
    if (std::string_view(p.flags).find("--message-dma") != std::string_view::npos) {
      EXPECT_THAT(probed.out,
                  ::testing::ContainsRegex("DMA messages: [1-9][0-9]* answered, 0 refused"));
    }
  }
  // The scratch sector's bytes are back as they were (zeroes): the image is unchanged.
  std::ifstream image(dir_->path() / "blk-transitional.img", std::ios::binary);
  std::vector<char> bytes(1 << 20);
  image.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; }));

  auto json = run_command(vpci_cli() + " probe --json vfio-user:" + shell_quote(socket("modern")));
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["type"], "entropy");
  EXPECT_EQ(parsed["passed"], true);
  EXPECT_EQ(parsed["facts"]["read"], "64 bytes");

  auto beyond = run_command(vpci_cli() +
                            " probe --write 4096 vfio-user:" + shell_quote(socket("blk-legacy")));
  EXPECT_EQ(beyond.exit_code, 1);
  EXPECT_THAT(beyond.out,
              HasSubstr("result: FAIL: scratch sector 4096 is beyond the capacity of 2048"));
  EXPECT_THAT(beyond.err, HasSubstr("vpci probe: "));

  auto not_vfio_user = run_command(vpci_cli() + " probe /tmp/x");
  EXPECT_EQ(not_vfio_user.exit_code, 2);
  EXPECT_THAT(not_vfio_user.err, HasSubstr("SOURCE \"/tmp/x\" is not vfio-user:SOCKET"));
}

TEST_F(ClientCli, AMissingOrSilentServerIsAClearError) {
  auto missing = run_command(
      vpci_cli() + " inspect vfio-user:" + shell_quote((dir_->path() / "none.sock").string()));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("vpci inspect: cannot connect to vfio-user server "));
  EXPECT_THAT(missing.err, HasSubstr("none.sock: No such file or directory"));

  auto empty = run_command(vpci_cli() + " dump vfio-user:");
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_THAT(empty.err, HasSubstr("vfio-user socket path \"\" must be 1 to 107 characters"));

  auto bad_timeout = run_command(vpci_cli() + " dump vfio-user:x --timeout 0");
  EXPECT_EQ(bad_timeout.exit_code, 2);

  // A socket that accepts connections but never answers: an error after --timeout.
  const auto silent = dir_->path() / "silent.sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, silent.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  const auto started = std::chrono::steady_clock::now();
  auto timed_out =
      run_command(vpci_cli() + " inspect --timeout 200 vfio-user:" + shell_quote(silent.string()));
  const auto took = std::chrono::steady_clock::now() - started;
  ::close(listener);
  EXPECT_EQ(timed_out.exit_code, 1);
  EXPECT_THAT(timed_out.err, HasSubstr("no reply to VERSION within 200 ms"));
  EXPECT_LT(took, std::chrono::seconds(10));
}

}  // namespace
}  // namespace vpci
