//! How `sluicectl` prints an answer: as text (the default) or as JSON (`-o json`), with the
//! same exit status either way: 0 done, 1 refused by sluiced, 2 sluiced not reached.

use crate::admin::Response;
use serde_json::json;

/// `sluicectl -o`: what is printed on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: as sluiced has always answered.
    #[default]
    Text,
    /// One JSON object: the view (its fields in docs/operations.md), `{"message": ...}` for
    /// commands that change something, `{"error": ...}` (with the message on stderr too) on
    /// failure.
    Json,
}

/// What to print and the exit status.
#[derive(Debug, PartialEq, Eq)]
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

/// The answer `got` (or why there is none) in `format`.
pub fn render(format: Format, got: &Result<Response, String>) -> Printed {
    let (stdout, stderr, code) = match (got, format) {
        (Ok(Response::Ok { text, .. }), Format::Text) => (line(text), String::new(), 0),
        (Ok(Response::Ok { text, data }), Format::Json) => {
            let v = data.clone().unwrap_or_else(|| json!({ "message": text.trim_end() }));
            (line(&v.to_string()), String::new(), 0)
        }
        (Ok(Response::Refused { text }), _) => (error_json(format, text), line(text), 1),
        (Err(e), _) => (error_json(format, e), format!("sluicectl: {e}\n"), 2),
    };
    Printed { stdout, stderr, code }
}

/// `s` ending with one newline.
fn line(s: &str) -> String {
    let mut s = s.to_string();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn error_json(format: Format, text: &str) -> String {
    match format {
        Format::Text => String::new(),
        Format::Json => line(&json!({ "error": text.trim_end() }).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_as_today() {
        let p = render(Format::Text, &Ok(Response::ok("done")));
        assert_eq!(p, Printed { stdout: "done\n".into(), stderr: String::new(), code: 0 });
        let p = render(Format::Text, &Ok(Response::Refused { text: "no service \"x\"".into() }));
        assert_eq!(p, Printed { stdout: String::new(), stderr: "no service \"x\"\n".into(), code: 1 });
        let p = render(Format::Text, &Err("sluiced is not running".into()));
        assert_eq!(
            p,
            Printed { stdout: String::new(), stderr: "sluicectl: sluiced is not running\n".into(), code: 2 }
        );
    }

    #[test]
    fn json_is_the_view_a_message_or_an_error() {
        let data = json!({ "generation": 4 });
        let p = render(Format::Json, &Ok(Response::Ok { text: "generation 4\n".into(), data: Some(data) }));
        assert_eq!((p.stdout.as_str(), p.code), ("{\"generation\":4}\n", 0));
        let p = render(Format::Json, &Ok(Response::ok("web 198.19.0.11: restored\n")));
        assert_eq!(p.stdout, "{\"message\":\"web 198.19.0.11: restored\"}\n");
        let p = render(Format::Json, &Ok(Response::Refused { text: "no service \"x\"".into() }));
        assert_eq!(
            (p.stdout.as_str(), p.stderr.as_str(), p.code),
            ("{\"error\":\"no service \\\"x\\\"\"}\n", "no service \"x\"\n", 1)
        );
        let p = render(Format::Json, &Err("sluiced is not running".into()));
        assert_eq!((p.stdout.as_str(), p.code), ("{\"error\":\"sluiced is not running\"}\n", 2));
    }
}
