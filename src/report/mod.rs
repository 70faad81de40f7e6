//! How verification results and traces are shown: the verify report as a table, JSON or JUnit
//! XML, a trace as an indented waterfall, and everything `obsctl trace` prints about one task.

pub mod chaos;
pub mod task;
pub mod verify;
pub mod waterfall;
