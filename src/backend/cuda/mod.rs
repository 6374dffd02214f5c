//! The CUDA backend (feature `cuda`): hand-written kernels launched through
//! cudarc. Placeholder until the backend lands.
