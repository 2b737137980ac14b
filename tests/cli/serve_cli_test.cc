// `vpci serve` end to end through the real CLI: configuration errors, --check, and a
// running server whose sockets a vfio-user test client talks to, stopped by SIGTERM.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "../server/test_client.h"
#include "cli_test_util.h"
#include "server/protocol.h"

namespace vpci {
namespace {

using ::testing::HasSubstr;
using testing::read_text_file;
using testing::run_command;
using testing::shell_quote;
using testing::TempDir;

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

// A `vpci serve` child process with stdout+stderr in a file.
class ServeProcess {
 public:
  ServeProcess(const std::vector<std::string>& args, std::filesystem::path log) : log_(std::move(log)) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      std::string binary = VPCI_CLI_PATH;
      argv.push_back(binary.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Waits for the "ready" line (or exit).
  bool wait_ready() {
    for (int i = 0; i < 200; ++i) {
      if (output().find("vpci serve: ready") != std::string::npos) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }
  // Sends `signal` and returns the exit status.
  int stop(int signal) {
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  [[nodiscard]] std::string output() const { return read_text_file(log_); }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
};

std::uint32_t read_config_dword(server::testing::TestClient& client, std::uint32_t offset) {
  auto reply = client.call(server::vfio_user::kRegionRead,
                           server::testing::region_read(7, offset, 4));
  if (!reply || reply->is_error() || reply->payload.size() < server::vfio_user::kRegionAccessSize + 4) return 0xFFFFFFFF;
  std::uint32_t value = 0;
  std::memcpy(&value, reply->payload.data() + server::vfio_user::kRegionAccessSize, 4);
  return value;
}

TEST(ServeCli, ConfigurationErrorsNameFileLineAndKey) {
  TempDir dir;
  const auto config = dir.path() / "serve.toml";
  write_file(config,
             "[[device]]\nname = \"rng0\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"
             "transprot = 1\n[[device]]\nname = \"rng0\"\nkind = \"virtio-rgn\"\ntransport = \"mmr\"\n");
  const auto result = run_command(std::string(VPCI_CLI_PATH) + " serve " + shell_quote(config.string()));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr(config.string() + ":5:1: device[1].transprot: unknown key "
                                                      "(did you mean \"transport\"?)"));
  EXPECT_THAT(result.err, HasSubstr(config.string() + ":8:8: device[2].kind: unknown kind "
                                                      "\"virtio-rgn\" (did you mean \"virtio-rng\"?)"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "rng0.sock"));
}

TEST(ServeCli, MissingBackingFileAndMissingConfig) {
  TempDir dir;
  const auto config = dir.path() / "serve.toml";
  write_file(config, "[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = \"modern\"\n"
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

TEST(ServeCli, CheckOpensBackEndsAndListsDevicesWithoutSockets) {
  TempDir dir;
  std::filesystem::resize_file((write_file(dir.path() / "d.img", ""), dir.path() / "d.img"), 1 << 20);
  const auto config = dir.path() / "serve.toml";
  write_file(config, "socket_dir = \"s\"\n"
                     "[[device]]\nname = \"b\"\nkind = \"virtio-blk\"\ntransport = \"transitional\"\n"
                     "path = \"d.img\"\nread_only = true\n"
                     "[[device]]\nname = \"x\"\nkind = \"virtio-rng\"\ntransport = \"mmr\"\n"
                     "xen_backend_domid = 7\n");
  const auto result = run_command(std::string(VPCI_CLI_PATH) + " serve --check " +
                                  shell_quote(config.string()));
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
  write_file(config,
             "socket_dir = \"sockets\"\n"
             "[[device]]\nname = \"rng0\"\nkind = \"virtio-rng\"\ntransport = \"modern\"\n"
             "[[device]]\nname = \"blk0\"\nkind = \"virtio-blk\"\ntransport = \"transitional\"\npath = \"a.img\"\n"
             "[[device]]\nname = \"mmr0\"\nkind = \"virtio-blk\"\ntransport = \"mmr\"\npath = \"b.img\"\n"
             "[[device]]\nname = \"lom0\"\nkind = \"virtio-blk\"\ntransport = \"legacy-over-mmr\"\npath = \"c.img\"\n");
  ServeProcess serve({"serve", config.string()}, dir.path() / "serve.log");
  ASSERT_TRUE(serve.wait_ready()) << serve.output();
  const std::string output = serve.output();
  EXPECT_THAT(output, HasSubstr("\"driver\":\"vfio-user-pci\""));
  EXPECT_THAT(output, HasSubstr("memory-backend-memfd,id=mem,size=512M,share=on"));

  // (vendor, device) in config dword 0, revision in the low byte of dword 8.
  const std::vector<std::tuple<std::string, std::uint32_t, std::uint32_t>> expected = {
      {"rng0", 0x10441af4, 1}, {"blk0", 0x10011af4, 0}, {"mmr0", 0x10fa1af4, 0}, {"lom0", 0x10011af4, 0}};
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

TEST(ServeCli, TraceFileAndStatsAtShutdown) {
  TempDir dir;
  const auto sockets = dir.path() / "run";
  const auto trace = dir.path() / "trace.log";
  ServeProcess serve({"serve", "--socket-dir", sockets.string(), "--trace", trace.string(), "--stats"},
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

}  // namespace
}  // namespace vpci
