//! Reports: pictures and tables of results, drawn without any font or plot
//! crate.
//!
//! - [`grid`]: attacked examples as a PNG grid (clean, adversarial,
//!   perturbation in a blue–white–red map, with class names);
//! - [`plot`]: line plots such as robust accuracy against eps;
//! - [`table`]: aligned text tables for the terminal;
//! - [`tape_graph`]: a tape after `backward` as a table, DOT and a PNG,
//!   with the gradient norm on every node and edge;
//! - [`canvas`] and [`font`]: the RGB raster, PNG output and the built-in
//!   5×7 bitmap font both pictures use.

pub mod canvas;
pub mod font;
pub mod grid;
pub mod plot;
pub mod table;
pub mod tape_graph;

pub use canvas::Image;
pub use grid::{render_grid, save_grid};
pub use plot::{LinePlot, Series};
pub use table::Table;
pub use tape_graph::TapeGraph;
