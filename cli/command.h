// Subcommands of the `spargo` binary. Each command defines its flags with ABSL_FLAG in its own file (flags several
// commands take live in shared_flags.cc); `spargo CMD --help` lists exactly the flags of the command's files (plus
// the global ones of main.cc), found through abseil's flag reflection. Flags are written --snake_case or --kebab-case; `--set path=value` may repeat and is collected
// before abseil parses the rest.
#ifndef SPARGO_CLI_COMMAND_H_
#define SPARGO_CLI_COMMAND_H_

#include <string>
#include <vector>

namespace spargo::cli {

struct CommandArgs {
  std::vector<std::string> positional;  // arguments that are not flags
  std::vector<std::string> overrides;   // values of --set, in order
};

struct Command {
  const char* name;
  const char* summary;
  const char* usage;        // one line: "spargo train [--config FILE.txtpb] [--set path=value]..."
  // Suffixes of the files that define the command's flags; "FILE:a,b" takes only flags a and b of FILE.
  std::vector<const char*> flags_files;
  bool takes_overrides;     // accepts --set
  int (*run)(const CommandArgs& args);
};

const std::vector<Command>& Commands();

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

int RunTrain(const CommandArgs& args);
int RunScore(const CommandArgs& args);
int RunReward(const CommandArgs& args);
int RunTokenize(const CommandArgs& args);
int RunChat(const CommandArgs& args);
int RunLogits(const CommandArgs& args);
int RunGenerate(const CommandArgs& args);
int RunRollout(const CommandArgs& args);
int RunLearner(const CommandArgs& args);
int RunHealth(const CommandArgs& args);
int RunPlot(const CommandArgs& args);

}  // namespace spargo::cli

#endif  // SPARGO_CLI_COMMAND_H_
