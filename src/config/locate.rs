//! Finds where a YAML path sits in the source text, so that errors found after
//! deserialisation (an unknown upstream, a duplicate name) still name a line.
//! serde_yaml drops positions once a document is parsed; yaml-rust2's event
//! parser keeps them, so the document is parsed a second time for positions only.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::error::{Position, Seg, YamlPath};

#[derive(Debug)]
enum Node {
    Map(Vec<(String, Position, Located)>),
    Seq(Vec<Located>),
    Leaf,
}

#[derive(Debug)]
struct Located {
    at: Position,
    node: Node,
}

enum Frame {
    Map {
        at: Position,
        entries: Vec<(String, Position, Located)>,
        key: Option<(String, Position)>,
    },
    Seq {
        at: Position,
        items: Vec<Located>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Located>,
}

fn pos(m: Marker) -> Position {
    Position {
        line: m.line(),
        column: m.col() + 1,
    }
}

impl Builder {
    fn complete(&mut self, node: Located, text: Option<String>) {
        match self.stack.last_mut() {
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some((text.unwrap_or_default(), node.at)),
                Some((k, at)) => entries.push((k, at, node)),
            },
            Some(Frame::Seq { items, .. }) => items.push(node),
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(mark);
        match ev {
            Event::MappingStart(..) => self.stack.push(Frame::Map {
                at,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq {
                at,
                items: Vec::new(),
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                let node = match self.stack.pop() {
                    // A block mapping's start event is marked at its first `:`;
                    // its first key is where a reader looks for it.
                    Some(Frame::Map { at, entries, .. }) => Located {
                        at: entries.first().map_or(at, |(_, key_at, _)| *key_at),
                        node: Node::Map(entries),
                    },
                    Some(Frame::Seq { at, items }) => Located {
                        at,
                        node: Node::Seq(items),
                    },
                    None => return,
                };
                self.complete(node, None);
            }
            Event::Scalar(text, ..) => self.complete(
                Located {
                    at,
                    node: Node::Leaf,
                },
                Some(text),
            ),
            Event::Alias(..) => self.complete(
                Located {
                    at,
                    node: Node::Leaf,
                },
                None,
            ),
            _ => {}
        }
    }
}

/// Positions of the nodes of one YAML document.
#[derive(Debug, Default)]
pub struct Locator {
    root: Option<Located>,
}

impl Locator {
    /// Indexes `text`. A document yaml-rust2 cannot parse yields an empty index
    /// (serde_yaml reports the syntax error with its own position).
    pub fn new(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Self::default();
        }
        Self { root: builder.root }
    }

    /// The position of the deepest node along `path` that exists: the key of a
    /// mapping entry, or the start of a sequence item.
    pub fn find(&self, path: &YamlPath) -> Option<Position> {
        let mut node = self.root.as_ref()?;
        let mut best = node.at;
        for seg in &path.0 {
            let next = match (&node.node, seg) {
                (Node::Map(entries), Seg::Key(k)) => entries
                    .iter()
                    .find(|(key, _, _)| key == k)
                    .map(|(_, key_at, child)| (*key_at, child)),
                (Node::Seq(items), Seg::Index(i)) => items.get(*i).map(|c| (c.at, c)),
                _ => None,
            };
            match next {
                Some((at, child)) => {
                    best = at;
                    node = child;
                }
                None => break,
            }
        }
        Some(best)
    }

    /// The position of the value at `path`, when it exists.
    pub fn value(&self, path: &YamlPath) -> Option<Position> {
        let mut node = self.root.as_ref()?;
        for seg in &path.0 {
            node = match (&node.node, seg) {
                (Node::Map(entries), Seg::Key(k)) => {
                    &entries.iter().find(|(key, _, _)| key == k)?.2
                }
                (Node::Seq(items), Seg::Index(i)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listen:
  http: [\"0.0.0.0:8080\"]
routes:
  - name: a
    upstream: x
  - name: b
    match:
      path: /b
";

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn finds_keys_and_items() {
        let loc = Locator::new(DOC);
        let root = YamlPath::root();
        assert_eq!(loc.find(&root.key("listen")), at(1, 1));
        assert_eq!(loc.find(&root.key("listen").key("http")), at(2, 3));
        assert_eq!(
            loc.find(&root.key("listen").key("http").index(0)),
            at(2, 10)
        );
        assert_eq!(loc.find(&root.key("routes").index(1)), at(6, 5));
        assert_eq!(
            loc.find(&root.key("routes").index(1).key("match").key("path")),
            at(8, 7)
        );
        assert_eq!(
            loc.value(&root.key("routes").index(0).key("upstream")),
            at(5, 15)
        );
    }

    #[test]
    fn missing_tail_falls_back_to_deepest_existing_node() {
        let loc = Locator::new(DOC);
        let p = YamlPath::root().key("routes").index(0).key("match");
        assert_eq!(loc.find(&p), at(4, 5));
        assert_eq!(loc.value(&p), None);
    }

    #[test]
    fn broken_yaml_gives_no_positions() {
        let loc = Locator::new("a: [1, 2\nb: }");
        assert_eq!(loc.find(&YamlPath::root().key("a")), None);
    }
}
