//! An RGB raster with the few drawing primitives the pictures need, and
//! PNG output.

use std::path::Path;

use super::font::{glyph, ADVANCE, GLYPH_WIDTH};
use crate::atomic_file::write_atomic;
use crate::error::{Error, Result};

/// An sRGB colour.
pub type Rgb = [u8; 3];

/// White.
pub const WHITE: Rgb = [255, 255, 255];
/// Black.
pub const BLACK: Rgb = [0, 0, 0];
/// Mid grey, for axes and secondary text.
pub const GREY: Rgb = [120, 120, 120];
/// Light grey, for grid lines.
pub const LIGHT_GREY: Rgb = [225, 225, 225];
/// Green, for correct predictions.
pub const GREEN: Rgb = [0, 130, 60];
/// Red, for wrong predictions.
pub const RED: Rgb = [200, 30, 30];

/// A `width × height` RGB image, row-major, origin at the top left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    width: usize,
    height: usize,
    pixels: Vec<Rgb>,
}

impl Image {
    /// An image filled with `background`.
    pub fn new(width: usize, height: usize, background: Rgb) -> Image {
        Image {
            width,
            height,
            pixels: vec![background; width * height],
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The colour at `(x, y)`, or `None` outside the image.
    pub fn get(&self, x: usize, y: usize) -> Option<Rgb> {
        (x < self.width && y < self.height).then(|| self.pixels[y * self.width + x])
    }

    /// Sets one pixel; coordinates outside the image are ignored.
    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = c;
        }
    }

    /// Fills the rectangle with top-left corner `(x, y)`.
    pub fn fill_rect(&mut self, x: i64, y: i64, w: usize, h: usize, c: Rgb) {
        for dy in 0..h as i64 {
            for dx in 0..w as i64 {
                self.set(x + dx, y + dy, c);
            }
        }
    }

    /// The outline of a rectangle, one pixel wide.
    pub fn stroke_rect(&mut self, x: i64, y: i64, w: usize, h: usize, c: Rgb) {
        let (w, h) = (w as i64, h as i64);
        self.line(x, y, x + w - 1, y, 1, c);
        self.line(x, y + h - 1, x + w - 1, y + h - 1, 1, c);
        self.line(x, y, x, y + h - 1, 1, c);
        self.line(x + w - 1, y, x + w - 1, y + h - 1, 1, c);
    }

    /// A straight line from `(x0, y0)` to `(x1, y1)` (Bresenham), drawn with
    /// a square pen `thickness` pixels wide.
    pub fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, thickness: usize, c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        let t = thickness.max(1) as i64;
        let off = (t - 1) / 2;
        loop {
            self.fill_rect(x - off, y - off, t as usize, t as usize, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// `text` with its top-left corner at `(x, y)`, each font pixel a
    /// `scale × scale` square (see [`super::font`]).
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, c: Rgb) {
        let s = scale.max(1) as i64;
        for (i, ch) in text.chars().enumerate() {
            let gx = x + (i * ADVANCE) as i64 * s;
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..GLYPH_WIDTH {
                    if bits & (1 << (GLYPH_WIDTH - 1 - col)) != 0 {
                        self.fill_rect(
                            gx + col as i64 * s,
                            y + row as i64 * s,
                            s as usize,
                            s as usize,
                            c,
                        );
                    }
                }
            }
        }
    }

    /// `text` rotated a quarter turn counter-clockwise (reading bottom to
    /// top), with the top-left corner of its bounding box at `(x, y)`.
    pub fn text_vertical(&mut self, x: i64, y: i64, text: &str, c: Rgb) {
        let len = super::font::text_width(text, 1) as i64;
        for (i, ch) in text.chars().enumerate() {
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..GLYPH_WIDTH {
                    if bits & (1 << (GLYPH_WIDTH - 1 - col)) != 0 {
                        let along = (i * ADVANCE + col) as i64;
                        self.set(x + row as i64, y + len - 1 - along, c);
                    }
                }
            }
        }
    }

    /// Writes the image as an 8-bit RGB PNG, atomically (see
    /// [`crate::atomic_file`]).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::File`] if the file cannot be written.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let png_err = |e: png::EncodingError| Error::file(path, format!("writing PNG: {e}"));
        write_atomic(path, |out| {
            let mut encoder = png::Encoder::new(out, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(png_err)?;
            let data: Vec<u8> = self.pixels.iter().flatten().copied().collect();
            writer.write_image_data(&data).map_err(png_err)?;
            writer.finish().map_err(png_err)
        })
    }
}

/// The diverging blue–white–red colour of `v ∈ [−1, 1]`: −1 is blue, 0
/// white, +1 red (ColorBrewer RdBu ends), linear in between; values
/// outside are clamped.
pub fn diverging(v: f64) -> Rgb {
    const BLUE: [f64; 3] = [33.0, 102.0, 172.0];
    const RED_END: [f64; 3] = [178.0, 24.0, 43.0];
    let v = if v.is_nan() { 0.0 } else { v.clamp(-1.0, 1.0) };
    let end = if v < 0.0 { BLUE } else { RED_END };
    let t = v.abs();
    let mix = |k: usize| (255.0 + (end[k] - 255.0) * t).round() as u8;
    [mix(0), mix(1), mix(2)]
}

/// The grey of an intensity `v ∈ [0, 1]` (0 black, 1 white).
pub fn grey(v: f64) -> Rgb {
    let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    [g, g, g]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_map_ends_and_middle() {
        assert_eq!(diverging(0.0), WHITE);
        assert_eq!(diverging(-1.0), [33, 102, 172]);
        assert_eq!(diverging(5.0), [178, 24, 43]);
    }

    #[test]
    fn lines_reach_both_ends() {
        let mut img = Image::new(10, 10, WHITE);
        img.line(1, 1, 8, 5, 1, BLACK);
        assert_eq!(img.get(1, 1), Some(BLACK));
        assert_eq!(img.get(8, 5), Some(BLACK));
    }
}
