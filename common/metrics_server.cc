#include "common/metrics_server.h"

#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace spargo {

MetricsServer::MetricsServer(const MetricsRegistry* registry) : registry_(registry) {}

MetricsServer::~MetricsServer() { Stop(); }

absl::Status MetricsServer::Start(const std::string& host, int port) {
  if (server_ != nullptr) return absl::FailedPreconditionError("metrics server already started");
  if (port < 0 || port > 65535) return absl::InvalidArgumentError(absl::StrCat("invalid metrics port ", port));
  auto server = std::make_unique<httplib::Server>();
  const MetricsRegistry* registry = registry_;
  server->Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry->RenderText(), "text/plain; version=0.0.4; charset=utf-8");
  });
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would let a second process share the port.
  server->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server->set_read_timeout(5, 0);
  server->set_write_timeout(5, 0);
  // Idle keep-alive connections hold a worker (and delay Stop) for at most a second.
  server->set_keep_alive_timeout(1);
  int bound = port == 0 ? server->bind_to_any_port(host) : (server->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", host, ":", port,
                                               " (address in use or not local); set metrics.port to another "
                                               "port, or 0 to turn the endpoint off"));
  }
  port_ = bound;
  server_ = std::move(server);
  httplib::Server* raw = server_.get();
  thread_ = std::thread([raw] { raw->listen_after_bind(); });
  return absl::OkStatus();
}

void MetricsServer::Stop() {
  if (server_ == nullptr) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace spargo
