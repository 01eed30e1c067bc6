//! Where each value of a YAML document is: config paths (`services[1].backends[0].weight`,
//! the same form serde_yaml uses in its messages) mapped to line and column, so that a refusal
//! found after deserialization can still point into the file.

use std::cell::OnceCell;
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A position in the file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// The positions of a document's values, found when first asked for: a config that is valid
/// needs none of them, and indexing a large one (10,000 services) costs more than parsing it.
#[derive(Debug, Default)]
pub struct Locations<'t> {
    text: &'t str,
    values: OnceCell<HashMap<String, Pos>>,
}

/// Deepest nesting of mappings and sequences in a config: 16. The schema itself goes 5 deep
/// (`services[].limits.<rate>.value`); a parser's cost grows with the square of the depth, so
/// a document nested thousands deep is refused before any parser but this count sees it.
pub const MAX_DEPTH: usize = 16;

/// Why a document was not indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexError {
    /// Not YAML: where, and what the parser found (never the text itself).
    Syntax(Pos, String),
    /// A mapping or sequence nested deeper than allowed starts here.
    TooDeep(Pos),
    /// A second document starts here (a config is one document).
    SecondDocument(Pos),
}

/// Where the text has the first of the line breaks that YAML 1.1 has and YAML 1.2 has not
/// (NEL, LS, PS). serde_yaml's parser (libyaml, 1.1) breaks lines there and this index's
/// (yaml-rust2, 1.2) does not, so the two would read different documents; a config never
/// needs them.
fn odd_line_break(text: &str) -> Option<Pos> {
    let at = text.find(['\u{85}', '\u{2028}', '\u{2029}'])?;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before, |i| &before[i + 1..]).chars().count() + 1;
    Some(Pos { line, col })
}

impl<'t> Locations<'t> {
    /// The index of `text`. Text that does not parse yields an empty index (serde_yaml reports
    /// the syntax error with its own position).
    pub fn index(text: &'t str) -> Locations<'t> {
        Locations { text, values: OnceCell::new() }
    }

    /// The index of `text` after checking it: refused at the first mapping or sequence nested
    /// deeper than `max_depth` (the parse stops there) or at its first syntax error. This pass
    /// records nothing; the positions come from a second one, on the first [`Locations::find`].
    pub fn index_checked(text: &'t str, max_depth: usize) -> Result<Locations<'t>, IndexError> {
        walk(text, max_depth, |_, _| {})?;
        Ok(Locations::index(text))
    }

    /// Whether `text` is plainly nested no deeper than `max_depth` ([`crate::nesting::bound`],
    /// which parses nothing), so that serde_yaml may read it before [`Locations::index_checked`]
    /// (which is needed only when serde_yaml refuses it, to say where a second document or the
    /// depth is). Refused at once at a line break that the two parsers read differently.
    pub fn plainly_shallow(text: &str, max_depth: usize) -> Result<bool, IndexError> {
        if let Some(pos) = odd_line_break(text) {
            return Err(odd_line_break_error(pos));
        }
        Ok(crate::nesting::bound(text).is_some_and(|d| d <= max_depth))
    }

    /// The position of `path`, or of its nearest ancestor that exists (a missing field points
    /// at the mapping that lacks it).
    pub fn find(&self, path: &str) -> Option<Pos> {
        let values = self.values.get_or_init(|| {
            let mut rx = Receiver::default();
            match walk(self.text, usize::MAX, |ev, mark| rx.on_event(ev, mark)) {
                Ok(()) => rx.values,
                Err(_) => HashMap::new(),
            }
        });
        let mut p = path;
        loop {
            if let Some(pos) = values.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Parses `text`, handing each event inside its one document to `on_event`; refuses it at the
/// first mapping or sequence nested deeper than `max_depth`, at a second document or at its
/// first syntax error.
fn walk(text: &str, max_depth: usize, mut on_event: impl FnMut(Event, Marker)) -> Result<(), IndexError> {
    if let Some(pos) = odd_line_break(text) {
        return Err(odd_line_break_error(pos));
    }
    let mut parser = Parser::new_from_str(text);
    let (mut documents, mut depth) = (0, 0usize);
    loop {
        let (ev, mark) = parser.next_token().map_err(scan_error)?;
        let at = || Pos { line: mark.line(), col: mark.col() + 1 };
        match ev {
            Event::StreamEnd => return Ok(()),
            Event::DocumentStart if documents > 0 => return Err(IndexError::SecondDocument(at())),
            Event::DocumentStart => documents += 1,
            Event::MappingStart(..) | Event::SequenceStart(..) if depth >= max_depth => {
                return Err(IndexError::TooDeep(at()));
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
        on_event(ev, mark);
    }
}

fn odd_line_break_error(pos: Pos) -> IndexError {
    let what = "a line break other than LF or CR LF (U+0085, U+2028, U+2029)";
    IndexError::Syntax(pos, what.to_string())
}

/// A parser error as an [`IndexError`].
fn scan_error(e: yaml_rust2::ScanError) -> IndexError {
    let m = e.marker();
    let pos = Pos { line: m.line(), col: m.col() + 1 };
    // The scanner looks ahead, and has a depth limit of its own.
    if e.info() == "recursion limit exceeded" {
        return IndexError::TooDeep(pos);
    }
    // The scanner's one message that quotes the text names a single character.
    let info = if e.info().starts_with("unexpected character") { "unexpected character" } else { e.info() };
    IndexError::Syntax(pos, info.to_string())
}

enum Container {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Receiver {
    stack: Vec<Container>,
    values: HashMap<String, Pos>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Receiver {
    /// The path of the node that starts now, or `None` when it is a mapping key.
    fn next_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Container::Map { key: None, .. }) => None,
            Some(Container::Map { path, key: Some(k) }) => Some(join(path, k)),
            Some(Container::Seq { path, index }) => Some(format!("{path}[{index}]")),
        }
    }

    /// A value finished: the parent moves to its next key or item.
    fn advance(&mut self) {
        match self.stack.last_mut() {
            Some(Container::Map { key, .. }) => *key = None,
            Some(Container::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        self.values.entry(path.to_string()).or_insert(Pos { line: mark.line(), col: mark.col() + 1 });
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => match self.next_path() {
                None => {
                    // A key: remember it, and point the (future) value path at the key first;
                    // the value's own position replaces it only if absent, so keys win for
                    // `key:` lines with the value on the next line.
                    let here = Pos { line: mark.line(), col: mark.col() + 1 };
                    if let Some(Container::Map { path, key }) = self.stack.last_mut() {
                        // A block mapping's start mark sits after its first key; point the
                        // mapping at that key instead (flow mappings keep their `{`).
                        if let Some(m) = self.values.get_mut(path.as_str()) {
                            if m.line == here.line && here.col < m.col {
                                *m = here;
                            }
                        }
                        let p = join(path, &value);
                        *key = Some(value);
                        self.values.insert(p, here);
                    }
                }
                Some(p) => {
                    self.record(&p, mark);
                    self.advance();
                }
            },
            Event::Alias(_) => {
                if let Some(p) = self.next_path() {
                    self.record(&p, mark);
                }
                self.advance();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.next_path().unwrap_or_default();
                self.record(&path, mark);
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Container::Map { path, key: None }
                } else {
                    Container::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.advance();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
ports:
  - name: ext
    address: 198.18.0.1/24
services:
  - name: web
    backends:
      - { address: 198.19.0.10, weight: 3 }
      - address: 198.19.0.11
        weight: 9
";

    #[test]
    fn finds_nested_values() {
        let l = Locations::index(DOC);
        assert_eq!(l.find("ports[0].address"), Some(Pos { line: 3, col: 5 }));
        assert_eq!(l.find("services[0].backends[0].weight"), Some(Pos { line: 7, col: 33 }));
        assert_eq!(l.find("services[0].backends[1].weight"), Some(Pos { line: 9, col: 9 }));
        assert_eq!(l.find("services[0].backends[1]").map(|p| p.line), Some(8));
    }

    #[test]
    fn a_checked_document_is_indexed_on_the_first_lookup_only() {
        let l = Locations::index_checked(DOC, MAX_DEPTH).unwrap();
        assert!(l.values.get().is_none(), "checking records no positions");
        assert_eq!(l.find("ports[0].address"), Some(Pos { line: 3, col: 5 }));
        let first = l.values.get().map(|v| v as *const _);
        assert!(first.is_some());
        assert_eq!(l.find("services[0].backends[1].weight"), Some(Pos { line: 9, col: 9 }));
        assert_eq!(l.values.get().map(|v| v as *const _), first, "indexed once");
        // The check refuses what the index would not read, where it is.
        let deep = "a: [[[[1]]]]\n";
        assert_eq!(
            Locations::index_checked(deep, 3).unwrap_err(),
            IndexError::TooDeep(Pos { line: 1, col: 6 })
        );
        assert_eq!(Locations::index_checked(deep, 5).unwrap().find("a[0][0][0][0]").map(|p| p.col), Some(8));
        let two = "a: 1\n---\nb: 2\n";
        assert!(matches!(Locations::index_checked(two, MAX_DEPTH), Err(IndexError::SecondDocument(_))));
    }

    #[test]
    fn a_plainly_shallow_document_needs_no_parse_before_serde_yaml() {
        assert_eq!(Locations::plainly_shallow(DOC, MAX_DEPTH), Ok(true));
        // Deeper than the bound allows, or what the scan cannot tell: the parser checks it.
        assert_eq!(Locations::plainly_shallow("a: [[[[1]]]]\n", 5), Ok(false));
        assert_eq!(Locations::plainly_shallow("a: \"two\n  lines\"\n", MAX_DEPTH), Ok(false));
        // A line break that the parsers read differently is refused at once, where it is.
        let nel = Locations::plainly_shallow("a: 1\nb: 2\u{85}\n", MAX_DEPTH).unwrap_err();
        assert!(matches!(nel, IndexError::Syntax(Pos { line: 2, col: 5 }, _)), "{nel:?}");
    }

    #[test]
    fn missing_paths_fall_back_to_the_parent() {
        let l = Locations::index(DOC);
        assert_eq!(l.find("services[0].backends[1].port").map(|p| p.line), Some(8));
        assert_eq!(l.find("services[0].tunnel").map(|p| p.line), Some(5));
        assert_eq!(l.find("nothing.here"), None);
    }
}
