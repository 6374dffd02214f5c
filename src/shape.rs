//! Tensor shapes.

use std::fmt;

use smallvec::SmallVec;

/// The extent of a tensor along each axis, outermost first (row-major).
///
/// Up to four axes are stored inline, so making a tensor of rank ≤ 4 does
/// not touch the heap for its shape.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(SmallVec<[usize; 4]>);

impl Shape {
    /// A shape from its dimensions.
    pub fn new(dims: impl AsRef<[usize]>) -> Self {
        Shape(SmallVec::from_slice(dims.as_ref()))
    }

    /// The shape of a scalar: no axes, one element.
    pub fn scalar() -> Self {
        Shape(SmallVec::new())
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements: the product of the dimensions (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// `(rows, cols)` of a rank-2 shape.
    pub fn as_matrix(&self) -> Option<(usize, usize)> {
        match self.0.as_slice() {
            &[r, c] => Some((r, c)),
            _ => None,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape::new(d)
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape::new(d)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape::new(d)
    }
}
