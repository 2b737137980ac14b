// Fuzzes the `vpci serve` configuration reader (server/serve_config.h): arbitrary TOML
// text -> parse_serve_config(check_files = false). Invariants (docs/serve.md):
//   * nothing escapes as an exception; errors name the file and say something;
//   * a parsed configuration has 1..kMaxServedDevices devices with unique names of 1-64
//     characters from [A-Za-z0-9_.-] not starting with '.' (a name becomes
//     <socket_dir>/<name>.sock, so it must not be able to climb out of the directory);
//   * virtio-blk devices have a path, resolved against the base directory (absolute);
//     virtio-rng devices have neither a path nor read_only;
//   * no path or socket_dir contains a NUL (the OS would silently open a shorter path);
//   * backend domain IDs are below Xen's reserved range;
//   * writing the parsed configuration back as TOML and reading it again gives the same
//     configuration (the reader is deterministic and loses nothing it accepted);
//   * default_serve_config_text() of every accepted blk path parses back to that path.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "fuzz/fuzz_support.h"
#include "server/serve_config.h"

namespace {

using namespace vpci::server;

const std::filesystem::path kBaseDir = "/fuzz-base";
constexpr std::string_view kSource = "fuzz.toml";

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxDeviceNameLength || name.front() == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::string quoted(const std::string& text) {
  std::ostringstream out;
  out << toml::value<std::string>(text);
  return out.str();
}

// The configuration as TOML, the way an operator would write it.
std::string write_config(const ServeConfig& config) {
  std::string text;
  if (config.socket_dir) text += "socket_dir = " + quoted(config.socket_dir->string()) + "\n";
  for (const auto& device : config.devices) {
    text += "[[device]]\nname = " + quoted(device.name) + "\n";
    text += "kind = " + quoted(std::string(device_kind_name(device.kind))) + "\n";
    text += "transport = " + quoted(std::string(transport_kind_name(device.transport))) + "\n";
    if (device.kind == DeviceKind::kVirtioBlk) {
      text += "path = " + quoted(device.path.string()) + "\n";
      text += std::string("read_only = ") + (device.read_only ? "true" : "false") + "\n";
    }
    if (device.transport == TransportKind::kSriovPf) {
      text += "vfs = " + std::to_string(device.vfs) + "\n";
    }
    if (device.xen_backend_domid) {
      text += "xen_backend_domid = " + std::to_string(*device.xen_backend_domid) + "\n";
    }
  }
  return text;
}

bool same_devices(const ServeConfig& a, const ServeConfig& b) {
  if (a.socket_dir != b.socket_dir || a.devices.size() != b.devices.size()) return false;
  for (std::size_t i = 0; i < a.devices.size(); ++i) {
    const auto& x = a.devices[i];
    const auto& y = b.devices[i];
    if (x.name != y.name || x.kind != y.kind || x.transport != y.transport || x.path != y.path ||
        x.read_only != y.read_only || x.xen_backend_domid != y.xen_backend_domid ||
        x.vfs != y.vfs) {
      return false;
    }
  }
  return true;
}

void check_config(const ServeConfig& config) {
  FUZZ_CHECK(config.source == kSource);
  FUZZ_CHECK(!config.devices.empty() && config.devices.size() <= kMaxServedDevices);
  if (config.socket_dir) {
    FUZZ_CHECK(!config.socket_dir->empty());
    FUZZ_CHECK(config.socket_dir->string().find('\0') == std::string::npos);
  }
  std::set<std::string> names;
  for (const auto& device : config.devices) {
    FUZZ_CHECK(valid_name(device.name));
    FUZZ_CHECK(names.insert(device.name).second);
    FUZZ_CHECK(device.kind == DeviceKind::kVirtioRng || device.kind == DeviceKind::kVirtioBlk);
    FUZZ_CHECK(static_cast<unsigned>(device.transport) <=
               static_cast<unsigned>(TransportKind::kSriovPf));
    // VFs exactly on sriov-pf devices, never on virtio-blk, within the limit.
    FUZZ_CHECK((device.transport == TransportKind::kSriovPf) == (device.vfs > 0));
    FUZZ_CHECK(device.vfs <= kMaxVfs);
    FUZZ_CHECK(device.vfs == 0 || device.kind != DeviceKind::kVirtioBlk);
    FUZZ_CHECK(device.line > 0);
    if (device.kind == DeviceKind::kVirtioBlk) {
      FUZZ_CHECK(!device.path.empty() && device.path.is_absolute());
      FUZZ_CHECK(device.path.string().find('\0') == std::string::npos);
    } else {
      FUZZ_CHECK(device.path.empty() && !device.read_only);
    }
    if (device.xen_backend_domid) FUZZ_CHECK(*device.xen_backend_domid <= kMaxBackendDomid);
  }
}

void run(std::string_view text) {
  auto config = parse_serve_config(text, std::string(kSource), kBaseDir, /*check_files=*/false);
  if (!config) {
    const std::string& message = config.error().message;
    FUZZ_CHECK(!message.empty());
    FUZZ_CHECK(message.rfind(kSource, 0) == 0);  // every problem names the file first
    return;
  }
  check_config(*config);

  const std::string written = write_config(*config);
  auto again = parse_serve_config(written, std::string(kSource), kBaseDir, false);
  if (!again)
    std::fprintf(stderr, "re-read failed:\n%s\n%s\n", written.c_str(),
                 again.error().message.c_str());
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(same_devices(*config, *again));

  for (const auto& device : config->devices) {
    if (device.kind != DeviceKind::kVirtioBlk) continue;
    auto defaults = parse_serve_config(default_serve_config_text(device.path), std::string(kSource),
                                       kBaseDir, false);
    FUZZ_CHECK(defaults.has_value() && defaults->devices.size() == 2);
    FUZZ_CHECK(defaults->devices[1].path == device.path);
    break;  // one is enough per input
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    run(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exception escaped: %s\n", e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "unknown exception escaped\n");
    std::abort();
  }
  return 0;
}
