//! The SQL side of a v5 result stream: one statement, prepared, bound and
//! stepped row by row on a reader connection inside one read transaction (one
//! WAL snapshot), by the stream's own thread (see `crate::sql::stream`, which
//! owns flow control, waiting and the wire).

use super::*;

/// A stream's statement while it runs: hands out one row at a time.
pub struct StreamCursor<'a> {
    /// The executor (error mapping, limits).
    x: &'a Executor,
    /// The reader the statement runs on (its deadline and sandbox).
    sc: &'a SqlConn,
    /// The running statement.
    rows: rusqlite::Rows<'a>,
    /// Column names: taken from the prepared statement, and again after the
    /// first step (a step re-prepares a statement whose schema changed).
    columns: Vec<String>,
    /// Whether `columns` was read after a step.
    named: bool,
    /// Rows returned so far (the cost counts at least these as read).
    stepped: u64,
}

/// A row and what it counts against credit and `maxResponseBytes`: its decoded
/// size, as `collect_rows` counts it.
pub type SizedRow = (Vec<Value>, usize);

impl StreamCursor<'_> {
    /// The next row, `None` at the end. The statement deadline
    /// (`max_statement_ms`) is armed for the work of producing this one row.
    pub fn next_row(&mut self) -> Result<Option<SizedRow>, SqliteError> {
        let x = self.x;
        let limits = &x.settings.limits;
        self.sc.deadline.arm(limits.max_statement_ms);
        let row = match self.rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(None),
            Err(e) => return Err(x.explain(self.sc, map_error(e, Some(&self.sc.deadline), Some(x)))),
        };
        self.stepped += 1;
        if !self.named {
            self.columns = AsRef::<Statement<'_>>::as_ref(row).column_names().map(String::from).collect();
            self.named = true;
        }
        let max_value = limits.max_value_bytes as usize;
        let mut values = Vec::with_capacity(self.columns.len());
        let mut size = std::mem::size_of::<Vec<Value>>();
        for i in 0..self.columns.len() {
            let v = row.get_ref(i).map_err(|e| x.explain(self.sc, map_error(e, None, Some(x))))?;
            let vb = sqlite_value_bytes(&v);
            if vb > max_value {
                return Err(limit_error(LimitKind::ValueBytes, max_value as u64, Some(vb as u64)));
            }
            let v = from_sqlite(v).map_err(|NotUtf8| rows::not_utf8(&self.columns, i))?;
            size += response_cost(&v);
            values.push(v);
        }
        Ok(Some((values, size)))
    }

    /// The result's column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Disarms the statement deadline: the stream is about to wait for its
    /// client, and waiting is bounded by the stream's lease, not by the deadline
    /// (the watchdog would otherwise interrupt an idle statement).
    pub fn pause(&self) {
        self.sc.deadline.disarm();
    }
}

/// What a stream's statement tells its owner about the reader it runs on.
pub trait ReaderHook {
    /// The reader's interrupt handle, before anything runs on it (a stop
    /// interrupts a long step with it).
    fn attach(&self, h: InterruptHandle);
    /// The statement is done with the reader: no interrupt may reach it from
    /// now on. Returns whether it was interrupted (it is then closed, not pooled).
    fn detach(&self) -> bool;
}

impl Executor {
    /// Runs a stream's statement: takes a reader, opens one read transaction,
    /// prepares `route`'s statement, checks it is read-only, binds `params`,
    /// and calls `body` with a cursor over its rows. `hook` is given the
    /// reader's interrupt handle before anything runs, and takes it back when
    /// the statement is done; the snapshot then ends and the reader goes back
    /// to the pool unless it was interrupted. Err: the statement could not start.
    pub fn stream_statement<T>(
        &self,
        sql: &str,
        route: &Route,
        params: &[Value],
        hook: &dyn ReaderHook,
        body: impl FnOnce(&mut StreamCursor<'_>) -> T,
    ) -> Result<T, SqliteError> {
        if let Some(e) = self.refuse_start() {
            return Err(e);
        }
        if self.reads_need_writer() {
            // Such an actor answers its reads on the writer (see `writer_local`);
            // a stream cannot hold the writer, and a reader would answer differently.
            return Err(err(
                SqliteErrorCode::InvalidRequest,
                "this actor's writer holds connection state of its own (TEMP objects or connection PRAGMAs), so \
                 its reads run on the writer; a result stream runs on a reader snapshot and cannot see that state \
                 (use Execute)",
                Some(false),
            ));
        }
        let sc = self.take_reader()?;
        hook.attach(sc.conn.get_interrupt_handle());
        let out = self.stream_on(&sc, sql, route, params, body);
        sc.deadline.disarm();
        let interrupted = hook.detach();
        let ended = sc.conn.is_autocommit() || sc.conn.execute_batch("COMMIT").is_ok();
        if ended && !interrupted {
            self.give_back_reader(sc);
        }
        out
    }

    fn stream_on<T>(
        &self,
        sc: &SqlConn,
        sql: &str,
        route: &Route,
        params: &[Value],
        body: impl FnOnce(&mut StreamCursor<'_>) -> T,
    ) -> Result<T, SqliteError> {
        let conn = &sc.conn;
        sc.sandbox.clear_denial();
        sc.deadline.arm(self.settings.limits.max_statement_ms);
        // One read transaction for the whole stream: its snapshot is taken at the
        // first read and held until the stream ends.
        conn.prepare_cached("BEGIN")
            .and_then(|mut s| s.raw_execute())
            .map_err(|e| self.explain(sc, map_error(e, None, Some(self))))?;
        let mut stmt = conn
            .prepare(route.statement(sql))
            .map_err(|e| self.explain(sc, map_error(e, Some(&sc.deadline), Some(self))))?;
        // Transaction control is read-only for SQLite but would end the snapshot.
        if !stmt.readonly() || matches!(route.kind, Kind::Transaction | Kind::Vacuum) {
            let mut e = err(
                SqliteErrorCode::Sqlite,
                "a result stream runs one read-only statement on a snapshot; this statement writes (or controls \
                 transactions): use Execute or ExecuteWrite",
                Some(false),
            );
            e.extended_code = Some(ffi::SQLITE_READONLY);
            return Err(e);
        }
        let expected = stmt.parameter_count();
        if expected != params.len() {
            return Err(err(
                SqliteErrorCode::InvalidRequest,
                &format!("the statement takes {expected} parameter(s) but {} were given", params.len()),
                Some(false),
            ));
        }
        for (i, p) in params.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, Bind(p)).map_err(|e| self.explain(sc, map_error(e, None, Some(self))))?;
        }
        let columns = stmt.column_names().map(String::from).collect();
        let changes_before = crate::sql::cost::before_statement(conn, &stmt);
        let mut cursor = StreamCursor { x: self, sc, rows: stmt.raw_query(), columns, named: false, stepped: 0 };
        let out = body(&mut cursor);
        let returned = cursor.stepped;
        drop(cursor);
        crate::sql::cost::note_statement(conn, &stmt, changes_before, returned);
        Ok(out)
    }
}
