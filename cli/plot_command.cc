// `spargo plot RUN_DIR [--out FILE.png]`: draws a run's per-domain training curves (learner/curves.h) from its
// metrics.jsonl, for a finished run or one still going: RUN_DIR/curves.png by default, with the data (curves.tsv)
// and the gnuplot script (curves.gp) written next to the PNG. Prints the PNG's path. Exit codes: 0 drawn; 1 when
// metrics.jsonl is missing or malformed (the message names the file and line) or gnuplot could not draw (the data
// and script are still written); 2 for a usage error.
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "cli/command.h"
#include "learner/curves.h"

ABSL_FLAG(std::string, out, "", "The PNG to write (default RUN_DIR/curves.png); its .tsv and .gp go next to it.");
ABSL_FLAG(std::string, gnuplot, "gnuplot", "The gnuplot program (looked up on PATH).");
ABSL_FLAG(int32_t, gnuplot_timeout_seconds, 60, "Seconds gnuplot may take before it is killed.");

namespace spargo::cli {

int RunPlot(const CommandArgs& args) {
  if (args.positional.size() != 1) {
    std::cerr << "spargo plot: expected one RUN_DIR (a `spargo train --run-dir`), got " << args.positional.size()
              << " arguments\n";
    return kExitUsage;
  }
  const int32_t timeout = absl::GetFlag(FLAGS_gnuplot_timeout_seconds);
  if (timeout <= 0) {
    std::cerr << "spargo plot: --gnuplot-timeout-seconds = " << timeout << ": must be positive\n";
    return kExitUsage;
  }
  learner::CurvesOptions options;
  options.png_path = absl::GetFlag(FLAGS_out);
  options.gnuplot = absl::GetFlag(FLAGS_gnuplot);
  options.deadline = absl::Seconds(timeout);
  absl::StatusOr<learner::CurvesOutput> out = learner::DrawRunCurves(args.positional[0], options);
  if (!out.ok()) {
    std::cerr << "spargo plot: " << out.status().message() << "\n";
    return kExitFailure;
  }
  if (!out->rendered) {
    std::cerr << "spargo plot: " << out->warning << "\n";
    return kExitFailure;
  }
  std::cout << out->png << "\n";
  return kExitOk;
}

}  // namespace spargo::cli
