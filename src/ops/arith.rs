//! Addition (same shape, or a bias row broadcast over rows), subtraction,
//! elementwise product and scaling.
//!
//! - `a + b`: `da = g`, `db = g`.
//! - `x + b` with `b: [n]` broadcast over the rows of `x: [m, n]`:
//!   `dx = g`, `db[j] = Σᵢ g[i, j]`.
//! - `a − b`: `da = g`, `db = −g`.
//! - `a ⊙ b`: `da = g ⊙ b`, `db = g ⊙ a`.
//! - `s·x`: `dx = s·g`.

use crate::backend::{BackendStorage, Binary};
use crate::error::{Error, Result};
use smallvec::smallvec;

use crate::ops::{InputGrads, Op};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

impl Tensor {
    fn zip_with(&self, rhs: &Tensor, op: Binary, name: &'static str) -> Result<Tensor> {
        if self.shape() != rhs.shape() {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: self.shape().clone(),
                rhs: rhs.shape().clone(),
            });
        }
        let out = self.storage().binary(rhs.storage(), op)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// `self + rhs`, same shapes.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.zip_with(rhs, Binary::Add, "add")
    }

    /// `self − rhs`, same shapes.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.zip_with(rhs, Binary::Sub, "sub")
    }

    /// `self ⊙ rhs`, same shapes.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.zip_with(rhs, Binary::Mul, "mul")
    }

    /// `s·self`.
    pub fn scale(&self, s: f64) -> Result<Tensor> {
        self.affine(s, 0.0)
    }

    /// `mul·self + add`, elementwise.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        let out = self.storage().affine(mul, add)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// `self[i, j] + row[j]` for `self: [m, n]` and `row: [n]`.
    pub fn add_row(&self, row: &Tensor) -> Result<Tensor> {
        let cols = match (self.shape().as_matrix(), row.dims()) {
            (Some((_, n)), &[r]) if r == n => n,
            _ => {
                return Err(Error::ShapeMismatch {
                    op: "add (bias row)",
                    lhs: self.shape().clone(),
                    rhs: row.shape().clone(),
                })
            }
        };
        let out = self.storage().add_row(row.storage(), cols)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// Column sums of a matrix: `[m, n] → [n]`, `s[j] = Σᵢ x[i, j]`.
    pub fn sum_rows(&self) -> Result<Tensor> {
        let (_, n) = self.shape().as_matrix().ok_or_else(|| Error::BadShape {
            op: "sum_rows",
            msg: format!("expected a matrix, got {}", self.shape()),
        })?;
        let out = self.storage().sum_rows(n)?;
        Ok(Tensor::from_storage(out, [n].into()))
    }
}

impl Tape {
    /// Records `a + b`: same shapes, or `b` a row vector `[n]` added to every
    /// row of the matrix `a: [m, n]` (a bias).
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let (x, y) = (self.value(a)?, self.value(b)?);
        if x.rank() == 2 && y.rank() == 1 {
            let out = x.add_row(y)?;
            self.record(Op::AddRow, &[a, b], out)
        } else {
            let out = x.add(y)?;
            self.record(Op::Add, &[a, b], out)
        }
    }

    /// Records `a − b`.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        let out = self.value(a)?.sub(self.value(b)?)?;
        self.record(Op::Sub, &[a, b], out)
    }

    /// Records `a ⊙ b`.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        let out = self.value(a)?.mul(self.value(b)?)?;
        self.record(Op::Mul, &[a, b], out)
    }

    /// Records `s·x`.
    pub fn scale(&mut self, x: Var, s: f64) -> Result<Var> {
        let out = self.value(x)?.scale(s)?;
        self.record(Op::Scale(s), &[x], out)
    }
}

pub(super) fn add_backward(g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    Ok(smallvec![
        needs[0].then(|| g.clone()),
        needs[1].then(|| g.clone()),
    ])
}

pub(super) fn add_row_backward(g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    let db = needs[1].then(|| g.sum_rows()).transpose()?;
    Ok(smallvec![needs[0].then(|| g.clone()), db])
}

pub(super) fn sub_backward(g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    let db = needs[1].then(|| g.scale(-1.0)).transpose()?;
    Ok(smallvec![needs[0].then(|| g.clone()), db])
}

pub(super) fn mul_backward(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    needs: &[bool],
) -> Result<InputGrads> {
    let da = needs[0].then(|| g.mul(b)).transpose()?;
    let db = needs[1].then(|| g.mul(a)).transpose()?;
    Ok(smallvec![da, db])
}
