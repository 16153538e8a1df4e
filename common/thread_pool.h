// A fixed-size pool of worker threads running scheduled closures in FIFO order. The destructor runs everything
// already scheduled, then joins. Schedule() never blocks on the work itself.
#ifndef SPARGO_COMMON_THREAD_POOL_H_
#define SPARGO_COMMON_THREAD_POOL_H_

#include <algorithm>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace spargo {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Schedule(std::function<void()> work);
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  void Loop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace spargo

#endif  // SPARGO_COMMON_THREAD_POOL_H_
