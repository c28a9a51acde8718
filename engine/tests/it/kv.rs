//! KV at v1 and v2 (and limits).

use crate::support::*;
use envoy_protocol::*;

fn entries(d: KvResponseData) -> Vec<(Vec<u8>, Vec<u8>)> {
    match d {
        KvResponseData::KvListResponse(l) => l.entries.into_iter().map(|e| (e.key, e.value)).collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn kv_v1() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "old").version(1)).await;
    assert_eq!(c.version, 1);
    let a = c.get_or_create("kv", "").await;
    for (k, v) in [("a/1", "x"), ("a/2", "y"), ("b/1", "z")] {
        assert_eq!(
            c.kv(&a, KvRequestData::KvPut(KvPut { key: k.into(), value: v.into() })).await,
            KvResponseData::KvPutResponse
        );
    }
    assert_eq!(
        c.kv(&a, KvRequestData::KvGet(KvGet { key: b"a/2".to_vec() })).await,
        KvResponseData::KvGetResponse(KvGetResponse { value: Some(b"y".to_vec()) })
    );
    assert_eq!(
        entries(c.kv(&a, KvRequestData::KvListPrefix(KvListPrefix { prefix: b"a/".to_vec() })).await),
        vec![(b"a/1".to_vec(), b"x".to_vec()), (b"a/2".to_vec(), b"y".to_vec())]
    );
    assert_eq!(
        c.kv(&a, KvRequestData::KvDelete(KvDelete { key: b"a/1".to_vec() })).await,
        KvResponseData::KvDeleteResponse
    );
    assert_eq!(
        c.kv(&a, KvRequestData::KvGet(KvGet { key: b"a/1".to_vec() })).await,
        KvResponseData::KvGetResponse(KvGetResponse { value: None })
    );
    // v1 errors have no code: a fence error arrives as UNKNOWN with its message.
    let rid = c.send_kv(&a.actor_id, a.generation + 5, KvRequestData::KvGet(KvGet { key: b"k".to_vec() })).await;
    match c.answer(rid).await {
        ToEnvoy::KvResponse(r) => match r.data {
            KvResponseData::KvErrorResponse(e) => assert_eq!(e.code, KvErrorCode::Unknown),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn kv_v2_batches_ranges_lists_and_durability() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_kv_batch_entries = 5;
    cfg.limits.max_kv_key_bytes = 8;
    cfg.limits.max_kv_value_bytes = 16;
    let engine = start_with(cfg.clone()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e").version(2)).await;
    let a = c.get_or_create("kv", "").await;
    let put = KvRequestData::KvPutBatch(KvPutBatch {
        entries: ["k1", "k2", "k3", "k4"]
            .iter()
            .map(|k| KvEntry { key: k.as_bytes().to_vec(), value: format!("v{k}").into_bytes() })
            .collect(),
    });
    assert_eq!(c.kv(&a, put).await, KvResponseData::KvPutBatchResponse);
    assert_eq!(
        c.kv(&a, KvRequestData::KvGetBatch(KvGetBatch { keys: vec![b"k2".to_vec(), b"zz".to_vec(), b"k1".to_vec()] }))
            .await,
        KvResponseData::KvGetBatchResponse(KvGetBatchResponse {
            values: vec![Some(b"vk2".to_vec()), None, Some(b"vk1".to_vec())]
        })
    );
    let list = |query, reverse, limit| KvRequestData::KvList(KvList { query, reverse, limit });
    let keys =
        |e: Vec<(Vec<u8>, Vec<u8>)>| e.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect::<Vec<_>>();
    assert_eq!(keys(entries(c.kv(&a, list(KvQuery::All, true, Some(2))).await)), ["k4", "k3"]);
    assert_eq!(
        keys(entries(
            c.kv(&a, list(KvQuery::Range(KvQueryRange { start: b"k2".to_vec(), end: b"k4".to_vec() }), false, None))
                .await
        )),
        ["k2", "k3"]
    );
    assert_eq!(
        keys(entries(c.kv(&a, list(KvQuery::Prefix(KvQueryPrefix { prefix: b"k".to_vec() }), false, None)).await))
            .len(),
        4
    );
    assert_eq!(
        c.kv(&a, KvRequestData::KvDeleteRange(KvDeleteRange { start: b"k2".to_vec(), end: b"k4".to_vec() })).await,
        KvResponseData::KvDeleteRangeResponse
    );
    assert_eq!(
        c.kv(&a, KvRequestData::KvDeleteBatch(KvDeleteBatch { keys: vec![b"k1".to_vec()] })).await,
        KvResponseData::KvDeleteBatchResponse
    );
    assert_eq!(keys(entries(c.kv(&a, list(KvQuery::All, false, None)).await)), ["k4"]);

    // Limits, with v2 error codes.
    let limit = |d: KvResponseData| match d {
        KvResponseData::KvErrorResponse(e) => assert_eq!(e.code, KvErrorCode::LimitExceeded, "{e:?}"),
        other => panic!("{other:?}"),
    };
    limit(c.kv(&a, KvRequestData::KvPut(KvPut { key: b"too-long-key".to_vec(), value: vec![] })).await);
    limit(c.kv(&a, KvRequestData::KvPut(KvPut { key: b"k".to_vec(), value: vec![0; 17] })).await);
    limit(c.kv(&a, KvRequestData::KvGetBatch(KvGetBatch { keys: vec![b"k".to_vec(); 6] })).await);
    limit(c.kv(&a, list(KvQuery::All, false, Some(6))).await);
    drop(c);
    engine.shutdown().await;

    // Durable across a restart (new generation, same store).
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e").version(2)).await;
    let a = c.get_or_create("kv", "").await;
    assert_eq!(
        c.kv(&a, KvRequestData::KvGet(KvGet { key: b"k4".to_vec() })).await,
        KvResponseData::KvGetResponse(KvGetResponse { value: Some(b"vk4".to_vec()) })
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn kv_is_invisible_to_the_actors_sql() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("both", "").await;
    assert_eq!(
        c.kv(&a, KvRequestData::KvPut(KvPut { key: b"k".to_vec(), value: b"v".to_vec() })).await,
        KvResponseData::KvPutResponse
    );
    let t = ok(c.execute(&a, "SELECT count(*) FROM sqlite_schema", vec![]).await);
    assert_eq!(t.rows, vec![vec![Value::Integer(0)]]);
    engine.shutdown().await;
}

#[tokio::test]
async fn kv_responses_are_bounded() {
    let dir = temp_dir();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_response_bytes = 3000;
    cfg.limits.max_kv_value_bytes = 1000;
    let engine = start_with(cfg).await;
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "e")).await;
    let a = c.get_or_create("kv", "").await;
    for i in 0..5u8 {
        let r = c.kv(&a, KvRequestData::KvPut(KvPut { key: vec![i], value: vec![i; 1000] })).await;
        assert_eq!(r, KvResponseData::KvPutResponse);
    }
    // v5 names the limit (v4 peers get KvErrorResponse LIMIT_EXCEEDED: tests in v5_batch.rs).
    let too_big = |d: KvResponseData| match d {
        KvResponseData::KvLimitExceeded(e) => {
            assert_eq!(e.limit.kind, envoy_protocol::LimitKind::ResponseBytes, "{e:?}");
            assert_eq!(e.limit.max, 3000, "{e:?}");
        }
        other => panic!("{other:?}"),
    };
    too_big(c.kv(&a, KvRequestData::KvList(KvList { query: KvQuery::All, reverse: false, limit: None })).await);
    too_big(c.kv(&a, KvRequestData::KvGetBatch(KvGetBatch { keys: (0..5u8).map(|i| vec![i]).collect() })).await);
    // Two entries fit.
    assert_eq!(
        entries(c.kv(&a, KvRequestData::KvList(KvList { query: KvQuery::All, reverse: false, limit: Some(2) })).await)
            .len(),
        2
    );
    engine.shutdown().await;
}
