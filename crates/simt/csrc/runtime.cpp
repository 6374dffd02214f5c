// runtime.cpp — runs a kernel launch on CPU threads (see simt.h).
//
// A launch whose threads cooperate (barriers, shuffles, shared memory) runs
// with one OS thread per CUDA thread of a block; those threads run every
// block of the grid in turn and meet between blocks at an end-of-block
// barrier whose last arrival re-poisons the shared memory. The threads come
// from a pool that grows to the largest block seen and lives as long as the
// process, so a launch costs a wake-up per thread, not a thread creation.
//
// A launch whose plan declares independent threads runs each block's
// threads one after another on the launching thread; a barrier, shuffle or
// shared-memory access in such a kernel fails the launch.
//
// Launches are serialised by a global mutex (the emulated "device").
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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
constexpr int kPollMs = 20;  // how often a waiting thread checks for failure

struct Abort {};  // unwinds a thread once the launch has failed

std::string describe(int site) {
    if (site > 0) return "__syncthreads at line " + std::to_string(site);
    if (site == kExit) return "the end of the kernel";
    if (site == kShuffle) return "a warp shuffle";
    if (site == kWmmaLoad) return "wmma::load_matrix_sync";
    if (site == kWmmaMma) return "wmma::mma_sync";
    if (site == kWmmaStore) return "wmma::store_matrix_sync";
    return "__syncwarp";
}

// Waits while *word == expected, for at most `ms` milliseconds (or until a
// wake-up). The caller re-checks the word: wake-ups may be spurious.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int ms) {
    static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex word");
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, &ts,
            nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
}

struct Launch;

// A reusable barrier for `expected` threads that checks they all arrive at
// the same site, and gives up after the watchdog time. Arrivals are counted
// under a mutex; the waiters sleep on the generation word (a futex), which
// the last arrival bumps with release order, so everything written before
// the barrier happens-before everything read after it (ThreadSanitizer sees
// the mutex and the atomics).
struct Barrier {
    std::mutex m;
    unsigned expected = 0;
    unsigned count = 0;   // guarded by m
    int site = 0;         // guarded by m
    unsigned exited = 0;  // guarded by m: threads that left the kernel in this block
    std::atomic<uint32_t> gen{0};

    template <typename F>
    void arrive(Launch& L, int at, const char* scope, F on_complete);
    void arrive(Launch& L, int at, const char* scope) {
        arrive(L, at, scope, [] {});
    }
    // The calling thread leaves the kernel: an error if others of the scope
    // wait here, and any later arrival of this block is one too.
    void leave(Launch& L, const char* scope);
};

// A warp's barrier and its shuffle slots. Shuffles alternate between two
// sets of slots, so one barrier per shuffle suffices: a lane writes set
// (k+1)%2 only after the barrier of shuffle k, which every lane reaches only
// after it has read its value of shuffle k−1 from that set.
// Gathers (the WMMA collectives) alternate between their own two sets the
// same way.
struct Warp {
    Barrier bar;
    alignas(8) unsigned char slot[2][32][8];
    int next[32] = {};  // per lane: the set its next shuffle uses
    alignas(16) unsigned char gather[2][32][64];
    int gather_next[32] = {};  // per lane: the set its next gather uses
};

struct Launch {
    const simt_entry* kernel = nullptr;
    dim3 grid{}, block{};
    unsigned nthreads = 0;
    void** args = nullptr;
    bool independent = false;
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

std::string where() {
    return "block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
           std::to_string(blockIdx.z) + "), thread " + std::to_string(threadIdx.x) + "," +
           std::to_string(threadIdx.y) + "," + std::to_string(threadIdx.z);
}

template <typename F>
void Barrier::arrive(Launch& L, int at, const char* scope, F on_complete) {
    uint32_t g;
    bool last;
    {
        std::lock_guard<std::mutex> lk(m);
        if (L.failed.load()) throw Abort{};
        if (exited > 0) {
            L.fail("divergent barrier in " + where() + " reached " + describe(at) + " after " +
                   std::to_string(exited) + " thread(s) of its " + scope + " left the kernel");
            throw Abort{};
        }
        if (count == 0) {
            site = at;
        } else if (site != at) {
            L.fail("divergent barrier in " + where() + " reached " + describe(at) +
                   " while other threads of its " + scope + " wait at " + describe(site));
            throw Abort{};
        }
        g = gen.load(std::memory_order_relaxed);
        last = ++count == expected;
        if (last) {
            count = 0;
            on_complete();
            gen.store(g + 1, std::memory_order_release);
        }
    }
    if (last) {
        futex_wake_all(&gen);
        return;
    }
    const auto deadline = std::chrono::steady_clock::now() + L.watchdog;
    while (gen.load(std::memory_order_acquire) == g) {
        if (L.failed.load()) throw Abort{};
        futex_wait(&gen, g, kPollMs);
        if (gen.load(std::memory_order_acquire) == g &&
            std::chrono::steady_clock::now() > deadline) {
            std::lock_guard<std::mutex> lk(m);
            L.fail("watchdog: " + std::to_string(count) + " of " + std::to_string(expected) +
                   " threads of a " + scope + " waited at " + describe(site) + " for " +
                   std::to_string(L.watchdog.count()) + " ms; the others never arrived");
            throw Abort{};
        }
    }
}

void Barrier::leave(Launch& L, const char* scope) {
    std::lock_guard<std::mutex> lk(m);
    if (L.failed.load()) throw Abort{};
    if (count > 0) {
        L.fail("divergent barrier in " + where() + " left the kernel while " +
               std::to_string(count) + " other thread(s) of its " + scope + " wait at " +
               describe(site));
        throw Abort{};
    }
    ++exited;
}

thread_local Launch* tl_launch = nullptr;
thread_local int tl_lane = 0;
thread_local int tl_warp = 0;

// The cp.async copies of the calling thread not yet waited for: their
// destinations and the bytes read from their sources, in issue order, and
// where each committed group ends.
struct AsyncCopies {
    struct Copy {
        void* dst;
        size_t bytes;
        unsigned char data[16];
    };
    std::vector<Copy> copies;
    std::vector<size_t> group_ends;

    void clear() {
        copies.clear();
        group_ends.clear();
    }
    bool pending() const { return !copies.empty(); }
    // Writes every committed group but the `keep` most recent ones.
    void complete(size_t keep) {
        if (group_ends.size() <= keep) return;
        const size_t groups = group_ends.size() - keep;
        const size_t upto = group_ends[groups - 1];
        for (size_t i = 0; i < upto; ++i) memcpy(copies[i].dst, copies[i].data, copies[i].bytes);
        copies.erase(copies.begin(), copies.begin() + upto);
        group_ends.erase(group_ends.begin(), group_ends.begin() + groups);
        for (auto& e : group_ends) e -= upto;
    }
};
thread_local AsyncCopies tl_copies;

Launch& current() {
    if (!tl_launch) {
        fprintf(stderr, "simt: a device function was called outside a launch\n");
        abort();
    }
    return *tl_launch;
}

// The launch of the calling thread, which must be one of cooperating
// threads: `what` names the primitive for the error otherwise.
Launch& cooperating(const char* what) {
    Launch& L = current();
    if (L.independent) {
        L.fail(std::string("the plan declares independent threads (Cooperation::Independent), but ") +
               where() + " uses " + what);
        throw Abort{};
    }
    return L;
}

void set_thread(Launch* L, unsigned tid) {
    tl_launch = L;
    threadIdx = {tid % L->block.x, (tid / L->block.x) % L->block.y, tid / (L->block.x * L->block.y)};
    blockDim = L->block;
    gridDim = L->grid;
    tl_lane = static_cast<int>(tid % 32);
    tl_warp = static_cast<int>(tid / 32);
}

// Whether p..p+bytes lies in the block's shared memory.
bool in_shared(const Launch& L, const void* p, size_t bytes) {
    const auto* b = static_cast<const unsigned char*>(p);
    if (b >= L.arena && b + bytes <= L.arena + L.used) return true;
    return L.dyn && b >= L.dyn && b + bytes <= L.dyn + L.dyn_bytes;
}


// Runs the kernel body for the calling thread in the current block; false
// once the launch has failed.
bool call_kernel(Launch* L) {
    try {
        tl_copies.clear();
        L->kernel->call(L->args);
        if (tl_copies.pending()) {
            L->fail("cp.async: " + where() + " ended the kernel with " +
                    std::to_string(tl_copies.copies.size()) +
                    " copies it never waited for (cp_async_wait)");
            tl_copies.clear();
            return false;
        }
        return true;
    } catch (const Abort&) {
    } catch (const std::exception& e) {
        L->fail(std::string("exception in kernel: ") + e.what());
    } catch (...) {
        L->fail("unknown exception in kernel");
    }
    return false;
}

template <typename F>
void for_each_block(const Launch* L, F f) {
    for (unsigned bz = 0; bz < L->grid.z; ++bz)
        for (unsigned by = 0; by < L->grid.y; ++by)
            for (unsigned bx = 0; bx < L->grid.x; ++bx) {
                blockIdx = {bx, by, bz};
                if (!f()) return;
            }
}

// One cooperating CUDA thread: every block in turn, meeting the others at
// the end of each. Leaving is checked against the thread's warp (no lane
// may wait in a shuffle it left), and the last thread to finish a block
// re-poisons the shared memory for the next.
void run_cooperating(Launch* L, unsigned tid) {
    set_thread(L, tid);
    for_each_block(L, [L] {
        if (!call_kernel(L)) return false;
        try {
            L->warps[tl_warp]->bar.leave(*L, "warp");
            L->block_bar.arrive(*L, kExit, "block", [L] {
                L->poison_shared();
                for (auto& w : L->warps) {
                    std::lock_guard<std::mutex> g(w->bar.m);
                    w->bar.exited = 0;
                }
            });
        } catch (const Abort&) {
            return false;
        }
        return true;
    });
    tl_launch = nullptr;
}

// Every thread of every block, one after another, on the calling thread.
void run_independent(Launch* L) {
    for_each_block(L, [L] {
        for (unsigned t = 0; t < L->nthreads; ++t) {
            set_thread(L, t);
            if (!call_kernel(L)) return false;
        }
        return true;
    });
    tl_launch = nullptr;
}

// Parked OS threads that run the cooperating threads of a launch. Only one
// launch uses the pool at a time (the device mutex), and the pool is never
// destroyed: its threads are detached and park between launches.
class Pool {
  public:
    // Runs run_cooperating(L, t) for t in [0, n) on n pool threads and
    // returns when all have finished.
    void run(Launch* L, unsigned n) {
        while (workers_.size() < n) workers_.push_back(start_worker());
        {
            std::lock_guard<std::mutex> g(done_m_);
            remaining_ = n;
        }
        for (unsigned t = 0; t < n; ++t) {
            Worker& w = *workers_[t];
            std::lock_guard<std::mutex> g(w.m);
            w.job = L;
            w.tid = t;
            w.cv.notify_one();
        }
        std::unique_lock<std::mutex> g(done_m_);
        done_cv_.wait(g, [this] { return remaining_ == 0; });
    }

  private:
    struct Worker {
        std::mutex m;
        std::condition_variable cv;
        Launch* job = nullptr;  // guarded by m
        unsigned tid = 0;       // guarded by m
    };

    Worker* start_worker() {
        auto* w = new Worker();
        std::thread([this, w] {
            for (;;) {
                Launch* L;
                unsigned tid;
                {
                    std::unique_lock<std::mutex> g(w->m);
                    w->cv.wait(g, [w] { return w->job != nullptr; });
                    L = w->job;
                    tid = w->tid;
                    w->job = nullptr;
                }
                run_cooperating(L, tid);
                std::lock_guard<std::mutex> g(done_m_);
                if (--remaining_ == 0) done_cv_.notify_one();
            }
        }).detach();
        return w;
    }

    std::vector<Worker*> workers_;
    std::mutex done_m_;
    std::condition_variable done_cv_;
    unsigned remaining_ = 0;  // guarded by done_m_
};

Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: its threads outlive main
    return *p;
}

std::mutex g_device;  // one launch at a time

}  // namespace

void syncthreads(int site) {
    Launch& L = cooperating("__syncthreads");
    L.block_bar.arrive(L, site, "block");
}

void syncwarp(unsigned mask, int kind) {
    Launch& L = cooperating("__syncwarp");
    if (mask != 0xffffffffu) {
        L.fail("only full-warp masks are emulated");
        throw Abort{};
    }
    L.warps[tl_warp]->bar.arrive(L, kind, "warp");
}

void warp_exchange(unsigned mask, const void* in, void* out, size_t size, int src) {
    Launch& L = cooperating("a warp shuffle");
    if (mask != 0xffffffffu) {
        L.fail("only full-warp masks are emulated");
        throw Abort{};
    }
    Warp& w = *L.warps[tl_warp];
    const int set = w.next[tl_lane];
    w.next[tl_lane] = 1 - set;
    memcpy(w.slot[set][tl_lane], in, size);
    w.bar.arrive(L, kShuffle, "warp");
    memcpy(out, w.slot[set][src], size);
}

void warp_gather(int site, const void* in, size_t size, void* out) {
    Launch& L = cooperating(describe(site).c_str());
    if (size > sizeof(Warp::gather[0][0])) {
        L.fail("warp_gather of " + std::to_string(size) + " bytes per lane (at most 64)");
        throw Abort{};
    }
    Warp& w = *L.warps[tl_warp];
    const int set = w.gather_next[tl_lane];
    w.gather_next[tl_lane] = 1 - set;
    memcpy(w.gather[set][tl_lane], in, size);
    w.bar.arrive(L, site, "warp");
    auto* o = static_cast<unsigned char*>(out);
    for (int l = 0; l < 32; ++l) memcpy(o + l * size, w.gather[set][l], size);
}

void fail_launch(const std::string& msg) {
    Launch& L = current();
    L.fail(msg + " in " + where());
    throw Abort{};
}

std::string address(const void* p) {
    char buf[32];
    snprintf(buf, sizeof buf, "%p", p);
    return buf;
}

void* shared_slot(const void* key, size_t size, size_t align) {
    Launch& L = cooperating("shared memory");
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
    Launch& L = cooperating("dynamic shared memory");
    return L.dyn;
}

int lane() { return tl_lane; }

void misaligned(const void* p, size_t bytes, const char* what) {
    Launch& L = current();
    const char* space = in_shared(L, p, bytes) ? "shared" : "global";
    L.fail("misaligned " + std::to_string(bytes) + "-byte " + space + " " + what + " at " +
           address(p) + " in " + where());
    throw Abort{};
}

void cp_async(void* dst, const void* src, size_t bytes) {
    Launch& L = cooperating("cp.async");
    const auto fail = [&](const std::string& why) {
        L.fail("cp.async of " + std::to_string(bytes) + " bytes from " + address(src) + " to " +
               address(dst) + " in " + where() + ": " + why);
        throw Abort{};
    };
    if (bytes != 4 && bytes != 8 && bytes != 16) fail("copies 4, 8 or 16 bytes");
    if (reinterpret_cast<uintptr_t>(dst) % bytes != 0) fail("misaligned shared destination");
    if (reinterpret_cast<uintptr_t>(src) % bytes != 0) fail("misaligned global source");
    if (!in_shared(L, dst, bytes)) fail("the destination is not shared memory");
    if (in_shared(L, src, bytes)) fail("the source is shared memory");
    AsyncCopies::Copy c;
    c.dst = dst;
    c.bytes = bytes;
    memcpy(c.data, src, bytes);
    tl_copies.copies.push_back(c);
}

void cp_async_commit() {
    cooperating("cp.async.commit_group");
    tl_copies.group_ends.push_back(tl_copies.copies.size());
}

void cp_async_wait(int pending) {
    cooperating("cp.async.wait_group");
    tl_copies.complete(pending < 0 ? 0 : static_cast<size_t>(pending));
}

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
                       size_t dyn_bytes, int independent, void** args, size_t nargs,
                       unsigned watchdog_ms, char* err, size_t errlen) {
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
    L->independent = independent != 0;
    if (watchdog_ms) L->watchdog = std::chrono::milliseconds(watchdog_ms);
    L->dyn_bytes = dyn_bytes;
    if (dyn_bytes) {
        L->dyn = static_cast<unsigned char*>(aligned_alloc(256, (dyn_bytes + 255) / 256 * 256));
        if (!L->dyn) return report("out of memory for dynamic shared memory");
    }
    L->poison_shared();
    if (L->independent) {
        simt::run_independent(L.get());
    } else {
        L->block_bar.expected = L->nthreads;
        for (unsigned w = 0; w < L->nthreads / 32; ++w) {
            L->warps.emplace_back(new simt::Warp());
            L->warps.back()->bar.expected = 32;
        }
        try {
            simt::pool().run(L.get(), L->nthreads);
        } catch (const std::exception& ex) {
            return report(std::string(name) + ": could not start the threads: " + ex.what());
        }
    }
    if (L->failed.load()) return report(std::string(name) + ": " + L->err);
    return 0;
}

// Runs kernel `name` over the grid, its blocks' threads independent (one
// after another) or cooperating (one OS thread each). Returns 0, or -1 with
// a message in err. No C++ exception crosses this boundary.
int simt_launch(const char* name, const unsigned grid[3], const unsigned block[3], size_t dyn_bytes,
                int independent, void** args, size_t nargs, unsigned watchdog_ms, char* err,
                size_t errlen) {
    try {
        return launch_impl(name, grid, block, dyn_bytes, independent, args, nargs, watchdog_ms,
                           err, errlen);
    } catch (...) {
        if (errlen) snprintf(err, errlen, "%s: the emulator failed (out of memory?)", name);
        return -1;
    }
}

}  // extern "C"
