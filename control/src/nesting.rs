//! A bound on how deep a YAML text nests, from one pass over its bytes that parses nothing.
//!
//! serde_yaml's parser (libyaml) takes time quadratic in the nesting, so a config is checked
//! for depth before it sees the text. The exact check is a full parse of its own (yaml-rust2,
//! in `locate`), as slow as serde_yaml's; this bound lets a config that is plainly shallow
//! (every config a person or a generator writes) skip it, and sends the rest to it.
//!
//! The bound is never below the depth either parser reads, or there is none:
//! - flow collections: every `[` or `{` outside quotes and comments opens one (one inside a
//!   plain scalar does not, so this overcounts), every `]` or `}` closes one while any is open;
//! - block collections: each starts at a column greater than its parent's, but for a sequence
//!   at its mapping's column (`key:` then `- item`), so two per column at most, counted over
//!   the columns of the lines that are open (a line pops only the columns right of it, and
//!   none inside a flow collection) and those after `- ` and `? ` indicators;
//! - a quoted scalar that does not end on its line, a tab in an indentation, or a quote that
//!   may continue a plain scalar of the line before (inside a flow collection): no bound.

/// An upper bound of the depth of mappings and sequences in `text`, or `None` when this scan
/// cannot tell (see the module's notes): the caller then asks a parser.
pub fn bound(text: &str) -> Option<usize> {
    let mut scan = Scan::default();
    // Both parsers break lines at CR alone too (CR LF reads here as a line and an empty one).
    for line in text.split(['\n', '\r']) {
        scan.line(line.as_bytes())?;
    }
    Some(scan.max)
}

#[derive(Default)]
struct Scan {
    /// Flow collections open (at least as many as are).
    flow: usize,
    /// Columns of the block collections that may be open, ascending.
    columns: Vec<usize>,
    /// At a token's start inside a flow collection when the last line ended.
    flow_start: bool,
    max: usize,
}

impl Scan {
    fn line(&mut self, b: &[u8]) -> Option<()> {
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        match b.get(indent) {
            None | Some(b'#') => return Some(()),
            Some(b'\t') => return None,
            Some(_) => {}
        }
        if self.flow == 0 {
            while self.columns.last().is_some_and(|&c| c > indent) {
                self.columns.pop();
            }
        }
        self.column(indent);
        let mut start = self.flow == 0 || self.flow_start;
        let mut i = indent;
        while let Some(&c) = b.get(i) {
            let next_blank = b.get(i + 1).is_none_or(|n| *n == b' ' || *n == b'\t');
            match c {
                b' ' | b'\t' if b.get(i + 1) == Some(&b'#') => break,
                b' ' | b'\t' => {}
                b'"' | b'\'' if start => {
                    i = quoted_end(b, i)?;
                    start = false;
                }
                b'[' | b'{' => {
                    self.flow += 1;
                    self.note();
                    start = true;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    start = false;
                }
                b',' if self.flow > 0 => start = true,
                b':' if next_blank || self.flow > 0 => start = true,
                b'-' | b'?' if start && next_blank => {
                    if self.flow == 0 {
                        let content = i + 1 + b[i + 1..].iter().take_while(|&&c| c == b' ').count();
                        self.column(content);
                    }
                }
                b'&' | b'!' if start => {
                    // An anchor or a tag: the node follows it.
                    i += b[i..].iter().take_while(|&&c| c != b' ' && c != b'\t').count();
                    continue;
                }
                _ => start = false,
            }
            i += 1;
        }
        self.flow_start = start;
        Some(())
    }

    /// A block collection may start at `column`.
    fn column(&mut self, column: usize) {
        if self.columns.last().is_none_or(|&c| c < column) {
            self.columns.push(column);
            self.note();
        }
    }

    fn note(&mut self) {
        self.max = self.max.max(2 * self.columns.len() + self.flow);
    }
}

/// The index of the quote that closes the quoted scalar opening at `open`, or `None` when it
/// does not close on this line. A double-quoted scalar escapes with `\`; a single-quoted one
/// writes its quote twice, which reads here as one that closes and a plain scalar after it.
fn quoted_end(b: &[u8], open: usize) -> Option<usize> {
    let quote = b[open];
    let mut i = open + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' if quote == b'"' => i += 1,
            c if c == quote => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::bound;

    #[test]
    fn flow_collections_count_where_they_open() {
        assert_eq!(bound("a: [[[1]]]\n"), Some(2 + 3));
        assert_eq!(bound("a: [1, {b: [2]}]\nc: [3]\n"), Some(2 + 3));
        // Over several lines, with the closing brackets first on theirs; the columns of the
        // lines inside count as blocks' (an overcount).
        assert_eq!(bound("a: [\n  [1,\n   [2]\n  ]\n]\n"), Some(2 * 3 + 3));
        let deep = format!("services: {}\n", "[".repeat(100_000));
        assert!(bound(&deep).unwrap() > 100_000);
    }

    #[test]
    fn brackets_in_quotes_and_comments_do_not_count() {
        assert_eq!(bound("a: \"[[[\" # {{{\nb: '[\"[' \n"), Some(2));
        // A closing bracket in quotes does not close: the bound stays above the depth.
        assert_eq!(bound("a: [x, \"]]]\", [[1]]]\n"), Some(2 + 3));
        assert_eq!(bound("a: [\"\\\"]\", [1]]\n"), Some(2 + 2));
        // A quote inside a plain scalar is a character of it, not the start of a string.
        assert_eq!(bound("a: it's [[1]] '\nb: 1\n"), Some(2 + 2));
    }

    #[test]
    fn block_collections_count_two_per_column() {
        let doc = "services:\n  - name: web\n    backends:\n      - address: 1\n        weight: 2\n";
        assert_eq!(bound(doc), Some(2 * 5));
        // Lines further left close what was open on the right.
        assert_eq!(bound("a:\n  b:\n    c: 1\nd:\n  e: 1\n"), Some(2 * 3));
        // Compact sequences nest on one line.
        assert_eq!(bound("- - - x\n"), Some(2 * 4));
        let deep = format!("services:\n  {}x\n", "- ".repeat(10_000));
        assert!(bound(&deep).unwrap() > 10_000);
        // Lines end at CR LF and at CR alone as well.
        assert_eq!(bound("a:\r\n  b:\r\n    c: 1\r\n"), Some(2 * 3));
        let deep = format!("a:\r  {}x\r", "- ".repeat(100));
        assert!(bound(&deep).unwrap() > 100);
    }

    #[test]
    fn a_flow_collection_keeps_the_block_columns_open() {
        // The `]` line is left of the block it closes in: the block stays counted after it.
        assert_eq!(bound("a:\n  b:\n    c: [\n1]\n    d: [[1]]\n"), Some(2 * 3 + 2));
    }

    /// The deepest nesting yaml-rust2 reads in `text`, or `None` if it refuses it.
    fn parsed_depth(text: &str) -> Option<usize> {
        use yaml_rust2::parser::{Event, Parser};
        let mut parser = Parser::new_from_str(text);
        let (mut depth, mut max) = (0usize, 0);
        loop {
            match parser.next_token().ok()?.0 {
                Event::StreamEnd => return Some(max),
                Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
                Event::MappingEnd | Event::SequenceEnd => depth -= 1,
                _ => {}
            }
            max = max.max(depth);
        }
    }

    /// A YAML node: a scalar, or a flow or block collection of nodes.
    #[derive(Debug, Clone)]
    enum Node {
        Scalar(&'static str),
        Flow(bool, Vec<Node>),
        Block(bool, Vec<Node>),
    }

    impl Node {
        fn depth(&self) -> usize {
            match self {
                Node::Scalar(_) => 0,
                Node::Flow(_, items) | Node::Block(_, items) => {
                    1 + items.iter().map(Node::depth).max().unwrap_or(0)
                }
            }
        }

        /// The node as its lines start at column `indent` (a block collection), or inline.
        fn render(&self, indent: usize) -> String {
            let pad = " ".repeat(indent);
            match self {
                Node::Scalar(s) => s.to_string(),
                Node::Flow(map, items) => {
                    let items: Vec<String> = items
                        .iter()
                        .enumerate()
                        .map(|(i, n)| if *map { format!("k{i}: {}", n.render(0)) } else { n.render(0) })
                        .collect();
                    let (open, close) = if *map { ("{", "}") } else { ("[", "]") };
                    format!("{open}{}{close}", items.join(", "))
                }
                Node::Block(map, items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        match (map, n) {
                            // A sequence in a mapping at the mapping's column, as YAML allows.
                            (true, Node::Block(false, _)) => format!("{pad}k{i}:\n{}", n.render(indent)),
                            (true, Node::Block(..)) => format!("{pad}k{i}:\n{}", n.render(indent + 2)),
                            (true, _) => format!("{pad}k{i}: {}\n", n.render(0)),
                            // A block item starts on the `- ` line (compact).
                            (false, Node::Block(..)) => {
                                format!("{pad}- {}", &n.render(indent + 2)[indent + 2..])
                            }
                            (false, _) => format!("{pad}- {}\n", n.render(0)),
                        }
                    })
                    .collect(),
            }
        }
    }

    fn scalar() -> impl proptest::strategy::Strategy<Value = Node> {
        use proptest::prelude::*;
        prop_oneof![Just("x"), Just("'a ] b'"), Just("\"c } \\\" d\""), Just("e#f")].prop_map(Node::Scalar)
    }

    fn flow() -> impl proptest::strategy::Strategy<Value = Node> {
        use proptest::prelude::*;
        scalar().prop_recursive(6, 24, 3, |inner| {
            (any::<bool>(), prop::collection::vec(inner, 1..3)).prop_map(|(m, v)| Node::Flow(m, v))
        })
    }

    fn block() -> impl proptest::strategy::Strategy<Value = Node> {
        use proptest::prelude::*;
        let leaf = prop_oneof![scalar(), flow()];
        let tree = leaf.prop_recursive(6, 24, 3, |inner| {
            (any::<bool>(), prop::collection::vec(inner, 1..3)).prop_map(|(m, v)| Node::Block(m, v))
        });
        (any::<bool>(), prop::collection::vec(tree, 1..3)).prop_map(|(m, v)| Node::Block(m, v))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        /// Over documents of block and flow collections, the bound is never below the depth
        /// that the parser reads.
        #[test]
        fn the_bound_is_never_below_the_parsed_depth(doc in block()) {
            let text = doc.render(0);
            proptest::prop_assert_eq!(parsed_depth(&text), Some(doc.depth()), "{}", text);
            let b = bound(&text);
            proptest::prop_assert!(b.is_some_and(|b| b >= doc.depth()), "{:?} < {}: {}", b, doc.depth(), text);
        }
    }

    #[test]
    fn what_the_scan_cannot_tell_has_no_bound() {
        assert_eq!(bound("a: \"two\n  lines\"\n"), None);
        assert_eq!(bound("a: 'two\n  lines'\n"), None);
        assert_eq!(bound("a:\n\t- 1\n"), None);
        // A plain scalar over two lines inside a flow collection, the second starting with a
        // quote that is part of it: what follows the quote is read.
        assert_eq!(bound("a: [x\n\"y, [[[1]]]]\n"), Some(2 + 4));
        assert_eq!(bound("a: [x,\n\"y, [[[1]]]]\n"), None);
    }
}
