#include "aggregation/server_optimizer.h"

#include <cmath>
#include <algorithm>
#include <cstring>

namespace fleet {

void ServerOptimizer::Apply(std::vector<float>* global, const std::vector<float>& delta) {
  std::vector<float>& x = *global;
  if (p_.kind == "sgd") {
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = static_cast<float>(x[i] + p_.learning_rate * delta[i]);
    }
    return;
  }
  if (m_.size() != x.size()) {
    m_.assign(x.size(), 0.0);
    v_.assign(x.size(), p_.tau * p_.tau);
  }
  const double b1 = p_.beta1, b2 = p_.beta2;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = delta[i], d2 = d * d;
    m_[i] = b1 * m_[i] + (1 - b1) * d;
    if (p_.kind == "adagrad") {
      v_[i] += d2;
    } else if (p_.kind == "adam") {
      v_[i] = b2 * v_[i] + (1 - b2) * d2;
    } else {  // yogi
      const double s = v_[i] > d2 ? 1.0 : (v_[i] < d2 ? -1.0 : 0.0);
      v_[i] -= (1 - b2) * d2 * s;
    }
    x[i] = static_cast<float>(x[i] + p_.learning_rate * m_[i] / (std::sqrt(v_[i]) + p_.tau));
  }
}

namespace {
constexpr char kStateMagic[8] = {'F', 'L', 'O', 'P', 'T', '1', 0, 0};
static_assert(sizeof(double) == 8, "optimizer state stores IEEE-754 doubles");
}  // namespace

std::string ServerOptimizer::SaveState() const {
  if (m_.empty()) return "";
  std::string out(kStateMagic, sizeof(kStateMagic));
  char kind[8] = {};
  std::memcpy(kind, p_.kind.data(), std::min(p_.kind.size(), sizeof(kind)));
  out.append(kind, sizeof(kind));
  uint64_t n = m_.size();
  out.append(reinterpret_cast<const char*>(&n), sizeof(n));
  out.append(reinterpret_cast<const char*>(m_.data()), n * sizeof(double));
  out.append(reinterpret_cast<const char*>(v_.data()), n * sizeof(double));
  return out;
}

Status ServerOptimizer::LoadState(const std::string& state, size_t size) {
  m_.clear();
  v_.clear();
  if (state.empty()) return OkStatus();  // fresh: the first Apply initializes
  const size_t header = sizeof(kStateMagic) + 8 + sizeof(uint64_t);
  if (state.size() < header || std::memcmp(state.data(), kStateMagic, sizeof(kStateMagic)) != 0) {
    return InvalidArgument("server optimizer state: bad header");
  }
  std::string kind(state.data() + sizeof(kStateMagic), 8);
  kind.resize(std::strlen(kind.c_str()));
  if (kind != p_.kind.substr(0, 8)) {
    return InvalidArgument("server optimizer state is for '" + kind + "', not '" + p_.kind + "'");
  }
  uint64_t n = 0;
  std::memcpy(&n, state.data() + sizeof(kStateMagic) + 8, sizeof(n));
  if (n != size || state.size() != header + 2 * n * sizeof(double)) {
    return InvalidArgument("server optimizer state has " + std::to_string(n) +
                           " entries or a wrong length; the model has " + std::to_string(size));
  }
  m_.resize(n);
  v_.resize(n);
  std::memcpy(m_.data(), state.data() + header, n * sizeof(double));
  std::memcpy(v_.data(), state.data() + header + n * sizeof(double), n * sizeof(double));
  return OkStatus();
}

}  // namespace fleet
