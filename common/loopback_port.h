// A TCP port on 127.0.0.1 that the kernel handed out a moment ago, for a child server the caller starts (the run's
// judge, a benchmark's server). Another process may take it before the child binds it: the child then fails to
// start, and its caller must say so. UNAVAILABLE when no socket can be opened or bound.
#ifndef SPARGO_COMMON_LOOPBACK_PORT_H_
#define SPARGO_COMMON_LOOPBACK_PORT_H_

#include "absl/status/statusor.h"

namespace spargo {

absl::StatusOr<int> FreeLoopbackPort();

}  // namespace spargo

#endif  // SPARGO_COMMON_LOOPBACK_PORT_H_
