#include "rewards/plugin_reward.h"

#include <dlfcn.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "re2/re2.h"
#include "rewards/plugin_abi.h"

namespace spargo::rewards {
namespace {

// Owns the dlopen handle and the plugin instance.
class PluginReward : public RewardFunction {
 public:
  PluginReward(void* handle, std::string name, void* instance, spargo_reward_score_fn score,
               spargo_reward_destroy_fn destroy)
      : handle_(handle), name_(std::move(name)), instance_(instance), score_(score), destroy_(destroy) {}
  ~PluginReward() override {
    destroy_(instance_);
    dlclose(handle_);
  }
  std::string name() const override { return name_; }
  bool may_block() const override { return true; }  // user code: no promise about its speed

  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override {
    const size_t n = group.completions.size();
    std::vector<spargo_completion> completions(n);
    for (size_t i = 0; i < n; ++i) {
      completions[i] = {group.completions[i].text.c_str(), group.completions[i].num_tokens,
                        group.completions[i].truncated ? 1 : 0};
    }
    spargo_group g{static_cast<int32_t>(group.domain), group.prompt.c_str(), group.reference_answer.c_str(),
                   group.rubric.c_str(), group.language.c_str(), group.tools_json.c_str(), completions.data(),
                   static_cast<int32_t>(n)};
    std::vector<spargo_sample_score> raw(n);
    std::memset(raw.data(), 0, n * sizeof(spargo_sample_score));
    int32_t rc;
    {
      absl::MutexLock lock(&mu_);
      rc = score_(instance_, &g, raw.data());
    }
    std::vector<SampleScore> out(n);
    for (size_t i = 0; i < n; ++i) {
      raw[i].detail[sizeof(raw[i].detail) - 1] = '\0';
      if (rc != 0) {
        out[i].status = ScoreStatus::kError;
        out[i].detail = absl::StrCat("plugin ", name_, " failed (", rc, "): ", n ? raw[0].detail : "");
        continue;
      }
      out[i].score = raw[i].score;
      out[i].detail = raw[i].detail;
      switch (raw[i].status) {
        case SPARGO_STATUS_OK: out[i].status = ScoreStatus::kOk; break;
        case SPARGO_STATUS_NOT_APPLICABLE: out[i].status = ScoreStatus::kNotApplicable; break;
        case SPARGO_STATUS_PARSE_FAILURE: out[i].status = ScoreStatus::kParseFailure; break;
        case SPARGO_STATUS_TIMEOUT: out[i].status = ScoreStatus::kTimeout; break;
        default:
          out[i].status = ScoreStatus::kError;
          if (raw[i].status != SPARGO_STATUS_ERROR) {
            out[i].detail = absl::StrCat("plugin ", name_, " returned unknown status ", raw[i].status);
          }
      }
    }
    return out;
  }

 private:
  void* handle_;
  std::string name_;
  void* instance_;
  spargo_reward_score_fn score_;
  spargo_reward_destroy_fn destroy_;
  mutable absl::Mutex mu_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RewardFunction>> LoadRewardPlugin(const std::string& directory,
                                                                 const std::string& name,
                                                                 const std::string& config) {
  static const RE2 kName("[A-Za-z0-9_-]+");
  if (!RE2::FullMatch(name, kName)) {
    return absl::InvalidArgumentError(absl::StrCat("plugin name '", name, "': use letters, digits, '_' and '-'"));
  }
  if (directory.empty()) return absl::InvalidArgumentError(absl::StrCat("plugin '", name, "': no directory"));
  const std::string path = absl::StrCat(directory, "/lib", name, ".so");
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return absl::NotFoundError(absl::StrCat("cannot load reward plugin '", path, "': ", why ? why : "unknown"));
  }
  auto fail = [&](absl::Status s) {
    dlclose(handle);
    return s;
  };
  auto find = [&](const char* symbol) { return dlsym(handle, symbol); };
  const char* symbols[] = {"spargo_reward_abi_version", "spargo_reward_name", "spargo_reward_create",
                           "spargo_reward_score", "spargo_reward_destroy"};
  for (const char* s : symbols) {
    if (find(s) == nullptr) {
      return fail(absl::FailedPreconditionError(absl::StrCat("reward plugin '", path, "' does not export ", s)));
    }
  }
  const uint32_t version = reinterpret_cast<spargo_reward_abi_version_fn>(find(symbols[0]))();
  if (version != SPARGO_REWARD_ABI_VERSION) {
    return fail(absl::FailedPreconditionError(absl::StrCat("reward plugin '", path, "' was built for ABI version ",
                                                           version, "; this spargo speaks version ",
                                                           SPARGO_REWARD_ABI_VERSION)));
  }
  char error[512] = {0};
  void* instance =
      reinterpret_cast<spargo_reward_create_fn>(find(symbols[2]))(config.c_str(), error, sizeof(error) - 1);
  if (instance == nullptr) {
    return fail(absl::InvalidArgumentError(absl::StrCat("reward plugin '", path, "' refused its config: ", error)));
  }
  const char* plugin_name = reinterpret_cast<spargo_reward_name_fn>(find(symbols[1]))();
  return std::unique_ptr<RewardFunction>(new PluginReward(
      handle, plugin_name != nullptr ? plugin_name : name, instance,
      reinterpret_cast<spargo_reward_score_fn>(find(symbols[3])),
      reinterpret_cast<spargo_reward_destroy_fn>(find(symbols[4]))));
}

}  // namespace spargo::rewards
