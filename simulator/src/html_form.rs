//! A small HTML form reader for tests: finds a `<form>`, its action, its fields and
//! submit buttons, and builds the body a browser would post. It reads the simulator's
//! own pages (and similarly plain HTML), not arbitrary web pages.

/// A form found in a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlForm {
    pub id: Option<String>,
    pub action: String,
    pub method: String,
    /// Non-submit inputs, in document order, with their (unescaped) values.
    pub fields: Vec<(String, String)>,
    /// Submit inputs/buttons as (name, value).
    pub submits: Vec<(String, String)>,
}

impl HtmlForm {
    /// Every form in `html`, in order.
    pub fn parse_all(html: &str) -> Vec<HtmlForm> {
        let lower = html.to_ascii_lowercase();
        let mut forms = Vec::new();
        let mut pos = 0;
        while let Some(start) = lower[pos..].find("<form").map(|i| i + pos) {
            let Some(tag_end) = lower[start..].find('>').map(|i| i + start) else {
                break;
            };
            let end = lower[tag_end..]
                .find("</form")
                .map_or(html.len(), |i| i + tag_end);
            let attrs = parse_attributes(&html[start + 5..tag_end]);
            let mut form = HtmlForm {
                id: attr(&attrs, "id").map(str::to_string),
                action: attr(&attrs, "action").unwrap_or_default().to_string(),
                method: attr(&attrs, "method").unwrap_or("get").to_ascii_lowercase(),
                fields: Vec::new(),
                submits: Vec::new(),
            };
            form.read_controls(&html[tag_end + 1..end]);
            forms.push(form);
            pos = end.max(tag_end + 1);
        }
        forms
    }

    /// The form with this `id` (or `name`).
    pub fn find(html: &str, id: &str) -> Option<HtmlForm> {
        let lower = html.to_ascii_lowercase();
        let mut pos = 0;
        let mut index = 0;
        while let Some(start) = lower[pos..].find("<form").map(|i| i + pos) {
            let tag_end = lower[start..].find('>').map(|i| i + start)?;
            let attrs = parse_attributes(&html[start + 5..tag_end]);
            if attr(&attrs, "id") == Some(id) || attr(&attrs, "name") == Some(id) {
                return Self::parse_all(html).into_iter().nth(index);
            }
            index += 1;
            pos = tag_end + 1;
        }
        None
    }

    fn read_controls(&mut self, inner: &str) {
        let lower = inner.to_ascii_lowercase();
        let mut pos = 0;
        loop {
            let next_input = lower[pos..].find("<input").map(|i| (i + pos, 6));
            let next_button = lower[pos..].find("<button").map(|i| (i + pos, 7));
            let (start, skip) = match (next_input, next_button) {
                (Some(a), Some(b)) => {
                    if a.0 < b.0 {
                        a
                    } else {
                        b
                    }
                }
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            let Some(tag_end) = lower[start..].find('>').map(|i| i + start) else {
                break;
            };
            let attrs = parse_attributes(&inner[start + skip..tag_end]);
            let is_button = skip == 7;
            let kind = attr(&attrs, "type")
                .unwrap_or(if is_button { "submit" } else { "text" })
                .to_ascii_lowercase();
            if let Some(name) = attr(&attrs, "name") {
                let value = attr(&attrs, "value").unwrap_or_default().to_string();
                if kind == "submit" {
                    self.submits.push((name.to_string(), value));
                } else if kind != "button" && kind != "reset" {
                    self.fields.push((name.to_string(), value));
                }
            }
            pos = tag_end + 1;
        }
    }

    /// The current value of a field.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a field (adds it when missing), as typing into it would.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some(field) => field.1 = value.to_string(),
            None => self.fields.push((name.to_string(), value.to_string())),
        }
        self
    }

    /// The fields plus the named submit button (by name or id-equal name), as posted.
    pub fn submission(&self, submit: Option<&str>) -> Vec<(String, String)> {
        let mut out = self.fields.clone();
        if let Some(button) = submit
            && let Some(s) = self.submits.iter().find(|(n, _)| n == button)
        {
            out.push(s.clone());
        }
        out
    }

    /// The `application/x-www-form-urlencoded` body for [`HtmlForm::submission`].
    pub fn encoded(&self, submit: Option<&str>) -> String {
        serde_urlencoded::to_string(self.submission(submit)).unwrap_or_default()
    }
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses `name="v" name='v' name=v flag` into pairs, unescaping entities.
fn parse_attributes(text: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '/') {
            i += 1;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' && chars[i] != '/' {
            i += 1;
        }
        if start == i {
            i += 1;
            continue;
        }
        let name: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '=' {
            i += 1;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                let quote = chars[i];
                i += 1;
                let vs = i;
                while i < chars.len() && chars[i] != quote {
                    i += 1;
                }
                value = chars[vs..i].iter().collect();
                i += 1;
            } else {
                let vs = i;
                while i < chars.len() && !chars[i].is_whitespace() {
                    i += 1;
                }
                value = chars[vs..i].iter().collect();
            }
        }
        out.push((name.to_ascii_lowercase(), unescape(&value)));
    }
    out
}

fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|s| *s <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_buttons() {
        let html = r#"<form id="f" method="POST" action="/x?a=1&amp;b=2">
            <input type="hidden" name="h" value="1 &lt; 2">
            <input name=t value=plain>
            <input type="submit" name="go" value="Go">
            <button name="other" value="o">Other</button>
            </form><form id="g" action="/y"></form>"#;
        let form = HtmlForm::find(html, "f").expect("form f");
        assert_eq!(form.action, "/x?a=1&b=2");
        assert_eq!(form.method, "post");
        assert_eq!(form.value("h"), Some("1 < 2"));
        assert_eq!(form.value("t"), Some("plain"));
        assert_eq!(form.submits.len(), 2);
        assert_eq!(form.encoded(Some("go")), "h=1+%3C+2&t=plain&go=Go");
        assert_eq!(
            HtmlForm::find(html, "g").map(|f| f.action),
            Some("/y".to_string())
        );
        assert_eq!(HtmlForm::parse_all(html).len(), 2);
    }
}
