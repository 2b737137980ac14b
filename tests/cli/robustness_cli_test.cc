// Every file a `vpci` command reads, given hostile input (issue 20): a directory, an
// empty file, a FIFO nobody writes, /dev/zero, random bytes, a 1 TiB sparse file, a
// path that does not exist, a file without read permission. Each must be refused as
// rejected input (exit 1) with one line `vpci <command>: ...` naming the file, within
// 5 s and 256 MiB of peak RSS — never a crash, a hang or an endless read.
//
// Also the rest of the convention (README "Exit status and messages"): command lines
// that are wrong by themselves exit 2 with one prefixed line, and outputs that cannot
// be written are refused without touching the target.
#include <grp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tests/cli/cli_test_util.h"

namespace vpci::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// The issue's bounds, and how long to wait before calling a run hung.
constexpr milliseconds kTimeBound{5000};
constexpr long kRssBoundKib = 256 * 1024;
constexpr milliseconds kDeadline{10000};

// Shared inputs, made once per test process: the hostile files and good companions
// (a dump for `place`, DTS files for the other side of `dt bind`), all readable by
// uid 65534 so that the unreadable-file case can drop privileges.
class Inputs {
 public:
  static Inputs& get() {
    static Inputs inputs;
    return inputs;
  }
  fs::path dir() const { return tmp_.path(); }
  std::string path(const std::string& name) const { return (tmp_.path() / name).string(); }

 private:
  Inputs() {
    ::chmod(tmp_.path().c_str(), 0755);
    fs::create_directory(tmp_.path() / "directory");
    std::ofstream(tmp_.path() / "empty").close();
    ::mkfifo(path("fifo").c_str(), 0644);
    // Random bytes no command accepts: 64 KiB is not text and too large for a raw
    // config space; a fixed seed keeps the run reproducible.
    std::mt19937 random(20);
    std::string bytes(64 * 1024, '\0');
    for (auto& b : bytes) b = static_cast<char>(random() & 0xFF);
    std::ofstream(tmp_.path() / "random", std::ios::binary) << bytes;
    std::ofstream(tmp_.path() / "sparse").close();
    fs::resize_file(tmp_.path() / "sparse", std::uintmax_t{1} << 40);
    std::ofstream(tmp_.path() / "unreadable") << "/dts-v1/; / { };\n";
    ::chmod(path("unreadable").c_str(), 0);
    fs::copy_file(fs::path(VPCI_CORPUS_DIR) / "pci" / "qemu72-q35.lspci",
                  tmp_.path() / "source.lspci");
    const fs::path dt_data = fs::path(VPCI_SOURCE_DIR) / "tests" / "dt" / "data";
    fs::copy_file(dt_data / "soc-host.dts", tmp_.path() / "host.dts");
    fs::copy_file(dt_data / "soc-partial.dts", tmp_.path() / "partial.dts");
    // Well-formed command lines over files that are wrong in content.
    std::ofstream(tmp_.path() / "bad.lspci") << "00:02.0 x\n00: 86 8\n";
    std::ofstream(tmp_.path() / "bad.dts") << "/dts-v1/;\n/ {\n  a = <1 2;\n};\n";
    std::ofstream(tmp_.path() / "bad-serve.toml")
        << "[[device]]\nname = \"r\"\nkind = \"virtio-rgn\"\ntransport = \"modern\"\n";
    fs::copy_file(
        fs::path(VPCI_SOURCE_DIR) / "tests" / "domain" / "data" / "malformed_arm_pvh.toml",
        tmp_.path() / "arm-pvh.toml");
  }
  TempDir tmp_;
};

struct Invocation {
  std::string name;               // for the test name
  std::string command;            // the message prefix: "dt bind"
  std::vector<std::string> args;  // "@" is the hostile path, "@name" a file of Inputs
};

struct HostileInput {
  std::string name;
  std::string path;  // "@name" for a file of Inputs
};

std::string resolve(const std::string& arg, const std::string& hostile) {
  if (arg == "@") return hostile;
  if (arg == "vfio-user:@") return "vfio-user:" + hostile;  // a server's socket path
  if (arg.starts_with("@")) return Inputs::get().path(arg.substr(1));
  return arg;
}

const std::vector<Invocation>& invocations() {
  static const std::vector<Invocation> list = {
      {"inspect", "inspect", {"inspect", "@"}},
      {"dump", "dump", {"dump", "@"}},
      {"place_source", "place", {"place", "@", "--pasid", "width=4"}},
      {"place_table",
       "place",
       {"place", "@source.lspci", "--device", "00:02.0", "--pasid", "width=4", "--table", "@"}},
      {"dt_show", "dt show", {"dt", "show", "@"}},
      {"dt_bind_host", "dt bind", {"dt", "bind", "--host", "@", "--partial", "@partial.dts"}},
      {"dt_bind_partial", "dt bind", {"dt", "bind", "--host", "@host.dts", "--partial", "@"}},
      {"domain_check", "domain check", {"domain", "check", "@"}},
      {"serve_check", "serve", {"serve", "@", "--check"}},
      // A vfio-user SOURCE naming something that is not a listening socket.
      {"inspect_vfio_user", "inspect", {"inspect", "vfio-user:@"}},
      {"dump_vfio_user", "dump", {"dump", "vfio-user:@"}},
      {"probe", "probe", {"probe", "vfio-user:@"}},
  };
  return list;
}

const std::vector<HostileInput>& hostile_inputs() {
  static const std::vector<HostileInput> list = {
      {"directory", "@directory"},
      {"empty", "@empty"},
      {"fifo_without_writer", "@fifo"},
      {"dev_zero", "/dev/zero"},
      {"random", "@random"},
      {"sparse_1TiB", "@sparse"},
      {"nonexistent", "@nonexistent"},
      {"unreadable", "@unreadable"},
  };
  return list;
}

// The one line of a failed command, checked against the convention.
void expect_one_prefixed_line(const BoundedResult& r, const std::string& command) {
  const std::string prefix = command.empty() ? "vpci: " : "vpci " + command + ": ";
  EXPECT_EQ(r.err.rfind(prefix, 0), 0u) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.back(), '\n') << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// Whether uid/gid 65534 can run the binary and reach the inputs: every directory on
// the way must be searchable by others. Checked by the same privilege drop the test
// uses, in a child, so the answer is the kernel's.
bool nobody_can_run_vpci() {
  static const bool answer = [] {
    const std::string inputs = Inputs::get().path("empty");
    const pid_t pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(1);
      ::_exit(::access(vpci_cli().c_str(), X_OK) == 0 && ::access(inputs.c_str(), R_OK) == 0 ? 0
                                                                                             : 1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }();
  return answer;
}

class HostileInputTest : public ::testing::TestWithParam<std::tuple<Invocation, HostileInput>> {};

TEST_P(HostileInputTest, ExitsOneWithOneLineInBoundedTimeAndMemory) {
  const auto& [invocation, input] = GetParam();
  const std::string hostile = resolve(input.path, "");
  std::vector<std::string> argv = {vpci_cli()};
  for (const auto& arg : invocation.args) argv.push_back(resolve(arg, hostile));
  // As root every file is readable: run as nobody so that the case can fail.
  const bool as_nobody = input.name == "unreadable" && ::geteuid() == 0;
  if (as_nobody && !nobody_can_run_vpci()) {
    GTEST_SKIP() << "running as root, and uid 65534 cannot execute " << vpci_cli() << " or read "
                 << Inputs::get().dir()
                 << " (a directory on the way is not searchable by others), so a file "
                    "without read permission cannot be tested";
  }
  const BoundedResult r = run_bounded(argv, kDeadline, as_nobody);
  RecordProperty("max_rss_kib", std::to_string(r.max_rss_kib));
  RecordProperty("elapsed_ms", std::to_string(r.elapsed.count()));
  ASSERT_TRUE(r.started);
  ASSERT_FALSE(r.killed) << "still running after " << kDeadline.count() << " ms";
  ASSERT_EQ(r.signal, 0) << "killed by signal " << r.signal << "\n" << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.err;
  expect_one_prefixed_line(r, invocation.command);
  EXPECT_NE(r.err.find(hostile), std::string::npos)
      << "the message should name " << hostile << ": " << r.err;
  EXPECT_LT(r.elapsed, kTimeBound);
  EXPECT_LT(r.max_rss_kib, kRssBoundKib);
}

INSTANTIATE_TEST_SUITE_P(EveryFileArgument, HostileInputTest,
                         ::testing::Combine(::testing::ValuesIn(invocations()),
                                            ::testing::ValuesIn(hostile_inputs())),
                         [](const auto& param_info) {
                           return std::get<0>(param_info.param).name + "_" +
                                  std::get<1>(param_info.param).name;
                         });

// Command lines that are wrong whatever the files hold: exit 2, one prefixed line.
struct UsageCase {
  std::string name;
  std::string command;  // "" for `vpci: ` itself
  std::vector<std::string> args;
  std::string says;  // a substring of the message
};

class UsageTest : public ::testing::TestWithParam<UsageCase> {};

TEST_P(UsageTest, ExitsTwoWithOnePrefixedLine) {
  const UsageCase& c = GetParam();
  std::vector<std::string> argv = {vpci_cli()};
  for (const auto& arg : c.args) argv.push_back(resolve(arg, ""));
  const BoundedResult r = run_bounded(argv, kDeadline);
  ASSERT_FALSE(r.killed);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  expect_one_prefixed_line(r, c.command);
  EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(
    EveryCommand, UsageTest,
    ::testing::Values(
        UsageCase{"no_command", "", {}, "a command is required: \"domain\", \"dt\""},
        UsageCase{"unknown_command",
                  "",
                  {"inspct", "@source.lspci"},
                  "unknown command \"inspct\" (did you mean \"inspect\"?)"},
        UsageCase{
            "unknown_dt_command", "dt", {"dt", "shwo", "@host.dts"}, "(did you mean \"show\"?)"},
        UsageCase{
            "unknown_domain_command", "domain", {"domain", "chek"}, "(did you mean \"check\"?)"},
        UsageCase{"inspect_unknown_option",
                  "inspect",
                  {"inspect", "@source.lspci", "--bogus"},
                  "--bogus"},
        // An unknown option, for every command.
        UsageCase{"dump_unknown_option", "dump", {"dump", "@source.lspci", "--bogus"}, "--bogus"},
        UsageCase{"place_unknown_option",
                  "place",
                  {"place", "@source.lspci", "--pasid", "width=4", "--bogus"},
                  "--bogus"},
        UsageCase{
            "dt_show_unknown_option", "dt show", {"dt", "show", "@host.dts", "--bogus"}, "--bogus"},
        UsageCase{"dt_bind_unknown_option",
                  "dt bind",
                  {"dt", "bind", "--host", "@host.dts", "--partial", "@partial.dts", "--bogus"},
                  "--bogus"},
        UsageCase{"domain_check_unknown_option",
                  "domain check",
                  {"domain", "check", "@arm-pvh.toml", "--bogus"},
                  "--bogus"},
        UsageCase{"inspect_missing_source", "inspect", {"inspect"}, "SOURCE is required"},
        UsageCase{"inspect_bad_device",
                  "inspect",
                  {"inspect", "@source.lspci", "--device", "zz"},
                  "--device: 'zz'"},
        UsageCase{"inspect_bad_device_before_reading",
                  "inspect",
                  {"inspect", "@nonexistent", "--device", "zz"},
                  "--device: 'zz'"},
        UsageCase{"dump_bad_device",
                  "dump",
                  {"dump", "@source.lspci", "--device", "00:20.0"},
                  "--device"},
        UsageCase{"dump_missing_output_value", "dump", {"dump", "@source.lspci", "-o"}, "-o"},
        UsageCase{"place_nothing_to_do",
                  "place",
                  {"place", "@source.lspci", "--device", "00:02.0"},
                  "nothing to do"},
        UsageCase{"place_bad_device",
                  "place",
                  {"place", "@source.lspci", "--device", "zz", "--pasid", "width=4"},
                  "--device: 'zz'"},
        UsageCase{"place_bad_number_decimal",
                  "place",
                  {"place", "@source.lspci", "--device", "00:02.0", "--pasid", "width=4", "--at",
                   "70000"},
                  "70000 exceeds the maximum 65535"},
        UsageCase{"place_bad_number_hex",
                  "place",
                  {"place", "@source.lspci", "--device", "00:02.0", "--pasid", "width=4", "--at",
                   "0x10000"},
                  "0x10000 exceeds the maximum 0xffff"},
        UsageCase{
            "place_excluded_options",
            "place",
            {"place", "@source.lspci", "--pasid", "width=4", "--at", "0x400", "--search-gaps"},
            "excludes"},
        UsageCase{"dt_bind_missing_host",
                  "dt bind",
                  {"dt", "bind", "--partial", "@partial.dts"},
                  "--host"},
        UsageCase{
            "dt_bind_bad_number",
            "dt bind",
            {"dt", "bind", "--host", "@host.dts", "--partial", "@partial.dts", "--vsid-base", "zz"},
            "--vsid-base: 'zz' is not a number"},
        UsageCase{"dt_bind_number_too_large",
                  "dt bind",
                  {"dt", "bind", "--host", "@host.dts", "--partial", "@partial.dts", "--vsid-base",
                   "0x100000000"},
                  "0x100000000 exceeds the maximum 0xffffffff"},
        UsageCase{
            "dt_bind_bad_vsid",
            "dt bind",
            {"dt", "bind", "--host", "@host.dts", "--partial", "@partial.dts", "--vsid", "nopath"},
            "--vsid: \"nopath\" is not PATH=ID"},
        UsageCase{"dt_show_extra_argument",
                  "dt show",
                  {"dt", "show", "@host.dts", "@partial.dts"},
                  "not expected"},
        UsageCase{"domain_check_bad_profile",
                  "domain check",
                  {"domain", "check", "@empty", "--profile", "xen"},
                  "--profile"},
        UsageCase{"serve_unknown_option", "serve", {"serve", "--chekc"}, "--chekc"},
        UsageCase{"probe_not_vfio_user", "probe", {"probe", "@empty"}, "is not vfio-user:SOCKET"},
        UsageCase{
            "probe_bad_timeout", "probe", {"probe", "vfio-user:x", "--timeout", "0"}, "--timeout"},
        UsageCase{
            "probe_bad_sector", "probe", {"probe", "vfio-user:x", "--write", "lots"}, "--write"}),
    [](const auto& param_info) { return param_info.param.name; });

// Well-formed command lines whose files (or requests) are refused: exit 1, one line
// with the prefix, and `file:line:col: ` where the problem has a position.
struct RejectedCase {
  std::string name;
  std::string command;
  std::vector<std::string> args;
  std::string says;  // a substring of the message; "@name" expands to a file of Inputs
};

class RejectedTest : public ::testing::TestWithParam<RejectedCase> {};

TEST_P(RejectedTest, ExitsOneWithOnePrefixedLine) {
  const RejectedCase& c = GetParam();
  std::vector<std::string> argv = {vpci_cli()};
  for (const auto& arg : c.args) argv.push_back(resolve(arg, ""));
  const BoundedResult r = run_bounded(argv, kDeadline);
  ASSERT_FALSE(r.killed);
  ASSERT_EQ(r.signal, 0) << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.err;
  expect_one_prefixed_line(r, c.command);
  std::string says = c.says;
  if (const auto at = says.find('@'); at != std::string::npos) {
    const auto end = says.find(':', at);
    says.replace(at, end - at, Inputs::get().path(says.substr(at + 1, end - at - 1)));
  }
  EXPECT_NE(r.err.find(says), std::string::npos) << "expected: " << says << "\n" << r.err;
}

INSTANTIATE_TEST_SUITE_P(
    EveryCommand, RejectedTest,
    ::testing::Values(RejectedCase{"inspect_absent_device",
                                   "inspect",
                                   {"inspect", "@source.lspci", "--device", "00:1f.6"},
                                   "no device 0000:00:1f.6"},
                      RejectedCase{"inspect_malformed_data",
                                   "inspect",
                                   {"inspect", "@bad.lspci"},
                                   "@bad.lspci:2:8: malformed data '8'"},
                      RejectedCase{"dump_absent_device",
                                   "dump",
                                   {"dump", "@source.lspci", "--device", "00:1f.6"},
                                   "no device 0000:00:1f.6"},
                      // The offset is echoed in the base it was written in.
                      RejectedCase{"place_outside_extended_space",
                                   "place",
                                   {"place", "@source.lspci", "--device", "00:02.0", "--pasid",
                                    "width=4", "--at", "0x40"},
                                   "[0x40, 0x48) is outside extended configuration space"},
                      RejectedCase{"dt_show_syntax_error",
                                   "dt show",
                                   {"dt", "show", "@bad.dts"},
                                   "@bad.dts:3:11: syntax error"},
                      RejectedCase{
                          "dt_bind_nothing_to_bind",
                          "dt bind",
                          {"dt", "bind", "--host", "@partial.dts", "--partial", "@host.dts"},
                          "nothing to bind"},
                      RejectedCase{"domain_check_rejected_kind",
                                   "domain check",
                                   {"domain", "check", "@arm-pvh.toml"},
                                   "@arm-pvh.toml:2:1: key kind"},
                      RejectedCase{"serve_unknown_kind",
                                   "serve",
                                   {"serve", "@bad-serve.toml", "--check"},
                                   "@bad-serve.toml:3:8: device[1].kind: unknown kind"}),
    [](const auto& param_info) { return param_info.param.name; });

// Outputs: a directory or a FIFO nobody reads is refused (exit 1, one line) and left
// as it was; nothing else is written.
struct OutputCase {
  std::string name;
  std::string command;
  std::vector<std::string> args;  // "@out" is the output path
};

class OutputTest : public ::testing::TestWithParam<OutputCase> {};

TEST_P(OutputTest, DirectoryAndReaderlessFifoAreRefusedUntouched) {
  const OutputCase& c = GetParam();
  TempDir scratch;
  fs::create_directory(scratch.path() / "out-dir");
  ASSERT_EQ(::mkfifo((scratch.path() / "out-fifo").c_str(), 0644), 0);
  for (const std::string target : {"out-dir", "out-fifo"}) {
    std::vector<std::string> argv = {vpci_cli()};
    for (const auto& arg : c.args)
      argv.push_back(arg == "@out" ? (scratch.path() / target).string() : resolve(arg, ""));
    const BoundedResult r = run_bounded(argv, kDeadline);
    ASSERT_FALSE(r.killed) << target;
    EXPECT_EQ(r.exit_code, 1) << target << ": " << r.err;
    expect_one_prefixed_line(r, c.command);
    EXPECT_NE(r.err.find(target), std::string::npos) << r.err;
    EXPECT_LT(r.elapsed, kTimeBound);
  }
  EXPECT_TRUE(fs::is_directory(scratch.path() / "out-dir"));
  EXPECT_TRUE(fs::is_empty(scratch.path() / "out-dir"));
  EXPECT_TRUE(fs::is_fifo(scratch.path() / "out-fifo"));
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(scratch.path())) ++entries;
  EXPECT_EQ(entries, 2u) << "a temporary file was left behind";
}

INSTANTIATE_TEST_SUITE_P(
    EveryOutputOption, OutputTest,
    ::testing::Values(OutputCase{"dump", "dump", {"dump", "@source.lspci", "-o", "@out"}},
                      OutputCase{"place",
                                 "place",
                                 {"place", "@source.lspci", "--device", "00:02.0", "--pasid",
                                  "width=4", "-o", "@out"}},
                      OutputCase{"dt_bind_dtb",
                                 "dt bind",
                                 {"dt", "bind", "--host", "@host.dts", "--partial", "@partial.dts",
                                  "-o", "@out"}},
                      OutputCase{"dt_bind_dts",
                                 "dt bind",
                                 {"dt", "bind", "--host", "@host.dts", "--partial", "@partial.dts",
                                  "--dts-out", "@out"}},
                      OutputCase{"dt_bind_map",
                                 "dt bind",
                                 {"dt", "bind", "--host", "@host.dts", "--partial", "@partial.dts",
                                  "--map-out", "@out"}}),
    [](const auto& param_info) { return param_info.param.name; });

// A FIFO with a reader (as `-o >(cmd)` makes) is written in place, not replaced by a
// regular file: renaming over it would, and as root so would `-o /dev/null`.
TEST(OutputStreams, AFifoWithAReaderIsWrittenInPlace) {
  TempDir scratch;
  const fs::path fifo = scratch.path() / "pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  std::string received;
  std::thread reader([&] {
    std::ifstream in(fifo, std::ios::binary);
    received.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  });
  // Give the reader time to open its end: the writer refuses a FIFO without one.
  std::this_thread::sleep_for(milliseconds(200));
  const BoundedResult r = run_bounded({vpci_cli(), "dump", Inputs::get().path("source.lspci"),
                                       "--device", "00:02.0", "-o", fifo.string()},
                                      kDeadline);
  if (r.exit_code != 0) {
    // Unblock the reader if vpci never opened the FIFO.
    std::ofstream(fifo).close();
  }
  reader.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_EQ(received.rfind("0000:00:02.0 ", 0), 0u) << received.substr(0, 80);
}

}  // namespace
}  // namespace vpci::testing
