// A run's per-domain training curves as a PNG: one panel per metric (mean reward, accuracy, tool calls per episode,
// response length, and the held-out evaluations when there are any), one line per domain, x = GRPO step.
//  - ReadRunCurves: the values from RUN_DIR/metrics.jsonl (per GRPO step, `domains.<d>.reward_mean`, `accuracy`,
//    `tool_calls_mean`, `response_length_mean`; a missing or null value is a gap) and the held-out evaluations
//    (summary.json's `heldout.<d>.before|after` at GRPO steps 0 and `steps`; for a run still going, the
//    `heldout_before` of a checkpoint's state.json). Works on a finished run and on one still writing: a last line
//    without its newline that does not parse is a line being written and is left out. NOT_FOUND when
//    metrics.jsonl does not exist; INVALID_ARGUMENT naming file:line and the field for a line that is not a JSON
//    object with an integer "step", or a value that is not a number.
//  - CurvesTsv / CurvesGnuplotScript: the data file and a gnuplot script drawing it. The data is gnuplot data
//    blocks (two blank lines apart, `index N`): block d = domain d's training curves (step, then the four metrics
//    in kCurveMetrics order), then one block per domain with held-out points (step, value); tab-separated, values
//    written so that they read back exactly, "NaN" for a gap; `#` lines say what each block is. The script reads
//    the variables `data` and `out` (defaults STEM.tsv and STEM.png, relative to the working directory), so
//    `cd RUN_DIR && gnuplot curves.gp` draws it again after an edit.
//  - DrawRunCurves: writes STEM.tsv and STEM.gp next to the PNG (atomically), then runs gnuplot with a deadline
//    into a temporary file that is renamed over the PNG only once it is a PNG. Reading errors are returned (nothing
//    is written then); gnuplot missing, failing or past its deadline is OK with `warning` set (the data and script
//    stay, the PNG is not touched).
//  - DrawRunCurvesAtEnd: for the end of `spargo train`: prints "curves: PATH" or logs the warning; never fails.
#ifndef SPARGO_LEARNER_CURVES_H_
#define SPARGO_LEARNER_CURVES_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace spargo::learner {

struct CurveMetric {
  const char* key;     // the field of metrics.jsonl's domains.<d>
  const char* title;   // the panel's title
  const char* ylabel;  // the panel's y axis
};
inline constexpr int kNumCurveMetrics = 4;
extern const std::array<CurveMetric, kNumCurveMetrics> kCurveMetrics;

struct DomainCurve {
  std::vector<int64_t> steps;                                // GRPO steps where the domain had samples
  std::vector<std::array<double, kNumCurveMetrics>> values;  // per step; NaN: not recorded
};

struct HeldoutPoint {
  int64_t step = 0;  // 0: before GRPO
  double value = 0;
};

struct RunCurves {
  std::string run_name;   // the run directory's last path component
  int64_t last_step = 0;  // the largest GRPO step in metrics.jsonl (or of the held-out evaluation after GRPO)
  int64_t lines = 0;      // GRPO steps read
  std::map<std::string, DomainCurve> domains;
  std::string heldout_metric;  // "accuracy", or "reward_mean" when no domain has an accuracy; "" without held-out
  std::map<std::string, std::vector<HeldoutPoint>> heldout;  // per domain ("all" left out)
};

absl::StatusOr<RunCurves> ReadRunCurves(const std::string& run_dir);

struct CurvesOptions {
  std::string png_path;             // "": RUN_DIR/curves.png; STEM.tsv and STEM.gp go next to it
  std::string gnuplot = "gnuplot";  // the program (looked up on PATH)
  absl::Duration deadline = absl::Seconds(60);
  int width = 0, height = 0;  // pixels; 0: 1200 x 900 for four panels, 1600 x 900 with the held-out panel
};

std::string CurvesTsv(const RunCurves& curves);
// `width` x `height` pixels; the script's default data and output names are `tsv_name` and `png_name`.
std::string CurvesGnuplotScript(const RunCurves& curves, const std::string& tsv_name, const std::string& png_name,
                                int width, int height);

struct CurvesOutput {
  std::string png, tsv, script;  // paths
  int width = 0, height = 0;
  bool rendered = false;  // png holds the new picture
  std::string warning;    // when not rendered: why, and how to render it later
};

absl::StatusOr<CurvesOutput> DrawRunCurves(const std::string& run_dir, const CurvesOptions& options = {});

void DrawRunCurvesAtEnd(const std::string& run_dir);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_CURVES_H_
