//! Who may drive the dashboard: the browser that opened the URL it printed.
//!
//! A random per-run secret travels once in the opening URL and becomes an HttpOnly,
//! SameSite=Strict cookie; every later request must carry it, so other local users (who can
//! reach a loopback port too) and other sites get nothing. The Host header must be the
//! address the server listens on (a DNS-rebinding page has another Host). Actions are POSTs
//! that also need the page's CSRF token in a header and a same-origin `Origin`, so a foreign
//! page can neither read nor drive it. The checks are pure, for table tests.

use axum::http::{HeaderMap, Method, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};

/// The header an action carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The query parameter of the opening URL that carries the secret.
pub const SECRET_PARAM: &str = "s";

/// The per-run secrets of one dashboard.
#[derive(Clone)]
pub struct Guard {
    secret: String,
    csrf: String,
    cookie: String,
    hosts: Vec<String>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("hosts", &self.hosts).finish()
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The Host header is not the dashboard's address.
    Host,
    /// Another site's page sent it.
    Origin,
    /// No (or a wrong) per-run secret.
    Secret,
    /// An action without the page's CSRF token.
    Csrf,
}

impl Refusal {
    /// What to tell the person.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Host => {
                "This address is not the dashboard's: open the URL that `sforg-operator dashboard` printed."
            }
            Refusal::Origin => "Refused: the request came from another site.",
            Refusal::Secret => {
                "This dashboard only answers the browser that opened the URL it printed (with its \
                 per-run secret). Open that URL, or start `sforg-operator dashboard` again."
            }
            Refusal::Csrf => {
                "Refused: the action did not come from the dashboard's own page; reload it."
            }
        }
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Equal in constant time, so the secret cannot be guessed byte by byte from timings (the
/// length is public: every token has the same).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Guard {
    /// Fresh secrets for a server reached at `hosts` (`host:port` values).
    pub fn new(port: u16, hosts: Vec<String>) -> Guard {
        Guard {
            secret: random_token(),
            csrf: random_token(),
            // Cookies ignore ports: one name per port keeps two dashboards apart.
            cookie: format!("sforg-dashboard-{port}"),
            hosts,
        }
    }

    /// The token the page sends with every action.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The opening URL's query, `s=SECRET`.
    pub fn opening_query(&self) -> String {
        format!("{SECRET_PARAM}={}", self.secret)
    }

    /// The `Set-Cookie` value that remembers the secret in the browser.
    pub fn set_cookie(&self) -> String {
        Cookie::build((self.cookie.clone(), self.secret.clone()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .build()
            .to_string()
    }

    /// Whether `value` is the per-run secret.
    pub fn is_secret(&self, value: &str) -> bool {
        same(value, &self.secret)
    }

    fn host_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| self.hosts.iter().any(|mine| mine.eq_ignore_ascii_case(h)))
    }

    fn origin_ok(&self, headers: &HeaderMap, required: bool) -> bool {
        if headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site" || v == "same-site")
        {
            return false;
        }
        match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            Some(origin) => self
                .hosts
                .iter()
                .any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}"))),
            None => !required,
        }
    }

    fn cookie_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .any(|c| c.name() == self.cookie && self.is_secret(c.value()))
    }

    /// Checks the opening request (`GET /?s=SECRET`): the right host, not sent by another
    /// site, and the secret.
    pub fn check_opening(&self, headers: &HeaderMap, secret: &str) -> Result<(), Refusal> {
        if !self.host_ok(headers) {
            return Err(Refusal::Host);
        }
        if !self.origin_ok(headers, false) {
            return Err(Refusal::Origin);
        }
        if !self.is_secret(secret) {
            return Err(Refusal::Secret);
        }
        Ok(())
    }

    /// Checks any other request; actions (anything but GET and HEAD) also need a same-origin
    /// `Origin` and the CSRF token.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.host_ok(headers) {
            return Err(Refusal::Host);
        }
        let action = method != Method::GET && method != Method::HEAD;
        if !self.origin_ok(headers, action) {
            return Err(Refusal::Origin);
        }
        if !self.cookie_ok(headers) {
            return Err(Refusal::Secret);
        }
        if action {
            let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !token.is_some_and(|t| same(t, &self.csrf)) {
                return Err(Refusal::Csrf);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn guard() -> Guard {
        Guard::new(4000, vec!["127.0.0.1:4000".into(), "localhost:4000".into()])
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn requests_need_the_secret_the_host_and_for_actions_origin_and_csrf() {
        let g = guard();
        let cookie = format!("other=1; sforg-dashboard-4000={}", g.secret);
        let host = ("host", "127.0.0.1:4000".to_owned());
        let origin = ("origin", "http://127.0.0.1:4000".to_owned());
        let csrf = (CSRF_HEADER, g.csrf.clone());
        let get = Method::GET;
        let post = Method::POST;
        type Case<'a> = (&'a Method, Vec<(&'a str, String)>, Result<(), Refusal>);
        let cases: Vec<Case> = vec![
            (&get, vec![host.clone(), ("cookie", cookie.clone())], Ok(())),
            (&get, vec![host.clone()], Err(Refusal::Secret)),
            (
                &get,
                vec![
                    host.clone(),
                    ("cookie", "sforg-dashboard-4000=guess".into()),
                ],
                Err(Refusal::Secret),
            ),
            (
                &get,
                vec![
                    ("host", "evil.example:4000".into()),
                    ("cookie", cookie.clone()),
                ],
                Err(Refusal::Host),
            ),
            (
                &get,
                vec![
                    host.clone(),
                    ("cookie", cookie.clone()),
                    ("origin", "https://evil.example".into()),
                ],
                Err(Refusal::Origin),
            ),
            (
                &get,
                vec![
                    host.clone(),
                    ("cookie", cookie.clone()),
                    ("sec-fetch-site", "cross-site".into()),
                ],
                Err(Refusal::Origin),
            ),
            (
                &post,
                vec![
                    host.clone(),
                    ("cookie", cookie.clone()),
                    origin.clone(),
                    csrf.clone(),
                ],
                Ok(()),
            ),
            (
                &post,
                vec![host.clone(), ("cookie", cookie.clone()), csrf.clone()],
                Err(Refusal::Origin),
            ),
            (
                &post,
                vec![host.clone(), ("cookie", cookie.clone()), origin.clone()],
                Err(Refusal::Csrf),
            ),
            (
                &post,
                vec![
                    host.clone(),
                    ("cookie", cookie.clone()),
                    ("origin", "http://localhost:4001".into()),
                    csrf.clone(),
                ],
                Err(Refusal::Origin),
            ),
        ];
        for (method, pairs, want) in cases {
            assert_eq!(
                g.check(method, &headers(&pairs)),
                want,
                "{method} {pairs:?}"
            );
        }
    }

    #[test]
    fn the_opening_url_needs_the_secret() {
        let g = guard();
        let h = headers(&[("host", "localhost:4000".into())]);
        assert_eq!(g.check_opening(&h, &g.secret.clone()), Ok(()));
        assert_eq!(g.check_opening(&h, "nope"), Err(Refusal::Secret));
        assert!(g.set_cookie().contains("HttpOnly; SameSite=Strict"));
        assert!(g.opening_query().starts_with("s="));
        assert!(!format!("{g:?}").contains(&g.secret));
    }
}
