//! Deliberate defects, for obsctl's own chaos tests only. Each breaks one guarantee on purpose,
//! so that a test can prove the chaos scenario guarding it fails with the right numbers (a check
//! that cannot fail proves nothing). Chosen with `OBSCTL_DEFECT=<name>`; never set it otherwise.
//! A spool that drops everything needs no defect: `OBSCTL_SPOOL_MAX_BYTES=1` makes a real one.

/// The defects, as `OBSCTL_DEFECT` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// `replay-twice`: the spool sends each replayed request twice.
    ReplayTwice,
    /// `no-outside-record`: the runner does not record a step whose shim was killed.
    NoOutsideRecord,
    /// `resume-reruns`: `--resume` runs finished steps again.
    ResumeReruns,
}

impl Defect {
    fn name(self) -> &'static str {
        match self {
            Defect::ReplayTwice => "replay-twice",
            Defect::NoOutsideRecord => "no-outside-record",
            Defect::ResumeReruns => "resume-reruns",
        }
    }

    /// Whether this defect was asked for.
    pub fn active(self) -> bool {
        std::env::var(crate::conventions::env::OBSCTL_DEFECT).is_ok_and(|v| v == self.name())
    }
}
