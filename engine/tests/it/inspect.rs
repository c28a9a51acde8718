//! Operator SQL (`POST /actors/{id}/sql`) reads and writes an actor's database
//! through its own executor without moving it: same placement, same generation,
//! no StopActor, and its envoy keeps working.

use crate::support::*;
use envoy_protocol::*;

async fn post_sql(addr: std::net::SocketAddr, id: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let req = format!(
        "POST /actors/{id}/sql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_http(addr, req.as_bytes()).await;
    let status: u16 = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let json = answer.split("\r\n\r\n").nth(1).map(|b| {
        // The body may be chunked: take the JSON object inside.
        let start = b.find('{').unwrap_or(0);
        let end = b.rfind('}').map_or(b.len(), |e| e + 1);
        serde_json::from_str(&b[start..end]).unwrap_or(serde_json::Value::Null)
    });
    (status, json.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn operator_sql_does_not_move_the_actor() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let addr = engine.local_addr();
    let mut c = RawClient::connect(addr, ConnectOpts::new("ns", "host")).await;
    let a = c.get_or_create("crawler", "1").await;
    exec_ok(c.exec(&a, "CREATE TABLE jobs(id INTEGER PRIMARY KEY, title TEXT, logo BLOB); INSERT INTO jobs(title, logo) VALUES ('rust', x'00ff')").await);
    let commands_before = c.commands.len();

    // A read, with a parameter.
    let (status, r) = post_sql(
        addr,
        &a.actor_id,
        serde_json::json!({"sql": "SELECT id, title, logo FROM jobs WHERE title = ?", "params": ["rust"]}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["columns"], serde_json::json!(["id", "title", "logo"]));
    assert_eq!(r["rows"], serde_json::json!([[1, "rust", {"blob": "00ff"}]]));
    assert_eq!(r["generation"], serde_json::json!(a.generation));
    // A write is refused unless asked for, and nothing changed.
    let (status, r) = post_sql(addr, &a.actor_id, serde_json::json!({"sql": "DELETE FROM jobs"})).await;
    assert_eq!(status, 403, "{r}");
    // Asked for, it runs on the actor's writer, and the envoy sees it.
    let (status, r) = post_sql(
        addr,
        &a.actor_id,
        serde_json::json!({"sql": "INSERT INTO jobs(title) VALUES (?)", "params": ["sqlite"], "write": true}),
    )
    .await;
    assert_eq!(
        (status, r["changes"].clone(), r["last_insert_row_id"].clone()),
        (200, serde_json::json!(1), serde_json::json!(2)),
        "{r}"
    );
    // SQL errors are typed; the sandbox applies as to any actor SQL.
    let (status, r) = post_sql(addr, &a.actor_id, serde_json::json!({"sql": "SELECT * FROM nope"})).await;
    assert_eq!((status, r["code"].as_str()), (422, Some("Sqlite")), "{r}");
    let (status, r) = post_sql(addr, &a.actor_id, serde_json::json!({"sql": "ATTACH 'x' AS y", "write": true})).await;
    assert_eq!((status, r["code"].as_str()), (422, Some("Forbidden")), "{r}");

    // The actor did not move: same generation, same envoy, no command sent to the host.
    let rec = engine.actors().into_iter().find(|x| x.actor_id == a.actor_id).unwrap();
    assert_eq!((rec.generation, rec.envoy.as_deref()), (a.generation, Some("host")));
    let n = ok(c.execute(&a, "SELECT count(*) FROM jobs", vec![]).await).rows;
    assert_eq!(n, vec![vec![Value::Integer(2)]]);
    assert_eq!(c.commands.len(), commands_before, "the host received a command: {:?}", c.commands);

    // A stopped actor can be inspected too, and stays stopped.
    engine.stop_actor(&a.actor_id).await.unwrap();
    let (status, r) = post_sql(addr, &a.actor_id, serde_json::json!({"sql": "SELECT count(*) AS n FROM jobs"})).await;
    assert_eq!((status, r["rows"].clone()), (200, serde_json::json!([[2]])), "{r}");
    let rec = engine.actors().into_iter().find(|x| x.actor_id == a.actor_id).unwrap();
    assert_eq!((rec.state, rec.generation), (envoy_engine::ActorState::Stopped, a.generation));
    // Unknown ids are 404.
    assert_eq!(post_sql(addr, "nope", serde_json::json!({"sql": "SELECT 1"})).await.0, 404);
    engine.shutdown().await;
}
