//! How verification results and traces are shown: the verify report as a table, JSON or JUnit
//! XML, a trace as an indented waterfall, everything `obsctl trace` prints about one task, and
//! all three (verify, chaos, trace) as one self-contained HTML file (`report::html`).

pub mod chaos;
pub mod html;
pub mod task;
pub mod verify;
pub mod waterfall;
