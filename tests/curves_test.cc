// A run's curves (learner/curves.h): from a hand-written metrics.jsonl and summary.json with known values, the data
// file holds exactly those values per domain and step; gnuplot itself, asked for its plot as a table (`set table`),
// draws exactly those points in every panel, one line per domain; the PNG is a PNG of the asked size (IHDR) whose
// pixels carry each drawn domain's colour and no other domain's (decoded with zlib here); malformed input is
// refused naming the file and line; a missing, failing or hanging gnuplot is a warning, never an error or a crash;
// `spargo plot` and the end of `spargo train` write the PNG. Tests that need gnuplot are skipped only when no
// gnuplot is on PATH (scripts/setup.sh installs it).
#include "learner/curves.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/gnuplot_runner.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace spargo {
namespace {

namespace fs = std::filesystem;
using ::spargo::testing::NewTempDir;
using ::spargo::testing::ReadFile;
using ::spargo::testing::RunProcess;
using ::spargo::testing::SpargoBinary;
using ::spargo::testing::WriteFile;
using ::testing::HasSubstr;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// One domain's figures at one step; nullopt: the key is absent (or null, for accuracy).
struct Figures {
  double reward;
  std::optional<double> accuracy;
  std::optional<double> tool_calls;
  double length;
};
using Steps = std::map<int64_t, std::map<std::string, Figures>>;  // step -> domain -> figures

// Three domains; reasoning has no samples at step 2 and no tool_calls_mean key at step 3 (an older line),
// alignment never has an accuracy. Values that are not binary fractions check that they read back exactly.
Steps MixedSteps() {
  return {{1,
           {{"agent", {0.125, 0.25, 1.5, 40.75}},
            {"alignment", {-0.25, std::nullopt, 0.0, 7.0}},
            {"reasoning", {0.5, 0.5, 0.0, 12.25}}}},
          {2, {{"agent", {0.1, 1.0 / 3.0, 1.25, 38.5}}, {"alignment", {0.0, std::nullopt, 0.0, 6.5}}}},
          {3,
           {{"agent", {0.3, 0.375, 0.75, 41.0}},
            {"alignment", {0.2, std::nullopt, 0.0, 5.0}},
            {"reasoning", {0.7, 0.625, std::nullopt, 11.5}}}}};
}

std::string MetricsJsonl(const Steps& steps) {
  std::string out;
  for (const auto& [step, domains] : steps) {
    nlohmann::json line = {{"step", step}, {"reward_mean", 0.5}, {"trained", true}, {"seconds", {{"step", 1.5}}}};
    for (const auto& [name, f] : domains) {
      nlohmann::json d = {{"samples", 8}, {"reward_mean", f.reward}, {"response_length_mean", f.length}, {"kl", 0.0}};
      d["accuracy"] = f.accuracy ? nlohmann::json(*f.accuracy) : nlohmann::json();
      if (f.tool_calls) d["tool_calls_mean"] = *f.tool_calls;
      line["domains"][name] = d;
    }
    out += line.dump() + "\n";
  }
  return out;
}

// Held-out accuracy before and after 3 GRPO steps.
const std::map<std::string, std::pair<double, double>> kHeldout = {
    {"agent", {0.0, 0.125}}, {"alignment", {0.5, 0.75}}, {"reasoning", {0.25, 0.375}}};

std::string SummaryJson() {
  nlohmann::json heldout = {{"all", {{"before", {{"accuracy", 0.2}}}, {"after", {{"accuracy", 0.4}}}}}};
  for (const auto& [domain, ba] : kHeldout) {
    heldout[domain] = {{"before", {{"accuracy", ba.first}, {"reward_mean", 9.0}, {"prompts", 8}}},
                       {"after", {{"accuracy", ba.second}, {"reward_mean", 9.0}, {"prompts", 8}}}};
  }
  return nlohmann::json{{"steps", 3}, {"heldout", heldout}}.dump(2);
}

std::string WriteRun(const Steps& steps, bool with_summary) {
  const std::string dir = NewTempDir("run");
  WriteFile(dir + "/metrics.jsonl", MetricsJsonl(steps));
  if (with_summary) WriteFile(dir + "/summary.json", SummaryJson());
  return dir;
}

bool Same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

// The data file's blocks: header comment ("training, domain X" / "held-out ..., domain X") -> rows of numbers.
std::map<std::string, std::vector<std::vector<double>>> ParseTsv(const std::string& text) {
  std::map<std::string, std::vector<std::vector<double>>> blocks;
  std::string current;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "# block ")) {
      const size_t colon = line.find(": ");
      const std::string kind = absl::StartsWith(line.substr(colon + 2), "training") ? "train" : "heldout";
      current = absl::StrCat(kind, " ", line.substr(line.rfind("domain ") + 7));
      EXPECT_EQ(blocks.count(current), 0u) << "block twice: " << line;
      blocks[current];
      continue;
    }
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    std::vector<double> row;
    for (absl::string_view field : absl::StrSplit(line, '\t')) {
      std::string f(field);
      char* end = nullptr;
      row.push_back(std::strtod(f.c_str(), &end));
      EXPECT_EQ(*end, '\0') << "not a number: '" << f << "' in line '" << line << "'";
    }
    EXPECT_FALSE(current.empty()) << "data before any block header: " << line;
    blocks[current].push_back(row);
  }
  return blocks;
}

std::optional<std::string> GnuplotOnPath() {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "", ':')) {
    const std::string candidate = absl::StrCat(dir, "/gnuplot");
    if (!dir.empty() && access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

constexpr char kNoGnuplot[] = "no gnuplot on PATH (scripts/setup.sh installs gnuplot-nox)";

TEST(Curves, DataFileHoldsExactlyTheValuesPerDomainAndStep) {
  const Steps steps = MixedSteps();
  const std::string dir = WriteRun(steps, /*with_summary=*/true);
  learner::CurvesOptions options;
  options.gnuplot = "/nonexistent/gnuplot";  // the data file does not depend on gnuplot
  absl::StatusOr<learner::CurvesOutput> out = learner::DrawRunCurves(dir, options);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->tsv, dir + "/curves.tsv");
  EXPECT_EQ(out->script, dir + "/curves.gp");
  const auto blocks = ParseTsv(ReadFile(out->tsv));

  std::map<std::string, std::vector<std::vector<double>>> expected;
  for (const auto& [step, domains] : steps) {
    for (const auto& [name, f] : domains) {
      expected["train " + name].push_back(
          {static_cast<double>(step), f.reward, f.accuracy.value_or(kNaN), f.tool_calls.value_or(kNaN), f.length});
    }
  }
  for (const auto& [domain, ba] : kHeldout) expected["heldout " + domain] = {{0, ba.first}, {3, ba.second}};
  ASSERT_EQ(blocks.size(), expected.size());
  for (const auto& [name, rows] : expected) {
    ASSERT_TRUE(blocks.count(name)) << "no block " << name;
    const auto& got = blocks.at(name);
    ASSERT_EQ(got.size(), rows.size()) << name;
    for (size_t r = 0; r < rows.size(); ++r) {
      ASSERT_EQ(got[r].size(), rows[r].size()) << name << " row " << r;
      for (size_t c = 0; c < rows[r].size(); ++c) {
        EXPECT_TRUE(Same(got[r][c], rows[r][c]))
            << name << " row " << r << " column " << c << ": " << got[r][c] << " != " << rows[r][c];
      }
    }
  }
}

// gnuplot's own account of what it plots: `set table` turns every curve into "x y" rows with its title.
struct TableCurve {
  std::string title;
  std::vector<std::pair<double, double>> points;
};

std::vector<TableCurve> ParseTable(const std::string& text) {
  std::vector<TableCurve> curves;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "# Curve title: \"")) {
      curves.push_back({std::string(line.substr(16, line.size() - 17)), {}});
    } else if (!line.empty() && line[0] != '#' && !curves.empty()) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() >= 3 && f[2] == "i") curves.back().points.push_back({std::stod(f[0]), std::stod(f[1])});
    }
  }
  return curves;
}

TEST(Curves, GnuplotDrawsEveryDomainsPointsInEveryPanel) {
  if (!GnuplotOnPath()) GTEST_SKIP() << kNoGnuplot;
  const Steps steps = MixedSteps();
  const std::string dir = WriteRun(steps, /*with_summary=*/true);
  absl::StatusOr<learner::CurvesOutput> out = learner::DrawRunCurves(dir);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->rendered) << out->warning;
  // The written script, run again with its plots diverted into a table.
  const std::string table = dir + "/table.txt";
  const absl::Status s = learner::RunGnuplot(
      "gnuplot",
      {"-e", absl::StrCat("set table '", table, "'; data='", out->tsv, "'; out='", dir, "/again.png'"), out->script},
      absl::Seconds(60));
  ASSERT_TRUE(s.ok()) << s;
  const std::vector<TableCurve> curves = ParseTable(ReadFile(table));

  // Panels in order: reward, accuracy, held-out accuracy, tool calls, response length; domains alphabetically,
  // a domain only where it has values; steps without a value are left out.
  std::vector<TableCurve> expected;
  auto metric_panel = [&](auto value) {
    for (const std::string domain : {"agent", "alignment", "reasoning"}) {
      TableCurve c{domain, {}};
      for (const auto& [step, domains] : steps) {
        auto it = domains.find(domain);
        if (it == domains.end()) continue;
        std::optional<double> v = value(it->second);
        if (v) c.points.push_back({static_cast<double>(step), *v});
      }
      if (!c.points.empty()) expected.push_back(c);
    }
  };
  metric_panel([](const Figures& f) { return std::optional<double>(f.reward); });
  metric_panel([](const Figures& f) { return f.accuracy; });
  for (const auto& [domain, ba] : kHeldout) expected.push_back({domain, {{0, ba.first}, {3, ba.second}}});
  metric_panel([](const Figures& f) { return f.tool_calls; });
  metric_panel([](const Figures& f) { return std::optional<double>(f.length); });

  ASSERT_EQ(curves.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(curves[i].title, expected[i].title) << "curve " << i;
    ASSERT_EQ(curves[i].points.size(), expected[i].points.size()) << "curve " << i << " (" << expected[i].title << ")";
    for (size_t p = 0; p < expected[i].points.size(); ++p) {
      EXPECT_EQ(curves[i].points[p].first, expected[i].points[p].first) << "curve " << i << " point " << p;
      EXPECT_NEAR(curves[i].points[p].second, expected[i].points[p].second, 1e-5) << "curve " << i << " point " << p;
    }
  }
}

// A decoded 8-bit RGB or RGBA PNG (no interlace): what gnuplot's pngcairo terminal writes.
struct Image {
  uint32_t width = 0, height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // [height, width, channels]
};

uint32_t BigEndian(const std::string& s, size_t at) {
  return (uint32_t{static_cast<uint8_t>(s[at])} << 24) | (uint32_t{static_cast<uint8_t>(s[at + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(s[at + 2])} << 8) | uint32_t{static_cast<uint8_t>(s[at + 3])};
}

int Paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return pa <= pb && pa <= pc ? a : (pb <= pc ? b : c);
}

Image DecodePng(const std::string& png) {
  Image image;
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << "no PNG signature";
  EXPECT_EQ(png.substr(12, 4), "IHDR") << "first chunk is not IHDR";
  if (png.size() < 33 || png.substr(12, 4) != "IHDR") return image;
  image.width = BigEndian(png, 16);
  image.height = BigEndian(png, 20);
  const int depth = static_cast<uint8_t>(png[24]), colour = static_cast<uint8_t>(png[25]);
  EXPECT_EQ(depth, 8);
  EXPECT_TRUE(colour == 2 || colour == 6) << "colour type " << colour;
  EXPECT_EQ(png[28], 0) << "interlaced";
  image.channels = colour == 6 ? 4 : 3;
  std::string compressed;
  for (size_t at = 8; at + 8 <= png.size();) {
    const uint32_t length = BigEndian(png, at);
    if (png.compare(at + 4, 4, "IDAT") == 0) compressed += png.substr(at + 8, length);
    at += 12 + length;
  }
  const size_t stride = image.width * image.channels;
  std::vector<uint8_t> raw((stride + 1) * image.height);
  uLongf size = raw.size();
  EXPECT_EQ(uncompress(raw.data(), &size, reinterpret_cast<const Bytef*>(compressed.data()), compressed.size()), Z_OK);
  EXPECT_EQ(size, raw.size());
  image.pixels.assign(stride * image.height, 0);
  for (uint32_t y = 0; y < image.height; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    uint8_t* row = &image.pixels[y * stride];
    const uint8_t* up = y > 0 ? &image.pixels[(y - 1) * stride] : nullptr;
    for (size_t x = 0; x < stride; ++x) {
      const int a = x >= static_cast<size_t>(image.channels) ? row[x - image.channels] : 0;
      const int b = up ? up[x] : 0;
      const int c = up && x >= static_cast<size_t>(image.channels) ? up[x - image.channels] : 0;
      const int predictor = filter == 1   ? a
                            : filter == 2 ? b
                            : filter == 3 ? (a + b) / 2
                            : filter == 4 ? Paeth(a, b, c)
                                          : 0;
      row[x] = static_cast<uint8_t>(in[x] + predictor);
    }
  }
  return image;
}

// Pixels within a small distance of `rgb`.
int CountColour(const Image& image, std::array<int, 3> rgb) {
  int n = 0;
  for (size_t i = 0; i + 2 < image.pixels.size(); i += image.channels) {
    if (std::abs(image.pixels[i] - rgb[0]) <= 16 && std::abs(image.pixels[i + 1] - rgb[1]) <= 16 &&
        std::abs(image.pixels[i + 2] - rgb[2]) <= 16) {
      ++n;
    }
  }
  return n;
}

// gnuplot's default colours of line types 1, 2, 3: the first, second and third domain (alphabetically).
constexpr std::array<int, 3> kLineType1 = {0x94, 0x00, 0xd3}, kLineType2 = {0x00, 0x9e, 0x73},
                             kLineType3 = {0x56, 0xb4, 0xe9};

TEST(Curves, PngHasTheAskedSizeAndEachDomainsColour) {
  if (!GnuplotOnPath()) GTEST_SKIP() << kNoGnuplot;
  const std::string dir = WriteRun(MixedSteps(), /*with_summary=*/true);
  WriteFile(dir + "/curves.png", "an older picture");
  learner::CurvesOptions options;
  options.width = 900;
  options.height = 640;
  absl::StatusOr<learner::CurvesOutput> out = learner::DrawRunCurves(dir, options);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->rendered) << out->warning;
  EXPECT_EQ(out->png, dir + "/curves.png");
  EXPECT_TRUE(out->warning.empty());
  const Image image = DecodePng(ReadFile(out->png));
  EXPECT_EQ(image.width, 900u);
  EXPECT_EQ(image.height, 640u);
  EXPECT_GT(CountColour(image, kLineType1), 100) << "agent's line is missing";
  EXPECT_GT(CountColour(image, kLineType2), 100) << "alignment's line is missing";
  EXPECT_GT(CountColour(image, kLineType3), 100) << "reasoning's line is missing";
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_FALSE(absl::StrContains(entry.path().filename().string(), ".tmp")) << "left behind: " << entry.path();
  }
}

TEST(Curves, SingleDomainRunHasOneLineAndTheDefaultSize) {
  if (!GnuplotOnPath()) GTEST_SKIP() << kNoGnuplot;
  Steps steps;
  for (int64_t s = 1; s <= 12; ++s) steps[s]["reasoning"] = {0.05 * s, 0.05 * s, 0.0, 3.0 + 0.1 * s};
  const std::string dir = WriteRun(steps, /*with_summary=*/false);
  absl::StatusOr<learner::CurvesOutput> out = learner::DrawRunCurves(dir);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->rendered) << out->warning;
  const Image image = DecodePng(ReadFile(out->png));
  EXPECT_EQ(image.width, 1200u);  // four panels: no held-out evaluation in this run directory
  EXPECT_EQ(image.height, 900u);
  EXPECT_GT(CountColour(image, kLineType1), 100);
  EXPECT_LT(CountColour(image, kLineType2), 5);
  EXPECT_LT(CountColour(image, kLineType3), 5);
}

TEST(Curves, HeldoutBeforeGrpoComesFromACheckpointWhileTheRunGoesOn) {
  const std::string dir = WriteRun(MixedSteps(), /*with_summary=*/false);
  fs::create_directories(dir + "/checkpoints/grpo-000002");
  fs::create_directories(dir + "/checkpoints/.tmp-grpo-000003-1");
  WriteFile(dir + "/checkpoints/.tmp-grpo-000003-1/state.json", "{");
  WriteFile(dir + "/checkpoints/grpo-000002/state.json",
            R"({"phase": "grpo", "step": 2, "heldout_before": {"all": {"accuracy": 0.5},
                "agent": {"accuracy": 0.125}, "reasoning": {"accuracy": 0.25, "reward_mean": 1}}})");
  absl::StatusOr<learner::RunCurves> curves = learner::ReadRunCurves(dir);
  ASSERT_TRUE(curves.ok()) << curves.status();
  EXPECT_EQ(curves->heldout_metric, "accuracy");
  ASSERT_EQ(curves->heldout.size(), 2u);
  ASSERT_EQ(curves->heldout.at("agent").size(), 1u);
  EXPECT_EQ(curves->heldout.at("agent")[0].step, 0);
  EXPECT_EQ(curves->heldout.at("agent")[0].value, 0.125);
  EXPECT_EQ(curves->heldout.at("reasoning")[0].value, 0.25);
  EXPECT_EQ(curves->last_step, 3);
  EXPECT_EQ(curves->lines, 3);
}

TEST(Curves, MissingOrMalformedMetricsAreErrorsNamingFileAndLine) {
  const std::string empty = NewTempDir("empty");
  absl::StatusOr<learner::CurvesOutput> out = learner::DrawRunCurves(empty);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr(empty + "/metrics.jsonl"));
  EXPECT_FALSE(fs::exists(empty + "/curves.tsv"));

  const std::string good = MetricsJsonl(MixedSteps());
  const std::vector<std::string> lines = absl::StrSplit(good, '\n', absl::SkipEmpty());
  const std::pair<std::string, std::string> cases[] = {
      {lines[0] + "\n{\"step\": 2, \"domains\": \n" + lines[2] + "\n", "metrics.jsonl:2: not JSON"},
      {lines[0] + "\n[1, 2]\n", "metrics.jsonl:2: not a JSON object"},
      {lines[0] + "\n\n{\"domains\": {}}\n", "metrics.jsonl:3: \"step\" is missing"},
      {"{\"step\": 1.5}\n", "metrics.jsonl:1: \"step\""},
      {"{\"step\": 1, \"domains\": [1]}\n", "metrics.jsonl:1: \"domains\" is array"},
      {"{\"step\": 1, \"domains\": {\"agent\": 3}}\n", "metrics.jsonl:1: domains.agent: not an object"},
      {lines[0] + "\n" + lines[1] + "\n{\"step\": 3, \"domains\": {\"agent\": {\"reward_mean\": \"high\"}}}\n",
       "metrics.jsonl:3: domains.agent.reward_mean: expected a number or null, got string"},
  };
  for (const auto& [text, message] : cases) {
    const std::string dir = NewTempDir("bad");
    WriteFile(dir + "/metrics.jsonl", text);
    out = learner::DrawRunCurves(dir);
    ASSERT_FALSE(out.ok()) << text;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(out.status().message()), HasSubstr(dir + "/" + message));
    EXPECT_FALSE(fs::exists(dir + "/curves.tsv")) << "written despite the error: " << text;
  }

  // A last line still being written (no newline yet) is left out; the same text with its newline is an error.
  const std::string running = NewTempDir("running");
  WriteFile(running + "/metrics.jsonl", lines[0] + "\n" + lines[1] + "\n{\"step\": 3, \"dom");
  absl::StatusOr<learner::RunCurves> curves = learner::ReadRunCurves(running);
  ASSERT_TRUE(curves.ok()) << curves.status();
  EXPECT_EQ(curves->lines, 2);
  WriteFile(running + "/metrics.jsonl", lines[0] + "\n" + lines[1] + "\n{\"step\": 3, \"dom\n");
  EXPECT_THAT(std::string(learner::ReadRunCurves(running).status().message()), HasSubstr("metrics.jsonl:3: not JSON"));

  const std::string bad_summary = WriteRun(MixedSteps(), /*with_summary=*/false);
  WriteFile(bad_summary + "/summary.json", "{\"steps\": ");
  EXPECT_THAT(std::string(learner::ReadRunCurves(bad_summary).status().message()),
              HasSubstr(bad_summary + "/summary.json: not a JSON object"));
}

// Sets PATH for the scope.
class ScopedPath {
 public:
  explicit ScopedPath(const std::string& path) {
    const char* old = std::getenv("PATH");
    if (old != nullptr) old_ = old;
    setenv("PATH", path.c_str(), 1);
  }
  ~ScopedPath() {
    if (old_) {
      setenv("PATH", old_->c_str(), 1);
    } else {
      unsetenv("PATH");
    }
  }

 private:
  std::optional<std::string> old_;
};

void WriteScript(const std::string& path, const std::string& body) {
  WriteFile(path, "#!/bin/sh\n" + body);
  ASSERT_EQ(chmod(path.c_str(), 0755), 0);
}

TEST(Curves, MissingGnuplotIsAWarningAndLeavesTheDataAndScript) {
  const std::string dir = WriteRun(MixedSteps(), /*with_summary=*/true);
  WriteFile(dir + "/curves.png", "an older picture");
  absl::StatusOr<learner::CurvesOutput> out;
  {
    ScopedPath path(NewTempDir("empty-path"));  // a PATH on which there is no gnuplot
    out = learner::DrawRunCurves(dir);
  }
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(out->rendered);
  EXPECT_THAT(out->warning, HasSubstr("gnuplot is not installed"));
  EXPECT_THAT(out->warning, HasSubstr("gnuplot-nox"));
  EXPECT_THAT(out->warning, HasSubstr(dir + "/curves.tsv"));
  EXPECT_EQ(ReadFile(dir + "/curves.png"), "an older picture");
  EXPECT_THAT(ReadFile(dir + "/curves.gp"), HasSubstr("set terminal pngcairo"));
  EXPECT_THAT(ReadFile(dir + "/curves.tsv"), HasSubstr("# block 0: training, domain agent"));
}

TEST(Curves, FailingHangingOrWrongGnuplotIsAWarning) {
  const std::string dir = WriteRun(MixedSteps(), /*with_summary=*/true);
  const std::string bin = NewTempDir("bin");
  WriteScript(bin + "/failing", "echo 'curves.gp, line 9: unknown terminal type' >&2\nexit 1\n");
  WriteScript(bin + "/hanging", "exec sleep 60\n");
  WriteScript(bin + "/not-png",
              "for a; do case \"$a\" in data=*) eval \"$a\";; esac; done\n"
              "echo 'not a picture' > \"$out\"\n");
  learner::CurvesOptions options;
  options.deadline = absl::Seconds(1);

  options.gnuplot = bin + "/failing";
  absl::StatusOr<learner::CurvesOutput> out = learner::DrawRunCurves(dir, options);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(out->rendered);
  EXPECT_THAT(out->warning, HasSubstr("exited with status 1"));
  EXPECT_THAT(out->warning, HasSubstr("unknown terminal type"));

  options.gnuplot = bin + "/hanging";
  out = learner::DrawRunCurves(dir, options);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(out->rendered);
  EXPECT_THAT(out->warning, HasSubstr("deadline"));

  options.gnuplot = bin + "/not-png";
  out = learner::DrawRunCurves(dir, options);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(out->rendered);
  EXPECT_THAT(out->warning, HasSubstr("wrote no PNG"));
  EXPECT_FALSE(fs::exists(dir + "/curves.png"));
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_FALSE(absl::StrContains(entry.path().filename().string(), ".tmp")) << "left behind: " << entry.path();
  }
}

TEST(Curves, PlotCommand) {
  const std::string dir = WriteRun(MixedSteps(), /*with_summary=*/true);
  auto usage = RunProcess(SpargoBinary(), {"plot"});
  EXPECT_EQ(usage.exit_code, 2) << usage.err;

  const std::string empty = NewTempDir("empty");
  auto missing = RunProcess(SpargoBinary(), {"plot", empty});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr(empty + "/metrics.jsonl: no such file"));

  auto no_gnuplot = RunProcess(SpargoBinary(), {"plot", dir, "--gnuplot", "/nonexistent/gnuplot"});
  EXPECT_EQ(no_gnuplot.exit_code, 1);
  EXPECT_THAT(no_gnuplot.err, HasSubstr("gnuplot-nox"));

  if (!GnuplotOnPath()) GTEST_SKIP() << kNoGnuplot;
  const std::string other = NewTempDir("out") + "/mine.png";
  auto r = RunProcess(SpargoBinary(), {"plot", dir, "--out", other});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, other + "\n");
  EXPECT_EQ(DecodePng(ReadFile(other)).width, 1600u);  // with the held-out panel
  EXPECT_TRUE(fs::exists(other.substr(0, other.size() - 4) + ".tsv"));
  EXPECT_THAT(ReadFile(other.substr(0, other.size() - 4) + ".gp"), HasSubstr("'mine.tsv'"));
}

TEST(Curves, TrainingRunEndsWithCurvesPng) {
  if (!GnuplotOnPath()) GTEST_SKIP() << kNoGnuplot;
  const std::string dir = NewTempDir("train") + "/run";
  auto r = RunProcess(SpargoBinary(),
                      {"train", "--run-dir", dir, "--set", "metrics.port=0", "--set", "learner.warmup.steps=0", "--set",
                       "learner.grpo.steps=2", "--set", "rollout.prompts_per_step=4", "--set", "eval.heldout_prompts=8",
                       "--set", "checkpoint.keep_last=0", "--set", "threads=1"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("curves: " + dir + "/curves.png"));
  const Image image = DecodePng(ReadFile(dir + "/curves.png"));
  EXPECT_EQ(image.width, 1600u);  // the held-out panel: summary.json has the evaluations before and after
  EXPECT_EQ(image.height, 900u);
  const auto blocks = ParseTsv(ReadFile(dir + "/curves.tsv"));
  ASSERT_TRUE(blocks.count("train reasoning")) << ReadFile(dir + "/curves.tsv");
  EXPECT_EQ(blocks.at("train reasoning").size(), 2u);
  ASSERT_TRUE(blocks.count("heldout reasoning"));
  EXPECT_EQ(blocks.at("heldout reasoning").size(), 2u);
}

}  // namespace
}  // namespace spargo
