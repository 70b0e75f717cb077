// Runs a function over the blocks [0, count) on up to `threads` threads. The blocks are cut into
// contiguous chunks that the threads take in turn (the calling thread too), so a thread that starts
// late or runs on a busy core takes fewer chunks. Every block is processed by exactly one call and
// blocks never share output bytes, so results do not depend on the thread count or the timing.
//
// The helper threads belong to a pool that lives as long as the process (parallel.cpp): starting
// a thread costs tens to hundreds of microseconds, as much as a whole dequantization of a few
// million values.
#ifndef BNB_CPU_PARALLEL_H
#define BNB_CPU_PARALLEL_H

#include <algorithm>
#include <atomic>

namespace bnb::cpu {

// Runs work(context) on the calling thread and on up to `helpers` pool threads at once; returns
// when every thread that started it has returned. work must be safe to run on several threads
// (and to find nothing left to do). Concurrent calls from several threads are allowed. Never
// throws: when the system refuses a new thread (a container's pids limit, RLIMIT_NPROC, no memory
// for its stack) the work runs on the helpers that exist, at worst on the calling thread alone.
void run_on_pool(int helpers, void (*work)(void *), void *context) noexcept;

// The threads a call uses by default: the CPUs this process may run on (its affinity mask, e.g.
// `taskset -c 0` gives 1), bounded by a cgroup CPU quota (cpu.max of cgroup v2, cpu.cfs_quota_us
// of v1: 1.5 CPUs give 2). At least 1; read once per process.
int default_threads() noexcept;

// threads: the most threads to use (>= 1). A chunk holds at least min_blocks blocks, so small
// calls stay on the calling thread.
template <typename Function>  // Function(long long first_block, long long end_block)
void parallel_for_blocks(long long count, long long threads, long long min_blocks, Function function) {
  min_blocks = std::max(1LL, min_blocks);
  threads = std::min(threads, std::max(1LL, count / min_blocks));
  if (threads <= 1) {
    function(0LL, count);
    return;
  }
  // A few chunks per thread: enough to even out the load, few enough to keep the chunks long.
  struct Job {
    Function *function;
    long long count;
    long long per_chunk;
    std::atomic<long long> next;
  };
  long long chunks = std::min(count / min_blocks, threads * 8);
  Job job{&function, count, (count + chunks - 1) / chunks, {0}};
  run_on_pool(static_cast<int>(std::min(threads - 1, 1024LL)), [](void *context) {
    Job &j = *static_cast<Job *>(context);
    for (long long first = j.next.fetch_add(j.per_chunk); first < j.count; first = j.next.fetch_add(j.per_chunk)) {
      (*j.function)(first, std::min(first + j.per_chunk, j.count));
    }
  }, &job);
}

}  // namespace bnb::cpu

#endif
