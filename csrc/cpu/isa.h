// Which kernels (kernels.h) the CPU backend runs: chosen at the first call from what the CPU and
// the operating system support, unless the environment variable BNB_CPU_ISA or bnb_cpu_set_isa()
// names one. Also the number of threads the kernels use.
#ifndef BNB_CPU_ISA_H
#define BNB_CPU_ISA_H

#include "kernels.h"

namespace bnb::cpu {

// The kernels to run; nullptr when BNB_CPU_ISA names an instruction set this library cannot run,
// after recording the reason with bnb::fail (BNB_ERROR_INVALID_ARGUMENT or BNB_ERROR_NOT_AVAILABLE
// is returned through *status).
const Kernels *active_kernels(int *status);

// The name of the active kernels, or "" while BNB_CPU_ISA is not usable.
const char *active_isa();

// "auto" (also NULL or ""), or an instruction set name; BNB_OK, else a recorded failure.
int select_isa(const char *name);

// Threads a call may use: the setting of bnb_cpu_set_threads (validated there), 0 meaning
// default_threads() of parallel.h.
int thread_setting();
int set_thread_setting(int threads);

}  // namespace bnb::cpu

#endif
