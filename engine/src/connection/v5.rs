//! Admission of the v5 SQL requests this engine part implements: ExecV5,
//! ExecuteV5 and batches. Same checks as v4 (placement, fence, limits, pending
//! bound), plus the request key (16 bytes, not too far ahead: else
//! INVALID_REQUEST) and, for batches, their size and every statement. The cost
//! clock starts once a request is admitted.

use super::admission::{self, Rejection};
use super::scheduler::{Job, Work};
use super::Conn;
use crate::metrics::{RequestKind, RouteLabel};
use crate::sql::cost::{CostClock, Rows};
use crate::sql::keys::{self, KeyedRequest, RequestDigest};
use crate::sql::route::{Lane, Route};
use crate::sql::v5::{self as answers, V5Req};
use envoy_protocol::{
    RequestKey, SqliteBatchRequest, SqliteExecRequestV5, SqliteExecuteRequestV5, SqliteTransactionMode, ToEnvoy,
};

/// Kinds named in a request's digest (a key reused by another kind conflicts).
const KIND_EXEC: &str = "exec";
const KIND_EXECUTE: &str = "execute";
const KIND_BATCH: &str = "batch";

fn mode_tag(m: SqliteTransactionMode) -> u8 {
    match m {
        SqliteTransactionMode::Read => 0,
        SqliteTransactionMode::Write => 1,
        SqliteTransactionMode::Deferred => 2,
    }
}

impl Conn {
    /// Checks a request key (None without one).
    fn admit_key(
        &self,
        key: Option<RequestKey>,
        digest: impl FnOnce() -> [u8; 20],
    ) -> Result<Option<KeyedRequest>, Rejection> {
        match key {
            None => Ok(None),
            Some(k) => keys::admit(k, digest(), &self.state.exec_settings.keys).map(Some).map_err(Rejection::Invalid),
        }
    }

    /// `ToEngineSqliteExecuteV5`.
    pub(super) fn execute_v5(&self, request_id: u32, req: SqliteExecuteRequestV5, frame_len: usize) {
        let had_key = req.request_key.is_some();
        let params = req.statement.params.unwrap_or_default();
        let sql = req.statement.sql;
        let write = req.writer;
        let mut route = None;
        let mut key = None;
        let admitted = self.admit(&req.actor_id, req.generation, frame_len, || {
            admission::check_sql(&self.state.config.limits, &sql, &params)?;
            let r = Route::of_execute(&sql, write).map_err(|m| Rejection::Invalid(m.into()))?;
            key = self.admit_key(req.request_key, || {
                let mut d = RequestDigest::new(KIND_EXECUTE, &req.actor_id);
                d.tag(u8::from(write));
                d.text(r.statement(&sql));
                d.params(&params);
                d.finish()
            })?;
            if key.is_some() && r.kind.runs_alone() {
                return Err(Rejection::Invalid(
                    "a request key cannot make a statement that manages transactions, VACUUM or PRAGMA exactly-once; \
                     use a batch or an interactive transaction"
                        .into(),
                ));
            }
            route = Some(r);
            Ok(())
        });
        match admitted {
            Ok(admitted) => {
                let Some(route) = route else { unreachable!("admitted requests have a route") };
                // A keyed statement that only reads stays on a reader: it commits nothing,
                // so its key is never recorded (§9.3 rule 3) and needs no lookup. One that
                // turns out to write is handed to the writer, key and all.
                let kind = if write { RequestKind::ExecuteWrite } else { RequestKind::Execute };
                let timer = self.state.metrics.request(kind, RouteLabel::of(route.lane));
                let v5 = V5Req { clock: CostClock::start(), key };
                let work = Work::ExecuteV5 { request_id, sql, params, write, route, v5 };
                self.scheduler.submit(Job::admitted(work, route.lane, timer, admitted));
            }
            Err(rej) => {
                let clock = CostClock::start();
                let outcome = had_key.then_some(envoy_protocol::RequestKeyOutcome::Executed);
                self.outbox.send(match rej.to_sqlite() {
                    Ok(f) => ToEnvoy::SqliteExecuteResponseV5(envoy_protocol::ToEnvoySqliteExecuteResponseV5 {
                        request_id,
                        result: envoy_protocol::SqliteExecuteResult::SqliteFenceMismatch(f),
                        cost: clock.cost(Rows::default()),
                        request_key: outcome,
                    }),
                    Err(e) => answers::execute_answer(request_id, Err(e), clock.cost(Rows::default()), outcome),
                });
            }
        }
    }

    /// `ToEngineSqliteExecV5`.
    pub(super) fn exec_v5(&self, request_id: u32, req: SqliteExecRequestV5, frame_len: usize) {
        let had_key = req.request_key.is_some();
        let mut key = None;
        let sql = req.sql;
        let admitted = self.admit(&req.actor_id, req.generation, frame_len, || {
            admission::check_sql(&self.state.config.limits, &sql, &[])?;
            key = self.admit_key(req.request_key, || {
                let mut d = RequestDigest::new(KIND_EXEC, &req.actor_id);
                d.text(&sql);
                d.finish()
            })?;
            let manages = crate::sql::route::statements(&sql).any(|s| crate::sql::route::Kind::of(s).runs_alone());
            if key.is_some() && manages {
                return Err(Rejection::Invalid(
                    "a request key cannot make SQL that manages transactions, VACUUM or PRAGMA exactly-once; \
                     use a batch or an interactive transaction"
                        .into(),
                ));
            }
            Ok(())
        });
        match admitted {
            Ok(admitted) => {
                let v5 = V5Req { clock: CostClock::start(), key };
                let timer = self.state.metrics.request(RequestKind::Exec, RouteLabel::Write);
                self.scheduler.submit(Job::admitted(
                    Work::ExecV5 { request_id, sql, v5 },
                    Lane::Writer,
                    timer,
                    admitted,
                ));
            }
            Err(rej) => {
                let clock = CostClock::start();
                let outcome = had_key.then_some(envoy_protocol::RequestKeyOutcome::Executed);
                self.outbox.send(match rej.to_sqlite() {
                    Ok(f) => ToEnvoy::SqliteExecResponseV5(envoy_protocol::ToEnvoySqliteExecResponseV5 {
                        request_id,
                        result: envoy_protocol::SqliteExecResult::SqliteFenceMismatch(f),
                        cost: clock.cost(Rows::default()),
                        request_key: outcome,
                    }),
                    Err(e) => answers::exec_answer(request_id, Err(e), clock.cost(Rows::default()), outcome),
                });
            }
        }
    }

    /// `ToEngineSqliteBatch`.
    pub(super) fn batch(&self, request_id: u32, req: SqliteBatchRequest, frame_len: usize) {
        let had_key = req.request_key.is_some();
        let mut key = None;
        let mut batch = None;
        let mut statement_error = None;
        let cfg = &self.state.config;
        let statements = req.statements;
        let mode = req.mode;
        let admitted = self.admit(&req.actor_id, req.generation, frame_len, || {
            // The digest reads the statements: only once they passed their checks.
            let digest = {
                let mut d = RequestDigest::new(KIND_BATCH, &req.actor_id);
                d.tag(mode_tag(mode));
                d.count(statements.len());
                for s in &statements {
                    d.text(&s.sql);
                    d.params(s.params.as_deref().unwrap_or(&[]));
                }
                d
            };
            match crate::sql::batch::admit(statements, mode, &cfg.limits, cfg.max_batch_statements) {
                Ok(b) => batch = Some(b),
                Err(e) => {
                    statement_error = Some(e);
                    return Err(Rejection::Invalid(String::new()));
                }
            }
            key = self.admit_key(req.request_key, || digest.finish())?;
            Ok(())
        });
        match admitted {
            Ok(admitted) => {
                let Some(batch) = batch else { unreachable!("admitted batches are checked") };
                let lane = batch.lane();
                let timer = self.state.metrics.request(RequestKind::Batch, RouteLabel::of(lane));
                let v5 = V5Req { clock: CostClock::start(), key };
                self.scheduler.submit(Job::admitted(Work::Batch { request_id, batch, v5 }, lane, timer, admitted));
            }
            Err(rej) => {
                let clock = CostClock::start();
                let outcome = had_key.then_some(envoy_protocol::RequestKeyOutcome::Executed);
                let result = match (statement_error, rej.to_sqlite()) {
                    (Some(e), _) | (None, Err(e)) => Err(e),
                    (None, Ok(f)) => {
                        self.outbox.send(ToEnvoy::SqliteBatchResponse(envoy_protocol::ToEnvoySqliteBatchResponse {
                            request_id,
                            result: answers::batch_fence(f),
                            cost: clock.cost(Rows::default()),
                            request_key: outcome,
                        }));
                        return;
                    }
                };
                self.outbox.send(answers::batch_answer(request_id, result, clock.cost(Rows::default()), outcome));
            }
        }
    }
}
