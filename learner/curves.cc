#include "learner/curves.h"

#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/atomic_file.h"
#include "common/bounded_json.h"
#include "common/logging.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "learner/gnuplot_runner.h"
#include "nlohmann/json.hpp"

namespace spargo::learner {

const std::array<CurveMetric, kNumCurveMetrics> kCurveMetrics = {{
    {"reward_mean", "mean reward", "reward"},
    {"accuracy", "accuracy (share of samples solved)", "accuracy"},
    {"tool_calls_mean", "tool calls per episode", "calls"},
    {"response_length_mean", "response length", "tokens"},
}};

namespace {

using nlohmann::json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";

std::string Excerpt(absl::string_view line) {
  return line.size() <= 60 ? std::string(line) : absl::StrCat(line.substr(0, 60), "...");
}

// The numeric value of `parent[key]`; NaN when absent or null.
absl::StatusOr<double> OptionalNumber(const json& parent, const std::string& key, const std::string& where) {
  auto it = parent.find(key);
  if (it == parent.end() || it->is_null()) return kNaN;
  if (!it->is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, ": expected a number or null, got ", it->type_name(), " ", Excerpt(it->dump())));
  }
  return it->get<double>();
}

// One metrics.jsonl line into `curves`; `where` is "FILE:LINE".
absl::Status AddStep(const json& line, const std::string& where, RunCurves* curves) {
  if (!line.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  auto step = line.find("step");
  if (step == line.end() || !step->is_number_integer() || step->get<int64_t>() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"step\" is missing or not a non-negative integer"));
  }
  const int64_t s = step->get<int64_t>();
  curves->last_step = std::max(curves->last_step, s);
  ++curves->lines;
  auto domains = line.find("domains");
  if (domains == line.end() || domains->is_null()) return absl::OkStatus();  // written before per-domain metrics
  if (!domains->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"domains\" is ", domains->type_name(), ", not an object"));
  }
  for (const auto& [name, d] : domains->items()) {
    const std::string field = absl::StrCat(where, ": domains.", name);
    if (!d.is_object()) return absl::InvalidArgumentError(absl::StrCat(field, ": not an object"));
    std::array<double, kNumCurveMetrics> values;
    for (int m = 0; m < kNumCurveMetrics; ++m) {
      SPARGO_ASSIGN_OR_RETURN(values[m], OptionalNumber(d, kCurveMetrics[m].key, field));
    }
    DomainCurve& curve = curves->domains[name];
    curve.steps.push_back(s);
    curve.values.push_back(values);
  }
  return absl::OkStatus();
}

absl::Status ReadMetrics(const std::string& path, RunCurves* curves) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path,
                                            ": no such file (not a spargo run directory, or no GRPO step has "
                                            "been completed yet)"));
  }
  SPARGO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "metrics"));
  const bool ends_in_newline = text.empty() || text.back() == '\n';
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (ends_in_newline) lines.pop_back();  // the empty piece after the final newline
  for (size_t i = 0; i < lines.size(); ++i) {
    const absl::string_view line = lines[i];
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(path, ":", i + 1);
    bool too_deep = false;
    json j = ParseBoundedJson(line, kMaxJsonDepth, &too_deep);
    if (j.is_discarded()) {
      // The run is appending this line right now.
      if (i + 1 == lines.size() && !ends_in_newline) break;
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", too_deep ? "nested too deeply" : "not JSON", ": ", Excerpt(line)));
    }
    SPARGO_RETURN_IF_ERROR(AddStep(j, where, curves));
  }
  return absl::OkStatus();
}

// The held-out metric's value of one evaluation ({"accuracy": ..., "reward_mean": ...}), if it has one.
std::optional<double> HeldoutValue(const json& scores, const std::string& metric) {
  if (!scores.is_object()) return std::nullopt;
  auto it = scores.find(metric);
  if (it == scores.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

// `evaluations`: domain -> {when: scores}, with `when` at `steps` GRPO steps.
void SetHeldout(const std::map<std::string, std::map<int64_t, json>>& evaluations, RunCurves* curves) {
  bool any_accuracy = false;
  for (const auto& [domain, by_step] : evaluations) {
    for (const auto& [step, scores] : by_step) any_accuracy |= HeldoutValue(scores, "accuracy").has_value();
  }
  const std::string metric = any_accuracy ? "accuracy" : "reward_mean";
  for (const auto& [domain, by_step] : evaluations) {
    for (const auto& [step, scores] : by_step) {
      if (std::optional<double> v = HeldoutValue(scores, metric)) {
        curves->heldout[domain].push_back({step, *v});
        curves->last_step = std::max(curves->last_step, step);
      }
    }
  }
  if (!curves->heldout.empty()) curves->heldout_metric = metric;
}

// summary.json's held-out results, else (a run still going, or stopped early) a checkpoint's `heldout_before`.
absl::Status ReadHeldout(const std::string& run_dir, RunCurves* curves) {
  std::map<std::string, std::map<int64_t, json>> evaluations;
  const std::string summary_path = run_dir + "/summary.json";
  std::error_code ec;
  if (std::filesystem::exists(summary_path, ec)) {
    SPARGO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(summary_path, "run summary"));
    json summary = ParseBoundedJson(text);
    if (summary.is_discarded() || !summary.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(summary_path, ": not a JSON object"));
    }
    auto heldout = summary.find("heldout");
    auto steps = summary.find("steps");
    if (heldout != summary.end() && heldout->is_object() && steps != summary.end() && steps->is_number_integer()) {
      for (const auto& [domain, when] : heldout->items()) {
        if (domain == "all" || !when.is_object()) continue;
        if (when.contains("before")) evaluations[domain][0] = when["before"];
        if (when.contains("after")) evaluations[domain][steps->get<int64_t>()] = when["after"];
      }
      SetHeldout(evaluations, curves);
      return absl::OkStatus();
    }
  }
  // Every checkpoint written after the evaluation before GRPO carries it; any one will do.
  // Checkpoints come and go while a run writes them: a folder that cannot be read is passed over.
  for (std::filesystem::directory_iterator it(run_dir + "/checkpoints", ec), end; !ec && it != end; it.increment(ec)) {
    if (absl::StartsWith(it->path().filename().string(), ".")) continue;
    absl::StatusOr<std::string> text = ReadFileToString(it->path().string() + "/state.json", "checkpoint state");
    if (!text.ok()) continue;
    json state = ParseBoundedJson(*text);
    if (state.is_discarded() || !state.is_object() || !state.contains("heldout_before") ||
        !state["heldout_before"].is_object()) {
      continue;
    }
    for (const auto& [domain, scores] : state["heldout_before"].items()) {
      if (domain != "all") evaluations[domain][0] = scores;
    }
    break;
  }
  SetHeldout(evaluations, curves);
  return absl::OkStatus();
}

// Shortest text that reads back as exactly `v`; "NaN" for NaN.
std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), v);
  return std::string(buffer, result.ptr);
}

// A gnuplot single-quoted string literal (no escapes inside; a quote is doubled); control characters become '?'.
std::string Quoted(absl::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "''";
    } else {
      out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
    }
  }
  return out + "'";
}

// Text for a `#` comment line.
std::string Printable(absl::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return out;
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool HasFiniteValue(const DomainCurve& curve, int metric) {
  for (const auto& v : curve.values) {
    if (std::isfinite(v[metric])) return true;
  }
  return false;
}

absl::Status CheckPng(const std::string& path) {
  char head[8] = {};
  std::ifstream in(path, std::ios::binary);
  if (!in.read(head, sizeof(head)) || std::string(head, 8) != std::string(kPngSignature, 8)) {
    return absl::InternalError(absl::StrCat(path, ": gnuplot wrote no PNG there"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RunCurves> ReadRunCurves(const std::string& run_dir) {
  RunCurves curves;
  std::string trimmed = run_dir;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  curves.run_name = BaseName(trimmed);
  SPARGO_RETURN_IF_ERROR(ReadMetrics(trimmed + "/metrics.jsonl", &curves));
  SPARGO_RETURN_IF_ERROR(ReadHeldout(trimmed, &curves));
  return curves;
}

std::string CurvesTsv(const RunCurves& curves) {
  std::string out = absl::StrCat(
      "# spargo: the training curves of run ", Printable(curves.run_name),
      ", from its metrics.jsonl (and summary.json). Tab-separated gnuplot data blocks, two blank lines apart\n"
      "# (gnuplot `index N`); NaN: no value at that step.\n");
  int block = 0;
  std::vector<std::string> columns = {"step"};
  for (const CurveMetric& m : kCurveMetrics) columns.push_back(m.key);
  for (const auto& [domain, curve] : curves.domains) {
    if (block > 0) out += "\n\n";
    absl::StrAppend(&out, "# block ", block++, ": training, domain ", Printable(domain), "\n# ",
                    absl::StrJoin(columns, "\t"), "\n");
    for (size_t i = 0; i < curve.steps.size(); ++i) {
      absl::StrAppend(&out, curve.steps[i]);
      for (double v : curve.values[i]) absl::StrAppend(&out, "\t", Number(v));
      out += "\n";
    }
  }
  for (const auto& [domain, points] : curves.heldout) {
    if (block > 0) out += "\n\n";
    absl::StrAppend(&out, "# block ", block++, ": held-out evaluation (greedy; step 0: before GRPO), domain ",
                    Printable(domain), "\n# step\theldout_", curves.heldout_metric, "\n");
    for (const HeldoutPoint& p : points) absl::StrAppend(&out, p.step, "\t", Number(p.value), "\n");
  }
  return out;
}

std::string CurvesGnuplotScript(const RunCurves& curves, const std::string& tsv_name, const std::string& png_name,
                                int width, int height) {
  // Each domain keeps its colour (line type) and marker in every panel, whichever domains a panel shows, so that
  // lines on top of each other (all at reward 0, say) still show each domain's marker.
  static constexpr int kPointTypes[] = {7, 5, 9, 13, 11, 15};
  std::map<std::string, int> line_type;
  for (const auto& [domain, curve] : curves.domains) line_type.emplace(domain, static_cast<int>(line_type.size()) + 1);
  for (const auto& [domain, points] : curves.heldout) line_type.emplace(domain, static_cast<int>(line_type.size()) + 1);
  auto look = [&](const std::string& domain, double point_size) {
    const int lt = line_type[domain];
    return absl::StrFormat("lt %d pt %d ps %.1f", lt, kPointTypes[(lt - 1) % 6], point_size);
  };
  const bool with_heldout = !curves.heldout.empty();
  const int64_t last = std::max<int64_t>(curves.last_step, 1);
  // A marker at every step for short runs, at about 15 steps per line for long ones.
  const std::string style = absl::StrFormat("linespoints pointinterval %d", std::max<int64_t>(1, last / 15));
  std::vector<std::string> names;
  for (const auto& [domain, curve] : curves.domains) names.push_back(domain);

  std::string s = absl::StrCat(
      "# spargo: the training curves of run ", Printable(curves.run_name), ", from ", Printable(tsv_name),
      " (written with this script by `spargo train` at the end of a run and by `spargo plot RUN_DIR`).\n"
      "# Draw again, e.g. after an edit: gnuplot THIS_SCRIPT (in this folder), or\n"
      "# gnuplot -e \"data='other.tsv'; out='other.png'\" THIS_SCRIPT\n",
      "if (!exists(\"data\")) data = ", Quoted(tsv_name), "\n", "if (!exists(\"out\")) out = ", Quoted(png_name), "\n",
      absl::StrFormat("set terminal pngcairo size %d,%d font 'sans,10' noenhanced\n", width, height),
      "set output out\n"
      "set datafile separator \"\\t\"\n"
      "set datafile missing \"NaN\"\n");
  const std::string title = absl::StrCat(
      curves.run_name, ": ", curves.lines, " GRPO step", curves.lines == 1 ? "" : "s",
      names.empty() ? "" : absl::StrCat(names.size() == 1 ? ", domain " : ", domains ", absl::StrJoin(names, ", ")));
  absl::StrAppend(
      &s, absl::StrFormat("set multiplot layout 2,%d title %s font 'sans,12'\n", with_heldout ? 3 : 2, Quoted(title)),
      "set grid\nset key outside top center horizontal\nset xlabel 'GRPO step'\n",
      // A margin on both sides, so that points on the first and last step are not drawn on the border.
      absl::StrFormat("set xrange [%g:%g]\n", -0.03 * last, 1.03 * last), last <= 10 ? "set xtics 1\n" : "",
      "set offsets 0, 0, graph 0.05, graph 0.05\n");

  auto panel = [&](const std::string& title, const std::string& ylabel, const std::string& yrange,
                   const std::vector<std::string>& series) {
    absl::StrAppend(&s, "\nset title ", Quoted(title), "\nset ylabel ", Quoted(ylabel), "\nset yrange ", yrange, "\n");
    if (series.empty()) {
      absl::StrAppend(&s, "set label 1 'no values yet' at graph 0.5,0.5 center\nplot NaN notitle\nunset label 1\n");
    } else {
      absl::StrAppend(&s, "plot ", absl::StrJoin(series, ", \\\n     "), "\n");
    }
  };
  auto metric_panel = [&](int m) {
    std::vector<std::string> series;
    int index = 0;
    for (const auto& [domain, curve] : curves.domains) {
      if (HasFiniteValue(curve, m)) {
        series.push_back(absl::StrFormat("data index %d using 1:%d with %s %s title %s", index, m + 2, style,
                                         look(domain, 0.6), Quoted(domain)));
      }
      ++index;
    }
    std::string range = "[*:*]";  // mean reward: any sign
    if (m == 1) range = "[-0.05:1.05]";
    if (m >= 2) {
      // Counts and lengths: from just below 0, so that a line at 0 is not hidden by the border.
      double top = 0;
      for (const auto& [domain, curve] : curves.domains) {
        for (const auto& v : curve.values) {
          if (std::isfinite(v[m])) top = std::max(top, v[m]);
        }
      }
      range = top > 0 ? absl::StrFormat("[%g:*]", -0.04 * top) : "[-0.04:1]";
    }
    panel(kCurveMetrics[m].title, kCurveMetrics[m].ylabel, range, series);
  };
  metric_panel(0);
  metric_panel(1);
  const bool accuracy = curves.heldout_metric == "accuracy";
  if (with_heldout) {
    std::vector<std::string> series;
    int index = static_cast<int>(curves.domains.size());
    for (const auto& [domain, points] : curves.heldout) {
      series.push_back(absl::StrFormat("data index %d using 1:2 with linespoints %s title %s", index++,
                                       look(domain, 1.3), Quoted(domain)));
    }
    panel(accuracy ? "held-out accuracy (greedy; step 0: before GRPO)" : "held-out mean reward (greedy)",
          accuracy ? "accuracy" : "reward", accuracy ? "[-0.05:1.05]" : "[*:*]", series);
  }
  metric_panel(2);
  metric_panel(3);
  if (with_heldout) {
    // The sixth cell: the held-out figures as text.
    absl::StrAppend(&s,
                    "\n# The held-out results as text.\nunset border\nunset tics\nunset grid\nunset xlabel\n"
                    "unset ylabel\nunset key\nset title ",
                    Quoted(absl::StrCat("held-out ", accuracy ? "accuracy" : "mean reward", " (greedy)")), "\n");
    int row = 0;
    for (const auto& [domain, points] : curves.heldout) {
      std::vector<std::string> parts;
      for (const HeldoutPoint& p : points) parts.push_back(absl::StrFormat("%.3f at step %d", p.value, p.step));
      absl::StrAppend(
          &s, absl::StrFormat("set label %d %s at graph 0.05, graph %.2f left\n", 10 + row,
                              Quoted(absl::StrCat(domain, ": ", absl::StrJoin(parts, " -> "))), 0.9 - 0.1 * row));
      ++row;
    }
    s += "plot [0:1] [0:1] NaN notitle\n";
  }
  s += "\nunset multiplot\n";
  return s;
}

absl::StatusOr<CurvesOutput> DrawRunCurves(const std::string& run_dir, const CurvesOptions& options) {
  SPARGO_ASSIGN_OR_RETURN(RunCurves curves, ReadRunCurves(run_dir));
  CurvesOutput out;
  out.png = options.png_path.empty() ? run_dir + "/curves.png" : options.png_path;
  const std::string stem = absl::EndsWith(out.png, ".png") ? out.png.substr(0, out.png.size() - 4) : out.png;
  out.tsv = stem + ".tsv";
  out.script = stem + ".gp";
  const bool with_heldout = !curves.heldout.empty();
  out.width = options.width > 0 ? options.width : (with_heldout ? 1600 : 1200);
  out.height = options.height > 0 ? options.height : 900;
  SPARGO_RETURN_IF_ERROR(WriteFileAtomically(out.tsv, CurvesTsv(curves)));
  SPARGO_RETURN_IF_ERROR(WriteFileAtomically(
      out.script, CurvesGnuplotScript(curves, BaseName(out.tsv), BaseName(out.png), out.width, out.height)));

  const std::string temp = absl::StrCat(out.png, ".tmp-", getpid());
  std::string gnuplot_output;
  absl::Status drawn =
      RunGnuplot(options.gnuplot, {"-e", absl::StrCat("data=", Quoted(out.tsv), "; out=", Quoted(temp)), out.script},
                 options.deadline, &gnuplot_output);
  if (drawn.ok()) drawn = CheckPng(temp);
  if (drawn.ok() && std::rename(temp.c_str(), out.png.c_str()) != 0) {
    drawn = absl::InternalError(absl::StrCat("cannot rename ", temp, " to ", out.png));
  }
  if (!drawn.ok()) {
    std::remove(temp.c_str());
    const std::string how = absl::StrCat("; the values are in ", out.tsv, " and the script in ", out.script,
                                         ": draw them with `gnuplot ", BaseName(out.script), "` in that folder");
    if (absl::IsNotFound(drawn)) {
      out.warning = absl::StrCat("no curves PNG: gnuplot is not installed (", drawn.message(),
                                 "; Debian: apt-get install gnuplot-nox)", how);
    } else {
      out.warning = absl::StrCat("no curves PNG: ", drawn.message(), how);
    }
    return out;
  }
  if (!gnuplot_output.empty()) SPARGO_LOG(DEBUG) << "gnuplot said: " << gnuplot_output;
  out.rendered = true;
  return out;
}

void DrawRunCurvesAtEnd(const std::string& run_dir) {
  absl::StatusOr<CurvesOutput> out = DrawRunCurves(run_dir);
  if (!out.ok()) {
    SPARGO_LOG(WARNING) << "no curves PNG: " << out.status().message();
  } else if (!out->rendered) {
    SPARGO_LOG(WARNING) << out->warning;
  } else {
    std::printf("curves: %s (redraw: gnuplot %s)\n", out->png.c_str(), out->script.c_str());
    std::fflush(stdout);
  }
}

}  // namespace spargo::learner
