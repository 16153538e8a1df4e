#include "tests/slurm_cluster.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/atomic_file.h"

namespace spargo::testing {
namespace {

constexpr char kMunged[] = "/usr/sbin/munged";
constexpr char kSlurmctld[] = "/usr/sbin/slurmctld";
constexpr char kSlurmd[] = "/usr/sbin/slurmd";
constexpr char kBin[] = "/usr/bin/";
constexpr auto kStartLimit = std::chrono::seconds(60);

bool Executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

bool Exited(int pid) {
  int status = 0;
  return waitpid(pid, &status, WNOHANG) != 0;
}

// SIGTERM, up to `grace` for it to end, then SIGKILL; always reaps.
void Terminate(int pid, std::chrono::seconds grace) {
  if (pid <= 0 || Exited(pid)) return;
  ::kill(pid, SIGTERM);
  const auto end = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < end) {
    if (Exited(pid)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ProcessGuard kill_now(pid);
}

std::string ShortHostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return std::vector<std::string>(absl::StrSplit(name, '.'))[0];
}

std::string SlurmConf(const std::string& dir, const std::string& host, int cpus, int ctld_port, int slurmd_port) {
  return absl::StrCat(
      "ClusterName=spargotest\n"
      "SlurmctldHost=", host, "(127.0.0.1)\n",
      "SlurmctldPort=", ctld_port, "\nSlurmdPort=", slurmd_port, "\n",
      "AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket=", dir, "/munge.sock\n",
      "SlurmUser=root\nSlurmdUser=root\n",
      "StateSaveLocation=", dir, "/state\nSlurmdSpoolDir=", dir, "/spool\n",
      "SlurmctldPidFile=", dir, "/slurmctld.pid\nSlurmdPidFile=", dir, "/slurmd.pid\n",
      "SlurmctldLogFile=", dir, "/slurmctld.log\nSlurmdLogFile=", dir, "/slurmd.log\n",
      "PlugStackConfig=", dir, "/plugstack.conf\n",
      "MailProg=/bin/true\n"
      "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
      "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nSchedulerType=sched/builtin\n"
      "JobCompType=jobcomp/none\nJobAcctGatherType=jobacct_gather/none\n"
      "AccountingStorageType=accounting_storage/none\nMpiDefault=none\nReturnToService=2\n"
      "SlurmdParameters=config_overrides\n"
      "NodeName=", host, " NodeAddr=127.0.0.1 CPUs=", cpus, " State=UNKNOWN\n",
      "PartitionName=debug Nodes=", host, " Default=YES MaxTime=INFINITE State=UP\n");
}

}  // namespace

absl::StatusOr<std::unique_ptr<SlurmCluster>> SlurmCluster::Start(int cpus) {
  if (::geteuid() != 0) return absl::FailedPreconditionError("the Slurm daemons need root (slurmd)");
  for (std::string program : {std::string(kMunged), std::string(kSlurmctld), std::string(kSlurmd),
                              std::string(kBin) + "sbatch", std::string(kBin) + "sinfo"}) {
    if (!Executable(program)) {
      return absl::FailedPreconditionError(
          absl::StrCat(program, " is missing (install slurmctld, slurmd, slurm-client and munge)"));
    }
  }
  std::unique_ptr<SlurmCluster> cluster(new SlurmCluster());
  if (absl::Status s = cluster->Launch(cpus); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(s.message(), "\n", cluster->Logs()));
  }
  return cluster;
}

absl::Status SlurmCluster::Launch(int cpus) {
  // A short path: the munge socket's path must fit in a sockaddr_un.
  char tmpl[] = "/tmp/spargo-slurm-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  dir_ = tmpl;
  ::chmod(dir_.c_str(), 0755);  // munged wants its socket's folder searchable by everyone
  for (const char* sub : {"state", "spool", "logs"}) ::mkdir((dir_ + "/" + sub).c_str(), 0755);
  {
    std::mt19937_64 rng(std::random_device{}());
    std::string key(1024, '\0');
    for (char& c : key) c = static_cast<char>(rng());
    WriteFile(dir_ + "/munge.key", key);
    ::chmod((dir_ + "/munge.key").c_str(), 0400);
  }
  WriteFile(dir_ + "/plugstack.conf", "");
  WriteFile(dir_ + "/slurm.conf", SlurmConf(dir_, ShortHostName(), cpus, FreeLoopbackPort(), FreeLoopbackPort()));
  if (const char* old = std::getenv("SLURM_CONF"); old != nullptr) {
    had_slurm_conf_ = true;
    saved_slurm_conf_ = old;
  }
  ::setenv("SLURM_CONF", (dir_ + "/slurm.conf").c_str(), 1);

  const std::string logs = dir_ + "/logs";
  ::mkdir((logs + "/munged").c_str(), 0755);
  daemons_.push_back(StartProcess(kMunged,
                                  {"-F", "--force", "--socket=" + dir_ + "/munge.sock",
                                   "--key-file=" + dir_ + "/munge.key", "--pid-file=" + dir_ + "/munged.pid",
                                   "--log-file=" + dir_ + "/munged.log", "--seed-file=" + dir_ + "/munge.seed"},
                                  logs + "/munged"));
  for (int i = 0; i < 100 && ::access((dir_ + "/munge.sock").c_str(), F_OK) != 0; ++i) {
    if (Exited(daemons_.back())) return absl::UnavailableError("munged exited at start");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::mkdir((logs + "/slurmctld").c_str(), 0755);
  ::mkdir((logs + "/slurmd").c_str(), 0755);
  daemons_.push_back(StartProcess(kSlurmctld, {"-D", "-c", "-f", dir_ + "/slurm.conf"}, logs + "/slurmctld"));
  daemons_.push_back(StartProcess(kSlurmd, {"-D", "-f", dir_ + "/slurm.conf"}, logs + "/slurmd"));

  const auto end = std::chrono::steady_clock::now() + kStartLimit;
  while (std::chrono::steady_clock::now() < end) {
    for (int pid : daemons_) {
      if (Exited(pid)) return absl::UnavailableError("a Slurm daemon exited at start");
    }
    ProcessResult state = Run("sinfo", {"--noheader", "--format=%T"});
    if (state.exit_code == 0 && absl::StripAsciiWhitespace(state.out) == "idle") return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return absl::DeadlineExceededError("the Slurm node was not idle within 60 s");
}

ProcessResult SlurmCluster::Run(const std::string& command, const std::vector<std::string>& args) const {
  return RunProcess(kBin + command, args);
}

std::string SlurmCluster::Logs() const {
  std::string out;
  for (const char* name : {"slurmctld.log", "slurmd.log", "munged.log", "logs/slurmctld/stderr.txt",
                           "logs/slurmd/stderr.txt", "logs/munged/stderr.txt"}) {
    const std::string path = dir_ + "/" + name;
    if (::access(path.c_str(), R_OK) != 0) continue;
    std::string text = ReadFile(path);
    if (text.size() > 3000) text = "..." + text.substr(text.size() - 3000);
    absl::StrAppend(&out, "--- ", name, " ---\n", text);
  }
  return out;
}

void SlurmCluster::Stop() {
  if (daemons_.size() == 3 && !Exited(daemons_[1])) {
    // Jobs first, while slurmctld and slurmd can still end their steps.
    Run("scancel", {"--full", "--partition=debug"});
    for (int i = 0; i < 60; ++i) {
      ProcessResult q = Run("squeue", {"--noheader"});
      if (q.exit_code != 0 || absl::StripAsciiWhitespace(q.out).empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  for (auto it = daemons_.rbegin(); it != daemons_.rend(); ++it) Terminate(*it, std::chrono::seconds(10));
  daemons_.clear();
}

SlurmCluster::~SlurmCluster() {
  Stop();
  if (had_slurm_conf_) {
    ::setenv("SLURM_CONF", saved_slurm_conf_.c_str(), 1);
  } else {
    ::unsetenv("SLURM_CONF");
  }
  if (!dir_.empty()) (void)RemoveTree(dir_);
}

}  // namespace spargo::testing
