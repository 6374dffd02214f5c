//! Convolution and pooling on the CPU.
//!
//! A convolution is an unfold (im2col) of each image into its patch matrix
//! `[C·KH·KW, OH·OW]`, multiplied with the packed gemm
//! ([`gemm::gemm`]): forward `y_n = W·col_n + b`, input gradient
//! `dx_n = fold(Wᵀ·g_n)`, weight gradient `dW = Σ_n g_n·col_nᵀ`. Each
//! task handles a fixed run of [`IMAGES_PER_TASK`] images with one patch
//! buffer from the pool, so a steady state allocates nothing. The weight
//! gradient sums a partial per task, then the partials in task order:
//! the bits depend on the batch alone, not on the number of threads.
//!
//! Pooling (kernel = stride = K) runs over planes `[H, W]` in fixed runs of
//! planes, one window at a time; 2×2 pooling of f32 on a CPU with AVX-512F
//! sixteen windows at a time (`pool_x86.rs`).

use rayon::prelude::*;

use super::gemm::{self, GemmElem};
#[cfg(target_arch = "x86_64")]
use super::pool_x86;
use crate::backend::{pool, Conv2dDims, PoolDims};
use crate::dtype::Float;

/// Images per rayon task: fixed, so the split never depends on the
/// number of threads.
pub const IMAGES_PER_TASK: usize = 4;

/// Planes per rayon task for pooling.
const PLANES_PER_TASK: usize = 16;

/// A buffer of `len` values from the pool, every one set to `value`.
fn filled<T: Float>(len: usize, value: T) -> Vec<T> {
    let mut v = pool::take(len);
    v.resize(len, value);
    v
}

/// For the kernel offset `k` along an axis of `extent` input positions,
/// the output positions `lo..hi` whose input position `o·s + k − pad`
/// falls inside the input.
fn valid_outputs(
    k: usize,
    pad: usize,
    stride: usize,
    extent: usize,
    outputs: usize,
) -> (usize, usize) {
    // o·s + k ≥ pad  ⇔  o ≥ ⌈(pad − k)/s⌉ ; o·s + k − pad < extent ⇔ o·s < extent + pad − k.
    let lo = pad.saturating_sub(k).div_ceil(stride).min(outputs);
    let room = (extent + pad).saturating_sub(k);
    let hi = room.div_ceil(stride).clamp(lo, outputs);
    (lo, hi)
}

/// Unfolds one image `x` `[C, H, W]` into `col` `[C·KH·KW, OH·OW]`:
/// `col[(c·KH + p)·KW + q, i·OW + j] = x[c, i·s+p−pad, j·s+q−pad]`, 0
/// outside the image.
pub fn im2col<T: Float>(x: &[T], d: &Conv2dDims, col: &mut [T]) {
    let (oh, ow) = (d.out_h(), d.out_w());
    let (h, w, s, pad) = (d.height, d.width, d.stride, d.padding);
    let mut rows = col.chunks_exact_mut(oh * ow);
    for plane in x.chunks_exact(h * w).take(d.in_channels) {
        for p in 0..d.kernel_h {
            let (i_lo, i_hi) = valid_outputs(p, pad, s, h, oh);
            for q in 0..d.kernel_w {
                let row = rows.next().expect("col holds C·KH·KW rows");
                let (j_lo, j_hi) = valid_outputs(q, pad, s, w, ow);
                row[..i_lo * ow].fill(T::ZERO);
                row[i_hi * ow..].fill(T::ZERO);
                if s == 1 && ow == w {
                    let top = i_lo + p - pad;
                    let out = &mut row[i_lo * ow..i_hi * ow];
                    same_width_rows(plane, w, top, q, pad, (j_lo, j_hi), out);
                    continue;
                }
                for i in i_lo..i_hi {
                    let out = &mut row[i * ow..(i + 1) * ow];
                    let src = &plane[(i * s + p - pad) * w..][..w];
                    out[..j_lo].fill(T::ZERO);
                    out[j_hi..].fill(T::ZERO);
                    if s == 1 {
                        let start = j_lo + q - pad;
                        out[j_lo..j_hi].copy_from_slice(&src[start..start + (j_hi - j_lo)]);
                    } else {
                        for (j, o) in out[j_lo..j_hi].iter_mut().enumerate() {
                            *o = src[(j_lo + j) * s + q - pad];
                        }
                    }
                }
            }
        }
    }
}

/// Part of one row of [`im2col`]'s patch matrix for stride 1 and an
/// output as wide as the input (`OW = W = width`): the output rows whose
/// input row `i + p − pad` is inside the image, the first of them reading
/// input row `top`. With equal widths every element is
/// `out[t] = plane[t + off]` for one offset `off`, so the rows take one
/// contiguous copy; then the columns outside `cols` (those whose input
/// column `j + q − pad` falls outside the image, read from a neighbouring
/// row or from outside the plane by that copy) are zeroed.
fn same_width_rows<T: Float>(
    plane: &[T],
    width: usize,
    top: usize,
    q: usize,
    pad: usize,
    cols: (usize, usize),
    out: &mut [T],
) {
    let off = (top * width + q) as isize - pad as isize;
    let lo = (-off).max(0) as usize;
    let hi = ((plane.len() as isize - off).max(0) as usize).min(out.len());
    if lo < hi {
        let from = (off + lo as isize) as usize;
        out[lo..hi].copy_from_slice(&plane[from..from + (hi - lo)]);
    }
    for r in out.chunks_exact_mut(width) {
        r[..cols.0].fill(T::ZERO);
        r[cols.1..].fill(T::ZERO);
    }
}

/// The adjoint of [`im2col`]: adds every patch value of `col` back into
/// its image position of `dx` `[C, H, W]` (which it overwrites first).
pub fn col2im<T: Float>(col: &[T], d: &Conv2dDims, dx: &mut [T]) {
    let (oh, ow) = (d.out_h(), d.out_w());
    let (h, w, s, pad) = (d.height, d.width, d.stride, d.padding);
    dx.fill(T::ZERO);
    let mut rows = col.chunks_exact(oh * ow);
    for plane in dx.chunks_exact_mut(h * w).take(d.in_channels) {
        for p in 0..d.kernel_h {
            let (i_lo, i_hi) = valid_outputs(p, pad, s, h, oh);
            for q in 0..d.kernel_w {
                let row = rows.next().expect("col holds C·KH·KW rows");
                let (j_lo, j_hi) = valid_outputs(q, pad, s, w, ow);
                for i in i_lo..i_hi {
                    let src = &row[i * ow..(i + 1) * ow];
                    let out = &mut plane[(i * s + p - pad) * w..][..w];
                    for j in j_lo..j_hi {
                        out[j * s + q - pad] += src[j];
                    }
                }
            }
        }
    }
}

/// [`crate::backend::BackendStorage::conv2d`]: `y_n = W·im2col(x_n) + b`.
pub fn conv2d<T: GemmElem>(x: &[T], weight: &[T], bias: &[T], d: &Conv2dDims) -> Vec<T> {
    let (o, patch, pixels) = (d.out_channels, d.patch_len(), d.out_h() * d.out_w());
    let (image_in, image_out) = (d.in_channels * d.height * d.width, o * pixels);
    let mut y = filled(d.batch * image_out, T::ZERO);
    if image_out == 0 {
        return y;
    }
    y.par_chunks_mut(IMAGES_PER_TASK * image_out)
        .zip(x.par_chunks(IMAGES_PER_TASK * image_in.max(1)))
        .for_each(|(ys, xs)| {
            let mut col = filled(patch * pixels, T::ZERO);
            for (yn, xn) in ys
                .chunks_exact_mut(image_out)
                .zip(xs.chunks(image_in.max(1)))
            {
                im2col(xn, d, &mut col);
                for (row, &b) in yn.chunks_exact_mut(pixels).zip(bias) {
                    row.fill(b);
                }
                gemm::gemm(o, pixels, patch, weight, false, &col, false, yn, true);
            }
            pool::give(col);
        });
    y
}

/// [`crate::backend::BackendStorage::conv2d_backward_input`]. With stride
/// 1, a square kernel and `pad < K`, it is the convolution of `g` with the
/// filters flipped and their channels swapped, padded by `K − 1 − pad`
/// (one product per image with the long sum inside, like the forward);
/// otherwise `dx_n = col2im(Wᵀ·g_n)`.
pub fn conv2d_backward_input<T: GemmElem>(g: &[T], weight: &[T], d: &Conv2dDims) -> Vec<T> {
    let k = d.kernel_h;
    if d.stride == 1 && d.kernel_w == k && d.padding < k {
        let (o, c) = (d.out_channels, d.in_channels);
        let mut flipped = filled(weight.len(), T::ZERO);
        for (oc, filter) in weight.chunks_exact(k * k).enumerate() {
            let (oi, ci) = (oc / c, oc % c);
            let dst = &mut flipped[(ci * o + oi) * k * k..][..k * k];
            for (to, &from) in dst.iter_mut().zip(filter.iter().rev()) {
                *to = from;
            }
        }
        let zero = filled(c, T::ZERO);
        let transposed = Conv2dDims {
            batch: d.batch,
            in_channels: o,
            height: d.out_h(),
            width: d.out_w(),
            out_channels: c,
            kernel_h: k,
            kernel_w: k,
            stride: 1,
            padding: k - 1 - d.padding,
        };
        let dx = conv2d(g, &flipped, &zero, &transposed);
        pool::give(flipped);
        pool::give(zero);
        return dx;
    }
    col2im_backward_input(g, weight, d)
}

/// `dx_n = col2im(Wᵀ·g_n)`: the input gradient of any convolution.
fn col2im_backward_input<T: GemmElem>(g: &[T], weight: &[T], d: &Conv2dDims) -> Vec<T> {
    let (o, patch, pixels) = (d.out_channels, d.patch_len(), d.out_h() * d.out_w());
    let (image_in, image_out) = (d.in_channels * d.height * d.width, o * pixels);
    let mut dx = filled(d.batch * image_in, T::ZERO);
    if image_in == 0 || image_out == 0 {
        return dx;
    }
    dx.par_chunks_mut(IMAGES_PER_TASK * image_in)
        .zip(g.par_chunks(IMAGES_PER_TASK * image_out))
        .for_each(|(dxs, gs)| {
            let mut col = filled(patch * pixels, T::ZERO);
            for (dxn, gn) in dxs
                .chunks_exact_mut(image_in)
                .zip(gs.chunks_exact(image_out))
            {
                gemm::gemm(patch, pixels, o, weight, true, gn, false, &mut col, false);
                col2im(&col, d, dxn);
            }
            pool::give(col);
        });
    dx
}

/// `Σ v` in a fixed order that vectorises: eight running sums over
/// `v[8i + l]`, added together at the end, then the tail in order.
fn lane_sum<T: Float>(v: &[T]) -> T {
    let mut lanes = [T::ZERO; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (s, &x) in lanes.iter_mut().zip(chunk) {
            *s += x;
        }
    }
    let [a, b, c, d, e, f, g, h] = lanes;
    tail.iter()
        .fold(((a + b) + (c + d)) + ((e + f) + (g + h)), |s, &x| s + x)
}

/// [`crate::backend::BackendStorage::conv2d_backward_params`]:
/// `dW = Σ_n g_n·im2col(x_n)ᵀ` and `db[o] = Σ_{n,i,j} g[n,o,i,j]`, summed
/// per run of [`IMAGES_PER_TASK`] images, then over the runs in order.
///
/// Each product is taken as its transpose, `dWᵀ += im2col(x_n)·g_nᵀ`
/// (`[C·KH·KW, O]`): the patch matrix is then the gemm's row-major `A`,
/// read in place, and only the small `g_n` is packed, where `dW` itself
/// would repack the whole patch matrix as a transposed `B`. The summed
/// `dWᵀ` is transposed once at the end.
pub fn conv2d_backward_params<T: GemmElem>(g: &[T], x: &[T], d: &Conv2dDims) -> (Vec<T>, Vec<T>) {
    let (o, patch, pixels) = (d.out_channels, d.patch_len(), d.out_h() * d.out_w());
    let (image_in, image_out) = (d.in_channels * d.height * d.width, o * pixels);
    let part = o * patch + o;
    let tasks = d.batch.div_ceil(IMAGES_PER_TASK);
    let mut partials = filled(tasks * part, T::ZERO);
    if image_out > 0 && image_in > 0 {
        partials
            .par_chunks_mut(part)
            .zip(g.par_chunks(IMAGES_PER_TASK * image_out))
            .zip(x.par_chunks(IMAGES_PER_TASK * image_in))
            .for_each(|((partial, gs), xs)| {
                let (dwt, db) = partial.split_at_mut(o * patch);
                let mut col = filled(patch * pixels, T::ZERO);
                for (gn, xn) in gs.chunks_exact(image_out).zip(xs.chunks_exact(image_in)) {
                    im2col(xn, d, &mut col);
                    gemm::gemm(patch, o, pixels, &col, false, gn, true, dwt, true);
                    for (b, row) in db.iter_mut().zip(gn.chunks_exact(pixels)) {
                        *b += lane_sum(row);
                    }
                }
                pool::give(col);
            });
    }
    let mut dwt = filled(o * patch, T::ZERO);
    let mut db = filled(o, T::ZERO);
    for partial in partials.chunks_exact(part) {
        let (pw, pb) = partial.split_at(o * patch);
        dwt.iter_mut().zip(pw).for_each(|(a, &b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, &b)| *a += b);
    }
    pool::give(partials);
    let mut dw = filled(o * patch, T::ZERO);
    for (r, row) in dwt.chunks_exact(o).enumerate() {
        for (oc, &v) in row.iter().enumerate() {
            dw[oc * patch + r] = v;
        }
    }
    pool::give(dwt);
    (dw, db)
}

/// Output columns handled at once by [`row_argmax`].
const COLUMNS: usize = 64;

/// For the output row `i` of a plane and its columns `j0..j0 + best.len()`,
/// the offset in the plane of the first maximum of each window, in
/// row-major order within the window (a NaN counts as a maximum, as in
/// PyTorch), written to `at`.
/// `K` is the kernel when known at compile time (2, the common case, lets
/// the compiler unroll the window), 0 to read it from `d`.
fn row_argmax<T: Float, const K: usize>(
    plane: &[T],
    d: &PoolDims,
    i: usize,
    j0: usize,
    at: &mut [usize],
) {
    let k = if K == 0 { d.kernel } else { K };
    let (w, n) = (d.width, at.len());
    let mut best = [T::ZERO; COLUMNS];
    let best = &mut best[..n];
    for a in 0..k {
        let start = (i * k + a) * w + j0 * k;
        let row = &plane[start..start + n * k];
        for b in 0..k {
            let first = a == 0 && b == 0;
            for (jj, (bv, bi)) in best.iter_mut().zip(at.iter_mut()).enumerate() {
                let v = row[jj * k + b];
                // Branch-free: the comparisons of random data mispredict.
                #[allow(clippy::eq_op)]
                let take = first | (v > *bv) | (v != v);
                *bv = if take { v } else { *bv };
                *bi = if take { start + jj * k + b } else { *bi };
            }
        }
    }
}

/// Runs `visit(out_offset, in_offset)` for the first maximum of every
/// window of a plane.
fn each_argmax<T: Float>(plane: &[T], d: &PoolDims, mut visit: impl FnMut(usize, usize)) {
    let (oh, ow) = (d.out_h(), d.out_w());
    let mut at = [0usize; COLUMNS];
    for i in 0..oh {
        for j0 in (0..ow).step_by(COLUMNS) {
            let at = &mut at[..COLUMNS.min(ow - j0)];
            if d.kernel == 2 {
                row_argmax::<T, 2>(plane, d, i, j0, at);
            } else {
                row_argmax::<T, 0>(plane, d, i, j0, at);
            }
            for (jj, &pos) in at.iter().enumerate() {
                visit(i * ow + j0 + jj, pos);
            }
        }
    }
}

/// Runs `plane_fn(in_plane, out_plane)` on every plane, in parallel over
/// fixed runs of planes, into a new buffer of `out_plane` values a plane.
fn per_plane<T: Float>(
    x: &[T],
    in_plane: usize,
    out_plane: usize,
    planes: usize,
    plane_fn: impl Fn(usize, &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut y = filled(planes * out_plane, T::ZERO);
    if in_plane == 0 || out_plane == 0 {
        return y;
    }
    y.par_chunks_mut(PLANES_PER_TASK * out_plane)
        .zip(x.par_chunks(PLANES_PER_TASK * in_plane))
        .enumerate()
        .for_each(|(task, (ys, xs))| {
            for (p, (yp, xp)) in ys
                .chunks_exact_mut(out_plane)
                .zip(xs.chunks_exact(in_plane))
                .enumerate()
            {
                plane_fn(task * PLANES_PER_TASK + p, xp, yp);
            }
        });
    y
}

/// Which of the 2×2 window `[a, b; c, d]` holds its first maximum, as one
/// flag per place in row-major order (exactly one is set), a NaN counting
/// as a maximum (the last NaN, as in [`row_argmax`]); and that maximum.
#[inline(always)]
fn window2_argmax<T: Float>(a: T, b: T, c: T, d: T) -> ([bool; 4], T) {
    // Branch-free flags rather than an index, so that the loops over
    // windows vectorise; `v != v` is the NaN test.
    #[allow(clippy::eq_op)]
    let tb = (b > a) | (b != b);
    let best = if tb { b } else { a };
    #[allow(clippy::eq_op)]
    let tc = (c > best) | (c != c);
    let best = if tc { c } else { best };
    #[allow(clippy::eq_op)]
    let td = (d > best) | (d != d);
    let best = if td { d } else { best };
    let (later_c, later_b) = (!td, !td & !tc);
    ([later_b & !tb, later_b & tb, later_c & tc, td], best)
}

/// The pairs of input rows `(2i, 2i + 1)` of a plane of width `width`,
/// each cut to the `2·ow` columns its windows cover, for the `oh` output rows
/// of a 2×2 pooling.
fn row_pairs<T>(
    plane: &[T],
    width: usize,
    oh: usize,
    ow: usize,
) -> impl Iterator<Item = (&[T], &[T])> {
    plane.chunks_exact(2 * width).take(oh).map(move |pair| {
        let (top, bottom) = pair.split_at(width);
        (&top[..2 * ow], &bottom[..2 * ow])
    })
}

/// 2×2 max-pooling of one plane `xp` into `yp`.
#[inline(always)]
fn pool2_plane<T: Float>(xp: &[T], d: &PoolDims, yp: &mut [T]) {
    each_row_pair(xp, d, yp, pool2_rows);
}

/// Runs `rows(top, bottom, out)` on each pair of input rows of a 2×2
/// pooling (each cut to the `2·OW` columns its windows cover) and its row
/// of `OW` outputs.
#[inline(always)]
fn each_row_pair<T: Float>(
    xp: &[T],
    d: &PoolDims,
    yp: &mut [T],
    mut rows: impl FnMut(&[T], &[T], &mut [T]),
) {
    let (oh, ow) = (d.out_h(), d.out_w());
    for ((top, bottom), out) in row_pairs(xp, d.width, oh, ow).zip(yp.chunks_exact_mut(ow)) {
        rows(top, bottom, out);
    }
}

/// The maxima of the 2×2 windows of one row pair, one window at a time.
#[inline(always)]
fn pool2_rows<T: Float>(top: &[T], bottom: &[T], out: &mut [T]) {
    for ((t, b), y) in top.chunks_exact(2).zip(bottom.chunks_exact(2)).zip(out) {
        *y = window2_argmax(t[0], t[1], b[0], b[1]).1;
    }
}

/// The input gradient of [`pool2_plane`] for one plane: `gp[i, j]` to the
/// first maximum of window `(i, j)` of `xp`, 0 to the rest of `dxp` that
/// windows cover (the rest of `dxp` is left as it is: zero).
#[inline(always)]
fn pool2_plane_backward<T: Float>(xp: &[T], gp: &[T], d: &PoolDims, dxp: &mut [T]) {
    each_row_pair_backward(xp, gp, d, dxp, pool2_rows_backward);
}

/// Runs `rows(top, bottom, grads, dx_top, dx_bottom)` on each pair of input
/// rows of a 2×2 pooling, its row of `OW` output gradients, and the two
/// rows of the input gradient, all input rows cut to the `2·OW` columns the
/// windows cover.
#[inline(always)]
fn each_row_pair_backward<T: Float>(
    xp: &[T],
    gp: &[T],
    d: &PoolDims,
    dxp: &mut [T],
    mut rows: impl FnMut(&[T], &[T], &[T], &mut [T], &mut [T]),
) {
    let (oh, ow, w) = (d.out_h(), d.out_w(), d.width);
    let pairs = row_pairs(xp, w, oh, ow).zip(gp.chunks_exact(ow));
    for (((top, bottom), grads), dx_pair) in pairs.zip(dxp.chunks_exact_mut(2 * w)) {
        let (dx_top, dx_bottom) = dx_pair.split_at_mut(w);
        rows(
            top,
            bottom,
            grads,
            &mut dx_top[..2 * ow],
            &mut dx_bottom[..2 * ow],
        );
    }
}

/// The input gradient of [`pool2_rows`], one window at a time.
#[inline(always)]
fn pool2_rows_backward<T: Float>(
    top: &[T],
    bottom: &[T],
    grads: &[T],
    dx_top: &mut [T],
    dx_bottom: &mut [T],
) {
    for (j, &gv) in grads.iter().enumerate() {
        let (l, r) = (2 * j, 2 * j + 1);
        let at = window2_argmax(top[l], top[r], bottom[l], bottom[r]).0;
        let pick = |here: bool| if here { gv } else { T::ZERO };
        (dx_top[l], dx_top[r]) = (pick(at[0]), pick(at[1]));
        (dx_bottom[l], dx_bottom[r]) = (pick(at[2]), pick(at[3]));
    }
}

/// The instruction set of the 2×2 pooling loops: AVX-512F when the f32
/// gemm runs its AVX-512 kernel (so `ADVGRAD_GEMM` forces this too), else
/// the crate's baseline.
#[derive(Clone, Copy)]
enum Simd {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    Baseline,
}

impl Simd {
    fn selected() -> Simd {
        #[cfg(target_arch = "x86_64")]
        if gemm::F32Kernel::selected().is_ok_and(gemm::F32Kernel::is_avx512) {
            return Simd::Avx512;
        }
        Simd::Baseline
    }

    /// [`pool2_plane`] in this instruction set: for f32 with AVX-512F,
    /// sixteen windows at a time ([`pool_x86`]); otherwise the portable
    /// loop, compiled for it.
    fn pool2_plane<T: Float>(self, xp: &[T], d: &PoolDims, yp: &mut [T]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                if let (Some(xp), Some(yp)) = (as_f32(xp), as_f32_mut(yp)) {
                    each_row_pair(xp, d, yp, |top, bottom, out| {
                        // SAFETY: `Simd::Avx512` is chosen only where the
                        // AVX-512 gemm kernel was detected, which needs
                        // AVX-512F.
                        unsafe { pool_x86::pool2_rows(top, bottom, out) }
                    });
                    return;
                }
                #[target_feature(enable = "avx512f")]
                fn wide<T: Float>(xp: &[T], d: &PoolDims, yp: &mut [T]) {
                    pool2_plane(xp, d, yp);
                }
                // SAFETY: as above.
                unsafe { wide(xp, d, yp) }
            }
            Simd::Baseline => pool2_plane(xp, d, yp),
        }
    }

    /// [`pool2_plane_backward`] in this instruction set, as
    /// [`Simd::pool2_plane`].
    fn pool2_plane_backward<T: Float>(self, xp: &[T], gp: &[T], d: &PoolDims, dxp: &mut [T]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                if let (Some(xp), Some(gp), Some(dxp)) = (as_f32(xp), as_f32(gp), as_f32_mut(dxp)) {
                    each_row_pair_backward(
                        xp,
                        gp,
                        d,
                        dxp,
                        |top, bottom, grads, dx_top, dx_bottom| {
                            // SAFETY: as in `Simd::pool2_plane`.
                            unsafe {
                                pool_x86::pool2_rows_backward(top, bottom, grads, dx_top, dx_bottom)
                            }
                        },
                    );
                    return;
                }
                #[target_feature(enable = "avx512f")]
                fn wide<T: Float>(xp: &[T], gp: &[T], d: &PoolDims, dxp: &mut [T]) {
                    pool2_plane_backward(xp, gp, d, dxp);
                }
                // SAFETY: as in `Simd::pool2_plane`.
                unsafe { wide(xp, gp, d, dxp) }
            }
            Simd::Baseline => pool2_plane_backward(xp, gp, d, dxp),
        }
    }
}

/// `xs` as f32 values, when `T` is f32.
#[cfg(target_arch = "x86_64")]
fn as_f32<T: Float>(xs: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: `T` is `f32` (the same type id), so the memory holds
        // `xs.len()` f32 values.
        unsafe { std::slice::from_raw_parts(xs.as_ptr().cast::<f32>(), xs.len()) }
    })
}

/// [`as_f32`] for a mutable slice.
#[cfg(target_arch = "x86_64")]
fn as_f32_mut<T: Float>(xs: &mut [T]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: as in `as_f32`; the borrow is moved into the result.
        unsafe { std::slice::from_raw_parts_mut(xs.as_mut_ptr().cast::<f32>(), xs.len()) }
    })
}

/// [`crate::backend::BackendStorage::max_pool2d`].
pub fn max_pool2d<T: Float>(x: &[T], d: &PoolDims) -> Vec<T> {
    let (plane_in, plane_out) = (d.height * d.width, d.out_h() * d.out_w());
    if d.kernel == 2 {
        let simd = Simd::selected();
        return per_plane(x, plane_in, plane_out, d.planes, |_, xp, yp| {
            simd.pool2_plane(xp, d, yp);
        });
    }
    generic_max_pool2d(x, d)
}

/// [`max_pool2d`] by the generic window scan, for any kernel.
fn generic_max_pool2d<T: Float>(x: &[T], d: &PoolDims) -> Vec<T> {
    let (plane_in, plane_out) = (d.height * d.width, d.out_h() * d.out_w());
    per_plane(x, plane_in, plane_out, d.planes, |_, xp, yp| {
        each_argmax(xp, d, |o, i| yp[o] = xp[i]);
    })
}

/// [`crate::backend::BackendStorage::avg_pool2d`].
pub fn avg_pool2d<T: Float>(x: &[T], d: &PoolDims) -> Vec<T> {
    let (oh, ow, k) = (d.out_h(), d.out_w(), d.kernel);
    let scale = T::from_f64(1.0 / (k * k) as f64);
    per_plane(x, d.height * d.width, oh * ow, d.planes, |_, xp, yp| {
        for i in 0..oh {
            for j in 0..ow {
                let mut sum = T::ZERO;
                for a in 0..k {
                    let row = &xp[(i * k + a) * d.width + j * k..][..k];
                    sum += row.iter().copied().sum::<T>();
                }
                yp[i * ow + j] = sum * scale;
            }
        }
    })
}

/// [`crate::backend::BackendStorage::max_pool2d_backward`].
pub fn max_pool2d_backward<T: Float>(g: &[T], x: &[T], d: &PoolDims) -> Vec<T> {
    let (plane_in, plane_out) = (d.height * d.width, d.out_h() * d.out_w());
    if d.kernel == 2 {
        let simd = Simd::selected();
        return per_plane(g, plane_out, plane_in, d.planes, |p, gp, dxp| {
            let xp = &x[p * plane_in..][..plane_in];
            simd.pool2_plane_backward(xp, gp, d, dxp);
        });
    }
    generic_max_pool2d_backward(g, x, d)
}

/// [`max_pool2d_backward`] by the generic window scan, for any kernel.
fn generic_max_pool2d_backward<T: Float>(g: &[T], x: &[T], d: &PoolDims) -> Vec<T> {
    let (plane_in, plane_out) = (d.height * d.width, d.out_h() * d.out_w());
    per_plane(g, plane_out, plane_in, d.planes, |p, gp, dxp| {
        let xp = &x[p * plane_in..][..plane_in];
        each_argmax(xp, d, |o, i| dxp[i] = gp[o]);
    })
}

/// [`crate::backend::BackendStorage::avg_pool2d_backward`].
pub fn avg_pool2d_backward<T: Float>(g: &[T], d: &PoolDims) -> Vec<T> {
    let (ow, k) = (d.out_w(), d.kernel);
    let scale = T::from_f64(1.0 / (k * k) as f64);
    let plane_out = d.out_h() * ow;
    per_plane(g, plane_out, d.height * d.width, d.planes, |_, gp, dxp| {
        for (at, &gv) in gp.iter().enumerate() {
            let (i, j) = (at / ow, at % ow);
            for a in 0..k {
                dxp[(i * k + a) * d.width + j * k..][..k].fill(gv * scale);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn im2col_unfolds_as_its_definition_says() {
        // Same-width outputs (stride 1, KW = 2·pad + 1, the contiguous copy),
        // narrower ones, strides, non-square kernels, pad ≥ K.
        let cases = [
            (2, 7, 9, 3, 3, 1, 1),
            (3, 6, 5, 5, 5, 1, 2),
            (1, 4, 4, 5, 5, 1, 2),
            (2, 5, 8, 3, 1, 1, 0),
            (2, 5, 8, 2, 3, 1, 1),
            (1, 9, 7, 3, 3, 2, 1),
            (1, 3, 3, 1, 1, 1, 2),
            (1, 2, 6, 3, 5, 1, 2),
            (2, 5, 28, 5, 5, 1, 2),
            (1, 3, 17, 3, 3, 1, 1),
            (1, 2, 1, 3, 3, 1, 1),
        ];
        for (c, h, w, kh, kw, stride, padding) in cases {
            let d = Conv2dDims {
                batch: 1,
                in_channels: c,
                height: h,
                width: w,
                out_channels: 1,
                kernel_h: kh,
                kernel_w: kw,
                stride,
                padding,
            };
            let x: Vec<f32> = (0..c * h * w).map(|i| 1.0 + i as f32).collect();
            let (oh, ow) = (d.out_h(), d.out_w());
            let mut col = vec![f32::NAN; d.patch_len() * oh * ow];
            im2col(&x, &d, &mut col);
            for (r, row) in col.chunks_exact(oh * ow).enumerate() {
                let (ch, p, q) = (r / (kh * kw), r / kw % kh, r % kw);
                for (t, &v) in row.iter().enumerate() {
                    let (i, j) = (
                        (t / ow * stride + p) as isize,
                        (t % ow * stride + q) as isize,
                    );
                    let (i, j) = (i - padding as isize, j - padding as isize);
                    let inside = (0..h as isize).contains(&i) && (0..w as isize).contains(&j);
                    let want = if inside {
                        x[(ch * h + i as usize) * w + j as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(
                        v, want,
                        "{c}x{h}x{w} k {kh}x{kw} s {stride} p {padding}: row {r}, {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_two_by_two_paths_give_the_generic_scans_bits() {
        // Few distinct values, so windows tie often; some NaNs; odd and even
        // sides (the last row or column of an odd side is in no window);
        // rows of 16 and 32 windows (whole AVX-512 steps), 65 (a step and
        // one window), and fewer than 16.
        let shapes = [
            (3, 7, 9),
            (20, 28, 28),
            (2, 1, 5),
            (1, 4, 130),
            (17, 6, 3),
            (2, 4, 64),
            (3, 6, 33),
        ];
        for (planes, height, width) in shapes {
            let d = PoolDims {
                planes,
                height,
                width,
                kernel: 2,
            };
            let n = planes * height * width;
            let x: Vec<f32> = (0..n)
                .map(|i| match (i * 7919) % 23 {
                    0 => f32::NAN,
                    r => (r % 5) as f32 - 2.0,
                })
                .collect();
            let g: Vec<f32> = (0..planes * d.out_h() * d.out_w())
                .map(|i| 1.0 + i as f32)
                .collect();
            let y_ref = generic_max_pool2d(&x, &d);
            let dx_ref = generic_max_pool2d_backward(&g, &x, &d);
            let (y, dx) = (max_pool2d(&x, &d), max_pool2d_backward(&g, &x, &d));
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&y_ref), "forward {planes}x{height}x{width}");
            assert_eq!(
                bits(&dx),
                bits(&dx_ref),
                "backward {planes}x{height}x{width}"
            );
            // Both builds of the loops, whichever the process selected.
            let (plane_in, plane_out) = (height * width, d.out_h() * d.out_w());
            for simd in [Simd::Baseline, Simd::selected()] {
                let y = per_plane(&x, plane_in, plane_out, planes, |_, xp, yp| {
                    simd.pool2_plane(xp, &d, yp)
                });
                let dx = per_plane(&g, plane_out, plane_in, planes, |p, gp, dxp| {
                    simd.pool2_plane_backward(&x[p * plane_in..][..plane_in], gp, &d, dxp)
                });
                assert_eq!(bits(&y), bits(&y_ref), "{planes}x{height}x{width}");
                assert_eq!(bits(&dx), bits(&dx_ref), "{planes}x{height}x{width}");
            }
        }
    }
}
