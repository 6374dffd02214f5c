//! A tape after `backward`, as a graph to read: a table for the terminal,
//! Graphviz DOT, and a PNG drawn here (layered boxes and arrows, no
//! Graphviz needed).
//!
//! Each node is one tape entry: its op, shape, element type and the norm
//! `‖∂L/∂v‖₂` of its gradient. Each edge `u → v` (u an input of v) carries
//! the norm of the gradient that flows back along it, `‖(∂v/∂u)ᵀ·∂L/∂v‖₂`:
//! the vector–Jacobian product of `v`'s backward rule for that input. A
//! node's gradient is the sum of the gradients on its outgoing edges.
//!
//! ```
//! use advgrad::report::TapeGraph;
//! use advgrad::{DType, Tape, Tensor};
//! let mut tape = Tape::new();
//! tape.set_retain_grads(true); // keep every node's gradient, not only the leaves'
//! let x = tape.var(Tensor::rand_uniform([2, 3], -1.0, 1.0, 0, DType::F32));
//! let y = tape.tanh(x)?;
//! let loss = tape.sum(y)?;
//! tape.backward(loss)?;
//! let graph = TapeGraph::of(&tape)?;
//! assert_eq!(graph.nodes.len(), 3);
//! assert!(graph.to_dot().starts_with("digraph tape {"));
//! let png = graph.render("tanh"); // an Image; `save_png` writes it
//! assert!(png.width() > 0);
//! # Ok::<(), advgrad::Error>(())
//! ```

use std::fmt;
use std::fmt::Write as _;
use std::path::Path;

use super::canvas::{Image, Rgb, BLACK, GREY, WHITE};
use super::font::{text_width, ADVANCE};
use crate::atomic_file::write_atomic;
use crate::data::Rng;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::ops::Op;
use crate::tape::Tape;
use crate::tensor::Tensor;

/// What kind of value a node holds, which sets its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A leaf that receives a gradient (a parameter, or an attacked input).
    Variable,
    /// A leaf without a gradient (data, labels).
    Constant,
    /// The result of an op.
    Op,
}

/// One tape entry as drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphNode {
    /// The node's index on the tape (`%index`).
    pub index: usize,
    /// The op as the tape prints it (`matmul`, `linear_relu`, `var`…).
    pub op: String,
    /// The name given with [`Tape::set_name`], if any.
    pub name: Option<String>,
    /// The value's shape, e.g. `[4, 784]`.
    pub shape: String,
    /// The value's element type, e.g. `f32`.
    pub dtype: String,
    /// Leaf variable, constant or op result.
    pub kind: NodeKind,
    /// `‖∂L/∂v‖₂`, where the tape kept the gradient.
    pub grad_norm: Option<f64>,
}

/// One input relation `from → to` as drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphEdge {
    /// The input's node index.
    pub from: usize,
    /// The consuming node's index.
    pub to: usize,
    /// The norm of the gradient the consumer's backward rule sends to this
    /// input, where it sends one and the consumer's gradient was kept.
    pub grad_norm: Option<f64>,
}

/// A tape's nodes and edges with their gradient norms; see the module
/// documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct TapeGraph {
    /// One per tape entry, in recording order.
    pub nodes: Vec<GraphNode>,
    /// One per input of every node, in recording order.
    pub edges: Vec<GraphEdge>,
}

impl TapeGraph {
    /// The graph of `tape`. Gradient norms appear where the tape holds the
    /// gradients: run [`Tape::backward`] first, after
    /// [`Tape::set_retain_grads`]`(true)` to keep the intermediate ones
    /// (without it only the leaves have theirs, and the edges have none).
    ///
    /// # Errors
    /// The errors of an op's backward rule, re-run here for the edges.
    pub fn of(tape: &Tape) -> Result<TapeGraph> {
        let mut nodes = Vec::with_capacity(tape.len());
        let mut edges = Vec::new();
        for (var, node) in tape.vars().zip(tape.nodes()) {
            let grad = tape.grad(var);
            let kind = match (&node.op, node.requires_grad) {
                (Op::Leaf, true) => NodeKind::Variable,
                (Op::Leaf, false) => NodeKind::Constant,
                _ => NodeKind::Op,
            };
            nodes.push(GraphNode {
                index: var.index(),
                op: match kind {
                    NodeKind::Variable => "var".to_string(),
                    NodeKind::Constant => "constant".to_string(),
                    NodeKind::Op => format!("{:?}", node.op),
                },
                name: node.name.clone(),
                shape: node.value.shape().to_string(),
                dtype: node.value.dtype().to_string(),
                kind,
                grad_norm: grad.map(|g| g.norm()).transpose()?,
            });
            let along = match grad {
                Some(g) if kind == NodeKind::Op => {
                    let inputs: Vec<_> = node
                        .inputs
                        .iter()
                        .map(|&v| tape.value(v))
                        .collect::<Result<_>>()?;
                    let needs: Vec<bool> = node
                        .inputs
                        .iter()
                        .map(|v| tape.nodes()[v.index()].requires_grad)
                        .collect();
                    node.op
                        .backward(&inputs, &node.value, g, &needs)?
                        .into_iter()
                        .collect()
                }
                _ => Vec::new(),
            };
            for (k, input) in node.inputs.iter().enumerate() {
                let flow = along.get(k).and_then(Option::as_ref);
                edges.push(GraphEdge {
                    from: input.index(),
                    to: var.index(),
                    grad_norm: flow.map(|g| g.norm()).transpose()?,
                });
            }
        }
        Ok(TapeGraph { nodes, edges })
    }

    /// The graph in Graphviz DOT: one box per node (op, name, shape, dtype,
    /// gradient norm), one arrow per input labelled with the gradient norm
    /// that flows back along it. Variables are blue, constants grey.
    pub fn to_dot(&self) -> String {
        let mut s = String::from(
            "digraph tape {\n  rankdir=TB;\n  node [shape=box, fontname=monospace];\n  edge [fontname=monospace, fontsize=10];\n",
        );
        for n in &self.nodes {
            let lines = n.label_lines().map(|l| escape(&l));
            let label = lines.join("\\n");
            let style = match n.kind {
                NodeKind::Variable => ", style=filled, fillcolor=lightblue",
                NodeKind::Constant => ", style=filled, fillcolor=lightgrey",
                NodeKind::Op => "",
            };
            let _ = writeln!(s, "  n{} [label=\"{label}\"{style}];", n.index);
        }
        for e in &self.edges {
            match e.grad_norm {
                Some(norm) => {
                    let _ = writeln!(s, "  n{} -> n{} [label=\"{}\"];", e.from, e.to, short(norm));
                }
                None => {
                    let _ = writeln!(s, "  n{} -> n{} [color=grey];", e.from, e.to);
                }
            }
        }
        s.push_str("}\n");
        s
    }

    /// Writes [`TapeGraph::to_dot`] to `path`, atomically (see
    /// [`crate::atomic_file`]).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written.
    pub fn save_dot(&self, path: &Path) -> Result<()> {
        let dot = self.to_dot();
        write_atomic(path, |out| {
            out.write_all(dot.as_bytes()).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })
        })
    }

    /// The graph drawn as a picture, `title` on top: nodes in layers from
    /// the inputs down to the loss (a leaf sits just above the first op
    /// that reads it), arrows from each input to its consumer labelled with
    /// the gradient norm flowing back along them (grey arrows carry none).
    pub fn render(&self, title: &str) -> Image {
        Layout::of(self).draw(self, title)
    }

    /// Writes [`TapeGraph::render`] as a PNG to `path`, atomically.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::File`] if the file cannot be written.
    pub fn save_png(&self, path: &Path, title: &str) -> Result<()> {
        self.render(title).save_png(path)
    }
}

impl GraphNode {
    /// The lines of the node's box: `%i op (name)`, `shape dtype`, and the
    /// gradient norm.
    fn label_lines(&self) -> [String; 3] {
        let mut head = format!("%{} {}", self.index, self.op);
        if let Some(name) = &self.name {
            let _ = write!(head, " ({name})");
        }
        let grad = match (self.grad_norm, self.kind) {
            (Some(norm), _) => format!("|grad| {}", short(norm)),
            (None, NodeKind::Constant) => "constant".to_string(),
            (None, _) => "grad not kept".to_string(),
        };
        [head, format!("{} {}", self.shape, self.dtype), grad]
    }
}

impl fmt::Display for TapeGraph {
    /// One line per node: index, op and name, shape, dtype, its gradient
    /// norm, and its inputs with the gradient norm flowing back to each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<5} {:<30} {:<12} {:<5} {:>10}  inputs (|grad| sent back to each)",
            "node", "op", "shape", "dtype", "|grad|"
        )?;
        for n in &self.nodes {
            let op = match &n.name {
                Some(name) => format!("{} ({name})", n.op),
                None => n.op.clone(),
            };
            let inputs: Vec<String> = self
                .edges
                .iter()
                .filter(|e| e.to == n.index)
                .map(|e| match e.grad_norm {
                    Some(norm) => format!("%{} ({})", e.from, short(norm)),
                    None => format!("%{}", e.from),
                })
                .collect();
            writeln!(
                f,
                "{:<5} {:<30} {:<12} {:<5} {:>10}  {}",
                format!("%{}", n.index),
                op,
                n.shape,
                n.dtype,
                n.grad_norm.map_or("-".to_string(), short),
                inputs.join(", ")
            )?;
        }
        Ok(())
    }
}

/// One forward and backward pass of `model` on a batch of `batch` random
/// inputs in `[0, 1)` with random labels (both drawn from `seed`), on a new
/// tape that keeps every gradient: the input is a variable (so the tape
/// shows the gradient an attack would use), the parameters are variables
/// named as in the model file (`0.weight`, …), and the loss is the mean
/// softmax cross-entropy. Returns the tape and the loss.
///
/// # Errors
/// A batch of 0, and the errors of the forward and backward pass.
pub fn record_model_pass(model: &Model, batch: usize, seed: u64) -> Result<(Tape, f64)> {
    if batch == 0 {
        return Err(Error::invalid("the batch needs at least one example"));
    }
    let x = Tensor::rand_uniform([batch, model.input_size()], 0.0, 1.0, seed, DType::F32);
    let mut rng = Rng::new(seed ^ 0x1abe1);
    let classes = model.classes() as u64;
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(classes) as u32).collect();
    let labels = Tensor::from_vec(labels, [batch])?;
    let mut tape = Tape::new();
    tape.set_retain_grads(true);
    let xv = tape.var(x.to_device(model.device())?);
    tape.set_name(xv, "input")?;
    let forward = model.forward(&mut tape, xv, true)?;
    for (v, name) in forward.params.iter().zip(model.param_names()) {
        tape.set_name(*v, name)?;
    }
    tape.set_name(forward.logits, "logits")?;
    let loss = tape.softmax_cross_entropy(forward.logits, &labels.to_device(model.device())?)?;
    tape.set_name(loss, "loss")?;
    tape.backward(loss)?;
    let value = tape.value(loss)?.to_scalar()?;
    Ok((tape, value))
}

/// A norm in three significant digits, e.g. `1.23e-2`.
fn short(v: f64) -> String {
    format!("{v:.2e}")
}

/// `s` as the inside of a DOT string: backslashes and quotes escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The picture's scale: each font pixel is a `SCALE × SCALE` square.
const SCALE: usize = 2;
/// Space around the text inside a box, in font pixels.
const PAD: usize = 5;
/// Distance between two lines of text, in font pixels.
const LINE: usize = 12;
/// Gaps between layers and between boxes of a layer, in font pixels.
const LAYER_GAP: usize = 34;
const BOX_GAP: usize = 14;
/// Margin around the drawing and the title's height, in font pixels.
const MARGIN: usize = 10;
const TITLE: usize = 16;

const VARIABLE_FILL: Rgb = [204, 226, 245];
const CONSTANT_FILL: Rgb = [228, 228, 228];
const LOSS_FILL: Rgb = [253, 220, 180];
const GRADIENT_EDGE: Rgb = [40, 70, 150];

/// Where each node's box goes: layers from top to bottom, boxes of equal
/// size centred in each layer.
struct Layout {
    /// The node indices of each layer, left to right.
    layers: Vec<Vec<usize>>,
    /// Box width and height in pixels.
    box_w: usize,
    box_h: usize,
    width: usize,
}

impl Layout {
    fn of(graph: &TapeGraph) -> Layout {
        let n = graph.nodes.len();
        // An op sits one layer below its deepest input op; a leaf one
        // layer above the first op that reads it.
        let mut depth = vec![0usize; n];
        for node in &graph.nodes {
            if node.kind == NodeKind::Op {
                depth[node.index] = 1 + inputs(graph, node.index)
                    .filter(|&i| graph.nodes[i].kind == NodeKind::Op)
                    .map(|i| depth[i])
                    .max()
                    .unwrap_or(0);
            }
        }
        for node in graph.nodes.iter().filter(|n| n.kind != NodeKind::Op) {
            let consumers = graph.edges.iter().filter(|e| e.from == node.index);
            depth[node.index] = consumers
                .map(|e| depth[e.to])
                .min()
                .map_or(0, |d| d.saturating_sub(1));
        }
        let mut layers = vec![Vec::new(); depth.iter().max().map_or(0, |d| d + 1)];
        for (i, &d) in depth.iter().enumerate() {
            layers[d].push(i);
        }
        let longest = graph
            .nodes
            .iter()
            .flat_map(|n| n.label_lines())
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(1);
        let box_w = (longest * ADVANCE + 2 * PAD) * SCALE;
        let box_h = (3 * LINE + 2 * PAD - 3) * SCALE;
        let widest = layers.iter().map(Vec::len).max().unwrap_or(1);
        let width =
            widest * box_w + widest.saturating_sub(1) * BOX_GAP * SCALE + 2 * MARGIN * SCALE;
        Layout {
            layers,
            box_w,
            box_h,
            width,
        }
    }

    /// The top-left corner of node `index`'s box.
    fn corner(&self, index: usize) -> (i64, i64) {
        for (d, layer) in self.layers.iter().enumerate() {
            if let Some(k) = layer.iter().position(|&i| i == index) {
                let row_w = layer.len() * self.box_w + (layer.len() - 1) * BOX_GAP * SCALE;
                let x0 = (self.width - row_w) / 2 + k * (self.box_w + BOX_GAP * SCALE);
                let y0 = (MARGIN + TITLE) * SCALE + d * (self.box_h + LAYER_GAP * SCALE);
                return (x0 as i64, y0 as i64);
            }
        }
        (0, 0)
    }

    fn draw(&self, graph: &TapeGraph, title: &str) -> Image {
        let height = (2 * MARGIN + TITLE) * SCALE
            + self.layers.len() * (self.box_h + LAYER_GAP * SCALE)
            - LAYER_GAP * SCALE;
        let width = self
            .width
            .max(text_width(title, SCALE) + 2 * MARGIN * SCALE);
        let shift = ((width - self.width) / 2) as i64;
        let mut img = Image::new(width, height, WHITE);
        img.text(
            (MARGIN * SCALE) as i64,
            (MARGIN * SCALE) as i64,
            title,
            SCALE,
            BLACK,
        );
        let corner = |i: usize| {
            let (x, y) = self.corner(i);
            (x + shift, y)
        };
        let (bw, bh) = (self.box_w as i64, self.box_h as i64);
        let mut labels = Vec::new();
        for e in &graph.edges {
            let (fx, fy) = corner(e.from);
            let (tx, ty) = corner(e.to);
            let (x0, y0, x1, y1) = (fx + bw / 2, fy + bh, tx + bw / 2, ty);
            let colour = if e.grad_norm.is_some() {
                GRADIENT_EDGE
            } else {
                GREY
            };
            img.line(x0, y0, x1, y1, SCALE, colour);
            arrow_head(&mut img, (x0, y0), (x1, y1), colour);
            if let Some(norm) = e.grad_norm {
                labels.push(((x0 + x1) / 2, (y0 + y1) / 2, short(norm)));
            }
        }
        for node in &graph.nodes {
            let (x, y) = corner(node.index);
            let fill = match node.kind {
                NodeKind::Variable => VARIABLE_FILL,
                NodeKind::Constant => CONSTANT_FILL,
                NodeKind::Op if node.index + 1 == graph.nodes.len() => LOSS_FILL,
                NodeKind::Op => WHITE,
            };
            img.fill_rect(x, y, self.box_w, self.box_h, fill);
            img.stroke_rect(x, y, self.box_w, self.box_h, BLACK);
            for (k, line) in node.label_lines().iter().enumerate() {
                let line = line.replace('ᵀ', "^T");
                let ty = y + ((PAD + k * LINE) * SCALE) as i64;
                img.text(x + (PAD * SCALE) as i64, ty, &line, SCALE, BLACK);
            }
        }
        for (cx, cy, text) in labels {
            let (w, h) = (text_width(&text, SCALE) as i64, (9 * SCALE) as i64);
            let (x, y) = (cx - w / 2, cy - h / 2);
            img.fill_rect(
                x - SCALE as i64,
                y - SCALE as i64,
                w as usize + 2 * SCALE,
                h as usize + 2 * SCALE,
                WHITE,
            );
            img.text(x, y, &text, SCALE, GRADIENT_EDGE);
        }
        img
    }
}

/// The indices of node `index`'s inputs.
fn inputs(graph: &TapeGraph, index: usize) -> impl Iterator<Item = usize> + '_ {
    graph
        .edges
        .iter()
        .filter(move |e| e.to == index)
        .map(|e| e.from)
}

/// Two short strokes at `to`, 25° either side of the line from `from`.
fn arrow_head(img: &mut Image, from: (i64, i64), to: (i64, i64), colour: Rgb) {
    let (dx, dy) = ((to.0 - from.0) as f64, (to.1 - from.1) as f64);
    let len = dx.hypot(dy);
    if len == 0.0 {
        return;
    }
    let (ux, uy) = (dx / len, dy / len);
    let size = (5 * SCALE) as f64;
    for angle in [25f64.to_radians(), -25f64.to_radians()] {
        let (c, s) = (angle.cos(), angle.sin());
        let (bx, by) = (-(ux * c - uy * s) * size, -(ux * s + uy * c) * size);
        img.line(
            to.0,
            to.1,
            to.0 + bx.round() as i64,
            to.1 + by.round() as i64,
            SCALE,
            colour,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    /// `loss = Σ (x ⊙ x)·c`: `x` reaches `mul` twice, `c` is a constant.
    fn small_graph() -> TapeGraph {
        let mut tape = Tape::new();
        tape.set_retain_grads(true);
        let x = tape.var(Tensor::from_vec(vec![1.0f64, -2.0], [2]).unwrap());
        let c = tape.constant(Tensor::from_vec(vec![3.0f64, 0.5], [2]).unwrap());
        let sq = tape.mul(x, x).unwrap();
        let y = tape.mul(sq, c).unwrap();
        let loss = tape.sum(y).unwrap();
        tape.backward(loss).unwrap();
        TapeGraph::of(&tape).unwrap()
    }

    #[test]
    fn edges_carry_each_inputs_share_of_the_gradient() {
        let g = small_graph();
        assert_eq!(g.nodes.len(), 5);
        assert_eq!(g.edges.len(), 5);
        // ∂L/∂sq = c, so each of the two x → sq edges carries c ⊙ x = (3, −1).
        let to_sq: Vec<f64> = g
            .edges
            .iter()
            .filter(|e| e.to == 2)
            .map(|e| e.grad_norm.unwrap())
            .collect();
        assert_eq!(to_sq, vec![10f64.sqrt(); 2]);
        // x's gradient is their sum, 2·(3, −1).
        assert_eq!(g.nodes[0].grad_norm, Some(40f64.sqrt()));
        // The constant gets no gradient along its edge.
        let from_c = g.edges.iter().find(|e| e.from == 1).unwrap();
        assert_eq!(from_c.grad_norm, None);
        assert_eq!(g.nodes[1].kind, NodeKind::Constant);
    }

    #[test]
    fn the_layout_puts_leaves_above_their_first_reader() {
        let g = small_graph();
        let layout = Layout::of(&g);
        assert_eq!(layout.layers, vec![vec![0], vec![1, 2], vec![3], vec![4]]);
        let img = g.render("test");
        assert!(img.width() >= layout.box_w && img.height() > 4 * layout.box_h);
    }

    #[test]
    fn dot_names_every_node_and_edge() {
        let dot = small_graph().to_dot();
        for i in 0..5 {
            assert!(dot.contains(&format!("  n{i} [label=\"%{i} ")), "{dot}");
        }
        assert!(dot.contains("n0 -> n2 [label=\"3.16e0\"];"), "{dot}");
        assert!(dot.contains("n1 -> n3 [color=grey];"), "{dot}");
    }
}
