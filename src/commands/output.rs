//! Printing a command's JSON result in the form `--output-format` asked for: whole
//! (`print_json`) or streamed element by element (`JsonArray`: catalog, find, diff).

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use crate::cli::OutputFormat;
use crate::util::error::{IoContext, Result};

/// Print `value` to stdout as `json` (one line) or `json-pretty` (indented). Text output
/// is each command's own; calling this with `Text` prints pretty JSON.
pub fn print_json<T: Serialize + ?Sized>(value: &T, format: OutputFormat) -> Result<()> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string(value),
        OutputFormat::Text | OutputFormat::JsonPretty => serde_json::to_string_pretty(value),
    }
    .expect("a serde_json value always serializes");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").ctx("stdout")?;
    out.flush().ctx("stdout")
}

/// A JSON array written element by element, so memory stays flat however long the
/// list (catalog, find, diff): `json` puts each element on a line of its own between
/// `[` and `]`; `json-pretty` indents as serde_json's pretty printer does, so the text
/// is the one it would print for the whole array. No element: `[]`.
#[derive(Debug)]
pub struct JsonArray {
    pretty: bool,
    count: u64,
}

impl JsonArray {
    /// An opened array when `format` is a JSON form; `None` for text.
    pub fn for_format(out: &mut impl Write, format: OutputFormat) -> Result<Option<JsonArray>> {
        format
            .is_json()
            .then(|| JsonArray::begin(out, format))
            .transpose()
    }

    /// Open the array (`format` is one of the JSON forms).
    pub fn begin(out: &mut impl Write, format: OutputFormat) -> Result<JsonArray> {
        out.write_all(b"[").ctx("stdout")?;
        Ok(JsonArray {
            pretty: format == OutputFormat::JsonPretty,
            count: 0,
        })
    }

    pub fn push(&mut self, out: &mut impl Write, v: &Value) -> Result<()> {
        out.write_all(if self.count == 0 { b"\n" } else { b",\n" })
            .ctx("stdout")?;
        if self.pretty {
            let text = serde_json::to_string_pretty(v).expect("a JSON value serializes");
            for (i, line) in text.lines().enumerate() {
                let sep = if i == 0 { "" } else { "\n" };
                write!(out, "{sep}  {line}").ctx("stdout")?;
            }
        } else {
            write!(out, "{v}").ctx("stdout")?;
        }
        self.count += 1;
        Ok(())
    }

    /// Close the array and end the line.
    pub fn finish(self, out: &mut impl Write) -> Result<()> {
        let end: &[u8] = if self.count == 0 { b"]\n" } else { b"\n]\n" };
        out.write_all(end).ctx("stdout")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream(format: OutputFormat, items: &[Value]) -> String {
        let mut out = Vec::new();
        let mut a = JsonArray::begin(&mut out, format).unwrap();
        for v in items {
            a.push(&mut out, v).unwrap();
        }
        a.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_streamed_array_is_what_serde_json_prints_for_the_whole() {
        for n in 0..3 {
            let items: Vec<Value> = (0..n)
                .map(|i| json!({"path": format!("/a{i}"), "what": ["mode", "owner"]}))
                .collect();
            let pretty = stream(OutputFormat::JsonPretty, &items);
            assert_eq!(pretty, serde_json::to_string_pretty(&items).unwrap() + "\n");
            let compact = stream(OutputFormat::Json, &items);
            let lines: Vec<&str> = compact.lines().collect();
            if n == 0 {
                assert_eq!(compact, "[]\n");
                continue;
            }
            assert_eq!(lines.len(), n + 2, "{compact}");
            assert_eq!((lines[0], lines[n + 1]), ("[", "]"));
            for (i, line) in lines[1..=n].iter().enumerate() {
                let obj = line.strip_suffix(',').unwrap_or(line);
                assert_eq!(serde_json::from_str::<Value>(obj).unwrap(), items[i]);
            }
            assert_eq!(serde_json::from_str::<Vec<Value>>(&compact).unwrap(), items);
        }
    }
}
