//! Seeded simulations of the v5 client core against the scripted fake
//! engine: exactly-once re-sends with identical keys, the v4 fallback,
//! batches, transactions ended by the engine, and stream credit.

use super::*;

const ACTOR: &str = "a1";

fn execute(sql: &str, write: bool) -> Request {
    Request::SqlExecute { actor_id: ACTOR.into(), generation: 1, sql: sql.into(), params: None, write }
}

fn statement(sql: &str) -> p::SqliteStatement {
    p::SqliteStatement { sql: sql.into(), params: None }
}

fn batch(mode: p::SqliteTransactionMode, sqls: &[&str]) -> Request {
    Request::SqlBatch {
        actor_id: ACTOR.into(),
        generation: 1,
        mode,
        statements: sqls.iter().map(|s| statement(s)).collect(),
    }
}

fn stream(credit_bytes: u32) -> Request {
    Request::SqlStream {
        actor_id: ACTOR.into(),
        generation: 1,
        statement: statement("SELECT n, body FROM t"),
        credit_bytes,
        lease_ms: 10_000,
    }
}

/// The keys the engine received for `id`, in order.
fn keys_for(sim: &Sim, id: RequestId) -> Vec<Option<Vec<u8>>> {
    sim.engine.keys_seen.iter().filter(|(r, _)| *r == id).map(|(_, k)| k.clone()).collect()
}

/// Begins a transaction and returns it.
fn begin(sim: &mut Sim) -> TxRef {
    let id = sim.submit(Request::SqlBegin {
        actor_id: ACTOR.into(),
        generation: 1,
        mode: p::SqliteTransactionMode::Write,
        lease_ms: 10_000,
    });
    match sim.result(id) {
        Ok(Response::TransactionStarted { tx, lease_ms: 10_000, .. }) => *tx,
        other => panic!("begin: {other:?}"),
    }
}

#[test]
fn v5_session_reports_durability_and_engine_limits() {
    let sim = Sim::new(cfg(), 5);
    let session = sim.core.session().unwrap();
    assert_eq!(session.protocol_version, 5);
    assert_eq!(session.durability, Some(p::Durability::Fsync));
    assert_eq!(session.engine_limits.as_ref().map(|l| l.max_batch_statements), Some(4));
    match sim.states.last() {
        Some(ConnectionState::Connected(s)) => assert_eq!(s.durability, Some(p::Durability::Fsync)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn keyed_writes_are_resent_with_identical_keys_after_a_cut_and_replayed() {
    let mut sim = Sim::new(cfg(), 5);
    // The engine runs everything but every answer is lost with the connection.
    sim.engine.answer = Answer::LoseAnswers;
    let write = sim.submit(execute("INSERT INTO t VALUES (1)", true));
    let routed = sim.submit(execute("SELECT 1", false));
    let exec = sim.submit(Request::SqlExec { actor_id: ACTOR.into(), generation: 1, sql: "CREATE TABLE t(x)".into() });
    let b = sim.submit(batch(p::SqliteTransactionMode::Write, &["INSERT 1", "INSERT 2"]));
    for id in [write, routed, exec, b] {
        assert!(!sim.results.contains_key(&id));
        assert_eq!(keys_for(&sim, id).len(), 1);
        assert_eq!(keys_for(&sim, id)[0].as_deref(), Some(&sim.keys[&id].as_bytes()[..]), "the submitted key is sent");
    }
    sim.kill_socket();
    for id in [write, routed, exec, b] {
        assert!(!sim.results.contains_key(&id), "a keyed request is not failed on a v5 disconnect");
    }
    // Lose the connection again before anything is answered: still no IndeterminateResult.
    sim.reconnect();
    sim.kill_socket();
    sim.engine.answer = Answer::Now;
    sim.reconnect();
    for id in [write, routed, exec, b] {
        let keys = keys_for(&sim, id);
        assert_eq!(keys.len(), 3, "request {id} sent on each of the three connections");
        assert!(keys.iter().all(|k| k == &keys[0]), "request {id} re-sent with the identical key");
    }
    // The first send committed: the engine replays its outcome.
    match sim.result(write) {
        Ok(Response::ExecuteV5 { result, meta }) => {
            assert_eq!(result.changes, 1);
            assert_eq!(meta.key_outcome, Some(p::RequestKeyOutcome::Replayed));
            assert!(meta.cost.is_some());
        }
        other => panic!("{other:?}"),
    }
    // A read is keyed too but not recorded: it simply ran again.
    match sim.result(routed) {
        Ok(Response::ExecuteV5 { meta, .. }) => assert_eq!(meta.key_outcome, Some(p::RequestKeyOutcome::Executed)),
        other => panic!("{other:?}"),
    }
    match sim.result(b) {
        Ok(Response::Batch { results, meta }) => {
            assert_eq!(results.len(), 2);
            assert_eq!(meta.key_outcome, Some(p::RequestKeyOutcome::Replayed));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(sim.result(exec), Ok(Response::QueryV5 { .. })));
    assert_eq!(sim.core.pending_len(), 0);
}

#[test]
fn distinct_writes_get_distinct_keys_with_the_time_in_front() {
    let mut sim = Sim::new(cfg(), 5);
    let a = sim.submit(execute("INSERT 1", true));
    sim.now += 5;
    let b = sim.submit(execute("INSERT 2", true));
    assert_ne!(sim.keys[&a], sim.keys[&b]);
    assert_eq!(sim.keys[&a].unix_ms(), 1_800_000_000_000);
    assert_eq!(sim.keys[&b].unix_ms(), 1_800_000_000_005);
    // Read-only batches, KV, begin and streams carry no key.
    assert!(!batch(p::SqliteTransactionMode::Read, &["SELECT 1"]).wants_key());
    assert!(batch(p::SqliteTransactionMode::Deferred, &["SELECT 1"]).wants_key());
    assert!(!stream(1).wants_key());
}

#[test]
fn a_v4_session_keeps_indeterminate_result() {
    // Negotiated v4 from the start: no key on the wire, a lost write is unknown.
    let mut sim = Sim::new(cfg(), 4);
    sim.engine.answer = Answer::Hold;
    let write = sim.submit(execute("INSERT INTO t VALUES (1)", true));
    assert!(sim.keys.contains_key(&write), "the driver made a key");
    assert!(matches!(sim.engine.received.last(), Some(p::ToEngine::SqliteExecuteWrite(_))), "sent as v4");
    sim.kill_socket();
    assert_eq!(sim.result(write), &Err(Error::IndeterminateResult));

    // Sent keyed at v5, but the next connection lands on a v4 engine: it
    // cannot be re-sent safely, so it stays unknown.
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.answer = Answer::Hold;
    let write = sim.submit(execute("INSERT INTO t VALUES (1)", true));
    sim.kill_socket();
    assert!(!sim.results.contains_key(&write));
    sim.engine.version = 4;
    sim.reconnect();
    assert_eq!(sim.core.version(), Some(4));
    assert_eq!(sim.result(write), &Err(Error::IndeterminateResult));
    assert_eq!(sim.engine.seen[&write], 1, "never sent without its key");
}

#[test]
fn v5_requests_below_v5_fail_fast_with_remote_unavailable() {
    let mut sim = Sim::new(cfg(), 4);
    let b = sim.submit(batch(p::SqliteTransactionMode::Write, &["INSERT 1"]));
    let s = sim.submit(stream(1024));
    for (id, feature) in [(b, p::Feature::AtomicBatch), (s, p::Feature::ResultStreams)] {
        match sim.result(id) {
            Err(Error::RemoteUnavailable(c)) => {
                assert_eq!(c.feature, feature);
                assert_eq!(c.target_version, 4);
            }
            other => panic!("{other:?}"),
        }
        assert!(!sim.engine.seen.contains_key(&id));
    }
    assert!(sim.connected());
}

#[test]
fn batch_errors_carry_the_failing_statement_index_and_limits_are_checked_first() {
    let mut sim = Sim::new(cfg(), 5);
    let b = sim.submit(batch(p::SqliteTransactionMode::Write, &["INSERT 1", "INSERT 2", "FAIL"]));
    match sim.result(b) {
        Err(e @ Error::Sql { code: p::SqliteErrorCode::Sqlite, committed: Some(false), .. }) => {
            assert_eq!(e.statement_index(), Some(2));
        }
        other => panic!("{other:?}"),
    }
    // maxBatchStatements is 4: five statements never leave the client.
    let big = sim.submit(batch(p::SqliteTransactionMode::Write, &["INSERT"; 5]));
    match sim.result(big) {
        Err(Error::LimitExceeded { kind: p::LimitKind::BatchStatements, max: 4, actual: Some(5), .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(!sim.engine.seen.contains_key(&big));
    // The SQL limits apply to every statement of a batch.
    let long = "x".repeat(1_001);
    let b = sim.submit(batch(p::SqliteTransactionMode::Read, &["SELECT 1", &long]));
    assert!(matches!(sim.result(b), Err(Error::LimitExceeded { kind: p::LimitKind::SqlBytes, .. })));
}

#[test]
fn a_transaction_ended_by_the_engine_fails_later_use_at_once() {
    for (reason, lease) in [
        (p::TransactionEndReason::LeaseExpired, true),
        (p::TransactionEndReason::ActorStopping, false),
        (p::TransactionEndReason::StatementFailed, false),
    ] {
        let mut sim = Sim::new(cfg(), 5);
        let tx = begin(&mut sim);
        let ok = sim.submit(Request::SqlTxExecute {
            actor_id: ACTOR.into(),
            generation: 1,
            tx,
            statement: statement("UPDATE"),
        });
        assert!(matches!(sim.result(ok), Ok(Response::ExecuteV5 { .. })));
        sim.engine.send(p::ToEnvoy::SqliteTransactionEnded(p::ToEnvoySqliteTransactionEnded {
            actor_id: ACTOR.into(),
            generation: 1,
            transaction_id: tx.id,
            reason,
        }));
        sim.run();
        let before = sim.engine.received.len();
        let late = sim.submit(Request::SqlTxExecute {
            actor_id: ACTOR.into(),
            generation: 1,
            tx,
            statement: statement("UPDATE"),
        });
        let commit = sim.submit(Request::SqlCommit { actor_id: ACTOR.into(), generation: 1, tx });
        for id in [late, commit] {
            match (sim.result(id), lease) {
                (Err(Error::TransactionExpired { .. }), true) => {}
                (Err(Error::TransactionAborted { reason: Some(r), .. }), false) => assert_eq!(*r, reason),
                (other, _) => panic!("{reason:?}: {other:?}"),
            }
        }
        // A rollback of it succeeds without a round trip (it is rolled back).
        let rb = sim.submit(Request::SqlRollback { actor_id: ACTOR.into(), generation: 1, tx });
        assert_eq!(sim.result(rb), &Ok(Response::RolledBack { cost: None }));
        assert_eq!(sim.engine.received.len(), before, "nothing was sent for a dead transaction");
    }
}

#[test]
fn a_statement_answer_that_ends_the_transaction_is_remembered() {
    let mut sim = Sim::new(cfg(), 5);
    let tx = begin(&mut sim);
    sim.engine.answer = Answer::Hold;
    let stmt =
        sim.submit(Request::SqlTxExecute { actor_id: ACTOR.into(), generation: 1, tx, statement: statement("X") });
    let request_id = stmt;
    sim.engine.held.clear();
    sim.engine.send(p::ToEnvoy::SqliteTransactionExecuteResponse(p::ToEnvoySqliteTransactionExecuteResponse {
        request_id,
        result: p::SqliteExecuteResult::SqliteError(sql_error(p::SqliteErrorCode::TransactionAborted, None)),
        cost: cost(),
        transaction_end: Some(p::TransactionEndReason::StatementFailed),
    }));
    sim.run();
    match sim.result(stmt) {
        Err(Error::TransactionAborted { reason: Some(p::TransactionEndReason::StatementFailed), .. }) => {}
        other => panic!("{other:?}"),
    }
    let next =
        sim.submit(Request::SqlTxExecute { actor_id: ACTOR.into(), generation: 1, tx, statement: statement("Y") });
    assert!(matches!(
        sim.result(next),
        Err(Error::TransactionAborted { reason: Some(p::TransactionEndReason::StatementFailed), .. })
    ));
}

#[test]
fn a_lost_commit_is_resent_by_its_key_and_other_statements_die_with_the_connection() {
    let mut sim = Sim::new(cfg(), 5);
    let tx = begin(&mut sim);
    // The commit runs in the engine, its answer is lost; a statement of
    // another transaction is lost too; a rollback's answer too.
    let other = begin(&mut sim);
    let third = begin(&mut sim);
    sim.engine.answer = Answer::LoseAnswers;
    let commit = sim.submit(Request::SqlCommit { actor_id: ACTOR.into(), generation: 1, tx });
    let stmt = sim.submit(Request::SqlTxExecute {
        actor_id: ACTOR.into(),
        generation: 1,
        tx: other,
        statement: statement("U"),
    });
    let rb = sim.submit(Request::SqlRollback { actor_id: ACTOR.into(), generation: 1, tx: third });
    sim.kill_socket();
    match sim.result(stmt) {
        Err(Error::TransactionAborted { reason: Some(p::TransactionEndReason::ConnectionClosed), .. }) => {}
        r => panic!("{r:?}"),
    }
    assert_eq!(sim.result(rb), &Ok(Response::RolledBack { cost: None }), "the connection rolled it back");
    assert!(!sim.results.contains_key(&commit), "the commit waits for its re-send");
    sim.engine.answer = Answer::Now;
    sim.reconnect();
    // On the new connection the engine numbers transactions from 1 again:
    // begin one so that the old id names a live transaction there.
    let fresh = begin(&mut sim);
    assert_eq!(fresh.id, tx.id, "the engine reused the number");
    match sim.result(commit) {
        Ok(Response::Committed { changes: 2, meta }) => {
            assert_eq!(meta.key_outcome, Some(p::RequestKeyOutcome::Replayed));
        }
        r => panic!("{r:?}"),
    }
    let commits: Vec<u64> = sim
        .engine
        .received
        .iter()
        .filter_map(|m| match m {
            p::ToEngine::SqliteCommit(c) if c.request_id == commit => Some(c.request.transaction_id),
            _ => None,
        })
        .collect();
    assert_eq!(commits, vec![tx.id, request::RESENT_COMMIT_TRANSACTION_ID], "the re-send names no real transaction");
    assert!(
        sim.engine.open_tx.contains(&fresh.id),
        "the new connection's transaction was not committed by the re-send"
    );
    let keys = keys_for(&sim, commit);
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);

    // A statement or commit submitted after the cut for a transaction of the
    // old connection fails at once.
    let late = sim.submit(Request::SqlCommit { actor_id: ACTOR.into(), generation: 1, tx: other });
    assert!(matches!(
        sim.result(late),
        Err(Error::TransactionAborted { reason: Some(p::TransactionEndReason::ConnectionClosed), .. })
    ));
}

#[test]
fn a_commit_that_did_not_happen_is_reported_after_the_resend() {
    let mut sim = Sim::new(cfg(), 5);
    let tx = begin(&mut sim);
    // The commit never reaches the engine's table (held, then lost).
    sim.engine.answer = Answer::Hold;
    let commit = sim.submit(Request::SqlCommit { actor_id: ACTOR.into(), generation: 1, tx });
    sim.kill_socket();
    sim.engine.answer = Answer::Now;
    sim.reconnect();
    // The engine has no record and no such transaction: it did not commit.
    assert!(matches!(sim.result(commit), Err(Error::TransactionNotFound { .. })));
}

/// 200 rows of about 100 bytes each at their decoded size.
fn rows(n: usize) -> Vec<Vec<p::Value>> {
    (0..n).map(|i| vec![p::Value::Integer(i as i64), p::Value::Text("x".repeat(50))]).collect()
}

#[test]
fn stream_credit_never_lets_more_than_the_window_be_outstanding() {
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.stream_rows = rows(200);
    let row = flow::row_bytes(&sim.engine.stream_rows[0]);
    let window = (row * 10) as u32;
    let id = sim.submit(stream(window));
    let mut consumed_rows = 0;
    let mut steps = 0;
    while !sim.results.contains_key(&id) {
        steps += 1;
        assert!(steps < 1_000, "the stream stalled");
        // Client side: granted-but-unconsumed never passes the window, and
        // rows held unconsumed never pass it by more than one row.
        let f = sim.core.stream_flow(id).expect("open").clone();
        assert!(f.outstanding() <= f.window, "{f:?}");
        let held: u64 = sim.stream_chunks.get(&id).map_or(0, |q| q.iter().map(|(_, b)| *b).sum());
        assert!(held <= f.window + row, "client holds {held} bytes, window {}", f.window);
        // Engine side: it never sent more than granted plus one row.
        let st = &sim.engine.streams[&id];
        assert!(st.sent <= st.granted + row);
        // Consume one chunk at a time (a slow consumer).
        let before = sim.stream_delivered.get(&id).copied().unwrap_or(0);
        consumed_rows += sim.stream_chunks.get(&id).and_then(|q| q.front()).map_or(0, |(r, _)| r.len());
        sim.consume(id, 1);
        assert!(sim.stream_delivered.get(&id).copied().unwrap_or(0) >= before);
    }
    assert_eq!(sim.stream_delivered[&id], 200, "every row delivered once");
    assert!(consumed_rows <= 200);
    assert!(matches!(sim.result(id), Ok(Response::StreamDone { cost: Some(_) })));
    let credits = sim.engine.count(|m| matches!(m, p::ToEngine::SqliteStreamCredit(c) if c.request_id == id));
    assert!(credits >= 2, "credit flowed back in several messages ({credits})");
    assert!(credits <= 40, "credit is batched, not sent per row ({credits})");
    let (granted, sent) = sim.engine.stream_totals[&id];
    assert!(sent <= granted + row);
    assert_eq!(sim.core.pending_len(), 0);
    assert!(sim.core.stream_flow(id).is_none());
}

#[test]
fn a_stream_nobody_consumes_stalls_at_its_window() {
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.stream_rows = rows(200);
    let row = flow::row_bytes(&sim.engine.stream_rows[0]);
    let id = sim.submit(stream((row * 8) as u32));
    sim.advance(1_000);
    let delivered = sim.stream_delivered[&id];
    assert!((8..=9).contains(&delivered), "the window's worth and at most one row more: {delivered}");
    assert_eq!(sim.engine.count(|m| matches!(m, p::ToEngine::SqliteStreamCredit(_))), 0);
}

#[test]
fn dropping_a_stream_cancels_it_and_frees_its_id_at_the_last_message() {
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.stream_rows = rows(100);
    let row = flow::row_bytes(&sim.engine.stream_rows[0]);
    let id = sim.submit(stream((row * 4) as u32));
    assert!(sim.stream_delivered[&id] > 0);
    sim.core.stream_cancel(id);
    sim.run();
    assert_eq!(sim.engine.count(|m| matches!(m, p::ToEngine::SqliteStreamCancel(c) if c.request_id == id)), 1);
    assert!(matches!(sim.result(id), Err(Error::Cancelled { .. })));
    assert_eq!(sim.core.pending_len(), 0);
    // Consumption reported after the cancel grants nothing.
    sim.core.stream_consumed(id, 10_000);
    sim.run();
    assert_eq!(sim.engine.count(|m| matches!(m, p::ToEngine::SqliteStreamCredit(_))), 0);

    // A stream cancelled before it was sent is never sent.
    let mut sim = Sim::new(cfg(), 5);
    sim.auto_connect = false;
    sim.kill_socket();
    let id = sim.submit(stream(1024));
    sim.core.stream_cancel(id);
    sim.run();
    assert!(matches!(sim.result(id), Err(Error::Cancelled { .. })));
    sim.auto_connect = true;
    sim.reconnect();
    assert!(!sim.engine.seen.contains_key(&id));
}

#[test]
fn a_disconnect_fails_an_open_stream_typed_and_rows_already_delivered_stay() {
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.stream_rows = rows(100);
    let row = flow::row_bytes(&sim.engine.stream_rows[0]);
    let id = sim.submit(stream((row * 4) as u32));
    let delivered = sim.stream_delivered[&id];
    sim.kill_socket();
    assert_eq!(sim.result(id), &Err(Error::StreamInterrupted));
    assert_eq!(sim.stream_delivered[&id], delivered);
    sim.reconnect();
    assert_eq!(sim.engine.seen[&id], 1, "a stream is not re-opened behind the consumer's back");
}

#[test]
fn new_error_codes_map_to_typed_variants() {
    use p::SqliteErrorCode as C;
    type Check = fn(&Error) -> bool;
    let cases: Vec<(C, Check)> = vec![
        (C::RequestKeyExpired, |e| matches!(e, Error::RequestKeyExpired { .. })),
        (C::RequestKeyConflict, |e| matches!(e, Error::RequestKeyConflict { .. })),
        (C::TransactionNotFound, |e| matches!(e, Error::TransactionNotFound { .. })),
        (C::TransactionExpired, |e| matches!(e, Error::TransactionExpired { .. })),
        (C::TransactionBusy, |e| matches!(e, Error::TransactionBusy { .. })),
        (C::TransactionAborted, |e| matches!(e, Error::TransactionAborted { reason: None, .. })),
        (C::StreamExpired, |e| matches!(e, Error::StreamExpired { .. })),
        (C::Cancelled, |e| matches!(e, Error::Cancelled { .. })),
    ];
    for (code, check) in cases {
        let e = request::map_sql_error(sql_error(code, None), None);
        assert!(check(&e), "{code:?} mapped to {e:?}");
    }
    assert!(!Error::RequestKeyExpired { message: String::new() }.is_not_run(), "the first send may have run");
    assert!(Error::RequestKeyConflict { message: String::new() }.is_not_run());

    // KV limits are typed at v5; actor placement limits too.
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.answer = Answer::Hold;
    let put = sim.kv_put(b"k");
    let goc = sim.submit(Request::GetOrCreateActor { name: "n".into(), key: "k".into() });
    let goc2 = sim.submit(Request::GetOrCreateActor { name: "n".into(), key: "k2".into() });
    sim.engine.send(p::ToEnvoy::KvResponse(p::ToEnvoyKvResponse {
        request_id: put,
        data: p::KvResponseData::KvLimitExceeded(p::KvLimitExceeded {
            message: "value too large".into(),
            limit: p::LimitExceeded { kind: p::LimitKind::KvValueBytes, max: 65_536, actual: Some(70_000) },
        }),
    }));
    for (id, code) in [(goc, p::ActorErrorCode::LimitExceeded), (goc2, p::ActorErrorCode::Overloaded)] {
        sim.engine.send(p::ToEnvoy::GetOrCreateActorResponse(p::ToEnvoyGetOrCreateActorResponse {
            request_id: id,
            result: p::GetOrCreateActorResult::GetOrCreateActorError(p::GetOrCreateActorError {
                code,
                message: "m".into(),
            }),
        }));
    }
    sim.run();
    match sim.result(put) {
        Err(Error::LimitExceeded { kind: p::LimitKind::KvValueBytes, max: 65_536, actual: Some(70_000), .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(sim.result(goc), Err(Error::ActorLimitExceeded { .. })));
    assert!(matches!(sim.result(goc2), Err(Error::Overloaded { .. })));
}

#[test]
fn close_settles_keyed_writes_waiting_for_their_resend_as_indeterminate() {
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.answer = Answer::Hold;
    sim.auto_connect = false;
    let write = sim.submit(execute("INSERT 1", true));
    let unsent_before_cut = sim.core.pending_len();
    assert_eq!(unsent_before_cut, 1);
    sim.kill_socket();
    let queued = sim.submit(execute("INSERT 2", true));
    sim.core.close(sim.now);
    sim.run();
    assert_eq!(sim.result(write), &Err(Error::IndeterminateResult), "it was sent: it may have run");
    assert_eq!(sim.result(queued), &Err(Error::Closed), "never sent");
}

mod properties {
    //! Random interleavings at v5 of keyed writes, reads, KV writes, answers,
    //! answers lost after the engine ran the request, link failures and time:
    //! every request settles exactly once, a keyed write never ends
    //! `IndeterminateResult` and the engine runs each key at most once.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        SqlWrite,
        SqlRead,
        Batch,
        KvPut,
        /// The engine answers up to n held requests.
        Answer(usize),
        /// The engine runs up to n held requests; their answers are lost.
        RunLosing(usize),
        Kill,
        Advance(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::SqlWrite),
            2 => Just(Step::SqlRead),
            2 => Just(Step::Batch),
            1 => Just(Step::KvPut),
            3 => (1usize..6).prop_map(Step::Answer),
            2 => (1usize..6).prop_map(Step::RunLosing),
            2 => Just(Step::Kill),
            2 => (1u64..2_000).prop_map(Step::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn keyed_writes_run_once_and_are_never_indeterminate(steps in proptest::collection::vec(step(), 1..60)) {
            let mut sim = Sim::new(cfg(), 5);
            sim.engine.answer = Answer::Hold;
            let mut keyed = Vec::new();
            let mut kv = Vec::new();
            for s in steps {
                match s {
                    Step::SqlWrite => keyed.push(sim.submit(execute("INSERT INTO t VALUES (1)", true))),
                    Step::SqlRead => keyed.push(sim.submit(execute("SELECT 1", false))),
                    Step::Batch => keyed.push(sim.submit(batch(p::SqliteTransactionMode::Write, &["INSERT 1", "INSERT 2"]))),
                    Step::KvPut => kv.push(sim.kv_put(b"k")),
                    Step::Answer(n) => { sim.engine.answer_held(n); sim.run(); }
                    Step::RunLosing(n) => sim.engine.run_held_losing_answers(n),
                    Step::Kill => { if sim.open { sim.kill_socket(); } }
                    Step::Advance(ms) => sim.advance(ms),
                }
            }
            // Settle: the link comes back and the engine answers everything.
            sim.auto_connect = true;
            sim.engine.answer = Answer::Now;
            for _ in 0..20 {
                sim.engine.answer_held(usize::MAX);
                sim.run();
                sim.advance(5_000);
            }
            for id in &keyed {
                match sim.results.get(id) {
                    Some(Ok(_)) => {}
                    other => prop_assert!(false, "keyed request {} ended {:?}", id, other),
                }
                let key = sim.keys[id].as_bytes().to_vec();
                prop_assert!(sim.engine.executions.get(&key).copied().unwrap_or(0) <= 1, "key of {} ran twice", id);
            }
            for id in &kv {
                match sim.results.get(id) {
                    Some(Ok(_)) | Some(Err(Error::IndeterminateResult)) => {}
                    other => prop_assert!(false, "KV write {} ended {:?}", id, other),
                }
            }
            prop_assert_eq!(sim.core.pending_len(), 0);
        }
    }
}

#[test]
fn statements_no_key_can_cover_go_unkeyed_and_stay_at_most_once() {
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.answer = Answer::Hold;
    let pragma = sim.submit(execute("PRAGMA user_version = 3", true));
    let script = sim.submit(Request::SqlExec {
        actor_id: ACTOR.into(),
        generation: 1,
        sql: "CREATE TABLE t(x); PRAGMA user_version = 1".into(),
    });
    let insert = sim.submit(execute("INSERT INTO t VALUES (1)", true));
    assert_eq!(keys_for(&sim, pragma), vec![None], "sent without a key");
    assert_eq!(keys_for(&sim, script), vec![None]);
    assert!(keys_for(&sim, insert)[0].is_some());
    sim.kill_socket();
    assert_eq!(sim.result(pragma), &Err(Error::IndeterminateResult));
    assert_eq!(sim.result(script), &Err(Error::IndeterminateResult));
    assert!(!sim.results.contains_key(&insert), "the keyed one waits for its re-send");
}

#[test]
fn a_protocol_error_close_settles_keyed_writes_instead_of_resending_them() {
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.answer = Answer::Hold;
    let write = sim.submit(execute("INSERT INTO t VALUES (1)", true));
    // The engine closes with 1002: something sent was unacceptable. Re-sending
    // would close the next connection too.
    sim.open = false;
    sim.engine.held.clear();
    sim.core.disconnected(Some(p::close::PROTOCOL_ERROR), "not implemented", sim.now);
    sim.run();
    assert_eq!(sim.result(write), &Err(Error::IndeterminateResult));
    // Other losses still re-send.
    sim.reconnect();
    let again = sim.submit(execute("INSERT INTO t VALUES (2)", true));
    sim.kill_socket();
    assert!(!sim.results.contains_key(&again));
    sim.engine.answer = Answer::Now;
    sim.reconnect();
    assert!(matches!(sim.result(again), Ok(Response::ExecuteV5 { .. })));
}

#[test]
fn a_key_given_to_a_request_that_cannot_carry_one_is_ignored() {
    let mut sim = Sim::new(cfg(), 5);
    sim.engine.answer = Answer::Hold;
    let key = sim.keygen.key(1);
    let data = p::KvRequestData::KvPut(p::KvPut { key: b"k".to_vec(), value: b"v".to_vec() });
    let put = sim.core.submit_keyed(kv(data), RequestOptions::default(), Some(key), sim.now);
    sim.run();
    sim.kill_socket();
    assert_eq!(sim.result(put), &Err(Error::IndeterminateResult), "a KV write is not re-sent: no key on its wire");
}
