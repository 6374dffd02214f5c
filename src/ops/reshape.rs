//! Reshapes on the tape: the same values under another shape, no copy
//! (the output shares the input's buffer). Backward: `dx = g` under the
//! input's shape.

use crate::error::{Error, Result};
use crate::ops::Op;
use crate::shape::Shape;
use crate::tape::{Tape, Var};

impl Tape {
    /// Records `x` under `shape` (same number of elements), sharing its
    /// buffer.
    pub fn reshape(&mut self, x: Var, shape: impl Into<Shape>) -> Result<Var> {
        let out = self.value(x)?.reshape(shape)?;
        self.record(Op::Reshape, &[x], out)
    }

    /// Records `x` `[N, …]` as a matrix `[N, rest]`: the flatten before a
    /// linear layer.
    pub fn flatten(&mut self, x: Var) -> Result<Var> {
        let dims = self.value(x)?.dims();
        let Some(&n) = dims.first() else {
            return Err(Error::BadShape {
                op: "flatten",
                msg: "a scalar has no rows to flatten".into(),
            });
        };
        let rest = dims[1..].iter().product::<usize>();
        self.reshape(x, [n, rest])
    }
}
