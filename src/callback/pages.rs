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

/// The document around a page's content (already escaped HTML).
fn document(title: &str, outcome: &str, content: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} | sforg-operator</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;\
         padding:0 1rem;line-height:1.5}}dt{{font-weight:600}}dd{{margin:0 0 .5rem 0}}\
         input[type=submit]{{font-size:1rem;padding:.5rem 1rem}}</style>\n</head>\n<body>\n\
         <main id=\"outcome\" data-outcome=\"{outcome}\">\n<h1 id=\"title\">{title}</h1>\n\
         {content}</main>\n</body>\n</html>\n",
        title = escape(title),
    )
}

impl Page {
    /// The page's HTML.
    pub fn html(&self) -> String {
        document(
            &self.title,
            self.outcome,
            &format!("<p id=\"message\">{}</p>\n", escape(&self.message)),
        )
    }
}

/// A page that asks a person to confirm before anything happens: what it is about, and a
/// form that posts (with its CSRF or confirmation token) to go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormPage {
    /// A stable word for the page, in `data-outcome`.
    pub outcome: &'static str,
    /// The heading.
    pub title: String,
    /// What continuing does.
    pub message: String,
    /// What the person checks before continuing, as (label, value).
    pub facts: Vec<(String, String)>,
    /// Where the form posts.
    pub action: String,
    /// The form's hidden fields.
    pub fields: Vec<(String, String)>,
    /// The button's label.
    pub button: String,
}

impl FormPage {
    /// The page's HTML.
    pub fn html(&self) -> String {
        let facts: String = self
            .facts
            .iter()
            .map(|(label, value)| format!("<dt>{}</dt><dd>{}</dd>\n", escape(label), escape(value)))
            .collect();
        let fields: String = self
            .fields
            .iter()
            .map(|(name, value)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                    escape(name),
                    escape(value)
                )
            })
            .collect();
        document(
            &self.title,
            self.outcome,
            &format!(
                "<p id=\"message\">{message}</p>\n<dl id=\"facts\">\n{facts}</dl>\n\
                 <form id=\"confirm_form\" method=\"post\" action=\"{action}\">\n{fields}\
                 <input type=\"submit\" id=\"continue\" name=\"continue\" value=\"{button}\">\n\
                 </form>\n",
                message = escape(&self.message),
                action = escape(&self.action),
                button = escape(&self.button),
            ),
        )
    }
}

impl IntoResponse for FormPage {
    fn into_response(self) -> Response {
        (StatusCode::OK, HEADERS, self.html()).into_response()
    }
}

/// Headers every page and redirect of the callback server carries.
pub const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store");
/// Pages and redirects never tell the next site where the browser came from.
pub const NO_REFERRER: (header::HeaderName, &str) = (header::REFERRER_POLICY, "no-referrer");

/// The headers of every page: no caching, no referrer, nothing loaded, no framing (so no
/// page can be overlaid to trick a click on its button).
const HEADERS: [(header::HeaderName, &str); 5] = [
    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
    NO_STORE,
    NO_REFERRER,
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (self.status, HEADERS, self.html()).into_response()
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

    #[test]
    fn form_pages_escape_facts_and_fields() {
        let page = FormPage {
            outcome: "confirm",
            title: "Log in <again>".into(),
            message: "m".into(),
            facts: vec![("Org".into(), "<b>ns/acme</b>".into())],
            action: "/reauth/ns/acme".into(),
            fields: vec![("t".into(), "a\"b".into())],
            button: "Continue".into(),
        };
        let html = page.html();
        assert!(!html.contains("<b>"));
        assert!(html.contains("&lt;b&gt;ns/acme&lt;/b&gt;"));
        assert!(html.contains("value=\"a&quot;b\""));
        assert!(html.contains("method=\"post\" action=\"/reauth/ns/acme\""));
        assert!(html.contains("data-outcome=\"confirm\""));
    }
}
