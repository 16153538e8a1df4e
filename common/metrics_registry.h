// A thread-safe registry of gauges and counters, rendered in the Prometheus text exposition format (0.0.4):
// one "# HELP" and one "# TYPE" line per family, then its samples `name{label="value"} number`.
// Names follow Prometheus rules ([a-zA-Z_:][a-zA-Z0-9_:]*); counters must end in "_total" and only grow;
// values are in base units (seconds, bytes). Label values are escaped (\\, \", \n).
#ifndef SPARGO_COMMON_METRICS_REGISTRY_H_
#define SPARGO_COMMON_METRICS_REGISTRY_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace spargo {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class MetricsRegistry {
 public:
  enum class Type { kGauge, kCounter };

  // Declares a family; must precede Set/Add on it. Re-declaring with the same type is a no-op.
  absl::Status Declare(const std::string& name, Type type, const std::string& help);

  absl::Status SetGauge(const std::string& name, double value, const MetricLabels& labels = {});
  // Adds delta >= 0 to a counter.
  absl::Status AddCounter(const std::string& name, double delta, const MetricLabels& labels = {});

  std::string RenderText() const;

 private:
  struct Family {
    Type type;
    std::string help;
    std::map<MetricLabels, double> samples;
  };
  absl::Status Update(const std::string& name, Type type, double value, const MetricLabels& labels, bool add);

  mutable absl::Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
};

// Formats a sample value as Prometheus expects: shortest round-trip decimal, NaN, +Inf, -Inf.
std::string FormatMetricValue(double value);

}  // namespace spargo

#endif  // SPARGO_COMMON_METRICS_REGISTRY_H_
