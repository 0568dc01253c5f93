//! Plain HTML pages (login, consent, errors, maintenance). No JavaScript, stable ids
//! and names, every original parameter carried in hidden fields, so a test's HTTP
//! client can follow them exactly as a browser would.

use std::fmt::Write;

/// Escapes text for HTML element content and double-quoted attributes.
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

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n</head>\n<body>\n{}\n</body>\n</html>\n",
        escape(title),
        body
    )
}

fn hidden_fields(out: &mut String, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        let _ = writeln!(
            out,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        );
    }
}

/// The login form. Posts to `/services/oauth2/authorize/login`.
pub fn login(hidden: &[(&str, &str)], username: &str, error: Option<&str>) -> String {
    let mut body = String::from("<h1>Login | Salesforce</h1>\n");
    if let Some(error) = error {
        let _ = writeln!(
            body,
            "<div id=\"error\" class=\"loginError\">{}</div>",
            escape(error)
        );
    }
    body.push_str("<form id=\"login_form\" name=\"login\" method=\"post\" action=\"/services/oauth2/authorize/login\">\n");
    hidden_fields(&mut body, hidden);
    let _ = writeln!(
        body,
        "<label for=\"username\">Username</label>\n<input type=\"email\" id=\"username\" name=\"username\" value=\"{}\">",
        escape(username)
    );
    body.push_str("<label for=\"password\">Password</label>\n<input type=\"password\" id=\"password\" name=\"pw\" value=\"\">\n");
    body.push_str("<input type=\"submit\" id=\"Login\" name=\"Login\" value=\"Log In\">\n</form>");
    page("Login | Salesforce", &body)
}

/// The "Allow Access?" page. Posts to `/services/oauth2/authorize/consent`.
pub fn consent(hidden: &[(&str, &str)], app_name: &str, username: &str, scopes: &[&str]) -> String {
    let mut body = String::from("<h1>Allow Access?</h1>\n");
    let _ = writeln!(
        body,
        "<p id=\"consent_message\"><strong>{}</strong> is asking to access your Salesforce account <strong>{}</strong>.</p>",
        escape(app_name),
        escape(username)
    );
    body.push_str("<ul id=\"scopes\">\n");
    for s in scopes {
        let _ = writeln!(body, "<li>{}</li>", escape(s));
    }
    body.push_str("</ul>\n");
    body.push_str(
        "<form id=\"consent_form\" name=\"consent\" method=\"post\" action=\"/services/oauth2/authorize/consent\">\n",
    );
    hidden_fields(&mut body, hidden);
    body.push_str("<input type=\"submit\" id=\"deny\" name=\"deny\" value=\"Deny\">\n");
    body.push_str("<input type=\"submit\" id=\"allow\" name=\"allow\" value=\"Allow\">\n</form>");
    page("Allow Access? | Salesforce", &body)
}

/// The page Salesforce shows instead of redirecting (bad client id, bad redirect URI).
pub fn error(error: &str, description: &str) -> String {
    let body = format!(
        "<h1>OAuth Error</h1>\n<p>We can't authorize you because of an OAuth error. For more information, contact your Salesforce administrator.</p>\n<p id=\"oauth_error\">error={}&amp;error_description={}</p>\n<p><span id=\"error\">{}</span>: <span id=\"error_description\">{}</span></p>",
        escape(error),
        escape(&description.replace(' ', "+")),
        escape(error),
        escape(description)
    );
    page("Error | Salesforce", &body)
}

/// The 503 maintenance page returned while Salesforce is down.
pub fn maintenance() -> String {
    page(
        "Salesforce - Maintenance",
        "<h1>Down For Maintenance</h1>\n<p id=\"maintenance\">Salesforce is down for maintenance. Sorry for the inconvenience. We'll be back shortly.</p>",
    )
}

/// Plain 500 page used outside the OAuth JSON endpoints.
pub fn internal_error() -> String {
    page(
        "Error | Salesforce",
        "<h1>An internal server error has occurred</h1>\n<p id=\"internal_error\">An error has occurred while processing your request. Please try again.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html_form::HtmlForm;

    #[test]
    fn login_page_round_trips_through_the_form_parser() {
        let html = login(
            &[("state", "a&b\"c"), ("client_id", "x")],
            "u@example.com",
            Some("bad <pw>"),
        );
        let form = HtmlForm::find(&html, "login_form").expect("form");
        assert_eq!(form.action, "/services/oauth2/authorize/login");
        assert_eq!(form.value("state"), Some("a&b\"c"));
        assert_eq!(form.value("username"), Some("u@example.com"));
        assert!(form.submits.iter().any(|(n, _)| n == "Login"));
    }
}
