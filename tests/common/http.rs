//! Small blocking HTTP helpers for synchronous tests: a client on its own runtime, and one-shot
//! GET/POST functions for polling loops (`None` while nothing answers).

use std::time::Duration;

/// A blocking HTTP client on its own current-thread runtime, so tests stay synchronous.
/// Loopback only, so proxies from the environment are ignored.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        Self::with_timeout(Duration::from_secs(30))
    }

    pub fn with_timeout(timeout: Duration) -> Self {
        obsctl::tls::install_default_provider();
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()
                .expect("client"),
        }
    }

    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.get_query(url, &[], headers)
    }

    /// `None` while nothing listens yet (or the request fails), for polling.
    pub fn try_get(&self, url: &str) -> Option<Reply> {
        self.try_send(self.client.get(url))
    }

    pub fn get_query(&self, url: &str, query: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.get(url).query(query);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.try_send(req)
            .unwrap_or_else(|| panic!("GET {url} failed"))
    }

    pub fn post(&self, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut req = self.client.post(url).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.try_send(req)
            .unwrap_or_else(|| panic!("POST {url} failed"))
    }

    /// POSTs `body` as JSON; `None` when the request fails.
    pub fn try_post_json(&self, url: &str, body: &serde_json::Value) -> Option<Reply> {
        self.try_send(self.client.post(url).json(body))
    }

    fn try_send(&self, req: reqwest::RequestBuilder) -> Option<Reply> {
        self.rt.block_on(async {
            let resp = req.send().await.ok()?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = resp.bytes().await.ok()?.to_vec();
            Some(Reply {
                status,
                content_type,
                body,
            })
        })
    }
}

/// A GET with a short timeout: status and body, `None` when nothing answers.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    Http::with_timeout(Duration::from_secs(5))
        .try_get(url)
        .map(|r| (r.status, r.text()))
}

/// A GET with query parameters: status and the body as JSON (a JSON string when it is not).
/// Panics when nothing answers.
pub fn get_json(url: &str, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let reply = Http::with_timeout(Duration::from_secs(10)).get_query(url, params, &[]);
    let text = reply.text();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (reply.status, json)
}

/// POSTs a JSON body; the status, 0 when the request fails.
pub fn post_json(url: &str, body: &serde_json::Value) -> u16 {
    Http::with_timeout(Duration::from_secs(10))
        .try_post_json(url, body)
        .map_or(0, |r| r.status)
}
