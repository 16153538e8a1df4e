// The Kubernetes manifests (deploy/k8s: the kustomize base and the example overlay) agree with each other and with
// the binary they run. The YAML is read with python3-yaml (tests/yaml_to_json.py); the checks:
//  - every file a kustomization names exists; the overlay's generators, replicas, images and patches name what the
//    base defines;
//  - each Deployment's selector matches its pod labels, and each Service selects those pods; the rollout Service is
//    headless and is what rollout.workers names; services.reward_address names the reward Service and its port;
//  - each container's command is a `spargo` command and each of its flags is one `spargo <command> --help` lists;
//    --listen, the container's grpc port, the probes and the Service's port agree; Prometheus's annotations name the
//    container's metrics port, which the config (with the container's --set overrides) serves on all interfaces;
//  - the config each container reads is the ConfigMap's file at the mounted path, and it loads and validates with
//    the real config loader (with the container's --set overrides); its token and TLS files lie in the mounted
//    Secrets under keys the overlay's secret generators create; nothing listens beyond loopback without the token;
//  - the rollout workers and the learner request a GPU and run on CUDA.
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/listen_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/experiment_config.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace spargo {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::HasSubstr;

std::string K8sDir() { return std::string(SPARGO_SOURCE_DIR) + "/deploy/k8s"; }

// Every YAML file under deploy/k8s, by path relative to it: its documents.
std::map<std::string, json> LoadYaml() {
  std::vector<std::string> args = {std::string(SPARGO_SOURCE_DIR) + "/tests/yaml_to_json.py"};
  for (const auto& entry : fs::recursive_directory_iterator(K8sDir())) {
    if (entry.path().extension() == ".yaml") args.push_back(entry.path().string());
  }
  testing::ProcessResult r = testing::RunProcess("/usr/bin/python3", args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, json> out;
  if (r.exit_code != 0) return out;
  const json all = json::parse(r.out);
  for (const auto& [path, docs] : all.items()) out[fs::relative(path, K8sDir()).string()] = docs;
  return out;
}

// The `--name` flags that `spargo <command> --help` lists (asked once per command).
std::set<std::string> HelpFlags(const std::string& command) {
  static std::map<std::string, std::set<std::string>>* cache = new std::map<std::string, std::set<std::string>>();
  if (auto it = cache->find(command); it != cache->end()) return it->second;
  testing::ProcessResult r = testing::RunProcess(testing::SpargoBinary(), {command, "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> flags;
  for (absl::string_view line : absl::StrSplit(r.out, '\n')) {
    line = absl::StripLeadingAsciiWhitespace(line);
    if (!absl::StartsWith(line, "--")) continue;
    flags.insert(std::string(line.substr(0, line.find(' '))));
  }
  (*cache)[command] = flags;
  return flags;
}

struct Manifests {
  std::map<std::string, json> files;
  std::map<std::string, json> objects;  // "Kind/name" -> object, the base's resources
  json base, overlay;                   // the kustomizations
};

Manifests Load() {
  Manifests m;
  m.files = LoadYaml();
  m.base = m.files["base/kustomization.yaml"].at(0);
  m.overlay = m.files["overlays/example/kustomization.yaml"].at(0);
  for (const json& resource : m.base["resources"]) {
    const std::string path = "base/" + resource.get<std::string>();
    EXPECT_TRUE(m.files.count(path)) << path;
    for (const json& doc : m.files[path]) {
      m.objects[doc["kind"].get<std::string>() + "/" + doc["metadata"]["name"].get<std::string>()] = doc;
    }
  }
  return m;
}

bool Selects(const json& selector, const json& labels) {
  if (!selector.is_object() || selector.empty()) return false;
  for (auto& [k, v] : selector.items()) {
    if (!labels.contains(k) || labels[k] != v) return false;
  }
  return true;
}

// One container as the binary sees it: the command, its flags, its --set overrides.
struct Invocation {
  std::string command;
  std::map<std::string, std::string> flags;  // "--listen" -> "0.0.0.0:50151"
  std::vector<std::string> overrides;
};

Invocation Parse(const json& args) {
  Invocation inv;
  inv.command = args.at(0).get<std::string>();
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string arg = args[i].get<std::string>();
    EXPECT_TRUE(absl::StartsWith(arg, "--") && arg.find('=') != std::string::npos)
        << "write flags as --name=value: " << arg;
    const std::string name = arg.substr(0, arg.find('=')), value = arg.substr(arg.find('=') + 1);
    if (name == "--set") {
      inv.overrides.push_back(value);
    } else {
      inv.flags[name] = value;
    }
  }
  return inv;
}

// The volume behind the mount whose path is a prefix of `path`, and the file's key within it.
std::pair<json, std::string> VolumeFor(const json& pod, const json& container, const std::string& path) {
  for (const json& mount : container["volumeMounts"]) {
    const std::string dir = mount["mountPath"].get<std::string>() + "/";
    if (!absl::StartsWith(path, dir)) continue;
    for (const json& volume : pod["volumes"]) {
      if (volume["name"] == mount["name"]) return {volume, path.substr(dir.size())};
    }
  }
  return {json(), ""};
}

std::vector<std::string> GeneratorFiles(const json& kustomization, const char* kind, const std::string& name) {
  std::vector<std::string> files;
  for (const json& g : kustomization.value(kind, json::array())) {
    if (g["name"] == name) {
      for (const json& f : g["files"]) files.push_back(f.get<std::string>());
    }
  }
  return files;
}

bool Contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

int PortNamed(const json& container, const std::string& name) {
  for (const json& p : container.value("ports", json::array())) {
    if (p["name"] == name) return p["containerPort"].get<int>();
  }
  return -1;
}

// Checks one workload's pod against the binary and the config `config_file` (a ConfigMap file of `generators`).
void CheckPod(const Manifests& m, const std::string& id, const json& pod, const json& pod_meta,
              const std::string& config_file, const std::vector<std::string>& secret_keys_token,
              const std::vector<std::string>& secret_keys_tls) {
  SCOPED_TRACE(id);
  std::set<std::string> volumes;
  for (const json& v : pod["volumes"]) volumes.insert(v["name"].get<std::string>());
  ASSERT_EQ(pod["containers"].size(), 1u);
  const json& c = pod["containers"][0];
  for (const json& mount : c["volumeMounts"]) {
    EXPECT_TRUE(volumes.count(mount["name"].get<std::string>())) << mount.dump();
  }

  const Invocation inv = Parse(c["args"]);
  const std::set<std::string> help = HelpFlags(inv.command);
  for (const auto& [flag, value] : inv.flags) EXPECT_TRUE(help.count(flag)) << "spargo " << inv.command << " " << flag;

  // The config: the ConfigMap's file where it is mounted, loaded and validated with the container's overrides.
  ASSERT_TRUE(inv.flags.count("--config"));
  const auto [config_volume, config_key] = VolumeFor(pod, c, inv.flags.at("--config"));
  ASSERT_TRUE(config_volume.contains("configMap")) << inv.flags.at("--config");
  EXPECT_EQ(config_volume["configMap"]["name"], "spargo-config");
  EXPECT_TRUE(Contains(GeneratorFiles(m.base, "configMapGenerator", "spargo-config"), config_key));
  absl::StatusOr<config::ExperimentConfig> cfg = learner::LoadExperimentConfig(config_file, inv.overrides);
  ASSERT_TRUE(cfg.ok()) << config_file << ": " << cfg.status();

  // Its token and TLS files are keys of the mounted Secrets.
  const std::vector<std::pair<std::string, std::string>> secret_files = {
      {cfg->services().token_file(), "spargo-token"}, {cfg->services().tls_cert_file(), "spargo-tls"},
      {cfg->services().tls_key_file(), "spargo-tls"}, {cfg->services().tls_ca_file(), "spargo-tls"}};
  ASSERT_FALSE(cfg->services().token_file().empty()) << "every service requires the bearer token";
  for (const auto& [path, secret] : secret_files) {
    if (path.empty()) continue;
    const auto [volume, key] = VolumeFor(pod, c, path);
    ASSERT_TRUE(volume.contains("secret")) << path;
    EXPECT_EQ(volume["secret"]["secretName"], secret) << path;
    EXPECT_TRUE(Contains(secret == "spargo-token" ? secret_keys_token : secret_keys_tls, key)) << path;
  }

  // Metrics: annotated for Prometheus, on the container's metrics port, served on all interfaces.
  const json& annotations = pod_meta["annotations"];
  EXPECT_EQ(annotations["prometheus.io/scrape"], "true");
  EXPECT_EQ(annotations["prometheus.io/path"], "/metrics");
  EXPECT_EQ(annotations["prometheus.io/port"], std::to_string(cfg->metrics().port()));
  EXPECT_EQ(PortNamed(c, "metrics"), cfg->metrics().port());
  EXPECT_EQ(cfg->metrics().host(), "0.0.0.0");

  if (inv.command == "rollout" || inv.command == "train") {
    EXPECT_EQ(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    if (inv.command == "rollout") {
      EXPECT_EQ(inv.flags.count("--device") ? inv.flags.at("--device") : "", "cuda");
    } else {
      EXPECT_EQ(cfg->learner().device(), "cuda");
    }
  }
  if (inv.command == "train") return;

  // A service: --listen, the grpc port, the probes and the Service agree, and it requires the token.
  ASSERT_TRUE(inv.flags.count("--listen"));
  const std::string listen = inv.flags.at("--listen");
  EXPECT_TRUE(CheckListenExposure(inv.command, listen, cfg->services(), false).ok());
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(listen.substr(listen.rfind(':') + 1), &port)) << listen;
  EXPECT_EQ(PortNamed(c, "grpc"), port);
  EXPECT_EQ(c["readinessProbe"]["grpc"]["port"], port);
  EXPECT_EQ(c["livenessProbe"]["grpc"]["port"], port);
  const std::string service_id = "Service/" + id.substr(id.find('/') + 1);
  ASSERT_TRUE(m.objects.count(service_id));
  const json& service = m.objects.at(service_id);
  EXPECT_TRUE(Selects(service["spec"]["selector"], pod_meta["labels"]));
  EXPECT_EQ(service["spec"]["ports"][0]["port"], port);
  EXPECT_EQ(service["spec"]["ports"][0]["targetPort"], "grpc");
  const std::string name_and_port = service["metadata"]["name"].get<std::string>() + ":" + std::to_string(port);
  if (inv.command == "rollout") {
    EXPECT_EQ(service["spec"]["clusterIP"], "None") << "the learner resolves every worker through a headless Service";
    ASSERT_EQ(cfg->rollout().workers_size(), 1);
    EXPECT_EQ(cfg->rollout().workers(0), name_and_port);
  } else {
    EXPECT_EQ(cfg->services().reward_address(), name_and_port);
  }
}

void CheckAll(const Manifests& m, const std::string& config_file) {
  const std::vector<std::string> token_keys = GeneratorFiles(m.overlay, "secretGenerator", "spargo-token");
  const std::vector<std::string> tls_keys = GeneratorFiles(m.overlay, "secretGenerator", "spargo-tls");
  std::set<std::string> commands;
  for (const auto& [id, object] : m.objects) {
    if (object["kind"] != "Deployment" && object["kind"] != "Job") continue;
    const json& tmpl = object["spec"]["template"];
    if (object["kind"] == "Deployment") {
      EXPECT_TRUE(Selects(object["spec"]["selector"]["matchLabels"], tmpl["metadata"]["labels"])) << id;
    }
    CheckPod(m, id, tmpl["spec"], tmpl["metadata"], config_file, token_keys, tls_keys);
    commands.insert(tmpl["spec"]["containers"][0]["args"][0].get<std::string>());
  }
  EXPECT_EQ(commands, (std::set<std::string>{"reward", "rollout", "train"}));
}

TEST(K8sManifests, BaseAgreesWithTheBinaryAndItsConfig) {
  const Manifests m = Load();
  ASSERT_FALSE(m.objects.empty());
  for (const std::string& file : GeneratorFiles(m.base, "configMapGenerator", "spargo-config")) {
    EXPECT_TRUE(fs::exists(K8sDir() + "/base/" + file)) << file;
  }
  EXPECT_TRUE(m.objects.count("PersistentVolumeClaim/spargo-runs"));
  CheckAll(m, K8sDir() + "/base/config.txtpb");
}

TEST(K8sManifests, ExampleOverlayNamesWhatTheBaseDefines) {
  const Manifests m = Load();
  EXPECT_THAT(m.overlay["resources"].dump(), HasSubstr("../../base"));
  for (const json& r : m.overlay["replicas"]) {
    EXPECT_TRUE(m.objects.count("Deployment/" + r["name"].get<std::string>()));
  }
  std::set<std::string> images;
  for (const auto& [id, o] : m.objects) {
    if (o["spec"].contains("template")) {
      images.insert(o["spec"]["template"]["spec"]["containers"][0]["image"].get<std::string>());
    }
  }
  for (const json& i : m.overlay["images"]) EXPECT_TRUE(images.count(i["name"].get<std::string>())) << i.dump();
  // The replaced ConfigMap: same name and key as the base's; with it, the pods still agree (TLS files included).
  EXPECT_EQ(GeneratorFiles(m.overlay, "configMapGenerator", "spargo-config"),
            GeneratorFiles(m.base, "configMapGenerator", "spargo-config"));
  const std::string overlay_config = K8sDir() + "/overlays/example/config.txtpb";
  absl::StatusOr<config::ExperimentConfig> cfg = learner::LoadExperimentConfig(overlay_config, {});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_FALSE(cfg->services().tls_cert_file().empty());
  CheckAll(m, overlay_config);
  // Patches: they target Deployments of the base, and their probes ask `spargo health` for the grpc port.
  const std::set<std::string> health_flags = HelpFlags("health");
  for (const json& patch : m.overlay["patches"]) {
    const std::string target = "Deployment/" + patch["target"]["name"].get<std::string>();
    ASSERT_TRUE(m.objects.count(target)) << target;
    const json& container = m.objects.at(target)["spec"]["template"]["spec"]["containers"][0];
    const json& ops = m.files.at("overlays/example/" + patch["path"].get<std::string>()).at(0);
    ASSERT_EQ(ops.size(), 2u);
    for (const json& op : ops) {
      const json& command = op["value"]["exec"]["command"];
      EXPECT_EQ(command[0], "spargo");
      EXPECT_EQ(command[1], "health");
      for (size_t i = 2; i + 1 < command.size(); ++i) {
        const std::string flag = command[i].get<std::string>();
        EXPECT_TRUE(health_flags.count(flag.substr(0, flag.find('=')))) << flag;
      }
      EXPECT_EQ(command.back(), "127.0.0.1:" + std::to_string(PortNamed(container, "grpc")));
    }
  }
}

}  // namespace
}  // namespace spargo
