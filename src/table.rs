//! The padded text tables of the human views (`topo verify`, `topo status`, `topo list`),
//! laid out by `comfy-table` without borders.

use comfy_table::{ColumnConstraint, Row, Table, Width, presets};

/// `rows` as aligned text columns: each column as wide as its widest cell (by display width)
/// and at least `min_widths[i]` where given; `gap` spaces after every column but the last;
/// no trailing spaces; every line ends in `\n` (no rows: the empty string). A header is just
/// the first row. Cells are not wrapped, whatever the terminal's width.
pub fn columns<R: Into<Row>>(rows: impl IntoIterator<Item = R>, gap: u16, min_widths: &[u16]) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.add_rows(rows);
    t.set_constraints(min_widths.iter().map(|w| ColumnConstraint::LowerBoundary(Width::Fixed(w + gap))));
    let last = t.column_count().saturating_sub(1);
    for c in t.column_iter_mut() {
        c.set_padding((0, if c.index == last { 0 } else { gap }));
    }
    t.lines().map(|l| l.trim_end().to_owned() + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_as_wide_as_their_widest_cell() {
        let rows = [["VM", "NIC", "ADDRESS"], ["deb1", "eth0", "10.0.0.1"], ["a-longer-name", "e", ""]];
        assert_eq!(
            columns(rows, 2, &[]),
            "VM             NIC   ADDRESS\ndeb1           eth0  10.0.0.1\na-longer-name  e\n"
        );
        assert_eq!(columns(Vec::<[&str; 2]>::new(), 2, &[]), "");
    }

    #[test]
    fn minimum_widths_and_longer_cells() {
        let rows = [["a", "b", "c d"], ["network.long-name", "x", "y"]];
        assert_eq!(columns(rows, 1, &[6, 3]), "a                 b   c d\nnetwork.long-name x   y\n");
        assert_eq!(columns([["a", "b", "c"]], 1, &[6, 3]), "a      b   c\n");
    }
}
