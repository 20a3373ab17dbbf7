//! Reading pack files: YAML 1.2 (core schema: `yes`/`on` and `1.0.0` stay strings) with the
//! `!include <path>` tag.
//!
//! Include rules, checked in this order for each tag:
//! 1. the path is non-empty;
//! 2. it is resolved against the directory of the file that contains the tag (an absolute path
//!    is taken as is);
//! 3. the result stays inside `PACKS_DIR`, both lexically and after following symlinks;
//! 4. the extension is `.yaml`, `.yml` or `.json`;
//! 5. the target exists and is a regular file;
//! 6. the target is not already on the chain of files being included (a cycle); including the
//!    same fragment from two siblings (a diamond) is fine.
//!
//! YAML fragments may include further files; JSON fragments are plain data.

use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use serde_json::Value;
use serde_saphyr::{
    IncludeRequest, IncludeResolveError, InputSource, MessageFormatter, ResolvedInclude,
    UserMessageFormatter,
};

use super::error::LoadError;
use super::values::normalize_numbers;

/// A parsed file and every file it pulled in through `!include` (canonical paths).
pub(crate) struct Loaded {
    pub(crate) value: Value,
    pub(crate) includes: Vec<PathBuf>,
}

/// Where files are read from: the canonical `PACKS_DIR`.
#[derive(Debug, Clone)]
pub(crate) struct PacksRoot {
    root: PathBuf,
}

impl PacksRoot {
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        Ok(PacksRoot {
            root: dir.canonicalize()?,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.root
    }

    /// `path` relative to the root, for messages; absolute paths elsewhere stay as they are.
    pub(crate) fn display(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Reads and parses one YAML file of the packs tree, resolving its includes.
    pub(crate) fn load(&self, file: &Path) -> Result<Loaded, LoadError> {
        let display = self.display(file);
        let file = file
            .canonicalize()
            .map_err(|error| LoadError::new(&display, format!("cannot read file: {error}")))?;
        if !file.starts_with(&self.root) {
            return Err(LoadError::new(&display, "file is outside PACKS_DIR"));
        }
        let text = std::fs::read_to_string(&file)
            .map_err(|error| LoadError::new(&display, format!("cannot read file: {error}")))?;

        let state = Rc::new(RefCell::new(IncludeState::default()));
        let resolver = Resolver {
            root: self.clone(),
            root_file: file.clone(),
            state: Rc::clone(&state),
        };
        let mut options = serde_saphyr::Options::default();
        // YAML 1.2 booleans only: `yes`, `on` and friends are strings, as in JSON-schema YAML.
        options.strict_booleans = true;
        let options = options.with_include_resolver(move |request| resolver.resolve(request));

        let parsed = serde_saphyr::from_str_with_options::<Value>(&text, options);
        let mut state = state.borrow_mut();
        match parsed {
            Ok(value) => Ok(Loaded {
                value: normalize_numbers(value),
                includes: std::mem::take(&mut state.includes),
            }),
            Err(error) => {
                // Our own resolver's refusal carries a better message than the parser's wrapper.
                if let Some(refusal) = state.refusal.take() {
                    return Err(refusal);
                }
                let error = error.without_snippet();
                let location = error.location();
                // Source 1 is the root file; the parser numbers included sources from 2 in the
                // order our resolver handed them out.
                let source = location
                    .and_then(|location| usize::try_from(location.source_id()).ok())
                    .and_then(|id| id.checked_sub(2))
                    .and_then(|index| state.names.get(index))
                    .cloned()
                    .unwrap_or(display);
                let message = format!(
                    "invalid YAML: {}",
                    UserMessageFormatter.format_message(error)
                );
                let problem = LoadError::new(source, message);
                Err(match location {
                    Some(location) => problem.at(location.line(), location.column()),
                    None => problem,
                })
            }
        }
    }
}

#[derive(Default)]
struct IncludeState {
    /// Display names of the included sources, in the order they were handed to the parser.
    names: Vec<String>,
    includes: Vec<PathBuf>,
    /// Why the resolver refused an include, for the error message.
    refusal: Option<LoadError>,
}

struct Resolver {
    root: PacksRoot,
    root_file: PathBuf,
    state: Rc<RefCell<IncludeState>>,
}

impl Resolver {
    fn resolve(&self, request: IncludeRequest<'_>) -> Result<ResolvedInclude, IncludeResolveError> {
        let containing = request
            .from_id
            .map_or_else(|| self.root_file.clone(), PathBuf::from);
        let containing_name = self.root.display(&containing);
        match self.target(request.spec, &containing, &request.stack) {
            Ok((target, text)) => {
                let name = self.root.display(&target);
                let mut state = self.state.borrow_mut();
                state.names.push(name.clone());
                state.includes.push(target.clone());
                let id = target.to_string_lossy().into_owned();
                Ok(ResolvedInclude::new(
                    id,
                    name,
                    InputSource::from_string(text),
                ))
            }
            Err(reason) => {
                let message = format!("{reason} (in {containing_name})");
                let location = request.location;
                let refusal = LoadError::new(containing_name, message.clone())
                    .at(location.line(), location.column());
                self.state.borrow_mut().refusal = Some(refusal);
                Err(IncludeResolveError::Message(message))
            }
        }
    }

    /// Applies the include rules; returns the canonical target and the text to parse.
    fn target(
        &self,
        spec: &str,
        containing: &Path,
        stack: &[String],
    ) -> Result<(PathBuf, String), String> {
        if spec.trim().is_empty() {
            return Err("!include requires a non-empty string path".to_owned());
        }
        let base = containing.parent().unwrap_or(self.root.path());
        let lexical = normalize(&base.join(spec));
        if !lexical.starts_with(self.root.path()) {
            return Err(format!("!include path escapes PACKS_DIR: {spec}"));
        }
        let extension = lexical
            .extension()
            .map(|extension| format!(".{}", extension.to_string_lossy().to_lowercase()))
            .unwrap_or_default();
        if !matches!(extension.as_str(), ".yaml" | ".yml" | ".json") {
            return Err(format!(
                "!include unsupported extension \"{extension}\" for {spec}"
            ));
        }
        let target = lexical
            .canonicalize()
            .map_err(|_| format!("!include target not found: {spec}"))?;
        // Checked again after following symlinks: a link may point anywhere.
        if !target.starts_with(self.root.path()) {
            return Err(format!("!include path escapes PACKS_DIR: {spec}"));
        }
        if !target.is_file() {
            return Err(format!("!include target is not a file: {spec}"));
        }
        let name = self.root.display(&target);
        if target == self.root_file || stack.contains(&name) {
            return Err(format!("!include cycle detected at {spec}"));
        }
        let text = std::fs::read_to_string(&target)
            .map_err(|error| format!("!include cannot read {spec}: {error}"))?;
        if extension == ".json" {
            return Ok((target, json_as_yaml(&text, &name)?));
        }
        Ok((target, text))
    }
}

/// JSON fragments are checked as JSON (so they cannot smuggle in YAML tags) and handed to the
/// YAML parser in compact form, which YAML reads as the same data.
fn json_as_yaml(text: &str, name: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Ok("~".to_owned());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|error| format!("invalid JSON in {name}: {error}"))?;
    Ok(value.to_string())
}

/// Resolves `.` and `..` without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normalized.pop();
            }
            Component::CurDir => {}
            other => normalized.push(other),
        }
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            Tree {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn packs(&self) -> PathBuf {
            self.dir.path().join("packs")
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.packs().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }

        fn load(&self, relative: &str) -> Result<Loaded, LoadError> {
            PacksRoot::open(&self.packs())
                .unwrap()
                .load(&self.packs().join(relative))
        }

        fn value(&self, relative: &str) -> Value {
            match self.load(relative) {
                Ok(loaded) => loaded.value,
                Err(error) => panic!("{error}"),
            }
        }

        fn error(&self, relative: &str) -> LoadError {
            match self.load(relative) {
                Ok(loaded) => panic!("loaded: {}", loaded.value),
                Err(error) => error,
            }
        }
    }

    #[test]
    fn yaml_core_schema_scalars() {
        let tree = Tree::new();
        tree.write(
            "a.yaml",
            "v: 1.0.0\nf: 1.0\nz: 0.0\nyes: yes\non: on\nt: True\nn: ~\ne:\ni: 7\nq: '1'\n",
        );
        assert_eq!(
            tree.value("a.yaml"),
            json!({"v": "1.0.0", "f": 1, "z": 0, "yes": "yes", "on": "on", "t": true, "n": null, "e": null, "i": 7, "q": "1"})
        );
    }

    #[test]
    fn key_order_is_kept() {
        let tree = Tree::new();
        tree.write("a.yaml", "z: 1\na: 2\nm: 3\n");
        assert_eq!(tree.value("a.yaml").to_string(), r#"{"z":1,"a":2,"m":3}"#);
    }

    #[test]
    fn includes_resolve_relative_to_the_including_file() {
        let tree = Tree::new();
        tree.write(
            "p/s/1/templates/t.yaml",
            "list: !include ../data/list.yaml\n",
        );
        tree.write("p/s/1/data/list.yaml", "- a\n- b\n");
        assert_eq!(
            tree.value("p/s/1/templates/t.yaml"),
            json!({"list": ["a", "b"]})
        );
    }

    #[test]
    fn includes_are_recursive_and_json_is_supported() {
        let tree = Tree::new();
        tree.write("root.yaml", "a: !include frag/one.yml\n");
        tree.write(
            "frag/one.yml",
            "b: !include ../data/two.json\nc: !include empty.yaml\n",
        );
        tree.write(
            "data/two.json",
            r#"{"x": [1, 2.0, "yes"], "y": {"z": null}}"#,
        );
        tree.write("frag/empty.yaml", "  \n");
        let loaded = tree.load("root.yaml").unwrap();
        assert_eq!(
            loaded.value,
            json!({"a": {"b": {"x": [1, 2, "yes"], "y": {"z": null}}, "c": null}})
        );
        assert_eq!(loaded.includes.len(), 3);
    }

    #[test]
    fn escaping_paths_are_refused() {
        let tree = Tree::new();
        tree.write("p/a.yaml", "x: !include ../../../etc/passwd\n");
        let error = tree.error("p/a.yaml");
        assert!(
            error
                .message
                .contains("!include path escapes PACKS_DIR: ../../../etc/passwd"),
            "{error}"
        );
        assert!(error.message.contains("(in p/a.yaml)"), "{error}");
        assert_eq!(error.file, "p/a.yaml");
        assert_eq!((error.line, error.column), (Some(1), Some(13)));
    }

    #[test]
    fn absolute_paths_outside_the_root_are_refused() {
        let tree = Tree::new();
        let outside = tree.dir.path().join("outside.yaml");
        std::fs::write(&outside, "secret: 1\n").unwrap();
        tree.write("a.yaml", &format!("x: !include {}\n", outside.display()));
        assert!(tree.error("a.yaml").message.contains("escapes PACKS_DIR"));
        // An absolute path inside the root is fine.
        let inside = tree.write("b.yaml", "ok: 1\n");
        tree.write("c.yaml", &format!("x: !include {}\n", inside.display()));
        assert_eq!(tree.value("c.yaml"), json!({"x": {"ok": 1}}));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_leaving_the_root_are_refused() {
        let tree = Tree::new();
        let outside = tree.dir.path().join("outside.yaml");
        std::fs::write(&outside, "secret: 1\n").unwrap();
        tree.write("a.yaml", "x: !include link.yaml\n");
        std::os::unix::fs::symlink(&outside, tree.packs().join("link.yaml")).unwrap();
        assert!(
            tree.error("a.yaml")
                .message
                .contains("escapes PACKS_DIR: link.yaml")
        );
        // A directory symlink that leaves the root is caught the same way.
        std::fs::create_dir_all(tree.dir.path().join("elsewhere")).unwrap();
        std::fs::write(tree.dir.path().join("elsewhere/f.yaml"), "y: 1\n").unwrap();
        std::os::unix::fs::symlink(
            tree.dir.path().join("elsewhere"),
            tree.packs().join("dirlink"),
        )
        .unwrap();
        tree.write("b.yaml", "x: !include dirlink/f.yaml\n");
        assert!(tree.error("b.yaml").message.contains("escapes PACKS_DIR"));
    }

    #[test]
    fn only_yaml_and_json_targets_are_accepted() {
        let tree = Tree::new();
        tree.write("notes.txt", "hello");
        tree.write("a.yaml", "x: !include notes.txt\n");
        assert!(
            tree.error("a.yaml")
                .message
                .contains("!include unsupported extension \".txt\" for notes.txt")
        );
    }

    #[test]
    fn missing_targets_and_empty_paths_are_reported() {
        let tree = Tree::new();
        tree.write("a.yaml", "x: !include nope.yaml\n");
        assert!(
            tree.error("a.yaml")
                .message
                .contains("!include target not found: nope.yaml")
        );
        tree.write("b.yaml", "x: !include ''\n");
        assert!(
            tree.error("b.yaml")
                .message
                .contains("non-empty string path")
        );
    }

    #[test]
    fn cycles_are_refused() {
        let tree = Tree::new();
        tree.write("a.yaml", "b: !include b.yaml\n");
        tree.write("b.yaml", "a: !include a.yaml\n");
        let error = tree.error("a.yaml");
        assert!(
            error.message.contains("!include cycle detected at a.yaml"),
            "{error}"
        );
        assert_eq!(error.file, "b.yaml");
        tree.write("self.yaml", "me: !include self.yaml\n");
        assert!(tree.error("self.yaml").message.contains("cycle"));
        tree.write("c.yaml", "d: !include d.yaml\n");
        tree.write("d.yaml", "e: !include e.yaml\n");
        tree.write("e.yaml", "d: !include d.yaml\n");
        assert!(
            tree.error("c.yaml")
                .message
                .contains("cycle detected at d.yaml")
        );
    }

    #[test]
    fn diamonds_are_allowed() {
        let tree = Tree::new();
        tree.write(
            "root.yaml",
            "left: !include left.yaml\nright: !include right.yaml\nagain: !include shared.yaml\n",
        );
        tree.write("left.yaml", "s: !include shared.yaml\n");
        tree.write("right.yaml", "s: !include shared.yaml\n");
        tree.write("shared.yaml", "v: 1\n");
        assert_eq!(
            tree.value("root.yaml"),
            json!({"left": {"s": {"v": 1}}, "right": {"s": {"v": 1}}, "again": {"v": 1}})
        );
    }

    #[test]
    fn syntax_errors_name_the_file_and_position() {
        let tree = Tree::new();
        tree.write("root.yaml", "a: 1\nb: [1, 2\n");
        let error = tree.error("root.yaml");
        assert_eq!(error.file, "root.yaml");
        assert!(error.line.is_some(), "{error}");
        assert!(error.message.starts_with("invalid YAML"), "{error}");

        tree.write("outer.yaml", "a: 1\nb: !include sub/inner.yaml\n");
        tree.write("sub/inner.yaml", "x: [1, 2\n  y: 3\n");
        let error = tree.error("outer.yaml");
        assert_eq!(error.file, "sub/inner.yaml", "{error}");
        assert_eq!(error.line, Some(2), "{error}");
    }

    #[test]
    fn invalid_json_fragments_are_reported() {
        let tree = Tree::new();
        tree.write("bad.json", "{\"a\": 1,}");
        tree.write("a.yaml", "x: !include bad.json\n");
        let error = tree.error("a.yaml");
        assert!(
            error.message.contains("invalid JSON in bad.json"),
            "{error}"
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let tree = Tree::new();
        tree.write("a.yaml", "a: 1\na: 2\n");
        assert!(tree.load("a.yaml").is_err());
    }
}
