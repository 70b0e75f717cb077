// The thread pool of parallel.h.
//
// One pool per process, created on the first parallel call and never destroyed: its threads wait
// for work and die with the process. (Joining them from a static destructor could deadlock while
// a DLL unloads under the Windows loader lock.) After fork() the child, which has none of the
// parent's threads, starts a pool of its own.
#include "parallel.h"

#include <mutex>
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
    while (static_cast<int>(threads_.size()) < helpers) threads_.emplace_back([this] { serve(); });
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

  // One call at a time uses the helpers. (An atomic flag, not a mutex's try_lock, which glibc 2.34
  // versioned anew: the library must load on older glibc.)
  std::atomic<bool> busy_{false};
  Monitor monitor_;  // guards everything below
  std::vector<std::thread> threads_;
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

}  // namespace

void run_on_pool(int helpers, void (*work)(void *), void *context) {
  if (helpers <= 0) {
    work(context);
    return;
  }
  pool().run(helpers, work, context);
}

}  // namespace bnb::cpu
