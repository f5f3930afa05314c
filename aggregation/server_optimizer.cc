#include "aggregation/server_optimizer.h"

#include <cmath>

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

}  // namespace fleet
