//! Differential fidelity suite ("Exactly SQLite"): a remote actor database must be
//! indistinguishable from ONE local SQLite connection to the same database, apart
//! from what the protocol documents.
//!
//! Every case is a *session*: an ordered list of steps, each one request kind —
//! `exec` (several statements, no params), `execute` (one statement with params,
//! routed by the engine), `execute_write` (one statement, always the writer) or
//! `query` (= `execute`, rows only). Each case runs twice:
//!
//! - **engine**: one fresh actor per case (its own empty database) on one engine,
//!   through the native client, steps sent one after another (each awaited);
//! - **local**: one rusqlite connection per case to a fresh file database in a
//!   temp dir, `journal_mode=WAL`, same bundled SQLite as the engine (same
//!   library in this process, so the same compile options, e.g.
//!   `SQLITE_DEFAULT_FOREIGN_KEYS=1`), and the same `SQLITE_LIMIT_*` values as
//!   the engine's sandbox (`SandboxLimits::from_limits` of the engine's limits;
//!   documented in specs/security.md). No authorizer locally. Statements are
//!   prepared and stepped through the raw C API so the reference is SQLite's own
//!   behaviour, not a wrapper's: `exec` = prepare/step/finalize statement after
//!   statement along SQLite's own tail pointer (empty statements skipped), rows
//!   of the last statement run; `execute` = the first non-empty statement, and
//!   the rest of the text must hold no statement.
//!
//! ## Comparison rules, per step
//!
//! - **success vs error** must agree.
//! - **errors**: both failed is enough, and when the engine reports an
//!   `extended_code` its primary code (`& 0xff`) must equal SQLite's local
//!   primary code; for `exec` the engine's `statement_index` (0-based among the
//!   non-empty statements) must equal the local index of the failing statement.
//! - **documented differences** (specs/engine.md), modelled locally as an
//!   expected error that the engine must answer with `INVALID_REQUEST`:
//!   several statements in one `execute` (the engine must refuse without
//!   preparing the second one, so the answer must not be SQLite's error about the
//!   second statement); SQL holding no statement; a parameter count that does not
//!   match; a request that ends with a transaction open (locally rolled back,
//!   like the engine does). Limits are the same on both sides (above), so a value
//!   over `maxValueBytes` fails on both (SQLITE_TOOBIG locally).
//! - **columns**: names in order, duplicates kept, also when no row comes back.
//! - **values**: exactly, by storage class: INTEGER, REAL (bit-for-bit: −0.0 and
//!   NaN count; SQLite itself stores NaN as NULL), TEXT (the exact bytes),
//!   BLOB, NULL.
//! - **TEXT that is not UTF-8** (SQLite accepts it; the protocol's TEXT is a
//!   UTF-8 string): the engine passes if it carries the exact bytes, or fails the
//!   step with an error whose message names the column and mentions BLOB (how to
//!   read it instead). A silent replacement (U+FFFD) fails.
//! - **changes** (`execute`/`execute_write` only; `query` and `exec` do not
//!   report it): for an INSERT/UPDATE/DELETE/REPLACE statement (or a `WITH …`
//!   statement that is not read-only), `sqlite3_changes64()` after it — what
//!   rusqlite's `Connection::execute` returns: the rows this statement changed
//!   directly, not those of triggers or FK actions; for every other statement 0
//!   (the engine documents 0 for a SELECT, where `sqlite3_changes` would still
//!   hold the previous DML's count).
//! - **lastInsertRowId** (`execute`/`execute_write` only): the engine reports it
//!   only if the statement inserted. Expected locally: `Some(last_insert_rowid())`
//!   if the statement is an INSERT/REPLACE (also `WITH … INSERT`) with
//!   `sqlite3_changes64() > 0`, else `None`.
//!
//! Every case runs to its end even after a mismatch; all mismatches of all cases
//! are collected and the test fails once at the end with a summary.
//!
//! ## Running
//!
//! ```sh
//! cargo test -p envoy-tests --test fidelity -- --nocapture
//! ENVOY_FIDELITY_CASE=stale cargo test -p envoy-tests --test fidelity   # only cases whose name contains "stale"
//! ENVOY_FIDELITY_CASE=session37 ENVOY_FIDELITY_TRACE=1 cargo test -p envoy-tests --test fidelity   # every step, both answers
//! ENVOY_FIDELITY_SEED=7 ENVOY_FIDELITY_SESSIONS=500 cargo test -p envoy-tests --test fidelity
//! ```
//!
//! Case 7 is a seeded generator of random sessions (default seed 0x5eed, 50
//! sessions of 20 steps); a failing generated case prints its seed and index.

use envoy_client::{Db, Error, Value};
use envoy_engine::config::Durability;
use envoy_engine::sql::sandbox::SandboxLimits;
use envoy_engine::Limits;
use envoy_tests::TestEngine;
use rusqlite::ffi;
use rusqlite::limits::Limit;
use std::ffi::{c_char, c_int, CStr};
use std::fmt::Write as _;

// ---------------------------------------------------------------------------
// Sessions

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Exec,
    Execute,
    ExecuteWrite,
    Query,
}

#[derive(Clone, Debug)]
struct Step {
    kind: Kind,
    sql: String,
    params: Vec<Value>,
}

struct Case {
    name: String,
    steps: Vec<Step>,
}

fn exec(sql: impl Into<String>) -> Step {
    Step { kind: Kind::Exec, sql: sql.into(), params: vec![] }
}
fn execute(sql: impl Into<String>, params: Vec<Value>) -> Step {
    Step { kind: Kind::Execute, sql: sql.into(), params }
}
fn write(sql: impl Into<String>, params: Vec<Value>) -> Step {
    Step { kind: Kind::ExecuteWrite, sql: sql.into(), params }
}
fn query(sql: impl Into<String>, params: Vec<Value>) -> Step {
    Step { kind: Kind::Query, sql: sql.into(), params }
}
/// The same statement through every request kind (exec last: it runs on the writer uncached).
fn all_kinds(sql: &str) -> Vec<Step> {
    vec![query(sql, vec![]), execute(sql, vec![]), write(sql, vec![]), exec(sql)]
}

fn case(name: &str, steps: Vec<Step>) -> Case {
    Case { name: name.to_string(), steps }
}

// ---------------------------------------------------------------------------
// Answers

/// A value by storage class; REAL as its bits, TEXT as its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum V {
    Null,
    Int(i64),
    Real(u64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

#[derive(Debug, Clone)]
struct OkAnswer {
    columns: Vec<String>,
    rows: Vec<Vec<V>>,
    /// Reported by the engine for execute/execute_write; always computed locally.
    changes: Option<u64>,
    /// Outer Some: reported (execute/execute_write); inner: the rowid if inserted.
    last_insert_rowid: Option<Option<i64>>,
}

/// How a step failed.
#[derive(Debug, Clone)]
struct Fail {
    /// Engine: the error's code or variant. Local: "SQLITE", or a documented
    /// refusal the engine must answer with INVALID_REQUEST (`doc` set).
    class: String,
    /// Local: the documented refusal the engine must answer INVALID_REQUEST for.
    doc: bool,
    /// SQLite extended result code (engine: `extended_code`).
    ext: Option<i32>,
    message: String,
    /// exec: 0-based index of the failing statement.
    index: Option<u32>,
}

type Answer = Result<OkAnswer, Fail>;

fn documented(what: &str) -> Fail {
    Fail { class: what.to_string(), doc: true, ext: None, message: String::new(), index: None }
}

fn v_of(v: &Value) -> V {
    match v {
        Value::Null => V::Null,
        Value::Integer(i) => V::Int(*i),
        Value::Float(f) => V::Real(f.to_bits()),
        Value::Text(s) => V::Text(s.as_bytes().to_vec()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

fn show_bytes(b: &[u8], max: usize) -> String {
    let shown = &b[..b.len().min(max)];
    let mut s = match std::str::from_utf8(shown) {
        Ok(t) => format!("{t:?}"),
        Err(_) => format!("b\"{}\"", shown.escape_ascii()),
    };
    if b.len() > max {
        let _ = write!(s, "…(len {})", b.len());
    }
    s
}

fn show_v(v: &V) -> String {
    match v {
        V::Null => "NULL".into(),
        V::Int(i) => format!("INTEGER {i}"),
        V::Real(bits) => format!("REAL {:?} [{bits:#018x}]", f64::from_bits(*bits)),
        V::Text(t) => format!("TEXT {}", show_bytes(t, 48)),
        V::Blob(b) => {
            let hex: String = b.iter().take(24).map(|x| format!("{x:02x}")).collect();
            if b.len() > 24 {
                format!("BLOB x'{hex}…'(len {})", b.len())
            } else {
                format!("BLOB x'{hex}'")
            }
        }
    }
}

fn show(a: &Answer) -> String {
    match a {
        Ok(o) => {
            let mut s = format!("ok columns={:?} rows({})=[", o.columns, o.rows.len());
            for (i, r) in o.rows.iter().take(8).enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push('[');
                s.push_str(&r.iter().map(show_v).collect::<Vec<_>>().join(", "));
                s.push(']');
            }
            if o.rows.len() > 8 {
                s.push_str(", …");
            }
            s.push(']');
            if let Some(c) = o.changes {
                let _ = write!(s, " changes={c}");
            }
            if let Some(r) = o.last_insert_rowid {
                let _ = write!(s, " lastInsertRowId={r:?}");
            }
            s
        }
        Err(f) => {
            let mut s = format!("error {}", f.class);
            if f.doc {
                s.push_str(" (documented: engine answers INVALID_REQUEST)");
            }
            if let Some(e) = f.ext {
                let _ = write!(s, " ext={e} (primary {})", e & 0xff);
            }
            if let Some(i) = f.index {
                let _ = write!(s, " statement_index={i}");
            }
            if !f.message.is_empty() {
                let m: String = f.message.chars().take(300).collect();
                let _ = write!(s, ": {m}");
            }
            s
        }
    }
}

// ---------------------------------------------------------------------------
// The engine side

fn engine_fail(e: Error) -> Fail {
    match e {
        Error::Sql { code, extended_code, message, statement_index, .. } => {
            Fail { class: format!("{code:?}"), doc: false, ext: extended_code, message, index: statement_index }
        }
        Error::LimitExceeded { kind, message, .. } => {
            Fail { class: format!("LimitExceeded({kind:?})"), doc: false, ext: None, message, index: None }
        }
        other => {
            let class = format!("{other:?}").split(['{', '(', ' ']).next().unwrap_or("?").to_string();
            Fail { class, doc: false, ext: None, message: other.to_string(), index: None }
        }
    }
}

async fn run_engine(db: &Db, step: &Step) -> Answer {
    let params = step.params.clone();
    match step.kind {
        Kind::Exec => match db.exec(&step.sql).await {
            Ok(rows) => {
                let columns = rows.columns().to_vec();
                let rows = rows.into_values().iter().map(|r| r.iter().map(v_of).collect()).collect();
                Ok(OkAnswer { columns, rows, changes: None, last_insert_rowid: None })
            }
            Err(e) => Err(engine_fail(e)),
        },
        Kind::Query => match db.query(&step.sql, params).await {
            Ok(rows) => {
                let columns = rows.columns().to_vec();
                let rows = rows.into_values().iter().map(|r| r.iter().map(v_of).collect()).collect();
                Ok(OkAnswer { columns, rows, changes: None, last_insert_rowid: None })
            }
            Err(e) => Err(engine_fail(e)),
        },
        Kind::Execute | Kind::ExecuteWrite => {
            let r = if step.kind == Kind::Execute {
                db.execute(&step.sql, params).await
            } else {
                db.execute_write(&step.sql, params).await
            };
            match r {
                Ok(out) => {
                    let columns = out.rows.columns().to_vec();
                    let rows = out.rows.into_values().iter().map(|r| r.iter().map(v_of).collect()).collect();
                    Ok(OkAnswer {
                        columns,
                        rows,
                        changes: Some(out.changes),
                        last_insert_rowid: Some(out.last_insert_row_id),
                    })
                }
                Err(e) => Err(engine_fail(e)),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The local side: one connection, SQLite's C API

struct Local {
    conn: rusqlite::Connection,
    _dir: tempfile::TempDir,
}

/// Prepares the first statement of `sql[off..]`: (rc, stmt or null, where the tail starts).
unsafe fn prepare_at(db: *mut ffi::sqlite3, sql: &[u8], off: usize) -> (c_int, *mut ffi::sqlite3_stmt, usize) {
    let mut stmt = std::ptr::null_mut();
    let mut tail: *const c_char = std::ptr::null();
    let base = sql.as_ptr().add(off) as *const c_char;
    let rc = ffi::sqlite3_prepare_v2(db, base, (sql.len() - off) as c_int, &mut stmt, &mut tail);
    let next = if tail.is_null() { sql.len() } else { off + (tail as usize - base as usize) };
    (rc, stmt, next.min(sql.len()))
}

unsafe fn db_fail(db: *mut ffi::sqlite3) -> Fail {
    let msg = CStr::from_ptr(ffi::sqlite3_errmsg(db)).to_string_lossy().into_owned();
    Fail { class: "SQLITE".into(), doc: false, ext: Some(ffi::sqlite3_extended_errcode(db)), message: msg, index: None }
}

unsafe fn column_value(stmt: *mut ffi::sqlite3_stmt, i: c_int) -> V {
    match ffi::sqlite3_column_type(stmt, i) {
        ffi::SQLITE_INTEGER => V::Int(ffi::sqlite3_column_int64(stmt, i)),
        ffi::SQLITE_FLOAT => V::Real(ffi::sqlite3_column_double(stmt, i).to_bits()),
        ffi::SQLITE_TEXT => {
            let p = ffi::sqlite3_column_text(stmt, i);
            let n = ffi::sqlite3_column_bytes(stmt, i) as usize;
            V::Text(if p.is_null() { vec![] } else { std::slice::from_raw_parts(p, n).to_vec() })
        }
        ffi::SQLITE_BLOB => {
            let p = ffi::sqlite3_column_blob(stmt, i) as *const u8;
            let n = ffi::sqlite3_column_bytes(stmt, i) as usize;
            V::Blob(if p.is_null() { vec![] } else { std::slice::from_raw_parts(p, n).to_vec() })
        }
        _ => V::Null,
    }
}

/// Binds `params`, steps `stmt` to the end; columns are read after stepping.
unsafe fn run_stmt(
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
    params: &[Value],
) -> Result<(Vec<String>, Vec<Vec<V>>), Fail> {
    for (i, p) in params.iter().enumerate() {
        let i = i as c_int + 1;
        let rc = match p {
            Value::Null => ffi::sqlite3_bind_null(stmt, i),
            Value::Integer(x) => ffi::sqlite3_bind_int64(stmt, i, *x),
            Value::Float(f) => ffi::sqlite3_bind_double(stmt, i, *f),
            Value::Text(s) => {
                ffi::sqlite3_bind_text(stmt, i, s.as_ptr() as *const c_char, s.len() as c_int, ffi::SQLITE_TRANSIENT())
            }
            Value::Blob(b) if b.is_empty() => ffi::sqlite3_bind_zeroblob(stmt, i, 0),
            Value::Blob(b) => {
                ffi::sqlite3_bind_blob(stmt, i, b.as_ptr().cast(), b.len() as c_int, ffi::SQLITE_TRANSIENT())
            }
        };
        if rc != ffi::SQLITE_OK {
            return Err(db_fail(db));
        }
    }
    let mut rows = Vec::new();
    loop {
        match ffi::sqlite3_step(stmt) {
            ffi::SQLITE_ROW => {
                let n = ffi::sqlite3_data_count(stmt);
                rows.push((0..n).map(|i| column_value(stmt, i)).collect());
            }
            ffi::SQLITE_DONE => break,
            _ => return Err(db_fail(db)),
        }
    }
    let n = ffi::sqlite3_column_count(stmt);
    let columns = (0..n)
        .map(|i| {
            let p = ffi::sqlite3_column_name(stmt, i);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        })
        .collect();
    Ok((columns, rows))
}

/// The first SQL keyword (upper-cased), skipping space, comments and `;`.
fn first_word(sql: &str) -> String {
    let mut s = sql;
    loop {
        let t = s.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(rest) = t.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |x| x.1);
        } else if let Some(rest) = t.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |x| x.1);
        } else {
            s = t;
            break;
        }
    }
    s.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase()
}

impl Local {
    fn open(limits: &SandboxLimits) -> Local {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = rusqlite::Connection::open(dir.path().join("db.sqlite")).expect("local db");
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        // The engine's documented SQLite limits (specs/security.md), so limits fail alike.
        for (l, v) in [
            (Limit::SQLITE_LIMIT_ATTACHED, 0),
            (Limit::SQLITE_LIMIT_LENGTH, limits.length),
            (Limit::SQLITE_LIMIT_SQL_LENGTH, limits.sql_length),
            (Limit::SQLITE_LIMIT_VARIABLE_NUMBER, limits.variable_number),
            (Limit::SQLITE_LIMIT_COLUMN, limits.columns),
            (Limit::SQLITE_LIMIT_EXPR_DEPTH, limits.expr_depth),
            (Limit::SQLITE_LIMIT_COMPOUND_SELECT, limits.compound_select),
            (Limit::SQLITE_LIMIT_VDBE_OP, limits.vdbe_op),
            (Limit::SQLITE_LIMIT_FUNCTION_ARG, limits.function_arg),
            (Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, limits.like_pattern_length),
            (Limit::SQLITE_LIMIT_TRIGGER_DEPTH, limits.trigger_depth),
        ] {
            conn.set_limit(l, v).unwrap();
        }
        Local { conn, _dir: dir }
    }

    fn db(&self) -> *mut ffi::sqlite3 {
        // SAFETY: used only while `self.conn` is alive, on this thread.
        unsafe { self.conn.handle() }
    }

    fn run(&self, step: &Step) -> Answer {
        let r = match step.kind {
            Kind::Exec => self.exec(&step.sql),
            _ => self.execute(&step.sql, &step.params),
        };
        // Documented (v≤4): a request that ends inside a transaction it opened is rolled back.
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
            return match r {
                Ok(_) => Err(documented("ended inside a transaction")),
                Err(e) => Err(e),
            };
        }
        r
    }

    fn exec(&self, sql: &str) -> Answer {
        let db = self.db();
        let b = sql.as_bytes();
        let (mut off, mut index, mut any) = (0usize, 0u32, false);
        let mut last = (Vec::new(), Vec::new());
        unsafe {
            while off < b.len() {
                let (rc, stmt, next) = prepare_at(db, b, off);
                if rc != ffi::SQLITE_OK {
                    let mut f = db_fail(db);
                    f.index = Some(index);
                    return Err(f);
                }
                if stmt.is_null() {
                    if next <= off {
                        break;
                    }
                    off = next;
                    continue;
                }
                any = true;
                off = next;
                let r = run_stmt(db, stmt, &[]);
                ffi::sqlite3_finalize(stmt);
                match r {
                    Ok(x) => last = x,
                    Err(mut f) => {
                        f.index = Some(index);
                        return Err(f);
                    }
                }
                index += 1;
            }
        }
        if !any {
            return Err(documented("no statement"));
        }
        Ok(OkAnswer { columns: last.0, rows: last.1, changes: None, last_insert_rowid: None })
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Answer {
        let db = self.db();
        let b = sql.as_bytes();
        unsafe {
            let mut off = 0;
            let (stmt, next) = loop {
                let (rc, st, next) = prepare_at(db, b, off);
                if rc != ffi::SQLITE_OK {
                    return Err(db_fail(db));
                }
                if !st.is_null() {
                    break (st, next);
                }
                if next <= off || next >= b.len() {
                    return Err(documented("no statement"));
                }
                off = next;
            };
            // Exactly one statement: anything after it that SQLite would prepare (or fail to) is a second one.
            let mut o = next;
            while o < b.len() {
                let (rc, st, n) = prepare_at(db, b, o);
                if rc != ffi::SQLITE_OK || !st.is_null() {
                    ffi::sqlite3_finalize(st);
                    ffi::sqlite3_finalize(stmt);
                    return Err(documented("several statements in one execute"));
                }
                if n <= o {
                    break;
                }
                o = n;
            }
            if ffi::sqlite3_bind_parameter_count(stmt) as usize != params.len() {
                ffi::sqlite3_finalize(stmt);
                return Err(documented("parameter count"));
            }
            let readonly = ffi::sqlite3_stmt_readonly(stmt) != 0;
            let text = std::str::from_utf8(&b[off..next]).unwrap_or("");
            let word = first_word(text);
            let dml = !readonly && matches!(word.as_str(), "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "WITH");
            let inserting = dml
                && (matches!(word.as_str(), "INSERT" | "REPLACE")
                    || (word == "WITH" && text.to_ascii_uppercase().contains("INSERT")));
            let r = run_stmt(db, stmt, params);
            ffi::sqlite3_finalize(stmt);
            let (columns, rows) = r?;
            let changes = if dml { ffi::sqlite3_changes64(db) as u64 } else { 0 };
            let rowid = (inserting && changes > 0).then(|| ffi::sqlite3_last_insert_rowid(db));
            Ok(OkAnswer { columns, rows, changes: Some(changes), last_insert_rowid: Some(rowid) })
        }
    }
}

// ---------------------------------------------------------------------------
// Comparison

fn invalid_utf8_columns(o: &OkAnswer) -> Vec<String> {
    let mut cols = Vec::new();
    for r in &o.rows {
        for (i, v) in r.iter().enumerate() {
            if let V::Text(t) = v {
                if std::str::from_utf8(t).is_err() {
                    let c = o.columns.get(i).cloned().unwrap_or_default();
                    if !cols.contains(&c) {
                        cols.push(c);
                    }
                }
            }
        }
    }
    cols
}

/// None when the engine's answer is faithful; else what differs.
fn compare(kind: Kind, engine: &Answer, local: &Answer) -> Option<String> {
    match (engine, local) {
        (Ok(e), Ok(l)) => {
            if e.columns != l.columns {
                return Some(format!("column names differ: engine {:?}, SQLite {:?}", e.columns, l.columns));
            }
            if e.rows.len() != l.rows.len() {
                return Some(format!("row count differs: engine {}, SQLite {}", e.rows.len(), l.rows.len()));
            }
            for (ri, (er, lr)) in e.rows.iter().zip(&l.rows).enumerate() {
                if er.len() != lr.len() {
                    return Some(format!("row {ri} width differs: engine {}, SQLite {}", er.len(), lr.len()));
                }
                for (ci, (ev, lv)) in er.iter().zip(lr).enumerate() {
                    if ev != lv {
                        let col = l.columns.get(ci).map_or("?", |s| s.as_str());
                        let silent = matches!(lv, V::Text(t) if std::str::from_utf8(t).is_err());
                        return Some(format!(
                            "row {ri} column {ci} ({col:?}) differs: engine {}, SQLite {}{}",
                            show_v(ev),
                            show_v(lv),
                            if silent {
                                " — TEXT that is not UTF-8 was changed silently (carry the bytes, or fail naming the column and how to read it as a BLOB)"
                            } else {
                                ""
                            }
                        ));
                    }
                }
            }
            if let (Some(ec), Some(lc)) = (e.changes, l.changes) {
                if ec != lc {
                    return Some(format!("changes differ: engine {ec}, SQLite {lc}"));
                }
            }
            if let (Some(er), Some(lr)) = (e.last_insert_rowid, l.last_insert_rowid) {
                if er != lr {
                    return Some(format!("lastInsertRowId differs: engine {er:?}, SQLite {lr:?}"));
                }
            }
            None
        }
        (Err(e), Ok(l)) => {
            let bad = invalid_utf8_columns(l);
            if !bad.is_empty() {
                let m = e.message.to_ascii_lowercase();
                let names_column = bad.iter().any(|c| e.message.contains(c.as_str()));
                if names_column && m.contains("blob") {
                    return None; // a typed refusal that names the column and says how to read it
                }
                return Some(format!(
                    "SQLite returned TEXT that is not UTF-8 in column(s) {bad:?}; the engine's error must name the column and say how to read it as a BLOB"
                ));
            }
            Some("the engine failed where SQLite succeeded".into())
        }
        (Ok(_), Err(l)) => Some(if l.doc {
            format!("the engine succeeded where the protocol documents INVALID_REQUEST ({})", l.class)
        } else {
            "the engine succeeded where SQLite failed".into()
        }),
        (Err(e), Err(l)) => {
            if l.doc {
                if e.class != "InvalidRequest" {
                    return Some(format!("expected INVALID_REQUEST ({}), engine answered {}", l.class, e.class));
                }
                if e.message.contains("no such") {
                    return Some("INVALID_REQUEST, but its message shows a later statement was prepared".into());
                }
                return None;
            }
            if let (Some(ee), Some(le)) = (e.ext, l.ext) {
                if ee & 0xff != le & 0xff {
                    return Some(format!("primary error code differs: engine {}, SQLite {}", ee & 0xff, le & 0xff));
                }
            }
            if kind == Kind::Exec {
                if let (Some(ei), Some(li)) = (e.index, l.index) {
                    if ei != li {
                        return Some(format!("statement_index differs: engine {ei}, SQLite {li}"));
                    }
                }
            }
            None
        }
    }
}

// ---------------------------------------------------------------------------
// The hand-written cases

fn hand_cases(limits: &Limits) -> Vec<Case> {
    let mut cases = Vec::new();
    let sel = "SELECT * FROM t";

    // 1. Stale result shape after a schema change.
    {
        let mut s = vec![exec("CREATE TABLE t(a); INSERT INTO t VALUES(1);")];
        s.extend(all_kinds(sel));
        for col in ["b DEFAULT 2", "c2 DEFAULT 'x'", "d2 REAL DEFAULT 1.5"] {
            s.push(exec(format!("ALTER TABLE t ADD COLUMN {col}")));
            s.extend(all_kinds(sel));
            s.push(query("SELECT * FROM t WHERE rowid = ?", vec![Value::Integer(1)]));
        }
        cases.push(case("1a_stale_shape_add_column_via_exec", s));
    }
    {
        let mut s = vec![write("CREATE TABLE t(a)", vec![]), write("INSERT INTO t VALUES(1)", vec![])];
        s.extend(all_kinds(sel));
        for col in ["b DEFAULT 2", "c3 DEFAULT 3"] {
            s.push(execute(format!("ALTER TABLE t ADD COLUMN {col}"), vec![]));
            s.extend(all_kinds(sel));
        }
        cases.push(case("1b_stale_shape_add_column_via_execute", s));
    }
    {
        let mut s = vec![exec("CREATE TABLE t(a, b); INSERT INTO t VALUES(1, 2);")];
        s.extend(all_kinds(sel));
        s.push(exec("DROP TABLE t; CREATE TABLE t(c); INSERT INTO t VALUES('three');"));
        s.extend(all_kinds(sel));
        s.push(exec("DROP TABLE t; CREATE TABLE t(x, y, z); INSERT INTO t VALUES(1, 2.5, x'00');"));
        s.extend(all_kinds(sel));
        cases.push(case("1c_stale_shape_drop_recreate", s));
    }
    {
        let mut s = vec![exec("CREATE TABLE t(c); INSERT INTO t VALUES(7);")];
        s.extend(all_kinds(sel));
        s.push(exec("ALTER TABLE t RENAME COLUMN c TO d"));
        s.extend(all_kinds(sel));
        s.push(execute("ALTER TABLE t RENAME COLUMN d TO e", vec![]));
        s.extend(all_kinds(sel));
        s.push(execute("ALTER TABLE t DROP COLUMN e", vec![]));
        s.extend(all_kinds(sel));
        cases.push(case("1d_stale_shape_rename_and_drop_column", s));
    }
    {
        let mut s = vec![exec("CREATE TABLE t(a); INSERT INTO t VALUES(1);")];
        s.extend(all_kinds(sel));
        s.push(exec(
            "BEGIN; SELECT * FROM t; ALTER TABLE t ADD COLUMN b DEFAULT 2; SELECT * FROM t; COMMIT; SELECT * FROM t",
        ));
        s.extend(all_kinds(sel));
        s.push(exec("BEGIN; ALTER TABLE t RENAME COLUMN a TO a2; ALTER TABLE t ADD COLUMN c DEFAULT 'c'; COMMIT;"));
        s.extend(all_kinds(sel));
        s.push(exec("BEGIN; DROP TABLE t; CREATE TABLE t(only); INSERT INTO t VALUES(42); COMMIT;"));
        s.extend(all_kinds(sel));
        cases.push(case("1e_stale_shape_in_one_exec_transaction", s));
    }
    {
        // A view over a table that changes shape.
        let mut s = vec![exec("CREATE TABLE t(a); INSERT INTO t VALUES(1); CREATE VIEW v AS SELECT * FROM t;")];
        s.extend(all_kinds("SELECT * FROM v"));
        s.push(exec("DROP VIEW v; ALTER TABLE t ADD COLUMN b DEFAULT 2; CREATE VIEW v AS SELECT * FROM t;"));
        s.extend(all_kinds("SELECT * FROM v"));
        cases.push(case("1f_stale_shape_view", s));
    }

    // 2. Connection state across requests.
    {
        let mut s = vec![exec("CREATE TEMP TABLE tt(x); INSERT INTO tt VALUES(1)")];
        s.extend(all_kinds("SELECT * FROM tt"));
        s.push(execute("INSERT INTO tt VALUES(2)", vec![]));
        s.extend(all_kinds("SELECT count(*) FROM tt"));
        s.push(query("SELECT name FROM sqlite_temp_master ORDER BY name", vec![]));
        cases.push(case("2a_temp_table", s));
    }
    {
        let mut s = vec![exec("CREATE TABLE base(x); INSERT INTO base VALUES(1),(2); CREATE TEMP VIEW tv AS SELECT x * 10 AS y FROM base;")];
        s.extend(all_kinds("SELECT * FROM tv ORDER BY y"));
        cases.push(case("2b_temp_view", s));
    }
    {
        let mut s = vec![
            exec("CREATE TABLE c(id INTEGER PRIMARY KEY, v)"),
            execute("INSERT INTO c(v) VALUES('a')", vec![]),
            execute("INSERT INTO c(v) VALUES('b'), ('c')", vec![]),
        ];
        s.extend(all_kinds("SELECT last_insert_rowid(), changes(), total_changes()"));
        s.push(write("UPDATE c SET v = v || '!'", vec![]));
        s.extend(all_kinds("SELECT last_insert_rowid(), changes(), total_changes()"));
        cases.push(case("2c_connection_functions_after_writes", s));
    }
    {
        let mut s = vec![exec("CREATE TABLE l(s); INSERT INTO l VALUES('abc'),('ABC'),('aBc');")];
        s.extend(all_kinds("SELECT s FROM l WHERE s LIKE 'a%' ORDER BY s"));
        s.push(execute("PRAGMA case_sensitive_like=1", vec![]));
        s.extend(all_kinds("SELECT s FROM l WHERE s LIKE 'a%' ORDER BY s"));
        s.push(exec("PRAGMA case_sensitive_like=0"));
        s.extend(all_kinds("SELECT s FROM l WHERE s LIKE 'a%' ORDER BY s"));
        cases.push(case("2d_case_sensitive_like", s));
    }
    {
        let mut s = vec![exec("CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE ch(p REFERENCES p(id));")];
        s.extend(all_kinds("PRAGMA foreign_keys"));
        s.push(execute("INSERT INTO ch VALUES(5)", vec![]));
        s.push(execute("PRAGMA foreign_keys=0", vec![]));
        s.extend(all_kinds("PRAGMA foreign_keys"));
        s.push(execute("INSERT INTO ch VALUES(6)", vec![]));
        s.push(query("SELECT * FROM ch", vec![]));
        s.push(exec("PRAGMA foreign_keys=1; INSERT INTO ch VALUES(7);"));
        cases.push(case("2e_foreign_keys_pragma", s));
    }
    {
        let mut s = vec![exec("CREATE TABLE r(x); INSERT INTO r VALUES(3),(1),(2);")];
        s.push(execute("PRAGMA reverse_unordered_selects=1", vec![]));
        s.extend(all_kinds("SELECT x FROM r"));
        s.extend(all_kinds("PRAGMA reverse_unordered_selects"));
        cases.push(case("2f_reverse_unordered_selects", s));
    }

    // 3. Text that is not UTF-8.
    {
        let mut s = all_kinds("SELECT CAST(x'ff41' AS TEXT) AS bad");
        s.extend(all_kinds("SELECT CAST(x'c3' AS TEXT) AS truncated, 'ok' AS fine"));
        s.push(exec("CREATE TABLE u(t TEXT); INSERT INTO u VALUES(CAST(x'ff41' AS TEXT));"));
        s.extend(all_kinds("SELECT t FROM u"));
        // These read the same value without decoding it: must pass.
        s.extend(all_kinds("SELECT typeof(t), length(t), hex(t), CAST(t AS BLOB) FROM u"));
        s.push(query("SELECT ? = CAST(x'ff41' AS TEXT)", vec![Value::Text("\u{FFFD}A".into())]));
        cases.push(case("3_non_utf8_text", s));
    }

    // 4. Statement parsing.
    {
        let s = vec![
            exec(";SELECT 1"),
            execute(";SELECT 1", vec![]),
            query(";;SELECT 2;", vec![]),
            write("  ;  SELECT 3 ; ", vec![]),
            execute("SELECT 1; SELECT * FROM q", vec![]),
            query("SELECT 1; SELECT * FROM q", vec![]),
            write("SELECT 1; SELECT 2", vec![]),
            execute("SELECT 1; -- a trailing comment", vec![]),
            execute("SELECT 1; /* a trailing comment */ ;", vec![]),
            exec("SELECT 1; SELECT * FROM q"),
            exec("SELECT 1 AS one; SELECT 2 AS two;;"),
            query("SELECT 'a;b' AS \"x;y\", [c;d]", vec![]),
            execute("SELECT 1 /* unterminated", vec![]),
            exec("SELECT 1; SELECT 'open"),
            exec("  -- only a comment\n ; /* and this */ ;"),
            execute("", vec![]),
            execute("SELECT ?", vec![]),
            execute("SELECT ?, ?", vec![Value::Integer(1)]),
            execute("SELECT ?1, ?1, :a", vec![Value::Integer(1), Value::Text("a".into())]),
            exec("CREATE TABLE tr_t(a); CREATE TABLE tr_log(a); CREATE TRIGGER trg AFTER INSERT ON tr_t BEGIN INSERT INTO tr_log VALUES(new.a); INSERT INTO tr_log VALUES(new.a * 10); END; INSERT INTO tr_t VALUES(1); SELECT * FROM tr_log"),
            exec("SELEC 1"),
            execute("SELEC 1", vec![]),
            exec("CREATE TABLE ok(a); SELEC 1; CREATE TABLE never(a);"),
            query("SELECT name FROM sqlite_master WHERE name IN ('ok', 'never')", vec![]),
        ];
        cases.push(case("4_statement_parsing", s));
    }

    // 5. Edge values.
    {
        let max = limits.max_value_bytes as i64;
        let f = Value::Float;
        let mut s = vec![
            query("SELECT -0.0, typeof(-0.0), 0.0, 1/-1e999", vec![]),
            query("SELECT ?1, typeof(?1), quote(?1)", vec![f(-0.0)]),
            query("SELECT ?1, typeof(?1)", vec![f(f64::NAN)]),
            query("SELECT 0.0/0.0, typeof(0.0/0.0)", vec![]),
            query("SELECT 1e999, -1e999, typeof(1e999), 1e999 - 1e999", vec![]),
            query("SELECT ?1, ?2, typeof(?1)", vec![f(f64::INFINITY), f(f64::NEG_INFINITY)]),
            query("SELECT 9223372036854775807, -9223372036854775808, typeof(-9223372036854775808)", vec![]),
            query("SELECT 9223372036854775807 + 1, typeof(9223372036854775807 + 1), -9223372036854775808 - 1", vec![]),
            query("SELECT 9223372036854775808, typeof(9223372036854775808)", vec![]),
            query("SELECT ?1, ?2, ?1 + 0, typeof(?2)", vec![Value::Integer(i64::MAX), Value::Integer(i64::MIN)]),
            query("SELECT abs(-9223372036854775808)", vec![]),
            query("SELECT x'', typeof(x''), length(x''), '', typeof(''), length('')", vec![]),
            query("SELECT zeroblob(0), typeof(zeroblob(0)), length(zeroblob(0)), zeroblob(3)", vec![]),
            query("SELECT ?1, typeof(?1), ?2, typeof(?2)", vec![Value::Blob(vec![]), Value::Text(String::new())]),
            query("SELECT ?1, length(?1), hex(?1)", vec![Value::Text("a\0b".into())]),
            query("SELECT 5e-324, 1.7976931348623157e308, 2.2250738585072014e-308, 0.1 + 0.2", vec![]),
            query("SELECT ?1, ?2", vec![f(5e-324), f(f64::from_bits(0x8000_0000_0000_0001))]),
            query("SELECT 1.0, typeof(1.0), 1e0, 100000000000000000000, typeof(100000000000000000000)", vec![]),
            exec(
                "CREATE TABLE ev(v); CREATE TABLE evr(v REAL); CREATE TABLE evi(v INTEGER); CREATE TABLE evt(v TEXT);",
            ),
        ];
        let stored = [
            f(-0.0),
            f(f64::NAN),
            f(f64::INFINITY),
            f(f64::NEG_INFINITY),
            f(1.0),
            Value::Integer(i64::MAX),
            Value::Integer(i64::MIN),
            Value::Blob(vec![]),
            Value::Text(String::new()),
            Value::Text("12".into()),
            Value::Text(" 3.0".into()),
            Value::Null,
        ];
        for v in &stored {
            for t in ["ev", "evr", "evi", "evt"] {
                s.push(execute(format!("INSERT INTO {t}(v) VALUES(?)"), vec![v.clone()]));
            }
        }
        for t in ["ev", "evr", "evi", "evt"] {
            s.extend(all_kinds(&format!("SELECT rowid, v, typeof(v), quote(v) FROM {t} ORDER BY rowid")));
        }
        let big = "x".repeat(4 << 20);
        s.push(execute("INSERT INTO ev(v) VALUES(?)", vec![Value::Text(big)]));
        s.push(query("SELECT length(v), substr(v, -3) FROM ev WHERE length(v) > 1000", vec![]));
        s.push(query(format!("SELECT length(printf('%.*c', {max}, 'x'))"), vec![]));
        s.push(query(format!("SELECT printf('%.*c', {}, 'y')", max - 1), vec![]));
        s.push(query(format!("SELECT zeroblob({max})"), vec![]));
        s.push(query(format!("SELECT zeroblob({})", max + 1), vec![]));
        s.push(query(format!("SELECT length(printf('%.*c', {}, 'x'))", max + 1), vec![]));
        cases.push(case("5_edge_values", s));
    }

    // 6. Collations, connection functions, version, JSON, windows, CTEs, RETURNING, UPSERT, generated, STRICT.
    {
        let mut s =
            vec![exec("CREATE TABLE co(s TEXT); INSERT INTO co VALUES('b'),('B'),('a'),('A'),('a  '),('c'),('A ');")];
        for coll in ["NOCASE", "RTRIM", "BINARY"] {
            s.extend(all_kinds(&format!("SELECT s, quote(s) FROM co ORDER BY s COLLATE {coll}, rowid")));
        }
        s.push(query("SELECT 'abc' = 'ABC' COLLATE NOCASE, 'a ' = 'a' COLLATE RTRIM, 'a' < 'B', 'a' < 'B' COLLATE NOCASE, 'a' = 'A'", vec![]));
        s.push(exec("CREATE TABLE cn(s TEXT COLLATE NOCASE); INSERT INTO cn VALUES('abc'),('ABC'),('x');"));
        s.push(query("SELECT count(*), group_concat(s, ',') FROM cn WHERE s = 'aBc'", vec![]));
        s.push(query("SELECT DISTINCT s FROM cn ORDER BY s", vec![]));
        cases.push(case("6a_collations", s));
    }
    {
        let mut s = vec![exec("CREATE TABLE cf(id INTEGER PRIMARY KEY, v)")];
        s.extend(all_kinds("SELECT changes(), total_changes(), last_insert_rowid()"));
        s.push(write("INSERT INTO cf(v) VALUES(1),(2),(3)", vec![]));
        s.extend(all_kinds("SELECT changes(), total_changes(), last_insert_rowid()"));
        s.push(execute("DELETE FROM cf WHERE v > 1", vec![]));
        s.push(query("SELECT changes(), total_changes(), last_insert_rowid()", vec![]));
        s.push(exec("INSERT INTO cf(v) VALUES(9); SELECT changes(), total_changes(), last_insert_rowid();"));
        s.extend(all_kinds("SELECT sqlite_version(), sqlite_source_id()"));
        cases.push(case("6b_connection_functions_and_version", s));
    }
    {
        let s = vec![
            exec("CREATE TABLE trg_t(a); CREATE TABLE trg_log(a); CREATE TRIGGER tl AFTER INSERT ON trg_t BEGIN INSERT INTO trg_log VALUES(new.a); INSERT INTO trg_log VALUES(new.a); END;"),
            execute("INSERT INTO trg_t VALUES(1)", vec![]),
            write("INSERT INTO trg_t VALUES(2), (3)", vec![]),
            query("SELECT changes(), total_changes(), last_insert_rowid()", vec![]),
            exec("CREATE TABLE fkp(id INTEGER PRIMARY KEY); CREATE TABLE fkc(p REFERENCES fkp(id) ON DELETE CASCADE); INSERT INTO fkp VALUES(1),(2); INSERT INTO fkc VALUES(1),(1),(2);"),
            execute("DELETE FROM fkp WHERE id = 1", vec![]),
            execute("CREATE TABLE later(x)", vec![]),
            execute("DROP TABLE fkc", vec![]),
        ];
        cases.push(case("6c_changes_with_triggers_and_cascades", s));
    }
    {
        // At v5 every write records its request key in the same transaction; the actor's
        // connection functions must not see those rows (including DML that changes nothing).
        let s = vec![
            exec("CREATE TABLE ce(a INTEGER PRIMARY KEY, b)"),
            execute("INSERT INTO ce(b) VALUES(1), (2)", vec![]),
            query("SELECT changes(), total_changes(), last_insert_rowid()", vec![]),
            write("UPDATE ce SET b = b WHERE 0", vec![]),
            query("SELECT changes(), total_changes(), last_insert_rowid()", vec![]),
            write("INSERT INTO ce(b) VALUES(3)", vec![]),
            exec("UPDATE ce SET b = b + 1 WHERE 0; SELECT changes(), total_changes(), last_insert_rowid()"),
            exec("INSERT INTO ce(b) VALUES(4), (5), (6); SELECT changes(), total_changes(), last_insert_rowid()"),
            execute("SELECT changes(), total_changes(), last_insert_rowid()", vec![]),
        ];
        cases.push(case("6e_changes_after_keyed_writes", s));
    }
    {
        let mut s = all_kinds(
            r#"SELECT '{"a":[1,2,{"b":null}]}' -> '$.a', '{"a":[1,2]}' ->> '$.a[1]', json_extract('{"x":1.5}', '$.x'), typeof('{"a":1}' ->> '$.a'), '{"a":"t"}' ->> 'a'"#,
        );
        s.extend(all_kinds(r#"SELECT key, value, type, atom FROM json_each('[1,"two",3.5,null,{"k":true}]')"#));
        s.extend(all_kinds(r#"SELECT fullkey, type FROM json_tree('{"a":{"b":[1,2]}}')"#));
        s.push(query(
            "SELECT json_object('n', ?1, 'f', ?2, 't', ?3), json_array(?1, ?2, ?3)",
            vec![Value::Integer(i64::MAX), Value::Float(-0.0), Value::Text("é\"".into())],
        ));
        s.push(query("SELECT json('{\"a\" : 1e999}'), json_valid('{')", vec![]));
        cases.push(case("6d_json", s));
    }
    {
        let w = "SELECT x, sum(x) OVER (ORDER BY x ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s, row_number() OVER w AS rn, lag(x) OVER w AS prev, rank() OVER (ORDER BY x % 2) AS r, avg(x) OVER () AS a FROM (SELECT column1 AS x FROM (VALUES(3),(1),(2),(5),(4))) WINDOW w AS (ORDER BY x DESC) ORDER BY x";
        let mut s = all_kinds(w);
        s.extend(all_kinds("WITH RECURSIVE c(n, f) AS (SELECT 1, 1 UNION ALL SELECT n + 1, f * (n + 1) FROM c WHERE n < 21) SELECT n, f, typeof(f) FROM c"));
        s.extend(all_kinds("WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) SELECT * FROM a, b"));
        s.push(exec("CREATE TABLE wc(x); WITH c(n) AS (VALUES(1),(2)) INSERT INTO wc SELECT n FROM c;"));
        s.push(execute("WITH c(n) AS (VALUES(10)) INSERT INTO wc SELECT n FROM c", vec![]));
        s.push(query("SELECT * FROM wc ORDER BY x", vec![]));
        cases.push(case("6e_window_and_cte", s));
    }
    {
        let s = vec![
            exec("CREATE TABLE rt(id INTEGER PRIMARY KEY, v, n INT DEFAULT 0)"),
            execute("INSERT INTO rt(v) VALUES('a'), ('b') RETURNING id, v, typeof(v), n", vec![]),
            write("UPDATE rt SET n = n + 1 WHERE v = 'a' RETURNING *", vec![]),
            query("INSERT INTO rt(v) VALUES(?) RETURNING rowid AS r, *", vec![Value::Blob(vec![1, 2])]),
            exec("INSERT INTO rt(v) VALUES('c') RETURNING id; DELETE FROM rt WHERE id = 1 RETURNING id, v;"),
            execute("DELETE FROM rt WHERE id > 100 RETURNING id", vec![]),
            exec("CREATE TABLE up(k TEXT PRIMARY KEY, n INT)"),
            execute("INSERT INTO up(k, n) VALUES('a', 1) ON CONFLICT(k) DO UPDATE SET n = n + excluded.n", vec![]),
            execute("INSERT INTO up(k, n) VALUES('a', 5) ON CONFLICT(k) DO UPDATE SET n = n + excluded.n", vec![]),
            execute("INSERT INTO up(k, n) VALUES('b', 5) ON CONFLICT DO NOTHING", vec![]),
            execute("INSERT INTO up(k, n) VALUES('b', 6) ON CONFLICT DO NOTHING", vec![]),
            write("INSERT INTO up(k, n) VALUES('a', 1) ON CONFLICT(k) DO UPDATE SET n = n * 10 RETURNING k, n", vec![]),
            execute("INSERT OR IGNORE INTO rt(id, v) VALUES(2, 'dup')", vec![]),
            execute("INSERT OR REPLACE INTO rt(id, v) VALUES(2, 'replaced')", vec![]),
            execute("REPLACE INTO rt(id, v) VALUES(2, 'again')", vec![]),
            execute("INSERT INTO rt(id, v) VALUES(2, 'conflict')", vec![]),
            exec("CREATE TABLE wr(k TEXT PRIMARY KEY, v) WITHOUT ROWID"),
            execute("INSERT INTO wr VALUES('x', 1)", vec![]),
            query("SELECT * FROM up ORDER BY k", vec![]),
            query("SELECT * FROM rt ORDER BY id", vec![]),
        ];
        cases.push(case("6f_returning_upsert_rowids", s));
    }
    {
        let mut s = vec![
            exec("CREATE TABLE gc(a INT, b INT GENERATED ALWAYS AS (a * 2) VIRTUAL, c TEXT AS (a || 'x') STORED)"),
            execute("INSERT INTO gc(a) VALUES(?)", vec![Value::Integer(21)]),
            execute("INSERT INTO gc(a, b) VALUES(1, 2)", vec![]),
        ];
        s.extend(all_kinds("SELECT *, typeof(b), typeof(c) FROM gc"));
        s.push(exec("CREATE TABLE st(i INT, r REAL, t TEXT, b BLOB, a ANY) STRICT"));
        s.push(execute("INSERT INTO st VALUES(1, 2, 3, x'04', 5.5)", vec![]));
        s.push(execute("INSERT INTO st VALUES('12', '2.5', 'x', NULL, '7')", vec![]));
        s.push(execute("INSERT INTO st(i) VALUES('abc')", vec![]));
        s.push(execute("INSERT INTO st(b) VALUES(?)", vec![Value::Text("not a blob".into())]));
        s.push(execute("INSERT INTO st(r) VALUES(?)", vec![Value::Integer(i64::MAX)]));
        s.extend(all_kinds("SELECT i, typeof(i), r, typeof(r), t, typeof(t), b, a, typeof(a) FROM st ORDER BY rowid"));
        cases.push(case("6g_generated_and_strict", s));
    }
    {
        let s = vec![
            exec("CREATE TABLE m(a, b); INSERT INTO m VALUES(1, 2); SELECT * FROM m WHERE 0"),
            exec("SELECT * FROM m WHERE 0"),
            exec("SELECT a AS x FROM m; INSERT INTO m VALUES(3, 4)"),
            exec("SELECT 1 AS a, 2 AS a, 3, 'x' || 'y'"),
            query("SELECT 1 AS a, 2 AS a, 3, 'x' || 'y'", vec![]),
            query("SELECT * FROM m AS x, m AS y ORDER BY x.a, y.a", vec![]),
            execute("SELECT * FROM m WHERE 0", vec![]),
            exec("SELECT count(*) FROM m; CREATE TABLE z(a); DROP TABLE z;"),
            exec("BEGIN; INSERT INTO m VALUES(5, 6); COMMIT; SELECT count(*) AS n FROM m"),
            exec("BEGIN; INSERT INTO m VALUES(7, 8);"),
            execute("BEGIN", vec![]),
            exec("BEGIN; INSERT INTO m VALUES(9, 9); SELEC 1; COMMIT;"),
            query("SELECT count(*) AS n FROM m", vec![]),
            exec("SAVEPOINT sp; INSERT INTO m VALUES(10, 10); RELEASE sp; SELECT max(a) FROM m"),
        ];
        cases.push(case("6h_exec_results_and_transactions", s));
    }
    {
        // A statement that fails leaves nothing behind (statement atomicity in autocommit mode),
        // also when it fails half-way through its rows (a STRICT type check on the 2nd row).
        let count = "SELECT count(*), group_concat(c) FROM s";
        let mut s = vec![exec("CREATE TABLE s(c REAL) STRICT")];
        s.push(exec("INSERT INTO s VALUES (1), (x'00'), (2)"));
        s.push(query(count, vec![]));
        s.push(exec("INSERT INTO s VALUES (3); INSERT INTO s VALUES (4), ('x');"));
        s.push(query(count, vec![]));
        s.push(execute("INSERT INTO s VALUES (5), (x'00')", vec![]));
        s.push(write("INSERT INTO s VALUES (6), (?)", vec![Value::Text("x".into())]));
        s.push(query(count, vec![]));
        s.push(exec("CREATE TABLE nn(c NOT NULL); INSERT INTO nn VALUES (1), (NULL);"));
        s.push(exec("INSERT INTO s VALUES (7), (8); UPDATE s SET c = x'01' WHERE c > 6;"));
        s.push(query(count, vec![]));
        s.push(execute("UPDATE s SET c = c + 1", vec![]));
        cases.push(case("6i_failed_statement_leaves_nothing", s));
    }
    cases
}

// ---------------------------------------------------------------------------
// 7. Generated sessions

/// SplitMix64: small, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// A random value of any storage class, as a bindable value and (if it has one) an SQL literal.
fn gen_value(r: &mut Rng) -> (Value, String) {
    match r.below(5) {
        0 => (Value::Null, "NULL".into()),
        1 => {
            let i = match r.below(6) {
                0 => *r.pick(&[0, 1, -1, 42, 255, -7]),
                1 => *r.pick(&[i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1]),
                2 => r.next() as i64,
                _ => (r.next() % 2001) as i64 - 1000,
            };
            // -9223372036854775808 as a literal is parsed as -(9223372036854775808): written as an expression.
            let lit = if i == i64::MIN { "(-9223372036854775807 - 1)".to_string() } else { i.to_string() };
            (Value::Integer(i), lit)
        }
        2 => {
            let f = match r.below(5) {
                0 => *r.pick(&[0.0, -0.0, 1.5, -2.25, 0.1, 1e308, 1e-308, 5e-324, 3.0]),
                1 => *r.pick(&[f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 9.223372036854776e18]),
                2 => f64::from_bits(r.next()),
                _ => ((r.next() % 200_001) as f64 - 100_000.0) / 100.0,
            };
            let lit = if f.is_nan() {
                "(0.0/0.0)".into()
            } else if f == f64::INFINITY {
                "1e999".into()
            } else if f == f64::NEG_INFINITY {
                "-1e999".into()
            } else {
                let d = format!("{f:?}");
                if d.contains(['.', 'e']) {
                    d
                } else {
                    format!("{d}.0")
                }
            };
            (Value::Float(f), lit)
        }
        3 => {
            let t: String = match r.below(4) {
                0 => r
                    .pick(&[
                        "", "a", "abc", "ABC", "12", " 3.5", "0x10", "1e3", "-0", "héllo", "日本", "'q'", "NULL", " ",
                    ])
                    .to_string(),
                1 => (0..r.below(12)).map(|_| (b'a' + r.below(26) as u8) as char).collect(),
                2 => format!("{}", (r.next() % 1000) as i64 - 500),
                _ => "x".repeat(r.below(300)),
            };
            let lit = format!("'{}'", t.replace('\'', "''"));
            (Value::Text(t), lit)
        }
        _ => {
            let b: Vec<u8> = match r.below(3) {
                0 => r.pick(&[vec![], vec![0u8], vec![0xff, 0x41], vec![0x31, 0x32], vec![0xc3, 0xa9]]).clone(),
                _ => (0..r.below(10)).map(|_| r.next() as u8).collect(),
            };
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            (Value::Blob(b), format!("x'{hex}'"))
        }
    }
}

struct GenTable {
    name: String,
    cols: Vec<String>,
    strict: bool,
}

/// A value for a statement: bound (`?`) when params are allowed and the coin says so, else a literal.
fn operand(r: &mut Rng, bind: bool, params: &mut Vec<Value>) -> String {
    let (v, lit) = gen_value(r);
    if bind && r.chance(50) {
        params.push(v);
        "?".into()
    } else {
        lit
    }
}

fn gen_expr(r: &mut Rng, t: &GenTable, bind: bool, params: &mut Vec<Value>) -> String {
    let c = r.pick(&t.cols).clone();
    let d = r.pick(&t.cols).clone();
    match r.below(22) {
        0 | 1 => c,
        2 => format!("typeof({c})"),
        3 => format!("{c} + 1"),
        4 => format!("{c} * 1.5"),
        5 => format!("{c} || 'x'"),
        6 => format!("-{c}"),
        7 => format!("abs({c})"),
        8 => format!("quote({c})"),
        9 => format!("hex({c})"),
        10 => format!("length({c})"),
        11 => format!("CAST({c} AS {})", r.pick(&["INTEGER", "REAL", "TEXT", "BLOB", "NUMERIC"])),
        12 => format!("{c} = {}", operand(r, bind, params)),
        13 => format!("{c} < {}", operand(r, bind, params)),
        14 => format!("coalesce({c}, {})", operand(r, bind, params)),
        15 => operand(r, bind, params),
        16 => format!("{c} {} {d}", r.pick(&["+", "-", "*", "/", "%", "||", "<", "=", "IS", "&", "<<"])),
        17 => format!("round({c}, 2)"),
        18 => format!("upper({c})"),
        19 => format!("iif({c}, 1, 0)"),
        20 => format!("printf('%d|%.3f|%s', {c}, {c}, {c})"),
        _ => format!("{c} IS NULL"),
    }
}

fn gen_pred(r: &mut Rng, t: &GenTable, bind: bool, params: &mut Vec<Value>) -> String {
    let c = r.pick(&t.cols).clone();
    match r.below(5) {
        0 => format!("{c} IS NULL"),
        1 => format!("{c} > {}", operand(r, bind, params)),
        2 => "rowid % 2 = 0".into(),
        3 => format!("typeof({c}) = '{}'", r.pick(&["integer", "real", "text", "blob", "null"])),
        _ => format!("{c} = {}", operand(r, bind, params)),
    }
}

fn gen_kind(r: &mut Rng, read: bool) -> Kind {
    if read {
        *r.pick(&[Kind::Query, Kind::Query, Kind::Execute, Kind::ExecuteWrite, Kind::Exec])
    } else {
        *r.pick(&[Kind::Execute, Kind::Execute, Kind::ExecuteWrite, Kind::Exec])
    }
}

fn gen_session(seed: u64, index: usize, steps: usize) -> Case {
    let mut r = Rng(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut tables: Vec<GenTable> = Vec::new();
    let mut out = Vec::new();
    let loose = ["", "INTEGER", "INT", "REAL", "TEXT", "BLOB", "NUMERIC", "VARCHAR(10)", "FLOAT", "BOOLEAN"];
    let strict = ["INT", "INTEGER", "REAL", "TEXT", "BLOB", "ANY"];
    while out.len() < steps {
        if tables.is_empty() || (tables.len() < 3 && r.chance(5)) {
            let name = format!("g{}", tables.len());
            let is_strict = r.chance(20);
            let n = 1 + r.below(4);
            let cols: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
            let decl: Vec<String> = cols
                .iter()
                .map(|c| format!("{c} {}", if is_strict { *r.pick(&strict) } else { *r.pick(&loose) }))
                .collect();
            let sql = format!("CREATE TABLE {name}({}){}", decl.join(", "), if is_strict { " STRICT" } else { "" });
            let kind = gen_kind(&mut r, false);
            out.push(Step { kind, sql, params: vec![] });
            tables.push(GenTable { name, cols, strict: is_strict });
            continue;
        }
        let ti = r.below(tables.len());
        let roll = r.below(100);
        let read = (35..75).contains(&roll);
        let kind = gen_kind(&mut r, read);
        let bind = kind != Kind::Exec;
        let mut params = Vec::new();
        let t = &tables[ti];
        let sql = if roll < 35 {
            let rows = 1 + r.below(3);
            let vals: Vec<String> = (0..rows)
                .map(|_| {
                    format!(
                        "({})",
                        t.cols.iter().map(|_| operand(&mut r, bind, &mut params)).collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            let ret = if r.chance(15) { " RETURNING *" } else { "" };
            format!("INSERT INTO {}({}) VALUES {}{ret}", t.name, t.cols.join(", "), vals.join(", "))
        } else if roll < 75 {
            if r.chance(20) {
                let c = r.pick(&t.cols).clone();
                format!(
                    "SELECT count(*), count({c}), total({c}), max({c}), min({c}), typeof(sum({c})), group_concat(quote({c}), ';') FROM {}",
                    t.name
                )
            } else {
                let n = 1 + r.below(4);
                let exprs: Vec<String> = (0..n).map(|_| gen_expr(&mut r, t, bind, &mut params)).collect();
                let star = if r.chance(25) { "*, " } else { "" };
                let pred = if r.chance(40) {
                    format!(" WHERE {}", gen_pred(&mut r, t, bind, &mut params))
                } else {
                    String::new()
                };
                format!("SELECT {star}{} FROM {}{pred} ORDER BY rowid", exprs.join(", "), t.name)
            }
        } else if roll < 87 {
            let c = r.pick(&t.cols).clone();
            let set =
                if r.chance(50) { operand(&mut r, bind, &mut params) } else { gen_expr(&mut r, t, bind, &mut params) };
            let pred = gen_pred(&mut r, t, bind, &mut params);
            format!("UPDATE {} SET {c} = {set} WHERE {pred}", t.name)
        } else if roll < 93 {
            let pred = gen_pred(&mut r, t, bind, &mut params);
            format!("DELETE FROM {} WHERE {pred}", t.name)
        } else {
            // A schema change: the shape of later SELECT * must follow it.
            let c = format!("c{}", t.cols.len());
            let ty = if t.strict { *r.pick(&strict) } else { *r.pick(&loose) };
            let (_, lit) = gen_value(&mut r);
            let default = if t.strict || lit.starts_with('(') { String::new() } else { format!(" DEFAULT {lit}") };
            let sql = format!("ALTER TABLE {} ADD COLUMN {c} {ty}{default}", t.name);
            tables[ti].cols.push(c);
            out.push(Step { kind: gen_kind(&mut r, false), sql, params: vec![] });
            continue;
        };
        out.push(Step { kind, sql, params });
    }
    Case { name: format!("7_generated_seed{seed:#x}_session{index}"), steps: out }
}

// ---------------------------------------------------------------------------
// The test

struct Mismatch {
    case: String,
    step: usize,
    kind: Kind,
    sql: String,
    params: String,
    what: String,
    engine: String,
    local: String,
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…({} chars)", s.chars().take(n).collect::<String>(), s.chars().count())
    }
}

fn show_params(ps: &[Value]) -> String {
    if ps.is_empty() {
        return String::new();
    }
    format!(" params=[{}]", ps.iter().map(|p| show_v(&v_of(p))).collect::<Vec<_>>().join(", "))
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fidelity() {
    let mut limits = None;
    let te = TestEngine::start(|c| {
        // Durability does not change answers; `os` keeps this suite quick.
        c.durability = Durability::Os;
        limits = Some(c.limits.clone());
    })
    .await;
    let limits = limits.expect("limits");
    let sandbox = SandboxLimits::from_limits(&limits);
    let client = te.client().await;

    let seed = env_u64("ENVOY_FIDELITY_SEED").unwrap_or(0x5eed);
    let sessions = env_u64("ENVOY_FIDELITY_SESSIONS").unwrap_or(50) as usize;
    let filter = std::env::var("ENVOY_FIDELITY_CASE").ok();
    let trace = std::env::var_os("ENVOY_FIDELITY_TRACE").is_some();
    let mut cases = hand_cases(&limits);
    cases.extend((0..sessions).map(|i| gen_session(seed, i, 20)));
    cases.retain(|c| filter.as_deref().is_none_or(|f| c.name.contains(f)));

    let mut mismatches: Vec<Mismatch> = Vec::new();
    let mut failed_cases: Vec<String> = Vec::new();
    let mut steps_run = 0usize;
    for case in &cases {
        let actor = client.get_or_create_actor("fidelity", &case.name).await.expect("actor");
        let db = actor.sql();
        let local = Local::open(&sandbox);
        let before = mismatches.len();
        for (i, step) in case.steps.iter().enumerate() {
            let engine = run_engine(&db, step).await;
            let local_answer = local.run(step);
            steps_run += 1;
            if trace {
                eprintln!(
                    "{} step {i} {:?}: {}{}\n  engine: {}\n  SQLite: {}",
                    case.name,
                    step.kind,
                    short(&step.sql, 400),
                    short(&show_params(&step.params), 300),
                    short(&show(&engine), 600),
                    short(&show(&local_answer), 600)
                );
            }
            if let Some(what) = compare(step.kind, &engine, &local_answer) {
                let m = Mismatch {
                    case: case.name.clone(),
                    step: i,
                    kind: step.kind,
                    sql: short(&step.sql, 400),
                    params: short(&show_params(&step.params), 300),
                    what,
                    engine: show(&engine),
                    local: show(&local_answer),
                };
                eprintln!(
                    "MISMATCH {} step {} {:?}: {}{}\n  what:   {}\n  engine: {}\n  SQLite: {}",
                    m.case, m.step, m.kind, m.sql, m.params, m.what, m.engine, m.local
                );
                mismatches.push(m);
            }
        }
        if mismatches.len() > before {
            failed_cases.push(format!("{} ({} mismatching step(s))", case.name, mismatches.len() - before));
        }
    }
    client.close().await;
    te.engine.shutdown().await;

    eprintln!(
        "fidelity: {} cases, {} steps, {} mismatches in {} cases (seed {seed:#x}, {sessions} generated sessions)",
        cases.len(),
        steps_run,
        mismatches.len(),
        failed_cases.len()
    );
    if !mismatches.is_empty() {
        let mut summary =
            format!("{} cases, {} mismatches in {} case(s):\n", cases.len(), mismatches.len(), failed_cases.len());
        for c in &failed_cases {
            let _ = writeln!(summary, "  - {c}");
        }
        summary.push_str("mismatches:\n");
        for m in &mismatches {
            let _ = writeln!(
                summary,
                "  {} step {} {:?}: {}{}\n      {}\n      engine: {}\n      SQLite: {}",
                m.case,
                m.step,
                m.kind,
                short(&m.sql, 160),
                m.params,
                m.what,
                short(&m.engine, 400),
                short(&m.local, 400)
            );
        }
        panic!("fidelity: the engine is not indistinguishable from one local SQLite connection:\n{summary}");
    }
}

/// The comparator itself: the three outcomes for TEXT that is not UTF-8, and bit-exact REAL.
#[test]
fn comparator_rules() {
    let ok = |v: V| -> Answer {
        Ok(OkAnswer { columns: vec!["bad".into()], rows: vec![vec![v]], changes: None, last_insert_rowid: None })
    };
    let fail = |m: &str| -> Answer {
        Err(Fail { class: "Sqlite".into(), doc: false, ext: None, message: m.into(), index: None })
    };
    let local = ok(V::Text(vec![0xff, 0x41]));
    // The exact bytes: faithful.
    assert_eq!(compare(Kind::Query, &ok(V::Text(vec![0xff, 0x41])), &local), None);
    // A typed error naming the column and how to read it: faithful.
    let typed = fail("column \"bad\" holds TEXT that is not valid UTF-8; read it as a BLOB: CAST(bad AS BLOB)");
    assert_eq!(compare(Kind::Query, &typed, &local), None);
    // A silent replacement, or an error that says neither: not.
    assert!(compare(Kind::Query, &ok(V::Text("\u{FFFD}A".as_bytes().to_vec())), &local).is_some());
    assert!(compare(Kind::Query, &fail("invalid UTF-8"), &local).is_some());
    // REAL bit-for-bit: -0.0 is not 0.0.
    assert!(compare(Kind::Query, &ok(V::Real(0.0f64.to_bits())), &ok(V::Real((-0.0f64).to_bits()))).is_some());
    assert!(compare(Kind::Query, &ok(V::Int(1)), &ok(V::Real(1.0f64.to_bits()))).is_some());
    // Documented refusals must be INVALID_REQUEST.
    let doc: Answer = Err(documented("several statements in one execute"));
    let invalid: Answer = Err(Fail {
        class: "InvalidRequest".into(),
        doc: false,
        ext: None,
        message: "Execute takes exactly one statement".into(),
        index: None,
    });
    assert_eq!(compare(Kind::Execute, &invalid, &doc), None);
    assert!(compare(Kind::Execute, &fail("no such table: q"), &doc).is_some());
}
