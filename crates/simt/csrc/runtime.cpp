// runtime.cpp — runs a kernel launch on CPU threads (see simt.h).
//
// A launch creates one std::thread per CUDA thread of a block; those threads
// run every block of the grid in turn. Between blocks they meet at an
// end-of-block barrier whose last arrival re-poisons the shared memory.
// Launches are serialised by a global mutex (the emulated "device").
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "registry.h"
#include "simt.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace simt {
namespace {

constexpr int kExit = -1;     // barrier site: the thread left the kernel
constexpr int kShuffle = -2;  // barrier site: a warp shuffle
constexpr size_t kStaticShared = 48 * 1024;

struct Abort {};  // unwinds a thread once the launch has failed

std::string describe(int site) {
    if (site > 0) return "__syncthreads at line " + std::to_string(site);
    if (site == kExit) return "the end of the kernel";
    if (site == kShuffle) return "a warp shuffle";
    return "__syncwarp";
}

struct Launch;

// A reusable barrier for `expected` threads that checks they all arrive at
// the same site, and gives up after the watchdog time.
struct Barrier {
    std::mutex m;
    std::condition_variable cv;
    unsigned expected = 0;
    unsigned count = 0;
    uint64_t gen = 0;
    int site = 0;

    template <typename F>
    void arrive(Launch& L, int at, const char* scope, F on_complete);
    void arrive(Launch& L, int at, const char* scope) {
        arrive(L, at, scope, [] {});
    }
};

struct Warp {
    Barrier bar;
    alignas(8) unsigned char slot[32][8];
};

struct Launch {
    const simt_entry* kernel = nullptr;
    dim3 grid{}, block{};
    unsigned nthreads = 0;
    void** args = nullptr;
    std::chrono::milliseconds watchdog{20000};

    alignas(256) unsigned char arena[kStaticShared];
    std::mutex slot_m;
    std::vector<std::pair<const void*, size_t>> slots;  // key → offset
    size_t used = 0;
    unsigned char* dyn = nullptr;
    size_t dyn_bytes = 0;

    Barrier block_bar;
    std::vector<std::unique_ptr<Warp>> warps;

    std::atomic<bool> failed{false};
    std::mutex err_m;
    std::string err;

    void fail(const std::string& msg) {
        std::lock_guard<std::mutex> g(err_m);
        if (!failed.load()) {
            err = msg;
            failed.store(true);
        }
    }

    void poison_shared() {
        memset(arena, 0xFF, used);
        if (dyn) memset(dyn, 0xFF, dyn_bytes);
    }

    ~Launch() { free(dyn); }
};

template <typename F>
void Barrier::arrive(Launch& L, int at, const char* scope, F on_complete) {
    std::unique_lock<std::mutex> lk(m);
    if (L.failed.load()) throw Abort{};
    if (count == 0) {
        site = at;
    } else if (site != at) {
        L.fail(std::string("divergent barrier in block (") + std::to_string(blockIdx.x) + "," +
               std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) + "): thread " +
               std::to_string(threadIdx.x) + "," + std::to_string(threadIdx.y) + "," +
               std::to_string(threadIdx.z) + " reached " + describe(at) + " while other threads of its " +
               scope + " wait at " + describe(site));
        cv.notify_all();
        throw Abort{};
    }
    if (++count == expected) {
        count = 0;
        ++gen;
        on_complete();
        cv.notify_all();
        return;
    }
    const uint64_t g = gen;
    const auto deadline = std::chrono::steady_clock::now() + L.watchdog;
    while (gen == g) {
        if (L.failed.load()) throw Abort{};
        cv.wait_for(lk, std::chrono::milliseconds(20));
        if (gen == g && std::chrono::steady_clock::now() > deadline) {
            L.fail("watchdog: " + std::to_string(count) + " of " + std::to_string(expected) +
                   " threads of a " + scope + " waited at " + describe(site) + " for " +
                   std::to_string(L.watchdog.count()) + " ms; the others never arrived");
            throw Abort{};
        }
    }
}

thread_local Launch* tl_launch = nullptr;
thread_local int tl_lane = 0;
thread_local int tl_warp = 0;

Launch& current() {
    if (!tl_launch) {
        fprintf(stderr, "simt: a device function was called outside a launch\n");
        abort();
    }
    return *tl_launch;
}

void run_thread(Launch* L, unsigned tid) {
    tl_launch = L;
    threadIdx = {tid % L->block.x, (tid / L->block.x) % L->block.y, tid / (L->block.x * L->block.y)};
    blockDim = L->block;
    gridDim = L->grid;
    tl_lane = static_cast<int>(tid % 32);
    tl_warp = static_cast<int>(tid / 32);
    for (unsigned bz = 0; bz < L->grid.z; ++bz)
        for (unsigned by = 0; by < L->grid.y; ++by)
            for (unsigned bx = 0; bx < L->grid.x; ++bx) {
                blockIdx = {bx, by, bz};
                try {
                    L->kernel->call(L->args);
                    L->warps[tl_warp]->bar.arrive(*L, kExit, "warp");
                    L->block_bar.arrive(*L, kExit, "block", [L] { L->poison_shared(); });
                } catch (const Abort&) {
                    return;
                } catch (const std::exception& e) {
                    L->fail(std::string("exception in kernel: ") + e.what());
                    return;
                } catch (...) {
                    L->fail("unknown exception in kernel");
                    return;
                }
            }
}

std::mutex g_device;  // one launch at a time

}  // namespace

void syncthreads(int site) { current().block_bar.arrive(current(), site, "block"); }

void syncwarp(unsigned mask, int kind) {
    Launch& L = current();
    if (mask != 0xffffffffu) {
        L.fail("only full-warp masks are emulated");
        throw Abort{};
    }
    L.warps[tl_warp]->bar.arrive(L, kind, "warp");
}

void warp_exchange(unsigned mask, const void* in, void* out, size_t size, int src) {
    Launch& L = current();
    if (mask != 0xffffffffu) {
        L.fail("only full-warp masks are emulated");
        throw Abort{};
    }
    Warp& w = *L.warps[tl_warp];
    memcpy(w.slot[tl_lane], in, size);
    w.bar.arrive(L, kShuffle, "warp");
    memcpy(out, w.slot[src], size);
    w.bar.arrive(L, kShuffle, "warp");
}

void* shared_slot(const void* key, size_t size, size_t align) {
    Launch& L = current();
    std::lock_guard<std::mutex> g(L.slot_m);
    for (auto& s : L.slots)
        if (s.first == key) return L.arena + s.second;
    if (align < 16) align = 16;
    const size_t off = (L.used + align - 1) / align * align;
    if (off + size > kStaticShared) {
        L.fail("static shared memory exceeds 48 KiB");
        throw Abort{};
    }
    // Fresh storage is poisoned too (the arena starts poisoned up to `used`).
    memset(L.arena + L.used, 0xFF, off + size - L.used);
    L.slots.emplace_back(key, off);
    L.used = off + size;
    return L.arena + off;
}

void* dynamic_shared() {
    Launch& L = current();
    return L.dyn;
}

int lane() { return tl_lane; }

}  // namespace simt

extern "C" {

// Copies the signature of kernel `name` into buf; returns its length, or -1
// when there is no such kernel.
long simt_kernel_signature(const char* name, char* buf, size_t len) {
    const simt_entry* e = simt_find_kernel(name);
    if (!e) return -1;
    if (len) {
        const size_t n = e->sig.size() < len - 1 ? e->sig.size() : len - 1;
        memcpy(buf, e->sig.data(), n);
        buf[n] = 0;
    }
    return static_cast<long>(e->sig.size());
}

// The name of kernel i, or null past the end.
const char* simt_kernel_name(size_t i) {
    const simt_entry* e = simt_kernel_at(i);
    return e ? e->name : nullptr;
}

static int launch_impl(const char* name, const unsigned grid[3], const unsigned block[3],
                       size_t dyn_bytes, void** args, size_t nargs, unsigned watchdog_ms, char* err,
                       size_t errlen) {
    auto report = [&](const std::string& msg) {
        if (errlen) {
            const size_t n = msg.size() < errlen - 1 ? msg.size() : errlen - 1;
            memcpy(err, msg.data(), n);
            err[n] = 0;
        }
        return -1;
    };
    const simt_entry* e = simt_find_kernel(name);
    if (!e) return report(std::string("no kernel named ") + name);
    if (nargs != e->nargs)
        return report(std::string(name) + " takes " + std::to_string(e->nargs) + " arguments, got " +
                      std::to_string(nargs));
    const unsigned long long threads = 1ull * block[0] * block[1] * block[2];
    if (threads == 0 || threads > 1024 || threads % 32 != 0)
        return report("block of " + std::to_string(threads) +
                      " threads: must be a positive multiple of 32, at most 1024");
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0) return report("empty grid");
    if (grid[1] > 65535 || grid[2] > 65535) return report("grid y/z above 65535");
    if (dyn_bytes > 48 * 1024) return report("dynamic shared memory above 48 KiB");

    std::lock_guard<std::mutex> device(simt::g_device);
    auto L = std::make_unique<simt::Launch>();
    L->kernel = e;
    L->grid = {grid[0], grid[1], grid[2]};
    L->block = {block[0], block[1], block[2]};
    L->nthreads = static_cast<unsigned>(threads);
    L->args = args;
    if (watchdog_ms) L->watchdog = std::chrono::milliseconds(watchdog_ms);
    L->dyn_bytes = dyn_bytes;
    if (dyn_bytes) {
        L->dyn = static_cast<unsigned char*>(aligned_alloc(256, (dyn_bytes + 255) / 256 * 256));
        if (!L->dyn) return report("out of memory for dynamic shared memory");
    }
    L->poison_shared();
    L->block_bar.expected = L->nthreads;
    for (unsigned w = 0; w < L->nthreads / 32; ++w) {
        L->warps.emplace_back(new simt::Warp());
        L->warps.back()->bar.expected = 32;
    }
    std::vector<std::thread> threads_v;
    try {
        threads_v.reserve(L->nthreads);
        for (unsigned t = 0; t < L->nthreads; ++t) threads_v.emplace_back(simt::run_thread, L.get(), t);
    } catch (const std::exception& ex) {
        L->fail(std::string("could not start the threads: ") + ex.what());
    }
    for (auto& t : threads_v) t.join();
    if (L->failed.load()) return report(std::string(name) + ": " + L->err);
    return 0;
}

// Runs kernel `name` over the grid. Returns 0, or -1 with a message in err.
// No C++ exception crosses this boundary.
int simt_launch(const char* name, const unsigned grid[3], const unsigned block[3], size_t dyn_bytes,
                void** args, size_t nargs, unsigned watchdog_ms, char* err, size_t errlen) {
    try {
        return launch_impl(name, grid, block, dyn_bytes, args, nargs, watchdog_ms, err, errlen);
    } catch (...) {
        if (errlen) snprintf(err, errlen, "%s: the emulator failed (out of memory?)", name);
        return -1;
    }
}

}  // extern "C"
