// Prometheus text exposition: rendered text parsed back by an independent line parser and checked against the
// format rules; the HTTP endpoint served for real on loopback.
#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "common/metrics_registry.h"
#include "common/metrics_server.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/test_util.h"

namespace spargo {
namespace {

struct ParsedFamily {
  std::string help, type;
  std::map<std::string, double> samples;  // label text -> value
};

// Parses exposition text, failing the test on any rule violation: HELP then TYPE once per family before its
// samples; valid metric and label names; counters end in _total; values are numbers, NaN or +-Inf.
std::map<std::string, ParsedFamily> ParseExposition(const std::string& text) {
  static const std::regex kHelp(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*))");
  static const std::regex kType(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  static const std::regex kSample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? (\S+))");
  std::map<std::string, ParsedFamily> out;
  std::string current;
  std::istringstream in(text);
  std::string line;
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "exposition must end with a newline";
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      EXPECT_EQ(out.count(m[1]), 0u) << "family declared twice: " << m[1];
      current = m[1];
      out[current].help = m[2];
    } else if (std::regex_match(line, m, kType)) {
      EXPECT_EQ(m[1], current) << "TYPE must follow HELP of the same family";
      EXPECT_TRUE(out[current].type.empty());
      out[current].type = m[2];
      if (m[2] == "counter") {
        EXPECT_TRUE(absl::EndsWith(std::string(m[1]), "_total")) << m[1];
      }
    } else if (std::regex_match(line, m, kSample)) {
      EXPECT_EQ(m[1], current) << "sample outside its family: " << line;
      EXPECT_FALSE(out[current].type.empty()) << "sample before TYPE: " << line;
      std::string v = m[4];
      double value;
      if (v == "NaN") value = std::nan("");
      else if (v == "+Inf") value = INFINITY;
      else if (v == "-Inf") value = -INFINITY;
      else {
        size_t used = 0;
        value = std::stod(v, &used);
        EXPECT_EQ(used, v.size()) << "bad value " << v;
      }
      EXPECT_EQ(out[current].samples.count(m[3]), 0u) << "duplicate sample " << line;
      out[current].samples[m[3]] = value;
    } else {
      ADD_FAILURE() << "line is not valid exposition format: '" << line << "'";
    }
  }
  return out;
}

TEST(MetricsRegistry, RendersValidExpositionThatParsesBack) {
  MetricsRegistry r;
  ASSERT_TRUE(r.Declare("spargo_reward_mean", MetricsRegistry::Type::kGauge, "Mean reward.").ok());
  ASSERT_TRUE(r.Declare("spargo_phase_seconds_total", MetricsRegistry::Type::kCounter, "Time\nper phase \\.").ok());
  ASSERT_TRUE(r.Declare("spargo_kl", MetricsRegistry::Type::kGauge, "KL.").ok());
  ASSERT_TRUE(r.SetGauge("spargo_reward_mean", 0.125).ok());
  ASSERT_TRUE(r.AddCounter("spargo_phase_seconds_total", 1.5, {{"phase", "rollout"}}).ok());
  ASSERT_TRUE(r.AddCounter("spargo_phase_seconds_total", 2.25, {{"phase", "rollout"}}).ok());
  ASSERT_TRUE(r.AddCounter("spargo_phase_seconds_total", 0.1, {{"phase", "a \"quoted\"\\ name\n"}}).ok());
  ASSERT_TRUE(r.SetGauge("spargo_kl", std::nan("")).ok());
  const std::string text = r.RenderText();
  auto families = ParseExposition(text);
  ASSERT_EQ(families.size(), 3u);
  EXPECT_EQ(families["spargo_reward_mean"].type, "gauge");
  EXPECT_EQ(families["spargo_reward_mean"].samples[""], 0.125);
  EXPECT_EQ(families["spargo_phase_seconds_total"].type, "counter");
  EXPECT_EQ(families["spargo_phase_seconds_total"].samples["phase=\"rollout\""], 3.75);
  EXPECT_EQ(families["spargo_phase_seconds_total"].samples.count("phase=\"a \\\"quoted\\\"\\\\ name\\n\""), 1u);
  EXPECT_EQ(families["spargo_phase_seconds_total"].help, "Time\\nper phase \\\\.");
  EXPECT_TRUE(std::isnan(families["spargo_kl"].samples[""]));
}

TEST(MetricsRegistry, RefusesMalformedNamesAndDecreasingCounters) {
  MetricsRegistry r;
  EXPECT_FALSE(r.Declare("2bad", MetricsRegistry::Type::kGauge, "").ok());
  EXPECT_FALSE(r.Declare("bad-name", MetricsRegistry::Type::kGauge, "").ok());
  EXPECT_FALSE(r.Declare("spargo_steps", MetricsRegistry::Type::kCounter, "").ok());  // no _total
  ASSERT_TRUE(r.Declare("spargo_steps_total", MetricsRegistry::Type::kCounter, "").ok());
  EXPECT_FALSE(r.AddCounter("spargo_steps_total", -1).ok());
  EXPECT_FALSE(r.SetGauge("spargo_steps_total", 1).ok());  // wrong type
  EXPECT_FALSE(r.SetGauge("undeclared", 1).ok());
  EXPECT_FALSE(r.AddCounter("spargo_steps_total", 1, {{"bad-label", "x"}}).ok());
  EXPECT_FALSE(r.Declare("spargo_steps_total", MetricsRegistry::Type::kGauge, "").ok());
}

TEST(MetricsRegistry, FormatsValuesForRoundTrip) {
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(1e-300), "1e-300");
  EXPECT_EQ(std::stod(FormatMetricValue(1.0 / 3.0)), 1.0 / 3.0);
  EXPECT_EQ(FormatMetricValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatMetricValue(-INFINITY), "-Inf");
}

TEST(MetricsServer, ServesTheRegistryOverHttpOnLoopback) {
  MetricsRegistry r;
  ASSERT_TRUE(r.Declare("spargo_grpo_step", MetricsRegistry::Type::kGauge, "Step.").ok());
  ASSERT_TRUE(r.SetGauge("spargo_grpo_step", 7).ok());
  MetricsServer server(&r);
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  ASSERT_GT(server.port(), 0);
  httplib::Client client("127.0.0.1", server.port());
  client.set_connection_timeout(5, 0);
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  auto families = ParseExposition(res->body);
  EXPECT_EQ(families["spargo_grpo_step"].samples[""], 7);
  EXPECT_EQ(client.Get("/other")->status, 404);

  // A second server on the same port fails with a clear status instead of crashing.
  MetricsServer second(&r);
  absl::Status s = second.Start("127.0.0.1", server.port());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(s.message()).find("metrics.port"), std::string::npos);
  server.Stop();
}

}  // namespace

// Exposed for the end-to-end test.
std::map<std::string, double> ParseExpositionGauges(const std::string& text) {
  std::map<std::string, double> out;
  for (auto& [name, family] : ParseExposition(text)) {
    for (auto& [labels, value] : family.samples) out[labels.empty() ? name : name + "{" + labels + "}"] = value;
  }
  return out;
}

}  // namespace spargo
