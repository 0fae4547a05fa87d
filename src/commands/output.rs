//! Printing a command's JSON result in the form `--output-format` asked for.

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::util::error::{IoContext, Result};

/// Print `value` to stdout as `json` (one line) or `json-pretty` (indented). Text output
/// is each command's own; calling this with `Text` prints pretty JSON.
pub fn print_json<T: Serialize + ?Sized>(value: &T, format: OutputFormat) -> Result<()> {
    use std::io::Write;
    let text = match format {
        OutputFormat::Json => serde_json::to_string(value),
        OutputFormat::Text | OutputFormat::JsonPretty => serde_json::to_string_pretty(value),
    }
    .expect("a serde_json value always serializes");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").ctx("stdout")?;
    out.flush().ctx("stdout")
}
