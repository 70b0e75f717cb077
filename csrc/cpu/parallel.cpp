// The thread pool of parallel.h.
//
// One pool per process, created on the first parallel call and never destroyed: its threads wait
// for work and die with the process. (Joining them from a static destructor could deadlock while
// a DLL unloads under the Windows loader lock.) After fork() the child, which has none of the
// parent's threads, starts a pool of its own.
//
// Nothing here throws: the C ABI (csrc/common/api.cpp) must never see an exception. A helper that
// cannot be started (std::system_error from std::thread: EAGAIN under a pids limit) leaves the
// call on the helpers that exist.
#include "parallel.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>  // _mm_pause (SSE2, part of every x86_64 CPU)
#endif
#if defined(_WIN32)
#include <condition_variable>
#else
#include <pthread.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif

namespace bnb::cpu {
namespace {

// A mutex with two condition variables. On POSIX straight pthreads: libstdc++ 12 versioned
// std::condition_variable::wait anew (GLIBCXX_3.4.30), and a library built on a new system must
// still load where an older libstdc++ is installed.
#if defined(_WIN32)
class Monitor {
 public:
  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }
  template <typename Ready>
  void wait(int which, Ready ready) {  // with the lock held
    std::unique_lock<std::mutex> lock(mutex_, std::adopt_lock);
    conditions_[which].wait(lock, ready);
    lock.release();
  }
  void notify_all(int which) { conditions_[which].notify_all(); }

 private:
  std::mutex mutex_;
  std::condition_variable conditions_[2];
};
#else
class Monitor {
 public:
  Monitor() {
    pthread_mutex_init(&mutex_, nullptr);
    for (pthread_cond_t &c : conditions_) pthread_cond_init(&c, nullptr);
  }
  Monitor(const Monitor &) = delete;
  Monitor &operator=(const Monitor &) = delete;
  void lock() { pthread_mutex_lock(&mutex_); }
  void unlock() { pthread_mutex_unlock(&mutex_); }
  template <typename Ready>
  void wait(int which, Ready ready) {  // with the lock held
    while (!ready()) pthread_cond_wait(&conditions_[which], &mutex_);
  }
  void notify_all(int which) { pthread_cond_broadcast(&conditions_[which]); }

 private:
  pthread_mutex_t mutex_;
  pthread_cond_t conditions_[2];
};
#endif
constexpr int kWake = 0;  // a job was published
constexpr int kDone = 1;  // the last helper of a job finished

// How long an idle helper keeps checking for work before it sleeps (about 50 to 100 microseconds):
// back-to-back calls (a model's layers one after another) then start without the wake-up latency
// of the operating system, and an idle process stops using the CPU right after.
constexpr int kSpinRounds = 2000;

void relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__) && !defined(_MSC_VER)
  __asm__ __volatile__("yield");
#endif
}

class Pool {
 public:
  void run(int helpers, void (*work)(void *), void *context) {
    bool idle = false;
    if (!busy_.compare_exchange_strong(idle, true, std::memory_order_acquire)) {
      work(context);  // another thread's call is using the pool: run on this thread alone
      return;
    }
    monitor_.lock();
    helpers = grow(helpers);
    if (helpers == 0) {
      monitor_.unlock();
      busy_.store(false, std::memory_order_release);
      work(context);
      return;
    }
    work_ = work;
    context_ = context;
    wanted_ = helpers;
    claimed_ = 0;
    published_.store(++generation_, std::memory_order_release);
    monitor_.unlock();
    monitor_.notify_all(kWake);
    work(context);
    monitor_.lock();
    wanted_ = claimed_;  // helpers that wake up from now on find the job closed
    monitor_.wait(kDone, [this] { return running_ == 0; });
    monitor_.unlock();
    busy_.store(false, std::memory_order_release);
  }

 private:
  void serve() {
    unsigned long long seen = 0;
    for (;;) {
      for (int i = 0; i < kSpinRounds && published_.load(std::memory_order_acquire) == seen; ++i) relax();
      monitor_.lock();
      monitor_.wait(kWake, [&] { return generation_ != seen; });
      seen = generation_;
      if (claimed_ >= wanted_) {
        monitor_.unlock();
        continue;
      }
      ++claimed_;
      ++running_;
      void (*work)(void *) = work_;
      void *context = context_;
      monitor_.unlock();
      work(context);
      monitor_.lock();
      bool last = --running_ == 0;
      monitor_.unlock();
      if (last) monitor_.notify_all(kDone);
    }
  }

  // Starts helpers until `wanted` exist (with the lock held); returns how many of them the call
  // may use. When the system refuses one, the call goes on with those there are, and no new one is
  // tried for a while: a failed start costs about as much as a small call.
  int grow(int wanted) noexcept {
    auto now = std::chrono::steady_clock::now();
    if (static_cast<int>(threads_.size()) < wanted && now >= retry_after_) {
      try {
        threads_.reserve(static_cast<size_t>(wanted));
        while (static_cast<int>(threads_.size()) < wanted) threads_.emplace_back([this] { serve(); });
      } catch (...) {  // std::system_error (EAGAIN, ENOMEM), std::bad_alloc: the vector is unchanged
        retry_after_ = now + std::chrono::seconds(1);
      }
    }
    return std::min(wanted, static_cast<int>(threads_.size()));
  }

  // One call at a time uses the helpers. (An atomic flag, not a mutex's try_lock, which glibc 2.34
  // versioned anew: the library must load on older glibc.)
  std::atomic<bool> busy_{false};
  Monitor monitor_;  // guards everything below
  std::vector<std::thread> threads_;
  std::chrono::steady_clock::time_point retry_after_{};  // no new helper is tried before then
  unsigned long long generation_ = 0;
  std::atomic<unsigned long long> published_{0};  // generation_, for helpers that spin
  void (*work_)(void *) = nullptr;
  void *context_ = nullptr;
  int wanted_ = 0;   // helpers the current job may still take
  int claimed_ = 0;  // helpers that took it
  int running_ = 0;  // helpers still running it
};

std::mutex g_pool_mutex;
Pool *g_pool = nullptr;

#if !defined(_WIN32)
// fork() keeps only the calling thread: hold g_pool_mutex across it, and let the child forget the
// parent's pool, whose threads it does not have.
void before_fork() { g_pool_mutex.lock(); }
void after_fork_in_parent() { g_pool_mutex.unlock(); }
void after_fork_in_child() {
  g_pool = nullptr;
  g_pool_mutex.unlock();
}
#endif

Pool &pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool == nullptr) {
#if !defined(_WIN32)
    static const bool registered = pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) == 0;
    (void)registered;
#endif
    g_pool = new Pool();  // never destroyed (see the top of the file)
  }
  return *g_pool;
}

// ---- how many CPUs the process may use ---------------------------------------------------------

#if defined(__linux__)
// The lines of a small text file (/proc, /sys); empty when it cannot be read.
std::vector<std::string> read_lines(const std::string &path) {
  std::vector<std::string> lines;
  FILE *file = std::fopen(path.c_str(), "r");
  if (file == nullptr) return lines;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, file) != nullptr) {
    std::string line(buffer);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    lines.push_back(line);
  }
  std::fclose(file);
  return lines;
}

std::vector<std::string> split(const std::string &text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t end; (end = text.find(separator, start)) != std::string::npos; start = end + 1) parts.push_back(text.substr(start, end - start));
  parts.push_back(text.substr(start));
  return parts;
}

// CPUs in the affinity mask (sched_getaffinity, sized for machines with more than 1024 CPUs); 0 when unknown.
int affinity_cpus() {
  for (int size = 1024; size <= (1 << 20); size *= 2) {
    cpu_set_t *set = CPU_ALLOC(size);
    if (set == nullptr) return 0;
    size_t bytes = CPU_ALLOC_SIZE(size);
    int count = sched_getaffinity(0, bytes, set) == 0 ? CPU_COUNT_S(bytes, set) : -1;
    CPU_FREE(set);
    if (count >= 0) return count;
    if (errno != EINVAL) return 0;
  }
  return 0;
}

// CPUs a quota of `quota` microseconds per `period` allows, rounded up; 0 for none ("max", -1, unreadable).
long long quota_cpus(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return 0;
  return (quota + period - 1) / period;
}

long long cpus_of_cgroup_dir(const std::string &dir, bool v2) {
  if (v2) {  // cpu.max: "max 100000" or "150000 100000"
    std::vector<std::string> lines = read_lines(dir + "/cpu.max");
    long long quota = 0, period = 0;
    if (lines.empty() || std::sscanf(lines[0].c_str(), "%lld %lld", &quota, &period) != 2) return 0;
    return quota_cpus(quota, period);
  }
  std::vector<std::string> quota = read_lines(dir + "/cpu.cfs_quota_us"), period = read_lines(dir + "/cpu.cfs_period_us");
  if (quota.empty() || period.empty()) return 0;
  return quota_cpus(std::atoll(quota[0].c_str()), std::atoll(period[0].c_str()));
}

// The smallest CPU quota on the way from the process's cgroup up to the root of the mounted
// hierarchy (a parent's quota bounds its children); 0 when there is none. Both cgroup v2 (cpu.max)
// and v1 (the hierarchy with the cpu controller) count: a hybrid system has both.
long long cgroup_cpus() {
  long long smallest = 0;
  std::vector<std::string> memberships = read_lines("/proc/self/cgroup");  // "id:controllers:path"
  for (const std::string &mount : read_lines("/proc/self/mountinfo")) {
    // "id parent major:minor root mount-point options [optional...] - type source super-options"
    std::vector<std::string> fields = split(mount, ' ');
    size_t dash = 5;
    while (dash < fields.size() && fields[dash] != "-") ++dash;
    if (dash + 3 >= fields.size()) continue;
    const std::string &type = fields[dash + 1];
    bool v2 = type == "cgroup2";
    if (!v2) {
      std::vector<std::string> options = split(fields[dash + 3], ',');
      if (type != "cgroup" || std::find(options.begin(), options.end(), "cpu") == options.end()) continue;
    }
    const std::string &root = fields[3], &mount_point = fields[4];
    for (const std::string &membership : memberships) {
      std::vector<std::string> parts = split(membership, ':');
      if (parts.size() < 3) continue;
      std::vector<std::string> controllers = split(parts[1], ',');
      bool match = v2 ? parts[0] == "0" && parts[1].empty()
                      : std::find(controllers.begin(), controllers.end(), "cpu") != controllers.end();
      if (!match) continue;
      std::string path = parts[2];  // the cgroup, relative to the hierarchy's root
      if (root != "/" && path.compare(0, root.size(), root) == 0) path = path.substr(root.size());
      else if (root != "/") path.clear();  // a namespace's own root: the mount point is the process's cgroup
      for (;;) {
        long long cpus = cpus_of_cgroup_dir(mount_point + path, v2);
        if (cpus > 0 && (smallest == 0 || cpus < smallest)) smallest = cpus;
        if (path.empty() || path == "/") break;
        path = path.substr(0, path.rfind('/'));
      }
    }
  }
  return smallest;
}
#endif

int count_cpus() noexcept {
  long long cpus = 0;
  try {
#if defined(__linux__)
    cpus = affinity_cpus();
    long long quota = cgroup_cpus();
    if (quota > 0 && (cpus == 0 || quota < cpus)) cpus = quota;
#endif
    if (cpus == 0) cpus = std::thread::hardware_concurrency();
  } catch (...) {  // no memory for a path: what the system reports
    cpus = std::thread::hardware_concurrency();
  }
  return static_cast<int>(std::max(1LL, std::min(cpus, 1LL << 20)));
}

}  // namespace

void run_on_pool(int helpers, void (*work)(void *), void *context) noexcept {
  Pool *shared = nullptr;
  if (helpers > 0) {
    try {
      shared = &pool();
    } catch (...) {  // no memory for the pool, or its mutex failed: this thread alone
    }
  }
  if (shared == nullptr) {
    work(context);
    return;
  }
  shared->run(helpers, work, context);
}

int default_threads() noexcept {
  static const int threads = count_cpus();
  return threads;
}

}  // namespace bnb::cpu
