#include "base/log.h"

#include <memory>

#include <spdlog/sinks/stdout_sinks.h>

namespace vpci {

spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> instance = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto created = std::make_shared<spdlog::logger>("vpci", std::move(sink));
    created->set_pattern("vpci: %l: %v");
    created->set_level(spdlog::level::info);
    return created;
  }();
  return *instance;
}

}  // namespace vpci
