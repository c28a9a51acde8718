//! The 5×5 version matrix: a client speaking at most v1..v5 against an engine
//! speaking at most v1..v5. Both sides settle on the lower version in the
//! upgrade; everything that version carries works, and everything it cannot
//! carry fails fast with the exact `ProtocolCompatibilityError` — never a
//! decode error, never a reconnect.

use envoy_client::protocol::{Direction, Feature, KvQuery, KvQueryPrefix, ProtocolCompatibilityError};
use envoy_client::protocol::{KvErrorCode, LimitKind};
use envoy_client::{stmt, BatchMode, Client, ConnectionState, Error, TransactionMode};
use envoy_engine::actor::registry::ActorState;
use envoy_tests::{eventually, TestEngine};

fn gate(feature: Feature, target: u16) -> Error {
    Error::RemoteUnavailable(ProtocolCompatibilityError {
        feature,
        direction: Direction::ToEngine,
        required_version: feature.required_version(),
        target_version: target,
    })
}

/// `Ok` when `v` carries `feature`, else the exact gate error.
fn expect<T: std::fmt::Debug>(got: Result<T, Error>, feature: Feature, v: u16, cell: &str) {
    if v >= feature.required_version() {
        got.unwrap_or_else(|e| panic!("{cell}: {feature:?} should work at v{v}: {e}"));
    } else {
        assert_eq!(got.unwrap_err(), gate(feature, v), "{cell}: {feature:?} at v{v}");
    }
}

async fn check_cell(engine: &TestEngine, engine_max: u16, client_max: u16) {
    let cell = format!("client ≤v{client_max} × engine ≤v{engine_max}");
    let v = client_max.min(engine_max);
    let mut cfg = TestEngine::client_config(&engine.endpoint());
    cfg.max_protocol_version = client_max;
    let client = Client::connect(cfg).await.unwrap_or_else(|e| panic!("{cell}: connect: {e}"));
    let session = client.session().expect("connected");
    assert_eq!(session.protocol_version, v, "{cell}: negotiated version");
    assert_eq!(session.limits.is_some(), v >= 3, "{cell}: limits advertised from v3");
    assert_eq!(session.sql_limits.is_some(), v >= 4, "{cell}: SQL limits advertised from v4");
    assert_eq!(session.durability.is_some(), v >= 5, "{cell}: durability advertised from v5");
    assert_eq!(session.engine_limits.is_some(), v >= 5, "{cell}: engine limits advertised from v5");

    // Placement and v1 KV work at every version.
    let actor = client.get_or_create_actor("matrix", &format!("c{client_max}-e{engine_max}")).await.unwrap();
    let kv = actor.kv();
    kv.put(b"a:1", b"one").await.unwrap();
    kv.put(b"a:2", b"two").await.unwrap();
    assert_eq!(kv.get(b"a:1").await.unwrap(), Some(b"one".to_vec()), "{cell}");
    assert_eq!(kv.list_prefix(b"a:").await.unwrap().len(), 2, "{cell}");
    kv.delete(b"a:2").await.unwrap();
    assert_eq!(kv.get(b"a:2").await.unwrap(), None, "{cell}");

    // v2: batches, ranges, list options.
    expect(kv.put_batch(&[(b"b:1", b"x"), (b"b:2", b"y")]).await, Feature::KvBatch, v, &cell);
    expect(kv.get_batch(&[b"a:1"]).await, Feature::KvBatch, v, &cell);
    expect(kv.delete_batch(&[b"b:1"]).await, Feature::KvBatch, v, &cell);
    expect(kv.delete_range(b"b:", b"b;").await, Feature::KvDeleteRange, v, &cell);
    let query = KvQuery::Prefix(KvQueryPrefix { prefix: b"a:".to_vec() });
    expect(kv.list(query, true, Some(1)).await, Feature::KvList, v, &cell);

    // v4: SQL.
    let db = actor.sql();
    expect(db.exec("CREATE TABLE IF NOT EXISTS t(x)").await, Feature::RemoteSqlite, v, &cell);
    expect(db.execute("INSERT INTO t VALUES (?)", envoy_client::params![1]).await, Feature::RemoteSqlite, v, &cell);
    expect(db.execute_write("DELETE FROM t", ()).await, Feature::RemoteSqlite, v, &cell);
    if v >= 4 {
        // v5: every SQL answer carries its cost; below v5 there is none to show.
        let out = db.execute("INSERT INTO t VALUES (?)", envoy_client::params![2]).await.unwrap();
        assert_eq!(out.cost.is_some(), v >= 5, "{cell}: cost from v5");
        // A KV limit is named with its maximum from v5 on; below, a KV error with its message.
        let too_long = vec![b'k'; 64 * 1024];
        match kv.put(&too_long, b"x").await.unwrap_err() {
            Error::LimitExceeded { kind, .. } if v >= 5 => assert_eq!(kind, LimitKind::KvKeyBytes, "{cell}"),
            Error::Kv { code: KvErrorCode::LimitExceeded, .. } if v < 5 => {}
            other => panic!("{cell}: a KV key past the limit: {other:?}"),
        }
    }

    // v5: atomic batches, interactive transactions, result streams.
    let batch = db.batch(BatchMode::Write, [stmt("INSERT INTO t VALUES (?)", envoy_client::params![3])]).await;
    if v >= 4 {
        expect(batch, Feature::AtomicBatch, v, &cell);
        let tx = db.begin(TransactionMode::Write).await;
        if v >= 5 {
            let tx = tx.unwrap_or_else(|e| panic!("{cell}: begin: {e}"));
            tx.execute("INSERT INTO t VALUES (4)", ()).await.unwrap();
            assert_eq!(tx.commit().await.unwrap().changes, 1, "{cell}");
        } else {
            assert_eq!(tx.unwrap_err(), gate(Feature::Transactions, v), "{cell}: begin at v{v}");
        }
        let mut rows = db.stream("SELECT x FROM t ORDER BY x", ());
        let first = rows.next().await.expect("a first item");
        if v >= 5 {
            first.unwrap_or_else(|e| panic!("{cell}: stream: {e}"));
        } else {
            assert_eq!(first.unwrap_err(), gate(Feature::ResultStreams, v), "{cell}: stream at v{v}");
        }
    }

    // v3: intents. Last, since a stop intent drains the actor.
    expect(actor.request_stop().await, Feature::ActorIntents, v, &cell);
    if v >= 3 {
        let id = actor.info().actor_id.clone();
        let stopped = eventually(5_000, || {
            engine.engine.actors().iter().any(|a| a.actor_id == id && a.state == ActorState::Stopped)
        })
        .await;
        assert!(stopped, "{cell}: the stop intent drained the actor");
    }

    // Nothing above was a transport failure: still the same session.
    assert!(matches!(client.state(), ConnectionState::Connected(_)), "{cell}: still connected");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_version_against_every_engine_version() {
    for engine_max in 1..=5u16 {
        let engine = TestEngine::start(|c| c.max_protocol_version = engine_max).await;
        // The Rust client speaks up to v5 (SDK_PROTOCOL_VERSION): against an
        // engine of at most v4 the negotiation settles on the engine's version.
        for client_max in 1..=envoy_client::SDK_PROTOCOL_VERSION {
            check_cell(&engine, engine_max, client_max).await;
        }
        engine.engine.shutdown().await;
    }
}
