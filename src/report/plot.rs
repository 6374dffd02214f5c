//! Line plots drawn by hand: axes, ticks, grid lines, one line per series
//! and a legend, e.g. robust accuracy against eps.

use std::path::Path;

use super::canvas::{Image, Rgb, BLACK, GREY, LIGHT_GREY, WHITE};
use super::font::text_width;
use crate::attack::AttackReport;
use crate::error::{Error, Result};

/// Colours of successive series (Tableau 10).
const PALETTE: [Rgb; 8] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

/// One named line of `(x, y)` points, drawn in the order given.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// A line plot.
#[derive(Clone, Debug, PartialEq)]
pub struct LinePlot {
    /// Drawn above the plot.
    pub title: String,
    /// Below the x axis.
    pub x_label: String,
    /// Along the y axis.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// The y range; `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    /// Label y ticks as percentages (for fractions in `[0, 1]`).
    pub y_percent: bool,
    /// Size in pixels.
    pub size: (usize, usize),
}

impl LinePlot {
    /// An empty plot with titles, 640×420 pixels.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> LinePlot {
        LinePlot {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            y_range: None,
            y_percent: false,
            size: (640, 420),
        }
    }

    /// Robust accuracy (%, 0–100) against eps, one line per report, each
    /// starting at `(0, clean accuracy)`; `names` label the reports in the
    /// legend (e.g. "standard PGD-20", "adv-trained FGSM").
    pub fn robust_accuracy(reports: &[(&str, &AttackReport)]) -> LinePlot {
        let mut plot = LinePlot::new("Robust accuracy vs eps", "eps", "robust accuracy");
        plot.y_range = Some((0.0, 1.0));
        plot.y_percent = true;
        for (name, r) in reports {
            let mut points = vec![(0.0, r.clean_accuracy)];
            points.extend(
                r.results
                    .iter()
                    .filter(|e| e.eps > 0.0)
                    .map(|e| (e.eps, e.robust_accuracy)),
            );
            plot.series.push(Series {
                name: (*name).to_string(),
                points,
            });
        }
        plot
    }

    /// Draws the plot.
    ///
    /// # Errors
    /// No points, or a non-finite coordinate.
    pub fn render(&self) -> Result<Image> {
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .collect();
        if pts.is_empty() {
            return Err(Error::invalid("plot: no points to draw"));
        }
        if pts.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
            return Err(Error::invalid("plot: a point is NaN or infinite"));
        }
        let (xmin, xmax) = span(pts.iter().map(|p| p.0));
        let (ymin, ymax) = self
            .y_range
            .unwrap_or_else(|| span(pts.iter().map(|p| p.1)));
        let xt = ticks(xmin, xmax);
        let yt = ticks(ymin, ymax);
        let (x0, x1) = (xt[0].min(xmin), xt[xt.len() - 1].max(xmax));
        let (y0, y1) = (yt[0].min(ymin), yt[yt.len() - 1].max(ymax));

        let (w, h) = self.size;
        let mut img = Image::new(w, h, WHITE);
        let (left, right, top, bottom) = (64i64, w as i64 - 16, 30i64, h as i64 - 44);
        let px = |x: f64| left + ((x - x0) / (x1 - x0) * (right - left) as f64).round() as i64;
        let py = |y: f64| bottom - ((y - y0) / (y1 - y0) * (bottom - top) as f64).round() as i64;

        let tw = text_width(&self.title, 1) as i64;
        img.text((left + right - tw) / 2, 10, &self.title, 1, BLACK);
        let step_x = xt.get(1).map_or(1.0, |b| b - xt[0]);
        for &t in &xt {
            let x = px(t);
            img.line(x, top, x, bottom, 1, LIGHT_GREY);
            img.line(x, bottom, x, bottom + 4, 1, BLACK);
            let label = fmt_tick(t, step_x, false);
            img.text(
                x - text_width(&label, 1) as i64 / 2,
                bottom + 8,
                &label,
                1,
                BLACK,
            );
        }
        let step_y = yt.get(1).map_or(1.0, |b| b - yt[0]);
        for &t in &yt {
            let y = py(t);
            img.line(left, y, right, y, 1, LIGHT_GREY);
            img.line(left - 4, y, left, y, 1, BLACK);
            let label = fmt_tick(t, step_y, self.y_percent);
            img.text(
                left - 8 - text_width(&label, 1) as i64,
                y - 3,
                &label,
                1,
                BLACK,
            );
        }
        img.line(left, top, left, bottom, 1, BLACK);
        img.line(left, bottom, right, bottom, 1, BLACK);
        let xw = text_width(&self.x_label, 1) as i64;
        img.text(
            (left + right - xw) / 2,
            bottom + 24,
            &self.x_label,
            1,
            BLACK,
        );
        let yw = text_width(&self.y_label, 1) as i64;
        img.text_vertical(8, (top + bottom - yw) / 2, &self.y_label, BLACK);

        for (k, s) in self.series.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            for pair in s.points.windows(2) {
                img.line(
                    px(pair[0].0),
                    py(pair[0].1),
                    px(pair[1].0),
                    py(pair[1].1),
                    2,
                    c,
                );
            }
            for &(x, y) in &s.points {
                img.fill_rect(px(x) - 2, py(y) - 2, 5, 5, c);
            }
        }

        // The legend, in the top-right corner of the plot area.
        let names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        if !names.is_empty() {
            let text_w = names.iter().map(|n| text_width(n, 1)).max().unwrap_or(0) as i64;
            let (box_w, box_h) = (text_w + 36, names.len() as i64 * 12 + 8);
            let (bx, by) = (right - box_w - 6, top + 6);
            img.fill_rect(bx, by, box_w as usize, box_h as usize, WHITE);
            img.stroke_rect(bx, by, box_w as usize, box_h as usize, GREY);
            for (k, n) in names.iter().enumerate() {
                let c = PALETTE[k % PALETTE.len()];
                let y = by + 6 + k as i64 * 12;
                img.line(bx + 6, y + 3, bx + 24, y + 3, 2, c);
                img.fill_rect(bx + 13, y + 1, 5, 5, c);
                img.text(bx + 30, y, n, 1, BLACK);
            }
        }
        Ok(img)
    }

    /// [`LinePlot::render`], written to `path` as PNG.
    ///
    /// # Errors
    /// As [`LinePlot::render`], and file errors.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.render()?.save_png(path)
    }
}

/// The smallest and largest value, widened to a non-empty interval.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    }
}

/// About five "nice" tick positions (steps of 1, 2 or 5 × 10ᵏ) covering
/// `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step + 1e-9).floor() as i64;
    let end = (hi / step - 1e-9).ceil() as i64;
    (start..=end).map(|i| i as f64 * step).collect()
}

/// A tick label with as many decimals as the step needs.
fn fmt_tick(v: f64, step: f64, percent: bool) -> String {
    let (v, step) = if percent {
        (v * 100.0, step * 100.0)
    } else {
        (v, step)
    };
    let mut decimals = 0;
    while decimals < 6
        && ((step * 10f64.powi(decimals)).round() - step * 10f64.powi(decimals)).abs() > 1e-6
    {
        decimals += 1;
    }
    let s = format!("{:.*}", decimals as usize, v);
    if percent {
        format!("{s}%")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 1.0),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = ticks(0.0, 0.3);
        assert!(t[0] <= 0.0 && *t.last().unwrap() >= 0.3 && t.len() <= 8);
        assert_eq!(fmt_tick(0.05, 0.05, false), "0.05");
        assert_eq!(fmt_tick(0.4, 0.2, true), "40%");
    }
}
