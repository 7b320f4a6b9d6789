//! `list --format`: docker's Go-template habit, for the part people use: `{{.Field}}` in text,
//! with `\t` and `\n` escapes. Anything else between braces is refused when the flag is parsed,
//! naming the fields there are.

/// A field an agent can be printed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    State,
    ExitCode,
    Pid,
    Age,
    Profile,
    Network,
    Tags,
    Workspace,
    Command,
}

const FIELDS: &[(&str, Field)] = &[
    ("Name", Field::Name),
    ("State", Field::State),
    ("ExitCode", Field::ExitCode),
    ("Pid", Field::Pid),
    ("Age", Field::Age),
    ("Profile", Field::Profile),
    ("Network", Field::Network),
    ("Tags", Field::Tags),
    ("Workspace", Field::Workspace),
    ("Command", Field::Command),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    pub fn parse(s: &str) -> Result<Self, String> {
        let names = || FIELDS.iter().map(|(n, _)| format!("{{{{.{n}}}}}")).collect::<Vec<_>>().join(" ");
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            push_text(&mut pieces, &rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("'{{{{' without '}}}}' in '{s}'"))?;
            let inner = after[..end].trim();
            let field = inner
                .strip_prefix('.')
                .and_then(|n| FIELDS.iter().find(|(f, _)| f.eq_ignore_ascii_case(n)))
                .map(|(_, f)| *f)
                .ok_or_else(|| format!("unknown field '{{{{{inner}}}}}': use {}", names()))?;
            pieces.push(Piece::Field(field));
            rest = &after[end + 2..];
        }
        push_text(&mut pieces, rest);
        Ok(Self(pieces))
    }

    /// For clap.
    pub fn parse_arg(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }

    pub fn render(&self, mut value: impl FnMut(Field) -> String) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => out.push_str(&value(*f)),
            }
        }
        out
    }
}

fn push_text(pieces: &mut Vec<Piece>, t: &str) {
    if !t.is_empty() {
        pieces.push(Piece::Text(t.replace("\\t", "\t").replace("\\n", "\n")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_text_and_escapes() {
        let t = Template::parse("{{.Name}}\\t{{ .state }} ({{.ExitCode}})").unwrap();
        let out = t.render(|f| match f {
            Field::Name => "a1".into(),
            Field::State => "exited".into(),
            Field::ExitCode => "3".into(),
            _ => unreachable!(),
        });
        assert_eq!(out, "a1\texited (3)");
        let e = Template::parse("{{.Nmae}}").unwrap_err();
        assert!(e.contains("unknown field '{{.Nmae}}'") && e.contains("{{.Name}}"), "{e}");
        assert!(Template::parse("{{.Name").unwrap_err().contains("without"));
        assert_eq!(Template::parse("plain").unwrap().render(|_| String::new()), "plain");
    }
}
