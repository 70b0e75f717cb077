// Choosing the CPU kernels at run time (isa.h). Compiled for the baseline CPU: it only asks the
// CPU (cpuid, xgetbv) what it supports and never runs an instruction it has not confirmed.
#include "isa.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "bitsandbytes.h"
#include "common/errors.h"

#if defined(BNB_CPU_X86)
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace bnb::cpu {
namespace {

// Every name the selection understands, whatever this library was built for.
constexpr const char *kAllNames = "auto, scalar, avx2, avx512, neon";

#if defined(BNB_CPU_X86)
struct X86Support {
  bool avx2 = false;
  bool avx512 = false;
};

void cpuid(unsigned leaf, unsigned subleaf, unsigned regs[4]) {
#if defined(_MSC_VER)
  int r[4];
  __cpuidex(r, static_cast<int>(leaf), static_cast<int>(subleaf));
  for (int i = 0; i < 4; ++i) regs[i] = static_cast<unsigned>(r[i]);
#else
  __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
#endif
}

unsigned long long xcr0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
#endif
}

// The instructions must exist (cpuid) and the operating system must save their registers (xcr0).
X86Support detect_x86() {
  X86Support support;
  unsigned r[4];
  cpuid(0, 0, r);
  if (r[0] < 7) return support;
  cpuid(1, 0, r);
  bool osxsave = (r[2] >> 27) & 1u, avx = (r[2] >> 28) & 1u, f16c = (r[2] >> 29) & 1u;
  if (!osxsave || !avx || !f16c) return support;
  unsigned long long state = xcr0();
  bool ymm = (state & 0x6u) == 0x6u;     // SSE and AVX state
  bool zmm = (state & 0xe6u) == 0xe6u;   // ... and opmask, ZMM_Hi256, Hi16_ZMM
  cpuid(7, 0, r);
  bool avx2 = (r[1] >> 5) & 1u;
  bool avx512 = ((r[1] >> 16) & 1u) && ((r[1] >> 17) & 1u) && ((r[1] >> 30) & 1u) && ((r[1] >> 31) & 1u);  // F DQ BW VL
  support.avx2 = ymm && avx2;
  support.avx512 = support.avx2 && zmm && avx512;
  return support;
}

const X86Support &x86_support() {
  static const X86Support support = detect_x86();
  return support;
}
#endif

struct Choice {
  const char *name;
  const Kernels *kernels;  // nullptr: not part of this library
  bool runs_here;
  const char *needs;  // what the CPU must have
};

// Best first; the automatic choice is the first one that runs here.
int choices(Choice out[4]) {
  int count = 0;
#if defined(BNB_CPU_X86)
  out[count++] = {"avx512", &kAvx512Kernels, x86_support().avx512,
                  "AVX-512 F, BW, DQ and VL, enabled by the operating system"};
  out[count++] = {"avx2", &kAvx2Kernels, x86_support().avx2, "AVX2 and F16C, enabled by the operating system"};
  out[count++] = {"neon", nullptr, false, "an aarch64 CPU"};
#elif defined(BNB_CPU_ARM64)
  out[count++] = {"neon", &kNeonKernels, true, "an aarch64 CPU"};
  out[count++] = {"avx512", nullptr, false, "an x86_64 CPU"};
  out[count++] = {"avx2", nullptr, false, "an x86_64 CPU"};
#else
  out[count++] = {"avx512", nullptr, false, "an x86_64 CPU"};
  out[count++] = {"avx2", nullptr, false, "an x86_64 CPU"};
  out[count++] = {"neon", nullptr, false, "an aarch64 CPU"};
#endif
  out[count++] = {"scalar", &kScalarKernels, true, "nothing"};
  return count;
}

std::string runnable_names() {
  Choice list[4];
  int count = choices(list);
  std::string names = "auto";
  for (int i = 0; i < count; ++i) {
    if (list[i].kernels != nullptr && list[i].runs_here) names += std::string(", ") + list[i].name;
  }
  return names;
}

const Kernels *best_kernels() {
  Choice list[4];
  int count = choices(list);
  for (int i = 0; i < count; ++i) {
    if (list[i].kernels != nullptr && list[i].runs_here) return list[i].kernels;
  }
  return &kScalarKernels;
}

// The kernels a name asks for, or a recorded failure. `source` says where the name came from in
// messages: "BNB_CPU_ISA=" or "instruction set ".
int resolve(const char *name, const char *source, const Kernels **kernels) {
  if (name == nullptr || *name == '\0' || std::strcmp(name, "auto") == 0) {
    *kernels = best_kernels();
    return BNB_OK;
  }
  std::string subject = std::string(source) + "'" + name + "'";
  const char *what = subject.c_str();
  Choice list[4];
  int count = choices(list);
  for (int i = 0; i < count; ++i) {
    if (std::strcmp(name, list[i].name) != 0) continue;
    if (list[i].kernels == nullptr) {
      return fail(BNB_ERROR_NOT_AVAILABLE, "%s: this library has no %s kernels (they need %s); use one of %s", what,
                  name, list[i].needs, runnable_names().c_str());
    }
    if (!list[i].runs_here) {
      return fail(BNB_ERROR_NOT_AVAILABLE, "%s: this CPU cannot run the %s kernels (they need %s); use one of %s", what,
                  name, list[i].needs, runnable_names().c_str());
    }
    *kernels = list[i].kernels;
    return BNB_OK;
  }
  return fail(BNB_ERROR_INVALID_ARGUMENT, "%s is not a CPU instruction set: use one of %s", what, kAllNames);
}

std::atomic<const Kernels *> g_kernels{nullptr};
int g_environment_status = BNB_OK;
std::string g_environment_error;  // written once, by initialise()

void initialise() {
  const char *requested = std::getenv("BNB_CPU_ISA");
  const Kernels *kernels = nullptr;
  int status = resolve(requested, "BNB_CPU_ISA=", &kernels);
  if (status != BNB_OK) {
    g_environment_status = status;
    g_environment_error = last_error();
    return;  // every call fails until bnb_cpu_set_isa() chooses again
  }
  g_kernels.store(kernels, std::memory_order_release);
}

// Runs initialise() once, on the first call from any thread (a function-local static rather than
// std::call_once, whose pthread_once glibc 2.34 versioned anew: the library must load on older glibc).
void initialise_once() {
  static const bool done = (initialise(), true);
  (void)done;
}

std::atomic<int> g_threads{0};

}  // namespace

const Kernels *active_kernels(int *status) {
  initialise_once();
  const Kernels *kernels = g_kernels.load(std::memory_order_acquire);
  if (kernels == nullptr) *status = fail(g_environment_status, "%s", g_environment_error.c_str());
  return kernels;
}

const char *active_isa() {
  initialise_once();
  const Kernels *kernels = g_kernels.load(std::memory_order_acquire);
  return kernels == nullptr ? "" : kernels->name;
}

int select_isa(const char *name) {
  initialise_once();
  const Kernels *kernels = nullptr;
  if (int status = resolve(name, "instruction set ", &kernels)) return status;
  g_kernels.store(kernels, std::memory_order_release);
  return BNB_OK;
}

int thread_setting() { return g_threads.load(std::memory_order_relaxed); }

int set_thread_setting(int threads) {
  g_threads.store(threads < 0 ? 0 : threads, std::memory_order_relaxed);
  return BNB_OK;
}

}  // namespace bnb::cpu
