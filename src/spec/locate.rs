//! Position index: dotted field path → line and column in the stack file.
//!
//! serde_yaml forgets where values came from, so the same text is parsed a second time with
//! yaml-rust2's event parser, whose events carry positions. Paths use the same spelling as the
//! rest of the loader: `services.web.ports[0]`, `services.web.deploy.resources.limits.memory`.
//! A mapping entry is located at its key, a sequence item at the item itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::overlay::Origins;
use super::{bounded, Location, SpecError};

/// `(line, column)`, both 1-based.
pub type Position = (usize, usize);

#[derive(Debug, Default)]
pub struct PositionIndex {
    positions: HashMap<String, Position>,
    /// The first key that appears twice in one mapping (serde_yaml reports duplicates
    /// without a position).
    duplicate: Option<(String, Position)>,
    /// Where the nesting first gets deeper than [`MAX_DEPTH`].
    too_deep: Option<Position>,
    /// Where the paths built so far first outgrew the file's budget (see `bounded.rs`).
    too_big: Option<Position>,
}

/// Deepest nesting accepted. serde_yaml's parser slows down quadratically with depth (100k
/// nested brackets take minutes), so absurd nesting is refused before it gets there; real
/// stack files stay under ten levels.
pub const MAX_DEPTH: usize = 64;

impl PositionIndex {
    /// Index `text`. Never fails: on a syntax error the index holds what came before it (the
    /// syntax error itself is reported from serde_yaml's parse).
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::new(text);
        // Events are pulled one by one: `Parser::load` recurses per nesting level and would
        // overflow the stack on a hostile file.
        let mut parser = Parser::new_from_str(text);
        while !builder.done && builder.too_deep.is_none() && builder.too_big.is_none() {
            match parser.next_token() {
                Ok((Event::StreamEnd, _)) => break,
                Ok((event, mark)) => builder.on_event(event, mark),
                // Syntax errors are reported from serde_yaml's parse (see above), except this
                // one: yaml-rust2 gives up on deep flow nesting before emitting an event.
                Err(e) => {
                    if e.info().contains("recursion limit") {
                        builder.too_deep = Some((e.marker().line().max(1), e.marker().col() + 1));
                    }
                    break;
                }
            }
        }
        PositionIndex {
            positions: builder.positions,
            duplicate: builder.duplicate,
            too_deep: builder.too_deep,
            too_big: builder.too_big,
        }
    }

    /// Position of `path` or, when it is not in the file as such (it came through a merge key
    /// or alias, or the loader made it up), of its longest indexed prefix; `(1, 1)` at worst.
    pub fn locate(&self, path: &str) -> Position {
        let mut current = path;
        loop {
            if let Some(&position) = self.positions.get(current) {
                return position;
            }
            match parent(current) {
                Some(p) => current = p,
                None => return (1, 1),
            }
        }
    }

    pub fn too_deep(&self) -> Option<Position> {
        self.too_deep
    }

    /// A file whose paths alone outgrow its budget: long keys nested deep, repeated below.
    pub fn too_big(&self) -> Option<Position> {
        self.too_big
    }

    pub fn duplicate(&self) -> Option<(&str, Position)> {
        self.duplicate.as_ref().map(|(path, position)| (path.as_str(), *position))
    }

    #[cfg(test)]
    pub fn get(&self, path: &str) -> Option<Position> {
        self.positions.get(path).copied()
    }
}

/// The path one level up: `a.b[2]` → `a.b` → `a` → `` → none.
pub(super) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return Some(&path[..i]);
        }
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

/// Append a mapping key to a path.
pub fn key_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Append a sequence index to a path.
pub fn item_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Turns paths into `Location`s: in one file, or in a stack merged from a base file and an
/// environment's overlay, in the file each value was written in.
#[derive(Debug)]
pub struct Locator {
    /// The base file first, then the overlay (if any), with the positions of each.
    files: Vec<(PathBuf, PositionIndex)>,
    /// For a merged stack: which file, and which path in it, each merged path came from.
    origins: Origins,
}

impl Locator {
    pub fn new(file: &Path, text: &str) -> Self {
        Locator { files: vec![(file.to_path_buf(), PositionIndex::build(text))], origins: Origins::default() }
    }

    /// The locator of a stack merged from `base` and `overlay` (each a one-file locator).
    pub fn layered(base: Locator, overlay: Locator, origins: Origins) -> Self {
        Locator { files: base.files.into_iter().chain(overlay.files).collect(), origins }
    }

    /// The base file: relative paths in the stack are relative to it.
    pub fn file(&self) -> &Path {
        &self.files[0].0
    }

    pub fn index(&self) -> &PositionIndex {
        &self.files[0].1
    }

    pub fn at(&self, field: &str) -> Location {
        let (layer, path) = self.origins.resolve(field);
        let (file, index) = &self.files[layer.min(self.files.len() - 1)];
        let (line, column) = index.locate(&path);
        Location { file: file.clone(), line, column, field: field.to_string() }
    }

    /// A location at an explicit position (YAML syntax errors), with no field.
    pub fn at_position(&self, line: usize, column: usize) -> Location {
        Location { file: self.file().to_path_buf(), line: line.max(1), column: column.max(1), field: String::new() }
    }

    pub fn error(&self, field: &str, message: impl Into<String>) -> SpecError {
        SpecError::Invalid { location: self.at(field), message: message.into() }
    }
}

/// Where the next node goes in the container being read.
#[derive(Debug)]
enum Frame {
    /// `key` is `None` while waiting for a key, `Some(path of the entry)` while waiting for
    /// its value.
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Builder<'t> {
    /// The source, by line, to check what a container's start mark points at.
    lines: Vec<&'t str>,
    positions: HashMap<String, Position>,
    stack: Vec<Frame>,
    /// Block containers waiting for a position: yaml-rust2 marks the start of a block mapping
    /// at its first `:` rather than its first key, so such a container is located at the
    /// first scalar inside it instead. Each entry keeps the start mark as a fallback.
    pending: Vec<(String, Position)>,
    duplicate: Option<(String, Position)>,
    too_deep: Option<Position>,
    /// Budget left for paths, charged as `bounded.rs` charges nodes; `over` once spent.
    left: u64,
    over: bool,
    too_big: Option<Position>,
    /// Only the first document counts (serde_yaml refuses more than one anyway).
    done: bool,
}

impl<'t> Builder<'t> {
    fn new(text: &'t str) -> Self {
        Builder {
            lines: text.lines().collect(),
            positions: HashMap::new(),
            stack: Vec::new(),
            pending: Vec::new(),
            duplicate: None,
            too_deep: None,
            left: bounded::budget(text.len()),
            over: false,
            too_big: None,
            done: false,
        }
    }

    fn record(&mut self, path: String, position: Position) {
        self.positions.entry(path).or_insert(position);
    }

    /// A node starts at `position`: work out its path, advance the parent, and say whether the
    /// node is located itself (root, sequence items and keys are; mapping values are located
    /// at their key). Returns the node's path (for a container, its children's parent).
    fn node(&mut self, scalar_key: Option<&str>) -> (String, bool) {
        let (path, located) = self.node_path(scalar_key);
        let cost = bounded::NODE_COST + path.len() as u64;
        match self.left.checked_sub(cost) {
            Some(left) => self.left = left,
            None => self.over = true,
        }
        (path, located)
    }

    fn node_path(&mut self, scalar_key: Option<&str>) -> (String, bool) {
        match self.stack.last_mut() {
            None => (String::new(), true),
            Some(Frame::Seq { path, next }) => {
                let item = item_path(path, *next);
                *next += 1;
                (item, true)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(entry) => (entry, false),
                // A key. Complex keys (mappings as keys) get a dummy name.
                None => {
                    let entry = key_path(path, scalar_key.unwrap_or("?"));
                    *key = Some(entry.clone());
                    (entry, true)
                }
            },
        }
    }

    /// A scalar or alias: its mark is exact, so it also locates the containers waiting.
    fn leaf(&mut self, scalar_key: Option<&str>, position: Position) {
        for (path, _) in std::mem::take(&mut self.pending) {
            self.record(path, position);
        }
        let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
        let (path, located) = self.node(scalar_key);
        if self.over {
            self.too_big.get_or_insert(position);
            return;
        }
        if is_key && self.duplicate.is_none() && self.positions.contains_key(&path) {
            self.duplicate = Some((path.clone(), position));
        }
        if located {
            self.record(path, position);
        }
    }

    fn container(&mut self, position: Position, is_map: bool) {
        let (path, located) = self.node(None);
        if self.over {
            self.too_big.get_or_insert(position);
            return;
        }
        if located {
            // Flow collections are marked at their '{' or '[' and block sequences at their
            // first '-'; block mappings are not (see `pending`).
            let (line, column) = position;
            let at = self.lines.get(line.wrapping_sub(1)).and_then(|l| l.chars().nth(column.wrapping_sub(1)));
            let exact = match at {
                Some('{') => is_map,
                Some('[' | '-') => !is_map,
                _ => false,
            };
            if exact {
                self.record(path.clone(), position);
            } else {
                self.pending.push((path.clone(), position));
            }
        }
        if self.stack.len() >= MAX_DEPTH && self.too_deep.is_none() {
            self.too_deep = Some(position);
        }
        self.stack.push(if is_map { Frame::Map { path, key: None } } else { Frame::Seq { path, next: 0 } });
    }

    fn end(&mut self) {
        let path = match self.stack.pop() {
            Some(Frame::Map { path, .. } | Frame::Seq { path, .. }) => path,
            None => return,
        };
        // An empty container never saw a scalar: fall back to its start mark.
        if self.pending.last().is_some_and(|(p, _)| *p == path) {
            if let Some((path, position)) = self.pending.pop() {
                self.record(path, position);
            }
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.done {
            return;
        }
        let position = (mark.line().max(1), mark.col() + 1);
        match event {
            Event::Scalar(value, ..) => self.leaf(Some(&value), position),
            Event::Alias(_) => self.leaf(None, position),
            Event::MappingStart(..) => self.container(position, true),
            Event::SequenceStart(..) => self.container(position, false),
            Event::MappingEnd | Event::SequenceEnd => self.end(),
            Event::DocumentEnd => self.done = true,
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
name: demo
services:
  web:
    image: nginx
    ports:
      - \"8080:80\"
      - target: 81
        published: 8081
    deploy:
      resources:
        limits: { cpus: \"0.25\", memory: 32M }
";

    #[test]
    fn keys_and_items_are_located() {
        let index = PositionIndex::build(TEXT);
        assert_eq!(index.get(""), Some((1, 1)));
        assert_eq!(index.get("name"), Some((1, 1)));
        assert_eq!(index.get("services.web"), Some((3, 3)));
        assert_eq!(index.get("services.web.image"), Some((4, 5)));
        assert_eq!(index.get("services.web.ports[0]"), Some((6, 9)));
        assert_eq!(index.get("services.web.ports[1]"), Some((7, 9)));
        assert_eq!(index.get("services.web.ports[1].published"), Some((8, 9)));
        assert_eq!(index.get("services.web.deploy.resources.limits.memory"), Some((11, 33)));
    }

    #[test]
    fn flow_collections_are_located_at_their_bracket() {
        let index = PositionIndex::build("a:\n  - { x: 1 }\n  - [1, [2]]\n  - - - deep\n  - {}\n");
        assert_eq!(index.get("a[0]"), Some((2, 5)));
        assert_eq!(index.get("a[0].x"), Some((2, 7)));
        assert_eq!(index.get("a[1]"), Some((3, 5)));
        assert_eq!(index.get("a[1][1]"), Some((3, 9)));
        assert_eq!(index.get("a[2]"), Some((4, 5)));
        assert_eq!(index.get("a[2][0]"), Some((4, 7)));
        assert_eq!(index.get("a[2][0][0]"), Some((4, 9)));
        assert_eq!(index.get("a[3]"), Some((5, 5)));
    }

    #[test]
    fn unknown_paths_fall_back_to_the_longest_prefix() {
        let index = PositionIndex::build(TEXT);
        assert_eq!(index.locate("services.web.environment.FOO"), (3, 3));
        assert_eq!(index.locate("services.web.ports[1].mode"), (7, 9));
        assert_eq!(index.locate("nowhere"), (1, 1));
    }

    #[test]
    fn broken_yaml_keeps_what_came_before() {
        let index = PositionIndex::build("a: 1\nb: [\n");
        assert_eq!(index.get("a"), Some((1, 1)));
        assert_eq!(PositionIndex::build("").locate("x"), (1, 1));
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
