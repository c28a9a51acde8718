//! The interactive shell: history, multi-line input, dot commands.

use super::{backend::Backend, render, statements, Mode};
use envoy_client::Value;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

/// History file in the home directory.
const HISTORY_FILE: &str = ".envoy_sql_history";

const HELP: &str = "\
.help              this text
.tables            list tables and views
.schema [TABLE]    show CREATE statements
.mode table|json   output format
.actor             show the actor this shell is bound to
.quit / .exit      leave (or Ctrl-D)
SQL ends with `;` and may span several lines.
";

/// Runs until `.quit` or end of input.
pub async fn run(backend: &Backend, mut mode: Mode) -> anyhow::Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(HISTORY_FILE));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("envoy sql shell — {}. `.help` for help.", backend.banner());
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { "sql> " } else { "...> " };
        // readline blocks: keep it off the async workers.
        let (ed, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(prompt);
            (editor, line)
        })
        .await?;
        editor = ed;
        let line = match line {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if buffer.is_empty() && line.trim_start().starts_with('.') {
            let _ = editor.add_history_entry(line.as_str());
            match dot(backend, line.trim(), &mut mode).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    eprintln!("error: {e}");
                    continue;
                }
            }
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        if !statements::is_complete(&buffer) {
            continue;
        }
        let _ = editor.add_history_entry(buffer.as_str());
        for stmt in statements::split(&buffer) {
            match backend.run_one(stmt).await {
                Ok(out) => print!("{}", render::render(&out, mode)),
                Err(e) => {
                    eprintln!("error: {e}");
                    break;
                }
            }
        }
        buffer.clear();
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Runs a dot command; `Ok(false)` means quit.
async fn dot(backend: &Backend, line: &str, mode: &mut Mode) -> anyhow::Result<bool> {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or_default();
    let arg = words.next();
    match cmd {
        ".quit" | ".exit" => return Ok(false),
        ".help" => print!("{HELP}"),
        ".tables" => {
            let rows = backend
                .query(
                    "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name",
                    &[],
                )
                .await?;
            let names: Vec<String> = rows.iter().map(|r| r.get::<String>(0)).collect::<Result<_, _>>()?;
            println!("{}", names.join("  "));
        }
        ".schema" => {
            let rows = match arg {
                Some(t) => {
                    backend
                        .query(
                            "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND tbl_name = ? ORDER BY rowid",
                            &[Value::Text(t.to_string())],
                        )
                        .await?
                }
                None => {
                    backend
                        .query(
                            "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
                            &[],
                        )
                        .await?
                }
            };
            for r in &rows {
                println!("{};", r.get::<String>(0)?);
            }
        }
        ".mode" => match arg {
            Some("table") => *mode = Mode::Table,
            Some("json") => *mode = Mode::Json,
            _ => println!("usage: .mode table|json"),
        },
        ".actor" => println!("{}", backend.banner()),
        other => println!("unknown command {other}; .help lists them"),
    }
    Ok(true)
}
