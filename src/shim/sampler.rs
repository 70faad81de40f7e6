//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` as the spec defines them. Only the span
//! is sampled: metrics and logs are recorded for every step so counters stay exact.

use crate::otlp::{TraceContext, TraceId};

#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    /// A remote parent's sampled flag decides; the inner sampler decides for root spans.
    ParentBased(Box<Sampler>),
}

impl Default for Sampler {
    /// The spec's default: `parentbased_always_on`.
    fn default() -> Self {
        Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
    }
}

impl Sampler {
    /// The configured sampler, and a warning when a value was not understood (the default or
    /// a ratio of 1.0 is used then, as the spec asks).
    pub fn from_config(name: Option<&str>, arg: Option<&str>) -> (Self, Option<String>) {
        let mut warning = None;
        let mut ratio = || match arg.map(str::trim) {
            None | Some("") => 1.0,
            Some(a) => match a.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    warning = Some(format!(
                        "OTEL_TRACES_SAMPLER_ARG {a:?} is not a ratio in [0, 1]; using 1.0"
                    ));
                    1.0
                }
            },
        };
        let sampler = match name.map(str::trim).unwrap_or("") {
            "" | "parentbased_always_on" => Self::default(),
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(ratio()),
            "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            "parentbased_traceidratio" => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatio(ratio())))
            }
            other => {
                return (
                    Self::default(),
                    Some(format!(
                        "OTEL_TRACES_SAMPLER {other:?} is not supported; using parentbased_always_on"
                    )),
                );
            }
        };
        (sampler, warning)
    }

    pub fn should_sample(&self, parent: Option<&TraceContext>, trace_id: TraceId) -> bool {
        match self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::TraceIdRatio(ratio) => {
                if *ratio >= 1.0 {
                    return true;
                }
                // The low 8 bytes of a W3C trace id are random; compare them to the ratio so
                // every process holding the same trace id decides alike.
                let low = u64::from_be_bytes(trace_id.as_bytes()[8..].try_into().expect("8 bytes"));
                (low as f64) < ratio * (u64::MAX as f64)
            }
            Sampler::ParentBased(root) => match parent {
                Some(p) => p.sampled,
                None => root.should_sample(None, trace_id),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::SpanId;

    fn parent(sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled,
        }
    }

    #[test]
    fn names_map_to_samplers() {
        assert_eq!(Sampler::from_config(None, None), (Sampler::default(), None));
        assert_eq!(
            Sampler::from_config(Some("traceidratio"), Some("0.25")).0,
            Sampler::TraceIdRatio(0.25)
        );
        let (s, w) = Sampler::from_config(Some("traceidratio"), Some("2"));
        assert_eq!(s, Sampler::TraceIdRatio(1.0));
        assert!(w.unwrap().contains("\"2\""));
        assert!(
            Sampler::from_config(Some("jaeger_remote"), None)
                .1
                .is_some()
        );
    }

    #[test]
    fn parent_based_follows_the_parent_and_ratio_is_proportional() {
        let pb = Sampler::from_config(Some("parentbased_always_off"), None).0;
        assert!(pb.should_sample(Some(&parent(true)), TraceId::random()));
        assert!(!pb.should_sample(None, TraceId::random()));
        assert!(!Sampler::AlwaysOff.should_sample(Some(&parent(true)), TraceId::random()));
        let half = Sampler::TraceIdRatio(0.5);
        let sampled = (0..2000)
            .filter(|_| half.should_sample(None, TraceId::random()))
            .count();
        assert!((800..1200).contains(&sampled), "{sampled}");
        assert!(!Sampler::TraceIdRatio(0.0).should_sample(None, TraceId::random()));
    }
}
