//! A result far smaller on the wire than in memory (all NULLs) must come back
//! as a typed LIMIT_EXCEEDED when its decoded size passes maxResponseBytes,
//! never as a frame the client cannot decode within its budget.

use envoy_client::protocol::LimitKind;
use envoy_client::{Client, Error};
use envoy_tests::TestEngine;

const FRAME: u32 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_heavy_results_are_limited_by_decoded_size() {
    let te = TestEngine::start(|c| {
        c.limits.max_frame_bytes = FRAME;
        c.limits.max_request_bytes = FRAME;
        c.limits.max_response_bytes = FRAME - 1024;
    })
    .await;
    let mut cfg = TestEngine::client_config(&te.endpoint());
    cfg.max_frame_bytes = FRAME;
    let client = Client::connect(cfg).await.unwrap();
    let db = client.get_or_create_actor("nulls", "k").await.unwrap().sql();

    // 4 000 rows of 10 NULLs: ≈ 44 KB on the wire (under the frame), ≈ 1.4 MB
    // decoded (over 8 × 64 KiB). Before rows were counted at their decoded
    // size this reached the client and failed its decode budget.
    let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000) \
                SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM c";
    match db.query(many, ()).await {
        Err(Error::LimitExceeded { kind, max, .. }) => {
            assert_eq!(kind, LimitKind::ResponseBytes);
            assert_eq!(max, u64::from(FRAME - 1024));
        }
        other => panic!("expected LimitExceeded(ResponseBytes), got {other:?}"),
    }

    // The connection is unharmed and a result within the limit decodes.
    let few = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500) SELECT NULL AS v FROM c";
    let rows = db.query(few, ()).await.unwrap();
    assert_eq!(rows.len(), 500);
    client.close().await;
    te.engine.shutdown().await;
}
