// cuda_bf16.h for the emulator: __nv_bfloat16 and its conversions
// (simt_half.h).
#pragma once
#include "simt_half.h"
