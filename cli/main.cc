// The `spargo` binary: `spargo <command> [flags]`. See Commands() for the list; `spargo --help` and
// `spargo <command> --help` describe every flag.
#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "cli/command.h"
#include "common/blas_kernels.h"
#include "common/logging.h"

ABSL_FLAG(std::string, log_level, "info", "Log level: debug, info, warning or error.");

namespace spargo::cli {

const std::vector<Command>& Commands() {
  static const std::vector<Command> kCommands = {
      {"train", "Run GRPO training in one process (the embedded default: CPU arithmetic).",
       "spargo train [--config FILE.txtpb] [--set path.to.field=value]... [--run-dir DIR] [--resume]",
       {"cli/train_command.cc", "cli/shared_flags.cc:config"}, true, &RunTrain},
      {"score", "Score groups of completions with reward pipelines: JSON lines on stdin, scores on stdout.",
       "spargo score [--config FILE.txtpb] [--set path=value]... < groups.jsonl",
       {"cli/score_command.cc", "cli/shared_flags.cc:config"}, true, &RunScore},
      {"tokenize", "Encode text to token ids, or decode ids (--decode): JSON lines on stdin and stdout.",
       "spargo tokenize --tokenizer tokenizer.json|byte [--decode] < lines.jsonl",
       {"cli/tokenize_command.cc", "cli/model_flags.cc:tokenizer"}, false,
       &RunTokenize},
      {"logits", "Run a DeepSeek-V3.2 checkpoint on input_ids: logits, indexer top-k, optional greedy tokens.",
       "spargo logits --model DIR --input IN.safetensors --output OUT.safetensors [--greedy N] [--device cuda] "
       "[--indexer-precision fp8]",
       {"cli/logits_command.cc", "cli/model_flags.cc:model,device,dtype,indexer_precision"}, false, &RunLogits},
      {"generate",
       "Sample or greedily decode completions of a prompt from a DeepSeek-V3.2 checkpoint or a rollout service.",
       "spargo generate (--model DIR | --server HOST:PORT [--config FILE.txtpb]) (--prompt TEXT | --prompt-ids 1,2,3) "
       "[--chat thinking|chat] [--temperature T] [--samples N] [--seed S] [--json]",
       {"cli/generate_command.cc", "cli/model_flags.cc", "cli/shared_flags.cc:config"}, true, &RunGenerate},
      {"chat", "Encode a conversation (JSON on stdin) as the DeepSeek-V3.2 prompt text.",
       "spargo chat [--mode thinking|chat] < conversation.json", {"cli/chat_command.cc"}, false, &RunChat},
      {"reward", "Serve the reward pipelines over gRPC (RewardService) until SIGINT or SIGTERM.",
       "spargo reward [--config FILE.txtpb] [--set path=value]... [--listen HOST:PORT]",
       {"cli/reward_command.cc", "cli/shared_flags.cc"}, true, &RunReward},
      {"rollout", "Serve a model over gRPC (RolloutService: Generate, UpdateWeights, Health) until SIGINT or SIGTERM.",
       "spargo rollout [--model DIR] [--config FILE.txtpb] [--set path=value]... [--listen HOST:PORT]",
       {"cli/rollout_command.cc", "cli/shared_flags.cc", "cli/model_flags.cc:model,tokenizer,device,dtype"}, true,
       &RunRollout},
      {"learner", "Serve a policy learner over gRPC (LearnerService) for `spargo train` until SIGINT or SIGTERM.",
       "spargo learner [--config FILE.txtpb] [--set path=value]... [--listen HOST:PORT]",
       {"cli/learner_command.cc", "cli/shared_flags.cc:config,listen,trusted_network"}, true, &RunLearner},
      {"health", "Ask spargo servers whether they serve (grpc.health.v1); optionally wait until they do.",
       "spargo health [--config FILE.txtpb] [--set services.field=value]... [--wait-seconds N] HOST:PORT...",
       {"cli/health_command.cc", "cli/shared_flags.cc:config"}, true, &RunHealth},
      {"plot", "Draw a run's per-domain training curves (metrics.jsonl) as RUN_DIR/curves.png with gnuplot.",
       "spargo plot RUN_DIR [--out FILE.png]", {"cli/plot_command.cc"}, false, &RunPlot},
  };
  return kCommands;
}

namespace {

constexpr char kGlobalFlagsFile[] = "cli/main.cc";

std::string Dashed(absl::string_view name) { return absl::StrReplaceAll(name, {{"_", "-"}}); }

// Flags defined in files ending with one of `files`, by name; "FILE:a,b" takes only flags a and b of FILE.
std::map<std::string, absl::CommandLineFlag*> FlagsOf(const std::vector<const char*>& files) {
  std::map<std::string, absl::CommandLineFlag*> out;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    for (const char* entry : files) {
      std::vector<std::string> parts = absl::StrSplit(entry, ':');
      if (!absl::EndsWith(flag->Filename(), parts[0])) continue;
      if (parts.size() > 1) {
        std::vector<std::string> only = absl::StrSplit(parts[1], ',');
        if (std::find(only.begin(), only.end(), std::string(name)) == only.end()) continue;
      }
      out[std::string(name)] = flag;
    }
  }
  return out;
}

void PrintFlags(const std::map<std::string, absl::CommandLineFlag*>& flags) {
  for (const auto& [name, flag] : flags) {
    std::string def = flag->DefaultValue();
    std::cout << "  --" << Dashed(name);
    if (!flag->IsOfType<bool>()) std::cout << " VALUE";
    std::cout << "\n      " << flag->Help();
    if (!def.empty()) std::cout << " (default: " << def << ")";
    std::cout << "\n";
  }
}

void PrintMainHelp() {
  std::cout << "spargo: GRPO post-training for sparse-attention language models.\n\n"
               "usage: spargo <command> [flags]\n\ncommands:\n";
  for (const Command& c : Commands()) std::cout << "  " << c.name << std::string(10 - std::strlen(c.name), ' ')
                                                << c.summary << "\n";
  std::cout << "\nglobal flags:\n";
  PrintFlags(FlagsOf({kGlobalFlagsFile}));
  std::cout << "\nRun `spargo <command> --help` for the flags of a command.\n";
}

void PrintCommandHelp(const Command& c) {
  std::cout << c.summary << "\n\nusage: " << c.usage << "\n\nflags:\n";
  PrintFlags(FlagsOf(c.flags_files));
  if (c.takes_overrides) {
    std::cout << "  --set PATH=VALUE\n      Override one config field, e.g. --set learner.grpo.steps=100 or "
                 "--set tasks[0].weight=2; may repeat.\n";
  }
  std::cout << "\nglobal flags:\n";
  PrintFlags(FlagsOf({kGlobalFlagsFile}));
}

bool IsHelp(const std::string& arg) { return arg == "--help" || arg == "-h" || arg == "-help" || arg == "help"; }

// Splits argv into --set values and the rest; normalises --kebab-case flag names to snake_case and refuses flags
// the command does not define. Returns false (after printing why) on a usage error.
bool PreParse(const Command& c, int argc, char** argv, std::vector<std::string>* rest, CommandArgs* args) {
  auto allowed = FlagsOf(c.flags_files);
  for (auto& [name, flag] : FlagsOf({kGlobalFlagsFile})) allowed[name] = flag;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) args->positional.push_back(argv[i]);
      break;
    }
    if (!absl::StartsWith(arg, "-") || arg == "-") {
      rest->push_back(arg);
      continue;
    }
    std::string body = arg.substr(absl::StartsWith(arg, "--") ? 2 : 1);
    size_t eq = body.find('=');
    std::string name = absl::StrReplaceAll(body.substr(0, eq), {{"-", "_"}});
    if (name == "set" && c.takes_overrides) {
      if (eq != std::string::npos) {
        args->overrides.push_back(body.substr(eq + 1));
      } else if (i + 1 < argc) {
        args->overrides.push_back(argv[++i]);
      } else {
        std::cerr << "spargo " << c.name << ": --set needs PATH=VALUE\n";
        return false;
      }
      continue;
    }
    std::string bare = absl::StartsWith(name, "no") && !allowed.count(name) ? name.substr(2) : name;
    if (!allowed.count(name) && !(allowed.count(bare) && allowed[bare]->IsOfType<bool>())) {
      std::cerr << "spargo " << c.name << ": unknown flag --" << Dashed(name) << " (see spargo " << c.name
                << " --help)\n";
      return false;
    }
    rest->push_back("--" + name + (eq == std::string::npos ? "" : body.substr(eq)));
  }
  return true;
}

}  // namespace
}  // namespace spargo::cli

int main(int argc, char** argv) {
  spargo::UseFastBlasKernels(argv);  // may execute the program again (common/blas_kernels.h)
  using spargo::cli::Command;
  if (argc < 2 || spargo::cli::IsHelp(argv[1])) {
    spargo::cli::PrintMainHelp();
    return argc < 2 ? spargo::cli::kExitUsage : spargo::cli::kExitOk;
  }
  const auto& commands = spargo::cli::Commands();
  auto it = std::find_if(commands.begin(), commands.end(), [&](const Command& c) { return argv[1] == std::string(c.name); });
  if (it == commands.end()) {
    std::cerr << "spargo: unknown command '" << argv[1] << "'; run `spargo --help`\n";
    return spargo::cli::kExitUsage;
  }
  for (int i = 2; i < argc; ++i) {
    if (spargo::cli::IsHelp(argv[i])) {
      spargo::cli::PrintCommandHelp(*it);
      return spargo::cli::kExitOk;
    }
  }
  std::vector<std::string> rest = {std::string("spargo ") + it->name};
  spargo::cli::CommandArgs args;
  if (!spargo::cli::PreParse(*it, argc - 2, argv + 2, &rest, &args)) return spargo::cli::kExitUsage;
  std::vector<char*> raw;
  for (auto& s : rest) raw.push_back(s.data());
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(raw.size()), raw.data());
  for (size_t i = 1; i < positional.size(); ++i) args.positional.push_back(positional[i]);
  absl::StatusOr<spargo::LogLevel> level = spargo::ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) {
    std::cerr << "spargo: --log-level: " << level.status().message() << "\n";
    return spargo::cli::kExitUsage;
  }
  spargo::SetLogLevel(*level);
  return it->run(args);
}
