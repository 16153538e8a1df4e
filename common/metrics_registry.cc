#include "common/metrics_registry.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace spargo {
namespace {

bool IsValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':') ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Escapes backslash and newline (HELP text); label values also escape the double quote.
std::string Escape(const std::string& text, bool quote) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (quote && c == '"') out += "\\\"";
    else out += c;
  }
  return out;
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[32];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) break;
  }
  return buf;
}

absl::Status MetricsRegistry::Declare(const std::string& name, Type type, const std::string& help) {
  if (!IsValidName(name, /*allow_colon=*/true)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid metric name '", name, "'"));
  }
  if (type == Type::kCounter && !absl::EndsWith(name, "_total")) {
    return absl::InvalidArgumentError(absl::StrCat("counter '", name, "' must end in _total"));
  }
  absl::MutexLock lock(&mu_);
  auto it = families_.find(name);
  if (it != families_.end()) {
    if (it->second.type != type) {
      return absl::AlreadyExistsError(absl::StrCat("metric '", name, "' already declared with another type"));
    }
    return absl::OkStatus();
  }
  families_[name] = Family{type, help, {}};
  return absl::OkStatus();
}

absl::Status MetricsRegistry::Update(const std::string& name, Type type, double value, const MetricLabels& labels,
                                     bool add) {
  for (const auto& [key, unused] : labels) {
    if (!IsValidName(key, /*allow_colon=*/false) || absl::StartsWith(key, "__")) {
      return absl::InvalidArgumentError(absl::StrCat("invalid label name '", key, "' on metric '", name, "'"));
    }
  }
  absl::MutexLock lock(&mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return absl::NotFoundError(absl::StrCat("metric '", name, "' was not declared"));
  if (it->second.type != type) {
    return absl::FailedPreconditionError(absl::StrCat("metric '", name, "' has another type"));
  }
  double& slot = it->second.samples[labels];
  slot = add ? slot + value : value;
  return absl::OkStatus();
}

absl::Status MetricsRegistry::SetGauge(const std::string& name, double value, const MetricLabels& labels) {
  return Update(name, Type::kGauge, value, labels, /*add=*/false);
}

absl::Status MetricsRegistry::AddCounter(const std::string& name, double delta, const MetricLabels& labels) {
  if (!(delta >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("counter '", name, "' cannot change by ", delta));
  }
  return Update(name, Type::kCounter, delta, labels, /*add=*/true);
}

std::string MetricsRegistry::RenderText() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", Escape(family.help, /*quote=*/false), "\n");
    absl::StrAppend(&out, "# TYPE ", name, " ", family.type == Type::kCounter ? "counter" : "gauge", "\n");
    for (const auto& [labels, value] : family.samples) {
      absl::StrAppend(&out, name);
      if (!labels.empty()) {
        out += '{';
        for (size_t i = 0; i < labels.size(); ++i) {
          absl::StrAppend(&out, i ? "," : "", labels[i].first, "=\"", Escape(labels[i].second, /*quote=*/true), "\"");
        }
        out += '}';
      }
      absl::StrAppend(&out, " ", FormatMetricValue(value), "\n");
    }
  }
  return out;
}

}  // namespace spargo
