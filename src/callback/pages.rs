//! The few HTML pages a person sees at the end of a re-auth: plain, no script, nothing
//! loaded from elsewhere, and every text escaped.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A page with its HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable word for the outcome (`token-valid`, `replayed`, ...), in `data-outcome`.
    pub outcome: &'static str,
    /// The heading.
    pub title: String,
    /// What happened and what to do.
    pub message: String,
}

/// Escapes text for HTML content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

impl Page {
    /// The page's HTML.
    pub fn html(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title} | sforg-operator</title>\n\
             <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;\
             padding:0 1rem;line-height:1.5}}</style>\n</head>\n<body>\n\
             <main id=\"outcome\" data-outcome=\"{outcome}\">\n<h1 id=\"title\">{title}</h1>\n\
             <p id=\"message\">{message}</p>\n</main>\n</body>\n</html>\n",
            title = escape(&self.title),
            outcome = self.outcome,
            message = escape(&self.message),
        )
    }
}

/// Headers every page and redirect of the callback server carries.
pub const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store");
/// Pages and redirects never tell the next site where the browser came from.
pub const NO_REFERRER: (header::HeaderName, &str) = (header::REFERRER_POLICY, "no-referrer");

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (
            self.status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                NO_STORE,
                NO_REFERRER,
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            self.html(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        let page = Page {
            status: StatusCode::BAD_REQUEST,
            outcome: "bad",
            title: "<script>".into(),
            message: "a \"quoted\" & 'single' <b>".into(),
        };
        let html = page.html();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&quot;quoted&quot; &amp; &#39;single&#39; &lt;b&gt;"));
        assert!(html.contains("data-outcome=\"bad\""));
    }
}
