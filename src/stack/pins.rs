//! The upstream releases the Docker stack runs: the one place holding each image's pin. The stack
//! definition takes its default images from here, the compose file is checked against that
//! definition, and `tests/stack_upstream.rs` checks every `stack/` config against the reference
//! extracted from the same release (`tests/fixtures/upstream/`, `docs/upgrading-pins.md`).

/// One pinned upstream release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The image reference `obsctl up` pulls; never `latest`.
    pub image: &'static str,
    /// The project's repository, `owner/name`, where the release is tagged.
    pub repository: &'static str,
    /// The release's git tag in that repository; the image's tag names the same release.
    pub release: &'static str,
}

/// Chosen 2026-11-29 from each repository's tags and CHANGELOG: the newest stable release.
pub const COLLECTOR: Pin = Pin {
    image: "otel/opentelemetry-collector-contrib:0.159.0",
    repository: "open-telemetry/opentelemetry-collector-releases",
    release: "v0.159.0",
};

pub const TEMPO: Pin = Pin {
    image: "grafana/tempo:3.0.3",
    repository: "grafana/tempo",
    release: "v3.0.3",
};

pub const LOKI: Pin = Pin {
    image: "grafana/loki:3.7.6",
    repository: "grafana/loki",
    release: "v3.7.6",
};

pub const PROMETHEUS: Pin = Pin {
    image: "prom/prometheus:v3.14.0",
    repository: "prometheus/prometheus",
    release: "v3.14.0",
};

/// The newest patch (2026-03-25, a security release) of the newest Grafana line whose
/// dashboard and panel schemas are published per release line (grafana/grafana-foundation-sdk,
/// generated from Grafana's kind registry for v11.6.x), so the dashboard is checked against its
/// own line. The 12 and 13 lines are newer; their schemas exist only in grafana/grafana itself,
/// which is larger than this workplace can check out (docs/upgrading-pins.md).
pub const GRAFANA: Pin = Pin {
    image: "grafana/grafana:11.6.14",
    repository: "grafana/grafana",
    release: "v11.6.14",
};

pub const ALL: [Pin; 5] = [COLLECTOR, TEMPO, LOKI, PROMETHEUS, GRAFANA];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_image_tag_names_its_release() {
        for pin in ALL {
            let (_, tag) = pin.image.rsplit_once(':').expect("image has a tag");
            assert_ne!(tag, "latest", "{pin:?}");
            assert_eq!(
                tag.trim_start_matches('v'),
                pin.release.trim_start_matches('v'),
                "{pin:?}"
            );
        }
    }
}
