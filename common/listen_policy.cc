#include "common/listen_policy.h"

#include "absl/strings/str_cat.h"
#include "common/service_security.h"

namespace spargo {

absl::Status CheckListenExposure(absl::string_view service_name, absl::string_view address,
                                 const config::ServiceEndpoints& endpoints, bool trusted_network) {
  if (IsLoopbackAddress(address) || trusted_network) return absl::OkStatus();
  const bool has_token = !endpoints.token_file().empty();
  const bool has_tls = !endpoints.tls_cert_file().empty() && !endpoints.tls_key_file().empty();
  if (has_token || has_tls) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      service_name, ": refusing to listen on ", address,
      " (beyond loopback) without a bearer token or TLS: anyone who can reach it could call it. Set "
      "services.token_file (e.g. --set services.token_file=/path/to/token) and/or services.tls_cert_file and "
      "services.tls_key_file, or pass --trusted-network when only trusted hosts can reach this address."));
}

}  // namespace spargo
