// selftest.cu — kernels that exercise the emulator itself (compiled into
// the harness only, never into the PTX).
#include "../../../kernels/common.cuh"

// Thread 0 of each block waits at a __syncthreads the others never reach.
extern "C" __global__ void simt_divergent_barrier(float* out) {
    if (threadIdx.x == 0) __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}

// Lanes 16..31 of every warp leave before the shuffle the others wait in.
extern "C" __global__ void simt_divergent_shuffle(float* out) {
    if (threadIdx.x % 32 >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

// Writes the value of its static shared memory before any thread stored
// to it: the poison.
extern "C" __global__ void simt_read_shared_poison(float* out) {
    ADV_SHARED(float, s, [64]);
    ADV_DYN_SHARED(double, d);
    out[threadIdx.x] = s[threadIdx.x % 64];
    out[blockDim.x + threadIdx.x] = (float)d[0];
}

// out[t] = the value lane t gets from each kind of shuffle of lane ids.
extern "C" __global__ void simt_shuffles(unsigned* out) {
    const unsigned l = threadIdx.x % 32;
    const int base = threadIdx.x * 4;
    out[base + 0] = __shfl_xor_sync(0xffffffffu, l, 5);
    out[base + 1] = __shfl_down_sync(0xffffffffu, l, 3);
    out[base + 2] = __shfl_up_sync(0xffffffffu, l, 3);
    out[base + 3] = __shfl_sync(0xffffffffu, l, 7);
}

// One warp: lane 0 waits in __syncthreads, the others in __syncwarp; neither
// barrier can ever complete.
extern "C" __global__ void simt_deadlock() {
    if (threadIdx.x == 0)
        __syncthreads();
    else
        __syncwarp();
}

// Each thread below n writes its element, and thread 0 one more: past the
// end of a buffer of n elements.
extern "C" __global__ void simt_write_past_end(float* out, int n) {
    const int i = threadIdx.x;
    if (i < n) out[i] = 1.0f;
    if (i == 0) out[n] = 2.0f;
}

// A 16-byte load from `out + offset` (global) and from `shared + offset`:
// misaligned unless offset is a multiple of 4.
extern "C" __global__ void simt_vector_access(float* out, int offset, int shared) {
    ADV_SHARED(float, s, [64]);
    float v[4] = {0, 0, 0, 0};
    if (threadIdx.x == 0) {
        if (shared)
            adv::load16(&s[offset], v);
        else
            adv::load16(out + offset, v);
    }
    out[threadIdx.x] = 1.0f;
}

// Thread 0 copies in[0..4) to shared memory with cp.async and writes what
// it reads there before waiting (out[0..4)) and after (out[4..8)); then
// every thread waits at a barrier. With `wait` = 0 it never waits.
extern "C" __global__ void simt_cp_async(const float* in, float* out, int src_offset, int wait) {
    ADV_SHARED(float, s, [8]);
    if (threadIdx.x == 0) {
        adv::cp_async16(s, in + src_offset);
        adv::cp_async_commit();
        for (int i = 0; i < 4; ++i) out[i] = s[i];
        if (wait) adv::cp_async_wait<0>();
        for (int i = 0; i < 4; ++i) out[4 + i] = s[i];
    }
    __syncthreads();
}

// cp.async with a global destination.
extern "C" __global__ void simt_cp_async_to_global(const float* in, float* out) {
    adv::cp_async16(out, in);
    adv::cp_async_commit();
    adv::cp_async_wait<0>();
}
