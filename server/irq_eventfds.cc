#include "server/irq_eventfds.h"

#include <unistd.h>

#include "server/vfio_regions.h"

namespace vpci::server {

IrqEventfds::IrqEventfds(const pci::Function& function) {
  vectors_.resize(kIrqIndexCount);
  for (unsigned i = 0; i < kIrqIndexCount; ++i) vectors_[i].resize(irq_count(function, i));
}

bool IrqEventfds::signal_locked(unsigned irq_index, Vector& vector) {
  if (!vector.eventfd.valid()) return false;
  if (vector.masked) {
    // INTx is level-triggered: the source re-asserts from irq_unmasked() instead of
    // being remembered, or the guest would see one spurious interrupt per EOI.
    if (irq_index != kIrqIntx) vector.pending = true;
    return false;
  }
  const std::uint64_t one = 1;
  // An eventfd write only fails when the counter would overflow, i.e. the client has
  // not consumed ~2^64 signals: the interrupt is pending anyway.
  [[maybe_unused]] const ssize_t written = ::write(vector.eventfd.get(), &one, sizeof(one));
  signalled_.fetch_add(1, std::memory_order_relaxed);
  // vfio INTx is automasked (GET_IRQ_INFO reports AUTOMASKED): masked until unmask.
  if (irq_index == kIrqIntx) vector.masked = true;
  return true;
}

bool IrqEventfds::trigger(unsigned irq_index, unsigned vector) {
  std::lock_guard lock(mutex_);
  if (irq_index >= vectors_.size() || vector >= vectors_[irq_index].size()) return false;
  return signal_locked(irq_index, vectors_[irq_index][vector]);
}

void IrqEventfds::assign(unsigned irq_index, std::uint32_t start, std::vector<UniqueFd> fds) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < fds.size(); ++i) {
    vectors_[irq_index][start + i].eventfd = std::move(fds[i]);
  }
}

void IrqEventfds::disable(unsigned irq_index) {
  std::lock_guard lock(mutex_);
  for (Vector& v : vectors_[irq_index]) v = Vector{};
}

void IrqEventfds::set_masked(unsigned irq_index, std::uint32_t vector, bool masked) {
  std::lock_guard lock(mutex_);
  Vector& v = vectors_[irq_index][vector];
  v.masked = masked;
  if (!masked && v.pending) {
    v.pending = false;
    signal_locked(irq_index, v);
  }
}

bool IrqEventfds::has_eventfd(unsigned irq_index, std::uint32_t vector) const {
  std::lock_guard lock(mutex_);
  return vectors_[irq_index][vector].eventfd.valid();
}

bool IrqEventfds::masked(unsigned irq_index, std::uint32_t vector) const {
  std::lock_guard lock(mutex_);
  return vectors_[irq_index][vector].masked;
}

void IrqEventfds::clear() {
  std::lock_guard lock(mutex_);
  for (auto& index : vectors_) {
    for (Vector& v : index) v = Vector{};
  }
}

}  // namespace vpci::server
