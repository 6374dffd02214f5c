//! A grid of attacked examples: one row per example, columns clean image,
//! adversarial image, and the perturbation in a diverging colour map, each
//! labelled with class names.

use std::path::Path;

use super::canvas::{diverging, grey, Image, Rgb, BLACK, GREEN, GREY, RED, WHITE};
use super::font::text_width;
use crate::attack::Sample;
use crate::error::{Error, Result};

/// Image pixels per data pixel.
const ZOOM: usize = 3;
/// Width of one column.
const COL_W: usize = 116;
/// Left and right margin.
const MARGIN: usize = 8;
/// Height of the title and column-header band.
const HEADER_H: usize = 40;
/// Vertical space below each image for two lines of text and a gap.
const LABEL_H: usize = 30;
/// Height of the footer (the colour-map key).
const FOOTER_H: usize = 22;

/// Renders `samples` as a grid picture: for each example the clean image
/// (labelled with its true class and the model's prediction), the
/// adversarial image (the prediction on it, and the target for a targeted
/// attack) and the perturbation `δ = x' − x` scaled per example to its
/// largest `|δⱼ|` and drawn blue (`δ < 0`) – white (0) – red (`δ > 0`), with
/// its L∞ and L2 norms. Predictions are green when right, red when wrong.
/// `dims` is `[height, width]` of one image and `class_names` names the
/// labels (e.g. [`crate::data::FASHION_MNIST_CLASSES`]).
///
/// # Errors
/// No samples, or samples whose length is not `height·width`.
pub fn render_grid(
    samples: &[Sample],
    dims: [usize; 2],
    class_names: &[&str],
    title: &str,
) -> Result<Image> {
    let [h, w] = dims;
    if samples.is_empty() {
        return Err(Error::invalid("grid: no examples to draw"));
    }
    if let Some(s) = samples
        .iter()
        .find(|s| s.clean.len() != h * w || s.adv.len() != h * w)
    {
        return Err(Error::invalid(format!(
            "grid: an example has {} pixels, expected {h}×{w}",
            s.clean.len()
        )));
    }
    let name = |k: u32| -> String {
        class_names
            .get(k as usize)
            .map_or_else(|| format!("class {k}"), |s| (*s).to_string())
    };
    let (img_w, img_h) = (w * ZOOM, h * ZOOM);
    let row_h = img_h + LABEL_H;
    let width = 2 * MARGIN + 3 * COL_W;
    let height = HEADER_H + samples.len() * row_h + FOOTER_H;
    let mut img = Image::new(width, height, WHITE);
    img.text(MARGIN as i64, 6, title, 1, BLACK);
    for (c, header) in ["clean", "adversarial", "perturbation"].iter().enumerate() {
        let x = MARGIN + c * COL_W + (COL_W - text_width(header, 1)) / 2;
        img.text(x as i64, 24, header, 1, BLACK);
    }
    for (r, s) in samples.iter().enumerate() {
        let y0 = HEADER_H + r * row_h;
        let delta: Vec<f64> = s
            .adv
            .iter()
            .zip(&s.clean)
            .map(|(a, c)| f64::from(*a) - f64::from(*c))
            .collect();
        let linf = delta.iter().fold(0.0f64, |m, d| m.max(d.abs()));
        let l2 = delta.iter().map(|d| d * d).sum::<f64>().sqrt();
        let columns: [Box<dyn Fn(usize) -> Rgb>; 3] = [
            Box::new(|j| grey(f64::from(s.clean[j]))),
            Box::new(|j| grey(f64::from(s.adv[j]))),
            Box::new(|j| diverging(if linf > 0.0 { delta[j] / linf } else { 0.0 })),
        ];
        for (c, colour) in columns.iter().enumerate() {
            let x0 = MARGIN + c * COL_W + (COL_W - img_w) / 2;
            for j in 0..h * w {
                let (py, px) = (j / w, j % w);
                img.fill_rect(
                    (x0 + px * ZOOM) as i64,
                    (y0 + py * ZOOM) as i64,
                    ZOOM,
                    ZOOM,
                    colour(j),
                );
            }
            img.stroke_rect(x0 as i64 - 1, y0 as i64 - 1, img_w + 2, img_h + 2, GREY);
        }
        let verdict = |p: u32| if p == s.label { GREEN } else { RED };
        let ty = (y0 + img_h + 4) as i64;
        let line = |c: usize| (MARGIN + c * COL_W + 2) as i64;
        img.text(line(0), ty, &format!("true: {}", name(s.label)), 1, BLACK);
        img.text(
            line(0),
            ty + 10,
            &format!("pred: {}", name(s.clean_pred)),
            1,
            verdict(s.clean_pred),
        );
        img.text(
            line(1),
            ty,
            &format!("pred: {}", name(s.adv_pred)),
            1,
            verdict(s.adv_pred),
        );
        if let Some(t) = s.target {
            img.text(line(1), ty + 10, &format!("target: {}", name(t)), 1, GREY);
        }
        img.text(line(2), ty, &format!("Linf {linf:.3}"), 1, BLACK);
        img.text(line(2), ty + 10, &format!("L2 {l2:.3}"), 1, BLACK);
    }
    let key_y = (height - FOOTER_H + 6) as i64;
    let x = MARGIN as i64;
    img.text(x, key_y, "x' < x", 1, BLACK);
    let bar_x = x + text_width("x' < x ", 1) as i64;
    for i in 0..=60 {
        let v = f64::from(i) / 30.0 - 1.0;
        img.fill_rect(bar_x + i64::from(i), key_y, 1, 7, diverging(v));
    }
    img.text(bar_x + 66, key_y, "x' > x  (scaled to each max)", 1, BLACK);
    Ok(img)
}

/// [`render_grid`], written to `path` as PNG.
///
/// # Errors
/// As [`render_grid`], and file errors.
pub fn save_grid(
    path: &Path,
    samples: &[Sample],
    dims: [usize; 2],
    class_names: &[&str],
    title: &str,
) -> Result<()> {
    render_grid(samples, dims, class_names, title)?.save_png(path)
}
