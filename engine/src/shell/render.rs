//! Printing results: an aligned table (like `sqlite3 -box` without the box) or JSON.

use super::{Mode, Output};
use envoy_client::Value;

/// Longest a cell is printed in table mode before it is cut with `…`.
pub const MAX_CELL_CHARS: usize = 80;

/// The text printed for one result.
pub fn render(out: &Output, mode: Mode) -> String {
    match mode {
        Mode::Table => table(out),
        Mode::Json => json(out),
    }
}

fn table(out: &Output) -> String {
    let cols = out.rows.columns();
    let mut s = String::new();
    if cols.is_empty() {
        if let Some(n) = out.changes {
            if n > 0 {
                s.push_str(&format!("({n} row{} changed)\n", if n == 1 { "" } else { "s" }));
            }
        }
        return s;
    }
    let cells: Vec<Vec<String>> = out.rows.iter().map(|r| r.values().iter().map(cell).collect()).collect();
    let mut widths: Vec<usize> = cols.iter().map(|c| c.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |vals: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = vals.zip(&widths).map(|(v, w)| format!("{v:<w$}", w = *w)).collect();
        format!("{}\n", parts.join(" | ").trim_end())
    };
    s.push_str(&line(&mut cols.iter().map(String::as_str)));
    s.push_str(&format!("{}\n", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-")));
    for row in &cells {
        s.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    let n = cells.len();
    s.push_str(&format!("({n} row{})\n", if n == 1 { "" } else { "s" }));
    s
}

/// One value as shown in a table.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => "NULL".to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => float(*f),
        Value::Text(t) => t.replace('\0', "\\0").replace('\n', "\\n"),
        Value::Blob(b) => {
            let hex: String = b.iter().take(MAX_CELL_CHARS / 2).map(|x| format!("{x:02X}")).collect();
            format!("X'{hex}'")
        }
    };
    if text.chars().count() > MAX_CELL_CHARS {
        let cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Floats keep a decimal point (`1.0`, `-0.0`) so they read as REAL.
fn float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// One line per statement: `{"columns": [...], "rows": [[...], ...], "changes": n}`.
/// Rows are arrays in column order, so duplicate column names (`SELECT 52 AS c,
/// 13 AS c`) keep every value.
fn json(out: &Output) -> String {
    let cols = out.rows.columns();
    let rows: Vec<serde_json::Value> = out
        .rows
        .iter()
        .map(|r| serde_json::Value::Array(r.values().iter().map(crate::inspect::to_json).collect()))
        .collect();
    let mut doc = serde_json::json!({ "columns": cols, "rows": rows });
    if let Some(n) = out.changes {
        doc["changes"] = n.into();
    }
    format!("{doc}\n")
}
