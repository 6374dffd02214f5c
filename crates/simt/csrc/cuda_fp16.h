// cuda_fp16.h for the emulator: __half and its conversions (simt_half.h).
#pragma once
#include "simt_half.h"
