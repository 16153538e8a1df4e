// Flags shared by several subcommands.
#ifndef SPARGO_CLI_SHARED_FLAGS_H_
#define SPARGO_CLI_SHARED_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, config);

#endif  // SPARGO_CLI_SHARED_FLAGS_H_
