// GrpcRolloutClient (contract in the header). How it works:
//  - Routes (Generate): one gRPC channel per rollout.workers entry, for the current policy version: target
//    "dns:///host:port" (or the entry's own "ipv4:..." list), round_robin load balancing, and gRPC's client-side
//    health checking of the version's grpc.health.v1 name (rollout/version_health.h). gRPC resolves the name,
//    connects to every address, and picks only workers whose health says they serve that version. A route is
//    made again when the version changes (which also resolves the name again). The channel is READY when at least
//    one of its workers serves the version.
//  - Workers (weights): one per resolved address, each with its own channel (short reconnect backoff, so that a
//    restarted worker is seen within seconds) and a state guarded by Impl::mu_: healthy, the version it serves, a
//    backoff (0.5 s doubling to 10 s) after a failure. gRPC C++ does not expose the addresses its resolver found
//    nor a pick of one backend, so the weight broadcast resolves names itself (getaddrinfo) to reach every worker.
//  - Generate runs on threads it owns and joins before it returns: callers (one task per call of
//    groups_per_request groups, retried in place on another route or backend) and a maintainer that resolves names
//    when due and hands workers needing a Health probe (and then weights) to a small pool. Nothing runs between
//    calls.
//  - The driver's thread waits until every call is answered or one error ends the Generate; the error cancels
//    the calls in flight.
#include "rollout/grpc_rollout_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <map>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "rollout/sample_proto.h"
#include "rollout/version_health.h"
#include "rollout/weight_stream.h"
#include "spargo/rollout.grpc.pb.h"

namespace spargo::rollout {
namespace {

constexpr absl::Duration kFirstBackoff = absl::Milliseconds(500);  // a failed worker's first time aside
constexpr absl::Duration kMaxBackoff = absl::Seconds(10);
constexpr absl::Duration kResolveEvery = absl::Seconds(30);  // names are resolved again this often
constexpr absl::Duration kResolveRetry = absl::Seconds(1);   // ... or this often while no worker is usable
constexpr absl::Duration kHealthDeadline = absl::Seconds(5);  // at most (endpoints.deadline_seconds when shorter)
constexpr absl::Duration kWeightDeadlineFloor = absl::Seconds(60);
constexpr absl::Duration kMaintenanceTick = absl::Milliseconds(200);
constexpr absl::Duration kRouteTick = absl::Milliseconds(50);  // how often a caller looks for a READY route
constexpr int kCallsPerWorker = 2;  // calls in flight per worker: one generating, one queued behind it
constexpr int kMaxCallThreads = 64;
constexpr int kMaxWeightThreads = 16;
// gRPC's reconnect backoff grows to 120 s by default; a worker that restarts is noticed within kMaxReconnectMs.
constexpr int kMinReconnectMs = 500;
constexpr int kMaxReconnectMs = 5000;

absl::Status FromGrpc(const grpc::Status& s, absl::string_view method) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(method, ": ", s.error_message()));
}

bool IsAuthError(absl::StatusCode code) {
  return code == absl::StatusCode::kUnauthenticated || code == absl::StatusCode::kPermissionDenied;
}

// Errors a retry on another worker cannot help.
bool IsFinal(absl::StatusCode code) { return code == absl::StatusCode::kInvalidArgument || IsAuthError(code); }

// A rollout.workers entry: a gRPC target used as it is ("ipv4:...", "ipv6:...", "unix:..."; a comma-separated
// list of addresses after the scheme stands for one worker per address), or a host and port to resolve into one
// worker per address.
struct Entry {
  std::string text;
  std::string host;  // empty: `text` is the target
  int port = 0;

  // The target of the entry's load-balanced channel.
  std::string BalancedTarget() const {
    if (host.empty()) return text;
    const bool ipv6 = host.find(':') != std::string::npos;
    return absl::StrCat("dns:///", ipv6 ? "[" : "", host, ipv6 ? "]" : "", ":", port);
  }
};

absl::StatusOr<Entry> ParseEntry(const std::string& text, size_t index) {
  Entry e{text, "", 0};
  for (const char* scheme : {"ipv4:", "ipv6:", "unix:", "unix-abstract:"}) {
    if (absl::StartsWith(text, scheme)) return e;
  }
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("rollout.workers[", index, "] = \"", text, "\": ", why));
  };
  std::string port;
  if (absl::StartsWith(text, "[")) {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("expected [address]:port");
    }
    e.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) return bad("expected host:port");
    e.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (e.host.find(':') != std::string::npos) return bad("an IPv6 address is written [address]:port");
  }
  if (e.host.empty()) return bad("no host");
  if (!absl::SimpleAtoi(port, &e.port) || e.port < 1 || e.port > 65535) return bad("the port must be in 1..65535");
  return e;
}

// The gRPC targets an entry stands for: "ipv4:10.0.0.7:50151" / "ipv6:[fd00::7]:50151" for each address its
// host resolves to (IPv4 and IPv6), or the entry itself. UNAVAILABLE when the name does not resolve.
absl::StatusOr<std::vector<std::string>> ResolveEntry(const Entry& e) {
  if (e.host.empty()) {  // "ipv4:a:1,b:2" is "ipv4:a:1" and "ipv4:b:2"
    const size_t colon = e.text.find(':');
    std::vector<std::string> targets;
    for (absl::string_view address : absl::StrSplit(e.text.substr(colon + 1), ',', absl::SkipEmpty())) {
      targets.push_back(absl::StrCat(e.text.substr(0, colon + 1), address));
    }
    return targets;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(e.host.c_str(), std::to_string(e.port).c_str(), &hints, &found);
  if (rc != 0) return absl::UnavailableError(absl::StrCat("'", e.host, "' does not resolve: ", ::gai_strerror(rc)));
  std::vector<std::string> targets;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {0};
    std::string target;
    if (a->ai_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr, text, sizeof(text));
      target = absl::StrCat("ipv4:", text, ":", e.port);
    } else if (a->ai_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr, text, sizeof(text));
      target = absl::StrCat("ipv6:[", text, "]:", e.port);
    } else {
      continue;
    }
    if (std::find(targets.begin(), targets.end(), target) == targets.end()) targets.push_back(target);
  }
  ::freeaddrinfo(found);
  if (targets.empty()) return absl::UnavailableError(absl::StrCat("'", e.host, "' has no IPv4 or IPv6 address"));
  return targets;
}

int64_t TensorBytes(const model::TensorMap& tensors) {
  int64_t bytes = 0;
  for (const auto& [name, t] : tensors) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}


absl::Status CheckPromptIds(const std::vector<GroupRequest>& groups, int64_t vocab_size) {
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t i = 0; i < groups[g].prompt_ids.size(); ++i) {
      const int64_t id = groups[g].prompt_ids[i];
      if (id < 0 || id >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("groups[", g, "] ('", groups[g].prompt_id, "').prompt_ids[", i,
                                                       "] = ", id, ": outside the vocabulary of ", vocab_size));
      }
    }
  }
  return absl::OkStatus();
}

// One resolved address. The fields below `stub` are guarded by GrpcRolloutClient::Impl::mu_.
struct Worker {
  std::string entry;   // the rollout.workers entry it came from
  std::string target;  // "ipv4:10.0.0.7:50151"
  std::unique_ptr<RolloutService::Stub> stub;
  bool healthy = false;    // answered its last Health, Generate or weight update
  bool failing = false;    // set aside after a failure (logged once until it answers again)
  bool check_due = true;   // Health is due (new, or a new Generate began): it may need the current weights
  bool busy = false;       // a Health probe or weight update runs
  bool gone = false;       // its name no longer resolves to it
  uint64_t version = 0;    // the policy version it serves, when healthy
  bool version_logged = false;
  std::string note;        // why it does not serve, for messages
  absl::Time retry_at = absl::InfinitePast();
  absl::Duration backoff = absl::ZeroDuration();
};

// The load-balanced channel of one rollout.workers entry for one policy version. `in_flight` is guarded by
// GrpcRolloutClient::Impl::mu_.
struct Route {
  const Entry* entry = nullptr;
  uint64_t version = 0;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<RolloutService::Stub> stub;
  int in_flight = 0;
};

}  // namespace

class GrpcRolloutClient::Impl {
 public:
  Impl(const GrpcRolloutOptions& options, std::vector<Entry> entries,
       std::shared_ptr<grpc::ChannelCredentials> credentials, std::string token, uint64_t initial_version)
      : options_(options),
        entries_(std::move(entries)),
        credentials_(std::move(credentials)),
        token_(std::move(token)),
        version_(initial_version) {}

  absl::StatusOr<std::vector<SampleGroup>> Generate(const std::vector<GroupRequest>& groups,
                                                    const SamplingOptions& options);
  absl::Status UpdateWeights(const model::TensorMap& weights, uint64_t version);

  uint64_t policy_version() const {
    absl::MutexLock lock(&mu_);
    return version_;
  }

  RolloutClientStats stats() const {
    absl::MutexLock lock(&mu_);
    RolloutClientStats s = stats_;
    s.healthy_workers = 0;
    for (const auto& [target, w] : workers_) s.healthy_workers += w->healthy && w->version == version_ ? 1 : 0;
    return s;
  }

  std::string Describe() const {
    std::vector<std::string> texts;
    for (const Entry& e : entries_) texts.push_back(e.text);
    absl::MutexLock lock(&mu_);
    return absl::StrCat(workers_.empty() ? "" : absl::StrCat(workers_.size(), " "), "rollout workers (",
                        absl::StrJoin(texts, ", "), ")");
  }

 private:
  // One Generate's shared state (guarded by mu_).
  struct Run {
    const std::vector<GroupRequest>* groups = nullptr;
    GenerateRequest base;  // sampling parameters, version, replay flags; no groups
    int group_size = 1;
    uint64_t version = 0;
    std::vector<SampleGroup> results;
    std::vector<bool> accepted;  // the ledger: a group's answer is taken once
    int calls_left = 0;
    absl::Status failure;        // the first error that ends the Generate
    bool done = false;           // the calls are over; maintenance stops
    std::set<grpc::ClientContext*> active;
  };

  // Dispatch.
  void RunCall(Run* run, const std::vector<int>& members);
  absl::StatusOr<std::vector<SampleGroup>> CheckAnswer(const Run& run, const std::vector<int>& members,
                                                       const GenerateResponse& response) const;
  void MakeRoutes() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // for version_, unless they exist
  std::shared_ptr<Route> AwaitRoute(Run* run, const std::set<const Route*>& tried)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Usable(const Worker& w) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Pending() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // a worker's probe or weight update is under way
  void FailRun(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NoWorkerMessage() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Workers: resolution, health, weights.
  void MaybeResolve();
  void Maintain(Run* run, ThreadPool* pool);
  bool MaintenanceDue(const Worker& w, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Probe(const std::shared_ptr<Worker>& w);
  absl::Status Push(const std::shared_ptr<Worker>& w, const model::TensorMap& weights, uint64_t version);
  void SetAside(Worker* w, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RetryLater(Worker* w, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // doubles the backoff
  void Recovered(Worker* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  grpc::ChannelArguments ChannelArgs() const;
  std::shared_ptr<grpc::Channel> NewChannel(const Entry& entry, const std::string& target) const;

  const GrpcRolloutOptions options_;
  const std::vector<Entry> entries_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const std::string token_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);  // by target
  std::vector<std::shared_ptr<Route>> routes_ ABSL_GUARDED_BY(mu_);  // one per entry, for one version
  std::set<std::string> unresolved_ ABSL_GUARDED_BY(mu_);  // entries whose failure to resolve was logged
  absl::Time last_resolve_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool resolving_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t version_ ABSL_GUARDED_BY(mu_);
  model::TensorMap weights_ ABSL_GUARDED_BY(mu_);  // references to the caller's tensors, for returning workers
  bool has_weights_ ABSL_GUARDED_BY(mu_) = false;
  Run* run_ ABSL_GUARDED_BY(mu_) = nullptr;  // the Generate in progress
  RolloutClientStats stats_ ABSL_GUARDED_BY(mu_);
};

// ---- Generate ----

absl::StatusOr<std::vector<SampleGroup>> GrpcRolloutClient::Impl::Generate(const std::vector<GroupRequest>& groups,
                                                                           const SamplingOptions& options) {
  {
    absl::MutexLock lock(&mu_);
    if (options.policy_version != version_) {
      return absl::FailedPreconditionError(absl::StrCat("policy_version ", options.policy_version,
                                                        " requested; the rollout workers were given ", version_));
    }
  }
  if (groups.empty()) return std::vector<SampleGroup>();
  Run run;
  SPARGO_ASSIGN_OR_RETURN(run.base, GenerateRequestFor(options, options_.vocab_size));
  SPARGO_RETURN_IF_ERROR(CheckPromptIds(groups, options_.vocab_size));
  run.groups = &groups;
  run.group_size = options.group_size;
  run.version = options.policy_version;
  run.results.resize(groups.size());
  run.accepted.assign(groups.size(), false);
  std::vector<std::vector<int>> calls;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (g % options_.groups_per_request == 0) calls.emplace_back();
    calls.back().push_back(static_cast<int>(g));
  }
  run.calls_left = static_cast<int>(calls.size());

  MaybeResolve();
  int threads = 0, workers = 1;
  {
    absl::MutexLock lock(&mu_);
    run_ = &run;
    MakeRoutes();
    for (auto& [target, w] : workers_) w->check_due = true;  // a worker may have restarted since the last step
    workers = static_cast<int>(std::max(workers_.size(), entries_.size()));
    threads = std::min({static_cast<int>(calls.size()), kCallsPerWorker * workers, kMaxCallThreads});
  }
  ThreadPool maintenance(std::min(workers, kMaxWeightThreads));  // probes and weight updates
  std::thread maintainer([this, &run, &maintenance] { Maintain(&run, &maintenance); });
  {
    ThreadPool callers(threads);
    for (const std::vector<int>& members : calls) callers.Schedule([this, &run, &members] { RunCall(&run, members); });
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Run* r) { return r->calls_left == 0 || !r->failure.ok(); }, &run));
  }  // the callers are joined: no call is in flight
  {
    absl::MutexLock lock(&mu_);
    run.done = true;
  }
  maintainer.join();
  {
    absl::MutexLock lock(&mu_);
    run_ = nullptr;
    if (!run.failure.ok()) return run.failure;
  }
  return std::move(run.results);
}

void GrpcRolloutClient::Impl::RunCall(Run* run, const std::vector<int>& members) {
  GenerateRequest request = run->base;
  for (int g : members) GroupRequestToProto((*run->groups)[g], run->group_size, request.add_groups());
  std::set<const Route*> tried;
  for (int attempt = 1;; ++attempt) {
    std::shared_ptr<Route> route;
    grpc::ClientContext context;
    {
      absl::MutexLock lock(&mu_);
      route = AwaitRoute(run, tried);
      if (route == nullptr) break;  // the Generate failed
      ++route->in_flight;
      PrepareClientContext(absl::Now() + absl::Seconds(options_.generate_deadline_seconds), token_, &context);
      run->active.insert(&context);
    }
    GenerateResponse response;
    const grpc::Status answered = route->stub->Generate(&context, request, &response);
    // The backend gRPC picked: "ipv4:10.0.0.7:50151", the target of its Worker.
    const std::string peer = context.peer();
    absl::StatusOr<std::vector<SampleGroup>> checked =
        answered.ok() ? CheckAnswer(*run, members, response)
                      : absl::StatusOr<std::vector<SampleGroup>>(FromGrpc(answered, "Generate"));
    absl::MutexLock lock(&mu_);
    run->active.erase(&context);
    --route->in_flight;
    if (!run->failure.ok()) break;  // cancelled: another call ended the Generate
    const auto worker = workers_.find(peer);
    if (checked.ok()) {
      if (worker != workers_.end()) Recovered(worker->second.get());
      for (size_t i = 0; i < members.size(); ++i) {
        if (run->accepted[members[i]]) continue;  // never twice
        run->accepted[members[i]] = true;
        run->results[members[i]] = std::move((*checked)[i]);
      }
      break;
    }
    ++stats_.failed_calls;
    const absl::Status failed = Annotate(
        checked.status(), absl::StrCat("rollout worker ", peer.empty() ? route->entry->text : peer));
    if (IsFinal(failed.code())) {
      FailRun(failed);
      break;
    }
    // Probed again (and given weights) after its backoff; gRPC's health checking keeps it out meanwhile when it
    // is gone or serves another version.
    if (worker != workers_.end()) SetAside(worker->second.get(), checked.status());
    if (attempt >= options_.max_attempts) {
      FailRun(Annotate(failed, absl::StrCat("group '", (*run->groups)[members[0]].prompt_id, "' failed ", attempt,
                                            " attempts (rollout.max_attempts); the last")));
      break;
    }
    stats_.retried_groups += static_cast<int64_t>(members.size());
    tried.insert(route.get());
  }
  absl::MutexLock lock(&mu_);
  --run->calls_left;
}

absl::StatusOr<std::vector<SampleGroup>> GrpcRolloutClient::Impl::CheckAnswer(const Run& run,
                                                                              const std::vector<int>& members,
                                                                              const GenerateResponse& response) const {
  if (response.policy_version() != run.version) {
    return absl::DataLossError(
        absl::StrCat("answered with policy version ", response.policy_version(), "; ", run.version, " requested"));
  }
  if (response.groups_size() != static_cast<int>(members.size())) {
    return absl::DataLossError(absl::StrCat(response.groups_size(), " groups answered; ", members.size(), " asked"));
  }
  return CallCatching("rollout answer", [&]() -> absl::StatusOr<std::vector<SampleGroup>> {
    std::vector<SampleGroup> out(members.size());
    for (size_t i = 0; i < members.size(); ++i) {
      const GroupRequest& asked = (*run.groups)[members[i]];
      const GroupResult& group = response.groups(static_cast<int>(i));
      const std::string at = absl::StrCat("groups[", i, "]");
      if (group.prompt_id() != asked.prompt_id) {
        return absl::DataLossError(absl::StrCat(at, ".prompt_id '", group.prompt_id(), "'; '", asked.prompt_id,
                                                "' asked"));
      }
      if (group.samples_size() != run.group_size) {
        return absl::DataLossError(absl::StrCat(at, ": ", group.samples_size(), " samples; ", run.group_size, " asked"));
      }
      for (int j = 0; j < group.samples_size(); ++j) {
        absl::StatusOr<SampleRecord> s = SampleFromProto(group.samples(j), asked, j, run.version, options_.vocab_size);
        if (!s.ok()) return Annotate(s.status(), absl::StrCat(at, ".samples[", j, "]"));
        out[i].push_back(*std::move(s));
      }
    }
    return out;
  });
}

bool GrpcRolloutClient::Impl::Usable(const Worker& w) const {
  return w.healthy && !w.check_due && !w.busy && !w.gone && w.version == version_;
}

bool GrpcRolloutClient::Impl::Pending() const {
  for (const auto& [target, w] : workers_) {
    if (w->check_due || w->busy) return true;
  }
  return false;
}

void GrpcRolloutClient::Impl::MakeRoutes() {
  if (!routes_.empty() && routes_.front()->version == version_) return;
  routes_.clear();
  for (const Entry& e : entries_) {
    auto route = std::make_shared<Route>();
    route->entry = &e;
    route->version = version_;
    grpc::ChannelArguments args = ChannelArgs();
    args.SetServiceConfigJSON(absl::StrCat(R"({"loadBalancingConfig": [{"round_robin": {}}], )",
                                           R"("healthCheckConfig": {"serviceName": ")",
                                           PolicyVersionHealthName(version_), R"("}})"));
    args.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);  // ours, not one from DNS TXT records
    args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 1000);  // a worker that left is noticed in seconds
    route->channel = grpc::CreateCustomChannel(e.BalancedTarget(), credentials_, args);
    route->stub = RolloutService::NewStub(route->channel);
    routes_.push_back(std::move(route));
  }
}

// A route whose channel is READY (one of its workers serves the version), preferring one not tried and then the
// fewest calls in flight. Waits up to worker_wait_seconds, and longer while a probe, a weight update or a
// connection is under way (each has its own deadline); then fails the Generate UNAVAILABLE and returns null.
std::shared_ptr<Route> GrpcRolloutClient::Impl::AwaitRoute(Run* run, const std::set<const Route*>& tried) {
  const absl::Time give_up = absl::Now() + absl::Seconds(options_.worker_wait_seconds);
  const auto failed = +[](Run* r) { return !r->failure.ok(); };
  while (run->failure.ok()) {
    std::shared_ptr<Route> best;
    bool connecting = false;
    const auto key = [&](const Route& r) { return std::make_pair(tried.count(&r), r.in_flight); };
    for (const std::shared_ptr<Route>& r : routes_) {
      const grpc_connectivity_state state = r->channel->GetState(/*try_to_connect=*/true);
      connecting = connecting || state == GRPC_CHANNEL_CONNECTING || state == GRPC_CHANNEL_IDLE;
      if (state == GRPC_CHANNEL_READY && (best == nullptr || key(*r) < key(*best))) best = r;
    }
    if (best != nullptr) return best;
    if (absl::Now() >= give_up && !Pending() && !connecting) {
      FailRun(absl::UnavailableError(NoWorkerMessage()));
      break;
    }
    mu_.AwaitWithTimeout(absl::Condition(failed, run), kRouteTick);
  }
  return nullptr;
}

void GrpcRolloutClient::Impl::FailRun(const absl::Status& status) {
  if (run_ == nullptr || !run_->failure.ok()) return;
  run_->failure = status;
  for (grpc::ClientContext* context : run_->active) context->TryCancel();
}

std::string GrpcRolloutClient::Impl::NoWorkerMessage() const {
  std::vector<std::string> texts, notes;
  for (const Entry& e : entries_) texts.push_back(e.text);
  for (const auto& [target, w] : workers_) {
    if (!w->gone) notes.push_back(absl::StrCat(target, ": ", w->note.empty() ? "not checked yet" : w->note));
  }
  return absl::StrCat("no rollout worker served policy version ", version_, " within ", options_.worker_wait_seconds,
                      " s (rollout.workers: ", absl::StrJoin(texts, ", "), "; ",
                      notes.empty() ? "no address resolved" : absl::StrJoin(notes, "; "), ")");
}

// ---- Workers ----

grpc::ChannelArguments GrpcRolloutClient::Impl::ChannelArgs() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.endpoints.max_message_bytes());
  args.SetMaxSendMessageSize(options_.endpoints.max_message_bytes());
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kMinReconnectMs);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kMinReconnectMs);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectMs);
  return args;
}

std::shared_ptr<grpc::Channel> GrpcRolloutClient::Impl::NewChannel(const Entry& entry,
                                                                   const std::string& target) const {
  grpc::ChannelArguments args = ChannelArgs();
  // TLS checks the server's certificate against the configured name, not the address it resolved to.
  if (!entry.host.empty()) args.SetSslTargetNameOverride(entry.host);
  return grpc::CreateCustomChannel(target, credentials_, args);
}

void GrpcRolloutClient::Impl::MaybeResolve() {
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    bool usable = false;
    for (const auto& [target, w] : workers_) usable = usable || Usable(*w) || w->check_due;
    if (resolving_ || (now - last_resolve_ < kResolveEvery && (usable || now - last_resolve_ < kResolveRetry))) {
      return;
    }
    resolving_ = true;
  }
  std::vector<absl::StatusOr<std::vector<std::string>>> found;
  for (const Entry& e : entries_) found.push_back(ResolveEntry(e));  // DNS: without the lock
  absl::MutexLock lock(&mu_);
  resolving_ = false;
  last_resolve_ = absl::Now();
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    if (!found[i].ok()) {
      if (unresolved_.insert(e.text).second) {
        SPARGO_LOG(WARNING) << "rollout worker entry " << e.text << ": " << found[i].status().message();
      }
      continue;  // its workers, if any, stay
    }
    if (unresolved_.erase(e.text) > 0) {
      SPARGO_LOG(INFO) << "rollout worker entry " << e.text << " resolves again";
    }
    const std::set<std::string> now_found(found[i]->begin(), found[i]->end());
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->second->entry == e.text && now_found.count(it->first) == 0) {
        SPARGO_LOG(INFO) << "rollout worker " << it->first << " left (" << e.text << " no longer resolves to it)";
        it->second->gone = true;  // calls in flight keep it alive
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
    for (const std::string& target : *found[i]) {
      if (workers_.count(target) > 0) continue;
      auto w = std::make_shared<Worker>();
      w->entry = e.text;
      w->target = target;
      w->stub = RolloutService::NewStub(NewChannel(e, target));
      SPARGO_LOG(INFO) << "rollout worker " << target << " (" << e.text << ")";
      workers_[target] = std::move(w);
    }
  }
}

// Runs during a Generate: resolves names again when due, and has every worker that needs it probed (and given the
// current weights) on `pool`, one task per worker at a time.
void GrpcRolloutClient::Impl::Maintain(Run* run, ThreadPool* pool) {
  while (true) {
    MaybeResolve();
    absl::MutexLock lock(&mu_);
    if (run->done) return;
    const absl::Time now = absl::Now();
    for (auto& [target, w] : workers_) {
      if (!MaintenanceDue(*w, now)) continue;
      w->busy = true;
      pool->Schedule([this, w = w] { Probe(w); });
    }
    mu_.AwaitWithTimeout(absl::Condition(&run->done), kMaintenanceTick);
    if (run->done) return;
  }
}

bool GrpcRolloutClient::Impl::MaintenanceDue(const Worker& w, absl::Time now) const {
  if (w.busy || w.gone) return false;
  if (w.check_due) return true;
  return now >= w.retry_at && (!w.healthy || w.version != version_);
}

// Health first; a healthy worker at another version is given the current weights (when there are any).
void GrpcRolloutClient::Impl::Probe(const std::shared_ptr<Worker>& w) {
  grpc::ClientContext context;
  const absl::Duration deadline = std::min(kHealthDeadline, absl::Seconds(options_.endpoints.deadline_seconds()));
  PrepareClientContext(absl::Now() + deadline, token_, &context);
  HealthResponse health;
  const grpc::Status answered = w->stub->Health(&context, HealthRequest(), &health);
  model::TensorMap weights;
  uint64_t version = 0;
  {
    absl::MutexLock lock(&mu_);
    w->check_due = false;
    if (!answered.ok() || !health.serving()) {
      const absl::Status failed = answered.ok() ? absl::UnavailableError("Health: not serving")
                                                : FromGrpc(answered, "Health");
      SetAside(w.get(), failed);
      if (IsAuthError(failed.code())) FailRun(Annotate(failed, absl::StrCat("rollout worker ", w->target)));
      w->busy = false;
      return;
    }
    Recovered(w.get());
    w->version = health.policy_version();
    if (w->version == version_) {
      w->backoff = absl::ZeroDuration();
      w->version_logged = false;
      w->busy = false;
      return;
    }
    if (!has_weights_) {
      w->note = absl::StrCat("serves policy version ", w->version, "; no weights to give it yet");
      if (!w->version_logged) {
        w->version_logged = true;
        SPARGO_LOG(WARNING) << "rollout worker " << w->target << " serves policy version " << w->version
                            << ", not " << version_ << "; it is not used until it is given weights";
      }
      w->retry_at = absl::Now() + kMaxBackoff;
      w->busy = false;
      return;
    }
    weights = weights_;
    version = version_;
  }
  const absl::Status pushed = Push(w, weights, version);  // a failure sets the worker aside
  absl::MutexLock lock(&mu_);
  if (IsAuthError(pushed.code())) FailRun(pushed);
  w->busy = false;
}

// Streams `weights` to one worker; it then serves `version`. Failures set the worker aside.
absl::Status GrpcRolloutClient::Impl::Push(const std::shared_ptr<Worker>& w, const model::TensorMap& weights,
                                           uint64_t version) {
  const absl::Time start = absl::Now();
  const absl::Duration deadline =
      std::max(kWeightDeadlineFloor, absl::Seconds(options_.generate_deadline_seconds));
  absl::StatusOr<UpdateWeightsResponse> sent =
      SendWeights(*w->stub, weights, version, options_.weight_chunk_bytes, start + deadline, token_,
                  ThisProcessRunId());
  absl::Status status = sent.status();
  if (status.ok() && sent->policy_version() != version) {
    status = absl::DataLossError(
        absl::StrCat("UpdateWeights: answered policy version ", sent->policy_version(), "; ", version, " sent"));
  }
  absl::MutexLock lock(&mu_);
  if (status.code() == absl::StatusCode::kInvalidArgument) {  // it refused the tensors, and serves as before
    RetryLater(w.get(), status);
    SPARGO_LOG(WARNING) << "rollout worker " << w->target << " refused policy version " << version << ": " << status;
  } else if (!status.ok()) {
    SetAside(w.get(), status);
  }
  if (!status.ok()) return Annotate(status, absl::StrCat("rollout worker ", w->target));
  Recovered(w.get());
  w->backoff = absl::ZeroDuration();
  w->version = version;
  w->version_logged = false;
  SPARGO_LOG(INFO) << "rollout worker " << w->target << " given policy version " << version << " ("
                   << TensorBytes(weights) << " bytes in " << absl::FormatDuration(absl::Now() - start) << ")";
  return absl::OkStatus();
}

void GrpcRolloutClient::Impl::SetAside(Worker* w, const absl::Status& status) {
  w->healthy = false;
  RetryLater(w, status);
  if (!w->failing) {
    w->failing = true;
    SPARGO_LOG(WARNING) << "rollout worker " << w->target << " (" << w->entry << ") set aside: " << status;
  }
}

void GrpcRolloutClient::Impl::RetryLater(Worker* w, const absl::Status& status) {
  w->backoff = w->backoff == absl::ZeroDuration() ? kFirstBackoff : std::min(2 * w->backoff, kMaxBackoff);
  w->retry_at = absl::Now() + w->backoff;
  w->note = std::string(status.message());
}

void GrpcRolloutClient::Impl::Recovered(Worker* w) {
  if (w->failing) {
    SPARGO_LOG(INFO) << "rollout worker " << w->target << " answers again";
  }
  w->healthy = true;
  w->failing = false;
  w->note.clear();  // the backoff is reset once it serves the current version
}

// ---- UpdateWeights ----

absl::Status GrpcRolloutClient::Impl::UpdateWeights(const model::TensorMap& weights, uint64_t version) {
  if (weights.empty()) return absl::InvalidArgumentError("UpdateWeights: no tensors");
  for (const auto& [name, t] : weights) {
    if (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kBFloat16 &&
        t.scalar_type() != torch::kFloat16) {
      return absl::InvalidArgumentError(
          absl::StrCat("UpdateWeights: tensor '", name, "' is ", c10::toString(t.scalar_type()),
                       "; float32, bfloat16 or float16 expected"));
    }
  }
  const absl::Time start = absl::Now();
  MaybeResolve();
  std::vector<std::shared_ptr<Worker>> targets;
  model::TensorMap previous_weights;
  uint64_t previous_version = 0;
  bool had_weights = false;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [target, w] : workers_) targets.push_back(w);
    previous_weights = std::move(weights_);
    previous_version = version_;
    had_weights = has_weights_;
    weights_ = weights;
    version_ = version;
    has_weights_ = true;
  }
  std::vector<absl::Status> results(targets.size());
  {
    ThreadPool senders(std::min<int>(std::max<size_t>(1, targets.size()), kMaxWeightThreads));
    for (size_t i = 0; i < targets.size(); ++i) {
      senders.Schedule([this, &targets, &results, &weights, version, i] {
        results[i] = Push(targets[i], weights, version);
      });
    }
  }
  int took = 0;
  absl::Status last = absl::UnavailableError("UpdateWeights: no rollout worker address resolved");
  bool all_refused = !targets.empty();  // every worker refused the tensors themselves
  for (const absl::Status& s : results) {
    if (s.ok()) {
      ++took;
    } else {
      last = s;
      all_refused = all_refused && s.code() == absl::StatusCode::kInvalidArgument;
    }
  }
  absl::MutexLock lock(&mu_);
  stats_.weight_bytes = TensorBytes(weights) * took;
  stats_.weight_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (took > 0) return absl::OkStatus();
  if (all_refused) {  // bad input changes nothing
    weights_ = std::move(previous_weights);
    version_ = previous_version;
    has_weights_ = had_weights;
  }
  return last;
}

// ---- GrpcRolloutClient ----

absl::StatusOr<std::unique_ptr<GrpcRolloutClient>> GrpcRolloutClient::Create(const GrpcRolloutOptions& options,
                                                                             uint64_t initial_version) {
  if (options.workers.empty()) return absl::InvalidArgumentError("rollout.workers: no worker given");
  const auto positive = [](const char* field, double value) {
    return value > 0 ? absl::OkStatus()
                     : absl::InvalidArgumentError(absl::StrCat(field, " = ", value, ": must be positive"));
  };
  SPARGO_RETURN_IF_ERROR(positive("rollout.groups_per_request", options.groups_per_request));
  SPARGO_RETURN_IF_ERROR(positive("rollout.generate_deadline_seconds", options.generate_deadline_seconds));
  SPARGO_RETURN_IF_ERROR(positive("rollout.max_attempts", options.max_attempts));
  SPARGO_RETURN_IF_ERROR(positive("rollout.weight_chunk_bytes", options.weight_chunk_bytes));
  SPARGO_RETURN_IF_ERROR(positive("vocab_size", static_cast<double>(options.vocab_size)));
  SPARGO_RETURN_IF_ERROR(positive("services.deadline_seconds", options.endpoints.deadline_seconds()));
  if (!(options.worker_wait_seconds >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rollout.worker_wait_seconds = ", options.worker_wait_seconds, ": must be >= 0"));
  }
  std::vector<Entry> entries;
  for (size_t i = 0; i < options.workers.size(); ++i) {
    SPARGO_ASSIGN_OR_RETURN(Entry e, ParseEntry(options.workers[i], i));
    entries.push_back(std::move(e));
  }
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                          ChannelCredentialsFor(options.endpoints));
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(options.endpoints));
  return std::unique_ptr<GrpcRolloutClient>(new GrpcRolloutClient(std::make_unique<Impl>(
      options, std::move(entries), std::move(credentials), std::move(token), initial_version)));
}

GrpcRolloutClient::GrpcRolloutClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GrpcRolloutClient::~GrpcRolloutClient() = default;

absl::StatusOr<std::vector<SampleGroup>> GrpcRolloutClient::Generate(const std::vector<GroupRequest>& groups,
                                                                     const SamplingOptions& options) {
  return impl_->Generate(groups, options);
}

absl::Status GrpcRolloutClient::UpdateWeights(const model::TensorMap& weights, uint64_t version) {
  return impl_->UpdateWeights(weights, version);
}

uint64_t GrpcRolloutClient::policy_version() const { return impl_->policy_version(); }
RolloutClientStats GrpcRolloutClient::stats() const { return impl_->stats(); }
std::string GrpcRolloutClient::Describe() const { return impl_->Describe(); }

}  // namespace spargo::rollout
