//! Aligned plain-text tables.

use std::fmt;

/// A table of strings: a header row and data rows, printed with columns
/// padded to their widest cell (the first column left-aligned, the others
/// right-aligned, as numbers read best).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// The header cells.
    pub header: Vec<String>,
    /// The rows; a short row is padded with empty cells.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let cell = |row: &[String], c: usize| row.get(c).cloned().unwrap_or_default();
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| cell(r, c).chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |f: &mut fmt::Formatter<'_>, row: &[String]| -> fmt::Result {
            let cells: Vec<String> = (0..cols)
                .map(|c| {
                    let s = cell(row, c);
                    let pad = " ".repeat(widths[c] - s.chars().count());
                    if c == 0 {
                        format!("{s}{pad}")
                    } else {
                        format!("{pad}{s}")
                    }
                })
                .collect();
            writeln!(f, "{}", cells.join("  ").trim_end())
        };
        line(f, &self.header)?;
        let total = widths.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
        writeln!(f, "{}", "-".repeat(total))?;
        for r in &self.rows {
            line(f, r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(["model", "clean"]);
        t.row(["standard", "85.1%"]).row(["adv", "7.0%"]);
        assert_eq!(
            t.to_string(),
            "model     clean\n---------------\nstandard  85.1%\nadv        7.0%\n"
        );
    }
}
