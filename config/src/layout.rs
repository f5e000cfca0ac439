//! `output.layout`: where under `output.dir` the collector writes a line, as a template of
//! `/`-separated components with placeholders: `{host}`, `{path}` (the source path without its
//! leading `/`; a component of its own, which may stand for several), `{date}` (UTC day of the
//! line's `ts`, `YYYY-MM-DD`) and `{fields.NAME}` (`_` when missing or empty). Default:
//! `{host}/{path}`. The collector fills it in and refuses what is unsafe; the template itself
//! is checked here: relative, no `.` or `..` component, known placeholders only.

use crate::error::KeyError;

/// A piece of a layout component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Host,
    Date,
    Field(String),
}

/// One component of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    /// `{path}`: the source path's components.
    Path,
    /// One directory or file name, from pieces.
    Name(Vec<Piece>),
}

/// A checked `output.layout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub components: Vec<Component>,
}

/// Today's layout, and the default: `<host>/<source path>`.
pub const DEFAULT_LAYOUT: &str = "{host}/{path}";

impl Layout {
    /// Parses and checks a template; errors name `output.layout`.
    pub fn parse(template: &str) -> Result<Layout, KeyError> {
        let fail = |why: &str| {
            KeyError::new(
                "output.layout",
                format!("invalid layout \"{template}\": {why}"),
            )
        };
        if template.starts_with('/') {
            return Err(fail("must be relative to output.dir"));
        }
        let mut components = Vec::new();
        for part in template.split('/').filter(|p| !p.is_empty()) {
            if part == "{path}" {
                components.push(Component::Path);
                continue;
            }
            if part == "." || part == ".." {
                return Err(fail("no . or .. components"));
            }
            components.push(Component::Name(pieces(part).map_err(|why| fail(&why))?));
        }
        if components.is_empty() {
            return Err(fail("is empty"));
        }
        Ok(Layout { components })
    }
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            components: vec![Component::Name(vec![Piece::Host]), Component::Path],
        }
    }
}

/// The pieces of one component.
fn pieces(part: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = part;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("unclosed {{ in \"{part}\""))?;
        let name = &rest[open + 1..close];
        pieces.push(match name {
            "host" => Piece::Host,
            "date" => Piece::Date,
            "path" => return Err("{path} must be a component of its own".into()),
            _ => match name.strip_prefix("fields.") {
                Some(field) if !field.is_empty() => Piece::Field(field.to_string()),
                _ => return Err(format!("unknown placeholder {{{name}}}")),
            },
        });
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("stray }} in \"{part}\""));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_host_then_path() {
        assert_eq!(Layout::parse(DEFAULT_LAYOUT).unwrap(), Layout::default());
    }

    #[test]
    fn placeholders_and_text_mix_within_a_component() {
        let layout = Layout::parse("{date}/{fields.service}/{host}-x/{path}").unwrap();
        assert_eq!(
            layout.components,
            [
                Component::Name(vec![Piece::Date]),
                Component::Name(vec![Piece::Field("service".into())]),
                Component::Name(vec![Piece::Host, Piece::Text("-x".into())]),
                Component::Path,
            ]
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "/abs/{path}",
            "{nope}/{path}",
            "../{path}",
            "x{path}",
            "{host",
            "",
            "{fields.}",
        ] {
            let err = Layout::parse(bad).unwrap_err();
            assert_eq!(err.key, "output.layout", "{bad}");
            assert!(
                err.problem.starts_with("invalid layout"),
                "{bad}: {}",
                err.problem
            );
        }
    }
}
