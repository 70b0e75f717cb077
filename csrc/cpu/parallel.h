// Runs a function over the blocks [0, count) split into contiguous ranges, one per hardware
// thread. Every block is processed by exactly one call and blocks never share output bytes, so
// results do not depend on the thread count.
#ifndef BNB_CPU_PARALLEL_H
#define BNB_CPU_PARALLEL_H

#include <algorithm>
#include <thread>
#include <vector>

namespace bnb::cpu {

template <typename Function>  // Function(long long first_block, long long end_block)
void parallel_for_blocks(long long count, Function function) {
  long long threads = std::max(1u, std::thread::hardware_concurrency());
  threads = std::min(threads, count);
  if (threads <= 1) {
    function(0LL, count);
    return;
  }
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads - 1));
  long long per_thread = count / threads;
  long long extra = count % threads;  // the first `extra` ranges get one more block
  long long first = 0;
  for (long long t = 0; t < threads; ++t) {
    long long end = first + per_thread + (t < extra ? 1 : 0);
    if (t == threads - 1) {
      function(first, end);  // the calling thread takes the last range
    } else {
      workers.emplace_back(function, first, end);
    }
    first = end;
  }
  for (std::thread &worker : workers) worker.join();
}

}  // namespace bnb::cpu

#endif
