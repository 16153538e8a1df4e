// Serves a MetricsRegistry at http://HOST:PORT/metrics (Prometheus text format, version 0.0.4) from a background
// thread, using cpp-httplib. Binds to the given host (127.0.0.1 by default in configs); Start fails with a clear
// UNAVAILABLE status when the address cannot be bound. Port 0 asks the OS for a free port (see port()).
#ifndef SPARGO_COMMON_METRICS_SERVER_H_
#define SPARGO_COMMON_METRICS_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "common/metrics_registry.h"

namespace httplib {
class Server;
}

namespace spargo {

class MetricsServer {
 public:
  explicit MetricsServer(const MetricsRegistry* registry);
  ~MetricsServer();  // Stops the server.
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  absl::Status Start(const std::string& host, int port);
  void Stop();
  int port() const { return port_; }

 private:
  const MetricsRegistry* registry_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace spargo

#endif  // SPARGO_COMMON_METRICS_SERVER_H_
