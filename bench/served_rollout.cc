#include "bench/served_rollout.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/atomic_file.h"
#include "common/loopback_port.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "model/weights_io.h"
#include "rollout/sample_proto.h"

extern char** environ;

namespace spargo::bench {
namespace {

// The last `bytes` of a file (the server's log, for an error message).
std::string Tail(const std::string& path, size_t bytes = 2000) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const std::string all = text.str();
  return all.size() <= bytes ? all : all.substr(all.size() - bytes);
}

}  // namespace

absl::Status WriteCheckpoint(model::Dsv32Model& model, const std::string& dir) {
  SPARGO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.json", model::Dsv32ConfigToJson(model.config())));
  return model::SaveWeights(model, dir + "/model.safetensors");
}

absl::StatusOr<std::unique_ptr<ServedRollout>> ServedRollout::Start(const std::string& spargo_binary,
                                                                    const std::string& model_dir, int64_t vocab_size,
                                                                    const std::vector<std::string>& flags,
                                                                    const std::string& log_path,
                                                                    absl::Duration wait) {
  std::unique_ptr<ServedRollout> served(new ServedRollout());
  SPARGO_ASSIGN_OR_RETURN(const int port, FreeLoopbackPort());
  served->address_ = absl::StrCat("127.0.0.1:", port);
  served->log_path_ = log_path;
  served->vocab_size_ = vocab_size;
  std::vector<std::string> args = {spargo_binary, "rollout", "--model", model_dir, "--listen", served->address_};
  args.insert(args.end(), flags.begin(), flags.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, spargo_binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    return absl::UnavailableError(absl::StrCat("cannot start ", spargo_binary, ": ", strerror(spawned)));
  }
  served->pid_ = pid;  // from here on the destructor stops it
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(-1);
  channel_args.SetMaxSendMessageSize(-1);
  served->channel_ = grpc::CreateCustomChannel(served->address_, grpc::InsecureChannelCredentials(), channel_args);
  served->stub_ = rollout::RolloutService::NewStub(served->channel_);
  const auto give_up = std::chrono::steady_clock::now() + absl::ToChronoSeconds(wait);
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    rollout::HealthRequest request;
    rollout::HealthResponse response;
    if (served->stub_->Health(&context, request, &response).ok() && response.serving()) return served;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      served->pid_ = -1;
      return absl::UnavailableError(absl::StrCat("spargo rollout ended before serving (",
                                                 WIFEXITED(status) ? "exit code " : "signal ",
                                                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                                                 "); its log ", log_path, " ends:\n", Tail(log_path)));
    }
    if (std::chrono::steady_clock::now() > give_up) {
      return absl::UnavailableError(absl::StrCat("spargo rollout did not serve on ", served->address_, " within ",
                                                 absl::FormatDuration(wait), "; its log ", log_path, " ends:\n",
                                                 Tail(log_path)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

ServedRollout::~ServedRollout() { Stop(0); }

std::string ServedRollout::Stop(size_t bytes) {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    bool reaped = false;
    for (int i = 0; i < 200 && !reaped; ++i) {
      reaped = waitpid(pid_, &status, WNOHANG) == pid_;
      if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!reaped) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }
  return bytes == 0 ? std::string() : Tail(log_path_, bytes);
}

absl::StatusOr<std::vector<rollout::SampleGroup>> ServedRollout::Generate(const std::vector<ServedCall>& calls) {
  std::vector<rollout::GenerateRequest> requests(calls.size());
  for (size_t c = 0; c < calls.size(); ++c) {
    SPARGO_ASSIGN_OR_RETURN(requests[c], rollout::GenerateRequestFor(calls[c].options, vocab_size_));
    for (const rollout::GroupRequest& prompt : calls[c].prompts) {
      rollout::GroupRequestToProto(prompt, calls[c].options.group_size, requests[c].add_groups());
    }
  }
  std::vector<absl::StatusOr<std::vector<rollout::SampleGroup>>> answers(calls.size(),
                                                                         absl::UnknownError("not answered"));
  std::vector<std::thread> threads;
  for (size_t c = 0; c < calls.size(); ++c) {
    threads.emplace_back([&, c] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(2));
      rollout::GenerateResponse response;
      const grpc::Status status = stub_->Generate(&context, requests[c], &response);
      if (!status.ok()) {
        answers[c] = absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                                  absl::StrCat("Generate call ", c, ": ", status.error_message()));
        return;
      }
      const std::vector<rollout::GroupRequest>& prompts = calls[c].prompts;
      if (response.groups_size() != static_cast<int>(prompts.size())) {
        answers[c] = absl::DataLossError(absl::StrCat("Generate call ", c, ": ", response.groups_size(),
                                                      " groups for ", prompts.size(), " prompts"));
        return;
      }
      std::vector<rollout::SampleGroup> groups(prompts.size());
      for (size_t i = 0; i < prompts.size(); ++i) {
        const rollout::GroupResult& group = response.groups(static_cast<int>(i));
        for (int j = 0; j < group.samples_size(); ++j) {
          absl::StatusOr<rollout::SampleRecord> sample = rollout::SampleFromProto(
              group.samples(j), prompts[i], j, response.policy_version(), vocab_size_);
          if (!sample.ok()) {
            answers[c] = sample.status();
            return;
          }
          groups[i].push_back(*std::move(sample));
        }
      }
      answers[c] = std::move(groups);
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<rollout::SampleGroup> out;
  for (auto& answer : answers) {
    if (!answer.ok()) return answer.status();
    for (rollout::SampleGroup& group : *answer) out.push_back(std::move(group));
  }
  return out;
}

}  // namespace spargo::bench
