//! How verification results and traces are shown: the verify report as a table, JSON or JUnit
//! XML, a trace as an indented waterfall, everything `obsctl trace` prints about one task, and
//! all three (verify, chaos, trace) as one self-contained HTML file (`report::html`).

pub mod chaos;
pub mod html;
pub mod task;
pub mod verify;
pub mod waterfall;

/// A table in obsctl's one style: box drawing on a terminal, wrapped to its width when it has
/// one; plain ASCII with one line per row in CI logs and files.
pub fn table<const N: usize>(header: [&str; N], color: bool) -> comfy_table::Table {
    use comfy_table::{ContentArrangement, Table, presets};
    let mut table = Table::new();
    table
        .load_style(if color {
            presets::UTF8_FULL_CONDENSED
        } else {
            presets::ASCII_FULL_CONDENSED
        })
        .set_header(header);
    if color {
        table.enforce_styling();
        // A pseudo-terminal with no size reports width 0: wrapping to it would leave one
        // character per column, so such a table keeps its natural width.
        if table.width().is_some_and(|w| w > 0) {
            table.set_content_arrangement(ContentArrangement::Dynamic);
        }
    } else {
        table.force_no_tty();
    }
    table
}
