// Flags that several subcommands take (each command lists this file among its flag files).
#include "absl/flags/flag.h"
#include "cli/shared_flags.h"

ABSL_FLAG(std::string, config, "",
          "Experiment config in protobuf text format (default: the command's embedded default).");
