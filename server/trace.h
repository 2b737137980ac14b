// One-line, human-readable descriptions of vfio-user messages for the server's message
// trace (VfioUserServer::set_trace). Meant for debugging interop with real clients: it
// decodes the fields that matter per command (spec sections named after the commands)
// and never reads past the bytes it is given, so it is safe on hostile input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace vpci::server {

// Name of a vfio-user command ("DMA_MAP"), or "cmd<N>" for unknown numbers.
std::string command_name_of(std::uint16_t command);

// "<- #12 REGION_READ region 7 offset 0x0 count 256" for a message from the client.
std::string describe_request(std::span<const std::uint8_t> message, std::size_t fd_count);
// "-> #12 REGION_READ ok 272 bytes" / "-> #12 DMA_MAP error EINVAL: <reason>".
std::string describe_reply(std::span<const std::uint8_t> reply, const std::string& error_reason);

}  // namespace vpci::server
