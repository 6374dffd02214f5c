// runtime.cpp — runs a kernel launch on the CPU (see simt.h).
//
// A launch whose threads cooperate (barriers, shuffles, shared memory) runs
// every CUDA thread of a block as a fiber of its own (its own stack and
// saved registers), all on the launching OS thread. A fiber runs until it waits
// at a barrier; then the scheduler resumes the next fiber that can go on,
// round robin. On x86-64 a switch saves the callee-saved registers and
// changes stacks (a few nanoseconds); elsewhere it is swapcontext, whose
// signal-mask system call costs a few hundred. Either is far below an OS
// thread's wake-up, and a block of 256 threads meets at every
// __syncthreads. The fibers run every block of the grid in turn and meet
// between blocks at an end-of-block barrier whose last arrival re-poisons
// the shared memory. When no fiber can go on and some still wait, the
// barriers they wait at can never complete: the launch fails at once with
// where each one waits.
//
// Built with -fsanitize=thread, each fiber is a ThreadSanitizer fiber of
// its own: switches between them carry no synchronisation, the barriers'
// mutex and atomics do, so a missing __syncthreads is a race that
// ThreadSanitizer reports, as it would between OS threads.
//
// A launch whose plan declares independent threads runs each block's
// threads one after another on the launching thread; a barrier, shuffle or
// shared-memory access in such a kernel fails the launch.
//
// Launches are serialised by a global mutex (the emulated "device").
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "registry.h"
#include "simt.h"

#if defined(__SANITIZE_THREAD__)
#define SIMT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIMT_TSAN 1
#endif
#endif
#ifdef SIMT_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace simt {

thread_local const Position* current_position = nullptr;

namespace {

constexpr int kExit = -1;     // barrier site: the thread left the kernel
constexpr int kShuffle = -2;  // barrier site: a warp shuffle
constexpr size_t kStaticShared = 48 * 1024;
constexpr size_t kFiberStack = 512 * 1024;  // per CUDA thread, plus a guard page

struct Abort {};  // unwinds a fiber once the launch has failed

std::string describe(int site) {
    if (site > 0) return "__syncthreads at line " + std::to_string(site);
    if (site == kExit) return "the end of the kernel";
    if (site == kShuffle) return "a warp shuffle";
    if (site == kWmmaLoad) return "wmma::load_matrix_sync";
    if (site == kWmmaMma) return "wmma::mma_sync";
    if (site == kWmmaStore) return "wmma::store_matrix_sync";
    return "__syncwarp";
}

// A suspended fiber's registers and stack, and the switch between two.
// SIMT_UCONTEXT forces the portable switch (scripts/simt-tsan.sh runs both).
#if defined(__x86_64__) && defined(__linux__) && !defined(SIMT_UCONTEXT)
// The System V x86-64 switch: pushes the callee-saved registers and the
// SSE and x87 control words on the current stack, saves the stack pointer
// in *from, loads `to` and pops the same from there.
extern "C" void simt_switch_stack(void** from, void* to);
asm(R"(
    .text
    .globl simt_switch_stack
    .hidden simt_switch_stack
    .type simt_switch_stack, @function
simt_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr 8(%rsp)
    fnstcw (%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr 8(%rsp)
    fldcw (%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size simt_switch_stack, .-simt_switch_stack
)");

struct Context {
    void* sp = nullptr;
};

// A context that starts `entry` (which never returns) on the stack that
// ends at `top`: the frame simt_switch_stack pops, with the current control
// words, zeroed registers and `entry` as the return address, aligned as if
// `entry` had been called, above it a null return address.
void make_context(Context& c, void* top, void (*entry)()) {
    auto* end = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t{15});
    uint64_t* sp = end - 10;
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    memset(sp, 0, 10 * sizeof(uint64_t));
    memcpy(&sp[0], &fpucw, sizeof fpucw);
    memcpy(&sp[1], &mxcsr, sizeof mxcsr);
    sp[8] = reinterpret_cast<uint64_t>(entry);
    c.sp = sp;
}

void switch_context(Context& from, Context& to) { simt_switch_stack(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};

void make_context(Context& c, void* top, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = static_cast<unsigned char*>(top) - kFiberStack;
    c.uc.uc_stack.ss_size = kFiberStack;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}

void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

struct Launch;

// A reusable barrier for `expected` threads that checks they all arrive at
// the same site. Arrivals are counted under a mutex; a waiter yields to the
// scheduler until the generation word changes, which the last arrival
// bumps with release order, so everything written before the barrier
// happens-before everything read after it (ThreadSanitizer sees the mutex
// and the atomics; the fiber switches themselves synchronise nothing).
struct Barrier {
    std::mutex m;
    unsigned expected = 0;
    unsigned count = 0;   // guarded by m: threads waiting here now
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

// The cp.async copies of a thread not yet waited for: their destinations
// and the bytes read from their sources, in issue order, and where each
// committed group ends.
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

// One emulated CUDA thread: its position, its place in the launch, and, for
// a cooperating launch, the fiber it runs on. Only the thread itself touches
// its fields once it has started, but for `waiting`, `wait_gen` and `done`,
// which the scheduler reads (atomics, relaxed: they order nothing).
struct Thread {
    Position pos{};
    Launch* launch = nullptr;
    unsigned tid = 0;
    int lane = 0;
    int warp = 0;
    AsyncCopies copies;

    Context ctx;
    std::atomic<Barrier*> waiting{nullptr};
    std::atomic<uint32_t> wait_gen{0};
    std::atomic<bool> done{false};
#ifdef SIMT_TSAN
    void* tsan = nullptr;  // its ThreadSanitizer fiber
    bool started = false;  // the scheduler's: whether it has run yet
#endif

    // Whether it may run: it waits at no barrier, or its barrier completed.
    bool can_go_on() const {
        Barrier* b = waiting.load(std::memory_order_relaxed);
        return !b || b->gen.load(std::memory_order_relaxed) != wait_gen.load(std::memory_order_relaxed);
    }
};

// The launching thread's side of a cooperating launch: its own context, to
// which a fiber returns when it waits or finishes.
struct Scheduler {
    Context ctx;
#ifdef SIMT_TSAN
    void* tsan = nullptr;
#endif
};

struct Launch {
    const simt_entry* kernel = nullptr;
    dim3 grid{}, block{};
    unsigned nthreads = 0;
    void** args = nullptr;
    bool independent = false;
    Scheduler* sched = nullptr;

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

// The running CUDA thread. Every fiber reads and the scheduler writes this
// one word of the OS thread, which is not shared memory of the emulated
// device: ThreadSanitizer is told to leave it alone.
thread_local Thread* tl_thread = nullptr;

SIMT_UNTRACKED void enter(Thread* t) {
    tl_thread = t;
    current_position = t ? &t->pos : nullptr;
}

SIMT_UNTRACKED Thread* running() { return tl_thread; }

Thread& me() {
    Thread* t = running();
    if (!t) {
        fprintf(stderr, "simt: a device function was called outside a launch\n");
        abort();
    }
    return *t;
}

std::string where() {
    const Position& p = me().pos;
    return "block (" + std::to_string(p.block.x) + "," + std::to_string(p.block.y) + "," +
           std::to_string(p.block.z) + "), thread " + std::to_string(p.thread.x) + "," +
           std::to_string(p.thread.y) + "," + std::to_string(p.thread.z);
}

// Hands the OS thread from the running fiber `t` back to the scheduler;
// returns when the scheduler resumes `t`. A finished thread's last switch
// synchronises (its writes happen-before the end of the launch); the others
// do not, so that only the barriers order the threads.
void yield(Thread& t) {
    Scheduler& s = *t.launch->sched;
#ifdef SIMT_TSAN
    __tsan_switch_to_fiber(s.tsan, t.done.load() ? 0 : __tsan_switch_to_fiber_no_sync);
#endif
    switch_context(t.ctx, s.ctx);
}

// Runs fiber `t` until it waits or finishes. Its first start synchronises
// (the launch's set-up happens-before the thread), later ones do not.
// ThreadSanitizer counts everything after its switch call as the target
// fiber's, so the scheduler's own bookkeeping comes first.
void resume(Scheduler& s, Thread& t) {
    enter(&t);
#ifdef SIMT_TSAN
    const int flags = t.started ? __tsan_switch_to_fiber_no_sync : 0;
    t.started = true;
    __tsan_switch_to_fiber(t.tsan, flags);
#endif
    switch_context(s.ctx, t.ctx);
    enter(nullptr);
}

template <typename F>
void Barrier::arrive(Launch& L, int at, const char* scope, F on_complete) {
    uint32_t g;
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
        if (++count == expected) {
            count = 0;
            on_complete();
            gen.store(g + 1, std::memory_order_release);
            return;
        }
    }
    Thread& t = me();
    t.wait_gen.store(g, std::memory_order_relaxed);
    t.waiting.store(this, std::memory_order_relaxed);
    yield(t);
    t.waiting.store(nullptr, std::memory_order_relaxed);
    if (gen.load(std::memory_order_acquire) == g || L.failed.load()) throw Abort{};
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

// The position of a waiting thread, read by the scheduler: a thread writes
// its own as it goes on to the next block, and all of them have stopped.
SIMT_UNTRACKED Position position_of(const Thread& t) { return t.pos; }

// Why no waiting thread of the launch can go on: every barrier with
// threads waiting, and where they wait.
std::string deadlock(Launch& L, const Position& at) {
    std::string msg = "deadlock in block (" + std::to_string(at.block.x) + "," +
                      std::to_string(at.block.y) + "," + std::to_string(at.block.z) +
                      "): no waiting thread can go on, so these barriers never complete:";
    const auto report = [&msg](Barrier& b, const std::string& scope) {
        std::lock_guard<std::mutex> lk(b.m);
        if (b.count > 0)
            msg += " " + std::to_string(b.count) + " of " + std::to_string(b.expected) +
                   " threads of " + scope + " wait at " + describe(b.site) + ";";
    };
    report(L.block_bar, "the block");
    for (size_t w = 0; w < L.warps.size(); ++w) report(L.warps[w]->bar, "warp " + std::to_string(w));
    msg.pop_back();
    return msg;
}

// The launch of the calling thread, which must be one of cooperating
// threads: `what` names the primitive for the error otherwise.
Launch& cooperating(const char* what) {
    Launch& L = *me().launch;
    if (L.independent) {
        L.fail(std::string("the plan declares independent threads (Cooperation::Independent), but ") +
               where() + " uses " + what);
        throw Abort{};
    }
    return L;
}

void set_thread(Launch* L, unsigned tid, Thread& t) {
    t.launch = L;
    t.tid = tid;
    t.pos.thread = {tid % L->block.x, (tid / L->block.x) % L->block.y,
                    tid / (L->block.x * L->block.y)};
    t.pos.block_dim = L->block;
    t.pos.grid_dim = L->grid;
    t.lane = static_cast<int>(tid % 32);
    t.warp = static_cast<int>(tid / 32);
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
    AsyncCopies& copies = me().copies;
    try {
        copies.clear();
        L->kernel->call(L->args);
        if (copies.pending()) {
            L->fail("cp.async: " + where() + " ended the kernel with " +
                    std::to_string(copies.copies.size()) +
                    " copies it never waited for (cp_async_wait)");
            copies.clear();
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

// Calls f() for every block of the grid in order, with the calling thread's
// blockIdx set, until f() returns false.
template <typename F>
void for_each_block(const Launch* L, F f) {
    Thread& t = me();
    for (unsigned bz = 0; bz < L->grid.z; ++bz)
        for (unsigned by = 0; by < L->grid.y; ++by)
            for (unsigned bx = 0; bx < L->grid.x; ++bx) {
                t.pos.block = {bx, by, bz};
                if (!f()) return;
            }
}

// One cooperating CUDA thread: every block in turn, meeting the others at
// the end of each. Leaving is checked against the thread's warp (no lane
// may wait in a shuffle it left), and the last thread to finish a block
// re-poisons the shared memory for the next.
void run_cooperating(Launch* L) {
    for_each_block(L, [L] {
        if (!call_kernel(L)) return false;
        try {
            L->warps[me().warp]->bar.leave(*L, "warp");
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
}

// A fiber's whole life: its thread's blocks, then a last switch back.
void fiber_main() {
    Thread& t = me();
    run_cooperating(t.launch);
    t.done.store(true, std::memory_order_relaxed);
    yield(t);
    abort();  // a finished fiber is never resumed
}

// Every thread of every block, one after another, on the calling thread.
void run_independent(Launch* L) {
    Thread t;
    enter(&t);
    for_each_block(L, [L, &t] {
        for (unsigned i = 0; i < L->nthreads; ++i) {
            set_thread(L, i, t);
            if (!call_kernel(L)) return false;
        }
        return true;
    });
    enter(nullptr);
}

// The tops (high ends) of the fiber stacks, kept for the life of the
// process and grown to the largest block seen. Each stack has an
// inaccessible guard page below it, so a kernel that overflows its stack
// faults instead of writing into another's.
std::vector<void*>& stack_tops() {
    static auto* v = new std::vector<void*>();
    return *v;
}

// The top of fiber stack i, mapped on first use.
void* stack_top(size_t i) {
    auto& v = stack_tops();
    while (v.size() <= i) {
        const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        void* p = mmap(nullptr, page + kFiberStack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        if (mprotect(p, page, PROT_NONE) != 0) throw std::bad_alloc();
        v.push_back(static_cast<unsigned char*>(p) + page + kFiberStack);
    }
    return v[i];
}

// Runs a cooperating launch: one fiber per thread of a block, resumed round
// robin while any can go on.
void run_fibers(Launch* L) {
    const unsigned n = L->nthreads;
    std::unique_ptr<Thread[]> threads(new Thread[n]);
    Scheduler s;
    L->sched = &s;
#ifdef SIMT_TSAN
    s.tsan = __tsan_get_current_fiber();
#endif
    for (unsigned i = 0; i < n; ++i) {
        Thread& t = threads[i];
        set_thread(L, i, t);
        make_context(t.ctx, stack_top(i), fiber_main);
#ifdef SIMT_TSAN
        t.tsan = __tsan_create_fiber(0);
#endif
    }
    for (unsigned live = n; live > 0;) {
        bool ran = false;
        for (unsigned i = 0; i < n; ++i) {
            Thread& t = threads[i];
            if (t.done.load(std::memory_order_relaxed)) continue;
            if (!t.can_go_on() && !L->failed.load()) continue;
            resume(s, t);
            ran = true;
            if (t.done.load(std::memory_order_relaxed)) --live;
        }
        if (!ran) {
            const Thread* waiting = &threads[0];
            while (waiting->done.load(std::memory_order_relaxed)) ++waiting;
            L->fail(deadlock(*L, position_of(*waiting)));
        }
    }
#ifdef SIMT_TSAN
    for (unsigned i = 0; i < n; ++i) __tsan_destroy_fiber(threads[i].tsan);
#endif
    L->sched = nullptr;
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
    L.warps[me().warp]->bar.arrive(L, kind, "warp");
}

void warp_exchange(unsigned mask, const void* in, void* out, size_t size, int src) {
    Launch& L = cooperating("a warp shuffle");
    if (mask != 0xffffffffu) {
        L.fail("only full-warp masks are emulated");
        throw Abort{};
    }
    const Thread& t = me();
    Warp& w = *L.warps[t.warp];
    const int set = w.next[t.lane];
    w.next[t.lane] = 1 - set;
    memcpy(w.slot[set][t.lane], in, size);
    w.bar.arrive(L, kShuffle, "warp");
    memcpy(out, w.slot[set][src], size);
}

void warp_gather(int site, const void* in, size_t size, void* out) {
    Launch& L = cooperating(describe(site).c_str());
    if (size > sizeof(Warp::gather[0][0])) {
        L.fail("warp_gather of " + std::to_string(size) + " bytes per lane (at most 64)");
        throw Abort{};
    }
    const Thread& t = me();
    Warp& w = *L.warps[t.warp];
    const int set = w.gather_next[t.lane];
    w.gather_next[t.lane] = 1 - set;
    memcpy(w.gather[set][t.lane], in, size);
    w.bar.arrive(L, site, "warp");
    auto* o = static_cast<unsigned char*>(out);
    for (int l = 0; l < 32; ++l) memcpy(o + l * size, w.gather[set][l], size);
}

void fail_launch(const std::string& msg) {
    Launch& L = *me().launch;
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

int lane() { return me().lane; }

void misaligned(const void* p, size_t bytes, const char* what) {
    Launch& L = *me().launch;
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
    me().copies.copies.push_back(c);
}

void cp_async_commit() {
    cooperating("cp.async.commit_group");
    AsyncCopies& copies = me().copies;
    copies.group_ends.push_back(copies.copies.size());
}

void cp_async_wait(int pending) {
    cooperating("cp.async.wait_group");
    me().copies.complete(pending < 0 ? 0 : static_cast<size_t>(pending));
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
                       char* err, size_t errlen) {
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
            simt::run_fibers(L.get());
        } catch (const std::exception& ex) {
            return report(std::string(name) + ": could not set up the threads: " + ex.what());
        }
    }
    if (L->failed.load()) return report(std::string(name) + ": " + L->err);
    return 0;
}

// Runs kernel `name` over the grid, its blocks' threads independent (one
// after another) or cooperating (one fiber each). Returns 0, or -1 with a
// message in err. No C++ exception crosses this boundary.
int simt_launch(const char* name, const unsigned grid[3], const unsigned block[3], size_t dyn_bytes,
                int independent, void** args, size_t nargs, char* err, size_t errlen) {
    try {
        return launch_impl(name, grid, block, dyn_bytes, independent, args, nargs, err, errlen);
    } catch (...) {
        if (errlen) snprintf(err, errlen, "%s: the emulator failed (out of memory?)", name);
        return -1;
    }
}

}  // extern "C"
