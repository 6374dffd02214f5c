//! The architecture grammar of `--arch`: tokens joined by `-`.
//!
//! | token | meaning |
//! |---|---|
//! | `CxHxW` | the input is an image of C channels, H rows and W columns (first token only) |
//! | `cOkK[sS][pP]` | a 2-D convolution with O output channels, a K×K kernel, stride S (default 1) and zero padding P (default 0) |
//! | `mpK`, `apK` | max- and average-pooling with kernel and stride K |
//! | `N` | a linear layer with N outputs; as the first token, the input's N features |
//!
//! A flatten comes before the first linear layer that follows an image
//! (the input, a convolution or a pooling); the activation follows every
//! convolution and every linear layer but the last, which gives the
//! logits. `784-256-256-10` is the MLP it always was;
//! `1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10` is a small CNN.

use std::fmt;

use crate::error::{Error, Result};

/// What a model takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Rows of this many features (an MLP).
    Features(usize),
    /// Images `[C, H, W]`, given to the model as `[N, C, H, W]` or
    /// flattened as `[N, C·H·W]`.
    Image {
        /// Channels C.
        channels: usize,
        /// Rows H.
        height: usize,
        /// Columns W.
        width: usize,
    },
}

impl Input {
    /// Features per input: `C·H·W` for an image.
    pub fn size(&self) -> usize {
        match *self {
            Input::Features(n) => n,
            Input::Image {
                channels,
                height,
                width,
            } => channels * height * width,
        }
    }
}

/// One layer token of an architecture (activations and flattens are
/// implied, see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerSpec {
    /// `cOkK[sS][pP]`.
    Conv2d {
        /// Output channels O.
        out: usize,
        /// Kernel side K.
        kernel: usize,
        /// Stride S.
        stride: usize,
        /// Zero padding P.
        padding: usize,
    },
    /// `mpK`.
    MaxPool2d(usize),
    /// `apK`.
    AvgPool2d(usize),
    /// `N`: a linear layer with N outputs.
    Linear(usize),
}

/// A parsed `--arch`: the input and the layers, every size checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    /// What the model takes.
    pub input: Input,
    /// The layers, input first.
    pub layers: Vec<LayerSpec>,
}

/// The shape flowing between layers while an architecture is checked.
#[derive(Clone, Copy)]
enum Flow {
    Image(usize, usize, usize),
    Features(usize),
}

impl Flow {
    fn of(input: Input) -> Flow {
        match input {
            Input::Features(n) => Flow::Features(n),
            Input::Image {
                channels,
                height,
                width,
            } => Flow::Image(channels, height, width),
        }
    }
}

/// Parses an architecture spec (see the module docs).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the spec and the first bad token:
/// unknown syntax, a zero size, a kernel or window larger than its input,
/// a convolution after a linear layer, a last layer that is not linear.
pub fn parse_arch(spec: &str) -> Result<Arch> {
    let bad = |msg: String| Error::invalid(format!("bad architecture `{spec}`: {msg}"));
    let tokens: Vec<&str> = spec.split('-').map(str::trim).collect();
    let token_err =
        |i: usize, msg: &str| bad(format!("token `{}` (number {}): {msg}", tokens[i], i + 1));
    let (input, rest) =
        match parse_image(tokens[0]) {
            Some(Ok(image)) => (image, 1),
            Some(Err(msg)) => return Err(token_err(0, &msg)),
            None => match positive(tokens[0]) {
                Some(n) => (Input::Features(n), 1),
                None => return Err(token_err(
                    0,
                    "expected the input: a number of features (784) or an image CxHxW (1x28x28)",
                )),
            },
        };
    let mut flow = Flow::of(input);
    let mut layers = Vec::new();
    for (i, token) in tokens.iter().enumerate().skip(rest) {
        let layer = parse_layer(token).map_err(|msg| token_err(i, &msg))?;
        flow = next_flow(flow, layer).map_err(|msg| token_err(i, &msg))?;
        layers.push(layer);
    }
    match layers.last() {
        None => Err(bad(
            "no layers: expected at least the input and the classes, such as 784-10".into(),
        )),
        Some(LayerSpec::Linear(_)) => Ok(Arch { input, layers }),
        Some(_) => Err(token_err(
            tokens.len() - 1,
            "the last layer must be a linear layer (a number: the classes)",
        )),
    }
}

/// A positive number, or `None`.
fn positive(text: &str) -> Option<usize> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(n),
        _ => None,
    }
}

/// `CxHxW`: `None` if the token has no `x`.
fn parse_image(token: &str) -> Option<std::result::Result<Input, String>> {
    if !token.contains('x') {
        return None;
    }
    let parts: Vec<Option<usize>> = token.split('x').map(positive).collect();
    Some(match parts.as_slice() {
        &[Some(channels), Some(height), Some(width)] => {
            match channels
                .checked_mul(height)
                .and_then(|n| n.checked_mul(width))
            {
                Some(_) => Ok(Input::Image {
                    channels,
                    height,
                    width,
                }),
                None => Err("the image is too large".into()),
            }
        }
        _ => Err("expected an image CxHxW of three positive numbers, such as 1x28x28".into()),
    })
}

/// One layer token.
fn parse_layer(token: &str) -> std::result::Result<LayerSpec, String> {
    if let Some(n) = positive(token) {
        return Ok(LayerSpec::Linear(n));
    }
    if let Some(k) = token.strip_prefix("mp") {
        return positive(k)
            .map(LayerSpec::MaxPool2d)
            .ok_or_else(|| "expected max-pooling mpK with K ≥ 1, such as mp2".into());
    }
    if let Some(k) = token.strip_prefix("ap") {
        return positive(k)
            .map(LayerSpec::AvgPool2d)
            .ok_or_else(|| "expected average-pooling apK with K ≥ 1, such as ap2".into());
    }
    if let Some(body) = token.strip_prefix('c') {
        return parse_conv(body).ok_or_else(|| {
            "expected a convolution cOkK[sS][pP] (O outputs, kernel K, stride S ≥ 1, padding P), \
             such as c16k5p2"
                .into()
        });
    }
    if token.contains('x') {
        return Err("an image CxHxW can only be the first token".into());
    }
    Err("expected a number (a linear layer), cOkK[sS][pP], mpK or apK".into())
}

/// The part of `cOkK[sS][pP]` after the `c`.
fn parse_conv(body: &str) -> Option<LayerSpec> {
    let number = |s: &str| -> Option<(usize, usize)> {
        let len = s.bytes().take_while(u8::is_ascii_digit).count();
        Some((s[..len].parse().ok()?, len))
    };
    let (out, len) = number(body)?;
    let body = body[len..].strip_prefix('k')?;
    let (kernel, len) = number(body)?;
    let mut body = &body[len..];
    let mut stride = 1;
    if let Some(rest) = body.strip_prefix('s') {
        let (s, len) = number(rest)?;
        stride = s;
        body = &rest[len..];
    }
    let mut padding = 0;
    if let Some(rest) = body.strip_prefix('p') {
        let (p, len) = number(rest)?;
        padding = p;
        body = &rest[len..];
    }
    (body.is_empty() && out > 0 && kernel > 0 && stride > 0).then_some(LayerSpec::Conv2d {
        out,
        kernel,
        stride,
        padding,
    })
}

/// The shape after `layer`, or why `layer` cannot take `flow`.
fn next_flow(flow: Flow, layer: LayerSpec) -> std::result::Result<Flow, String> {
    let too_large = || "the sizes are too large".to_string();
    match (flow, layer) {
        (Flow::Features(_), LayerSpec::Linear(n)) => Ok(Flow::Features(n)),
        (Flow::Image(c, h, w), LayerSpec::Linear(n)) => {
            c.checked_mul(h)
                .and_then(|x| x.checked_mul(w))
                .ok_or_else(too_large)?;
            Ok(Flow::Features(n))
        }
        (Flow::Features(_), _) => Err(
            "a convolution or pooling needs an image: start the spec with the input's shape \
             CxHxW (such as 1x28x28) and put it before every linear layer"
                .into(),
        ),
        (
            Flow::Image(_, h, w),
            LayerSpec::Conv2d {
                out,
                kernel,
                stride,
                padding,
            },
        ) => {
            let padded = |x: usize| padding.checked_mul(2).and_then(|p| p.checked_add(x));
            let (ph, pw) = (
                padded(h).ok_or_else(too_large)?,
                padded(w).ok_or_else(too_large)?,
            );
            if kernel > ph || kernel > pw {
                return Err(format!(
                    "a {kernel}x{kernel} kernel does not fit the {h}x{w} input padded by {padding}"
                ));
            }
            let (oh, ow) = ((ph - kernel) / stride + 1, (pw - kernel) / stride + 1);
            out.checked_mul(oh)
                .and_then(|x| x.checked_mul(ow))
                .ok_or_else(too_large)?;
            Ok(Flow::Image(out, oh, ow))
        }
        (Flow::Image(c, h, w), LayerSpec::MaxPool2d(k) | LayerSpec::AvgPool2d(k)) => {
            if k > h || k > w {
                return Err(format!("a {k}x{k} window does not fit the {h}x{w} input"));
            }
            Ok(Flow::Image(c, h / k, w / k))
        }
    }
}

impl Arch {
    /// Features per input.
    pub fn input_size(&self) -> usize {
        self.input.size()
    }

    /// The number of classes (outputs of the last layer).
    pub fn classes(&self) -> usize {
        match self.layers.last() {
            Some(LayerSpec::Linear(n)) => *n,
            _ => 0,
        }
    }

    /// Whether the model is an MLP (features in, linear layers only).
    pub fn is_mlp(&self) -> bool {
        matches!(self.input, Input::Features(_))
    }

    /// The features reaching each layer, in order (`C·H·W` after an
    /// image).
    pub fn layer_inputs(&self) -> Vec<usize> {
        let mut flow = Flow::of(self.input);
        let mut sizes = Vec::new();
        for &layer in &self.layers {
            sizes.push(match flow {
                Flow::Features(n) => n,
                Flow::Image(c, h, w) => c * h * w,
            });
            flow = next_flow(flow, layer).expect("a parsed architecture is consistent");
        }
        sizes
    }

    /// The multiply-adds of one input's forward pass, per layer in order,
    /// and whether each layer's input is the model's input (whose gradient
    /// training does not compute).
    pub fn layer_macs(&self) -> Vec<(f64, bool)> {
        let mut flow = Flow::of(self.input);
        let mut macs = Vec::new();
        for (i, &layer) in self.layers.iter().enumerate() {
            let next = next_flow(flow, layer).expect("a parsed architecture is consistent");
            let product = |sizes: &[usize]| sizes.iter().map(|&x| x as f64).product::<f64>();
            let m = match (flow, layer, next) {
                (Flow::Features(f), LayerSpec::Linear(n), _) => product(&[f, n]),
                (Flow::Image(c, h, w), LayerSpec::Linear(n), _) => product(&[c, h, w, n]),
                (Flow::Image(c, ..), LayerSpec::Conv2d { kernel, .. }, Flow::Image(o, oh, ow)) => {
                    product(&[o, oh, ow, c, kernel, kernel])
                }
                _ => 0.0,
            };
            macs.push((m, i == 0));
            flow = next;
        }
        macs
    }
}

impl fmt::Display for Arch {
    /// The canonical spec: `s1` and `p0` left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.input {
            Input::Features(n) => write!(f, "{n}")?,
            Input::Image {
                channels,
                height,
                width,
            } => write!(f, "{channels}x{height}x{width}")?,
        }
        for layer in &self.layers {
            match *layer {
                LayerSpec::Linear(n) => write!(f, "-{n}")?,
                LayerSpec::MaxPool2d(k) => write!(f, "-mp{k}")?,
                LayerSpec::AvgPool2d(k) => write!(f, "-ap{k}")?,
                LayerSpec::Conv2d {
                    out,
                    kernel,
                    stride,
                    padding,
                } => {
                    write!(f, "-c{out}k{kernel}")?;
                    if stride != 1 {
                        write!(f, "s{stride}")?;
                    }
                    if padding != 0 {
                        write!(f, "p{padding}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_cnn_parses_and_prints_back() {
        let spec = "1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10";
        let arch = parse_arch(spec).unwrap();
        assert_eq!(arch.to_string(), spec);
        assert_eq!(arch.input_size(), 784);
        assert_eq!(arch.classes(), 10);
        assert_eq!(
            parse_arch("3x32x30-c8k3s2p1-ap2-10").unwrap().layers[0],
            LayerSpec::Conv2d {
                out: 8,
                kernel: 3,
                stride: 2,
                padding: 1
            }
        );
        assert_eq!(
            parse_arch("1x5x5-c2k3s1p0-4").unwrap().to_string(),
            "1x5x5-c2k3-4"
        );
        assert!(parse_arch("784-256-10").unwrap().is_mlp());
    }

    #[test]
    fn errors_name_the_token() {
        for (spec, token) in [
            ("784-c16k5-10", "`c16k5` (number 2)"),
            ("1x28x28-c16k5p2-mp2-128-c8k3-10", "`c8k3` (number 5)"),
            ("1x28x28-c16k-10", "`c16k` (number 2)"),
            ("1x28x28-c16k0-10", "`c16k0`"),
            ("1x28x28-c16k5s0-10", "`c16k5s0`"),
            ("1x28x28-c16k5q2-10", "`c16k5q2`"),
            ("1x28x28-mp0-10", "`mp0`"),
            ("1x4x4-mp5-10", "`mp5`"),
            ("1x4x4-c2k7-10", "`c2k7`"),
            ("1x28-10", "`1x28`"),
            ("784-1x28x28-10", "`1x28x28`"),
            ("1x28x28-c16k5", "`c16k5`"),
            ("1x28x28-mp2", "`mp2`"),
            ("784-0-10", "`0`"),
            ("784-+3-10", "`+3`"),
            ("abc", "`abc`"),
        ] {
            let err = parse_arch(spec).unwrap_err().to_string();
            assert!(err.contains(token), "{spec}: {err}");
        }
        assert!(parse_arch("784")
            .unwrap_err()
            .to_string()
            .contains("no layers"));
    }
}
