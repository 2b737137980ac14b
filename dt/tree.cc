#include "dt/tree.h"

#include <algorithm>

namespace vpci::dt {
namespace {

std::uint32_t load_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}

}  // namespace

// ---------------------------------------------------------------------------------
// Property

std::optional<std::vector<std::uint32_t>> Property::cells() const {
  if (value.size() % 4 != 0) return std::nullopt;
  std::vector<std::uint32_t> out(value.size() / 4);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_be32(value.data() + 4 * i);
  return out;
}

std::optional<std::uint32_t> Property::u32() const {
  if (value.size() != 4) return std::nullopt;
  return load_be32(value.data());
}

std::optional<std::string> Property::string() const {
  if (value.empty() || value.back() != 0) return std::nullopt;
  const auto end = std::find(value.begin(), value.end(), std::uint8_t{0});
  if (end + 1 != value.end()) return std::nullopt;
  return std::string(value.begin(), end);
}

std::optional<std::vector<std::string>> Property::strings() const {
  if (value.empty() || value.back() != 0) return std::nullopt;
  std::vector<std::string> out;
  auto begin = value.begin();
  while (begin != value.end()) {
    const auto end = std::find(begin, value.end(), std::uint8_t{0});
    out.emplace_back(begin, end);
    begin = end + 1;
  }
  return out;
}

std::vector<std::uint8_t> encode_cells(std::span<const std::uint32_t> cells) {
  std::vector<std::uint8_t> out;
  out.reserve(cells.size() * 4);
  for (const std::uint32_t c : cells) {
    out.push_back(static_cast<std::uint8_t>(c >> 24));
    out.push_back(static_cast<std::uint8_t>(c >> 16));
    out.push_back(static_cast<std::uint8_t>(c >> 8));
    out.push_back(static_cast<std::uint8_t>(c));
  }
  return out;
}

std::vector<std::uint8_t> encode_string(std::string_view text) {
  std::vector<std::uint8_t> out(text.begin(), text.end());
  out.push_back(0);
  return out;
}

std::vector<std::uint8_t> encode_strings(std::span<const std::string> texts) {
  std::vector<std::uint8_t> out;
  for (const auto& t : texts) {
    out.insert(out.end(), t.begin(), t.end());
    out.push_back(0);
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Node

std::string Node::path() const {
  if (parent_ == nullptr) return "/";
  std::vector<const Node*> chain;
  for (const Node* n = this; n->parent_ != nullptr; n = n->parent_) chain.push_back(n);
  std::string out;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    out += '/';
    out += (*it)->name_;
  }
  return out;
}

std::string_view Node::unit_address() const {
  const auto at = name_.find('@');
  return at == std::string::npos ? std::string_view{} : std::string_view(name_).substr(at + 1);
}

const Property* Node::property(std::string_view name) const {
  for (const auto& p : properties_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

void Node::set_property(std::string_view name, std::vector<std::uint8_t> value) {
  for (auto& p : properties_) {
    if (p.name == name) {
      p.value = std::move(value);
      return;
    }
  }
  properties_.push_back(Property{std::string(name), std::move(value)});
}

bool Node::remove_property(std::string_view name) {
  const auto it = std::find_if(properties_.begin(), properties_.end(),
                               [&](const Property& p) { return p.name == name; });
  if (it == properties_.end()) return false;
  properties_.erase(it);
  return true;
}

Node* Node::child(std::string_view name) {
  for (auto& c : children_) {
    if (c->name_ == name) return c.get();
  }
  return nullptr;
}

const Node* Node::child(std::string_view name) const {
  return const_cast<Node*>(this)->child(name);
}

Result<Node*> Node::add_child(std::string name) {
  if (child(name) != nullptr) {
    return make_error(ErrorCode::kAlreadyExists, "{} already has a child node {}", path(), name);
  }
  children_.push_back(std::make_unique<Node>(std::move(name), this));
  return children_.back().get();
}

Node* Node::add_child_unchecked(std::string name) {
  children_.push_back(std::make_unique<Node>(std::move(name), this));
  return children_.back().get();
}

bool Node::remove_child(std::string_view name) {
  const auto it = std::find_if(children_.begin(), children_.end(),
                               [&](const auto& c) { return c->name_ == name; });
  if (it == children_.end()) return false;
  children_.erase(it);
  return true;
}

std::optional<std::uint32_t> Node::phandle() const {
  for (const char* name : {"phandle", "linux,phandle"}) {
    if (const Property* p = property(name)) {
      const auto value = p->u32();
      if (value && *value != 0 && *value != 0xffffffffu) return value;
    }
  }
  return std::nullopt;
}

std::uint32_t Node::address_cells() const {
  const Property* p = property("#address-cells");
  const auto value = p != nullptr ? p->u32() : std::nullopt;
  return value.value_or(2);
}

std::uint32_t Node::size_cells() const {
  const Property* p = property("#size-cells");
  const auto value = p != nullptr ? p->u32() : std::nullopt;
  return value.value_or(1);
}

bool Node::enabled() const {
  const Property* p = property("status");
  if (p == nullptr) return true;
  const auto value = p->string();
  return value && (*value == "okay" || *value == "ok");
}

std::vector<std::string> Node::compatible() const {
  const Property* p = property("compatible");
  if (p == nullptr) return {};
  return p->strings().value_or(std::vector<std::string>{});
}

bool Node::is_compatible(std::string_view value) const {
  const auto list = compatible();
  return std::find(list.begin(), list.end(), value) != list.end();
}

std::unique_ptr<Node> Node::clone(Node* parent) const {
  auto copy = std::make_unique<Node>(name_, parent);
  copy->properties_ = properties_;
  copy->children_.reserve(children_.size());
  for (const auto& c : children_) copy->children_.push_back(c->clone(copy.get()));
  return copy;
}

// ---------------------------------------------------------------------------------
// Tree

Tree Tree::clone() const {
  Tree copy;
  copy.root_ = root_->clone(nullptr);
  copy.reservations = reservations;
  copy.boot_cpuid = boot_cpuid;
  return copy;
}

Node* Tree::find(std::string_view path) {
  if (path.empty() || path.front() != '/') return nullptr;
  Node* node = root_.get();
  std::size_t pos = 1;
  while (pos < path.size() && node != nullptr) {
    const auto slash = path.find('/', pos);
    const auto component =
        path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (component.empty()) return nullptr;
    node = node->child(component);
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return node;
}

const Node* Tree::find(std::string_view path) const {
  return const_cast<Tree*>(this)->find(path);
}

PhandleIndex Tree::phandle_index() const {
  PhandleIndex index;
  for_each_node(*root_, [&](const Node& n) {
    if (const auto ph = n.phandle()) index.emplace(*ph, &n);
  });
  return index;
}

std::vector<std::uint32_t> Tree::phandles() const {
  std::vector<std::uint32_t> out;
  for_each_node(*root_, [&](const Node& n) {
    if (const auto ph = n.phandle()) out.push_back(*ph);
  });
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace vpci::dt
