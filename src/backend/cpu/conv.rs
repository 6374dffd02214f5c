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
//! planes, one window at a time.

use rayon::prelude::*;

use super::gemm::{self, GemmElem};
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

/// [`crate::backend::BackendStorage::conv2d_backward_input`]:
/// `dx_n = col2im(Wᵀ·g_n)`.
pub fn conv2d_backward_input<T: GemmElem>(g: &[T], weight: &[T], d: &Conv2dDims) -> Vec<T> {
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

/// [`crate::backend::BackendStorage::conv2d_backward_params`]:
/// `dW = Σ_n g_n·im2col(x_n)ᵀ` and `db[o] = Σ_{n,i,j} g[n,o,i,j]`, summed
/// per run of [`IMAGES_PER_TASK`] images, then over the runs in order.
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
                let (dw, db) = partial.split_at_mut(o * patch);
                let mut col = filled(patch * pixels, T::ZERO);
                for (gn, xn) in gs.chunks_exact(image_out).zip(xs.chunks_exact(image_in)) {
                    im2col(xn, d, &mut col);
                    gemm::gemm(o, patch, pixels, gn, false, &col, true, dw, true);
                    for (b, row) in db.iter_mut().zip(gn.chunks_exact(pixels)) {
                        *b += row.iter().copied().sum::<T>();
                    }
                }
                pool::give(col);
            });
    }
    let mut dw = filled(o * patch, T::ZERO);
    let mut db = filled(o, T::ZERO);
    for partial in partials.chunks_exact(part) {
        let (pw, pb) = partial.split_at(o * patch);
        dw.iter_mut().zip(pw).for_each(|(a, &b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, &b)| *a += b);
    }
    pool::give(partials);
    (dw, db)
}

/// The offset in its plane of the first maximum of the window `(i, j)`
/// (row-major order; a NaN counts as a maximum, as in PyTorch).
fn window_argmax<T: Float>(plane: &[T], d: &PoolDims, i: usize, j: usize) -> usize {
    let k = d.kernel;
    let mut best = (i * k) * d.width + j * k;
    for a in 0..k {
        for b in 0..k {
            let at = (i * k + a) * d.width + j * k + b;
            let v = plane[at];
            #[allow(clippy::eq_op)]
            let nan = v != v;
            if v > plane[best] || nan {
                best = at;
            }
        }
    }
    best
}

/// Runs `window` on every output position of every plane, in parallel
/// over fixed runs of planes: `window(in_plane, out_plane_values, i, j)`.
fn pool_map<T: Float>(
    x: &[T],
    d: &PoolDims,
    out_len: usize,
    window: impl Fn(&[T], usize, usize) -> T + Sync,
) -> Vec<T> {
    let (oh, ow) = (d.out_h(), d.out_w());
    let plane_in = d.height * d.width;
    let mut y = filled(out_len, T::ZERO);
    if oh * ow == 0 {
        return y;
    }
    y.par_chunks_mut(PLANES_PER_TASK * oh * ow)
        .zip(x.par_chunks(PLANES_PER_TASK * plane_in))
        .for_each(|(ys, xs)| {
            for (yp, xp) in ys.chunks_exact_mut(oh * ow).zip(xs.chunks_exact(plane_in)) {
                for i in 0..oh {
                    for j in 0..ow {
                        yp[i * ow + j] = window(xp, i, j);
                    }
                }
            }
        });
    y
}

/// [`crate::backend::BackendStorage::max_pool2d`].
pub fn max_pool2d<T: Float>(x: &[T], d: &PoolDims) -> Vec<T> {
    let len = d.planes * d.out_h() * d.out_w();
    pool_map(x, d, len, |plane, i, j| {
        plane[window_argmax(plane, d, i, j)]
    })
}

/// [`crate::backend::BackendStorage::avg_pool2d`].
pub fn avg_pool2d<T: Float>(x: &[T], d: &PoolDims) -> Vec<T> {
    let len = d.planes * d.out_h() * d.out_w();
    let k = d.kernel;
    let scale = T::from_f64(1.0 / (k * k) as f64);
    pool_map(x, d, len, |plane, i, j| {
        let mut sum = T::ZERO;
        for a in 0..k {
            let row = &plane[(i * k + a) * d.width + j * k..][..k];
            sum += row.iter().copied().sum::<T>();
        }
        sum * scale
    })
}

/// Runs `scatter(g_plane, dx_plane)` on every plane pair in parallel over
/// fixed runs of planes; `dx` starts at 0.
fn pool_scatter<T: Float>(
    g: &[T],
    d: &PoolDims,
    scatter: impl Fn(usize, &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let (oh, ow) = (d.out_h(), d.out_w());
    let plane_in = d.height * d.width;
    let mut dx = filled(d.planes * plane_in, T::ZERO);
    if oh * ow == 0 || plane_in == 0 {
        return dx;
    }
    dx.par_chunks_mut(PLANES_PER_TASK * plane_in)
        .zip(g.par_chunks(PLANES_PER_TASK * oh * ow))
        .enumerate()
        .for_each(|(task, (dxs, gs))| {
            for (p, (dxp, gp)) in dxs
                .chunks_exact_mut(plane_in)
                .zip(gs.chunks_exact(oh * ow))
                .enumerate()
            {
                scatter(task * PLANES_PER_TASK + p, gp, dxp);
            }
        });
    dx
}

/// [`crate::backend::BackendStorage::max_pool2d_backward`].
pub fn max_pool2d_backward<T: Float>(g: &[T], x: &[T], d: &PoolDims) -> Vec<T> {
    let (ow, plane_in) = (d.out_w(), d.height * d.width);
    pool_scatter(g, d, |p, gp, dxp| {
        let plane = &x[p * plane_in..][..plane_in];
        for (at, &gv) in gp.iter().enumerate() {
            dxp[window_argmax(plane, d, at / ow, at % ow)] = gv;
        }
    })
}

/// [`crate::backend::BackendStorage::avg_pool2d_backward`].
pub fn avg_pool2d_backward<T: Float>(g: &[T], d: &PoolDims) -> Vec<T> {
    let (ow, k) = (d.out_w(), d.kernel);
    let scale = T::from_f64(1.0 / (k * k) as f64);
    pool_scatter(g, d, |_, gp, dxp| {
        for (at, &gv) in gp.iter().enumerate() {
            let (i, j) = (at / ow, at % ow);
            for a in 0..k {
                dxp[(i * k + a) * d.width + j * k..][..k].fill(gv * scale);
            }
        }
    })
}
