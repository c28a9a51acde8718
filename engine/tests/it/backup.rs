//! Backup and restore through the admin API: a snapshot taken under write load is
//! consistent, and restoring it gives back exactly its rows under a new generation.

use crate::support::*;
use envoy_engine::cli::http_exchange;
use envoy_protocol::*;

fn rows_of(db: &std::path::Path) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let mut stmt = conn.prepare("SELECT id, body FROM t ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn a_backup_under_write_load_restores_to_identical_rows() {
    let dir = temp_dir();
    let engine = start(dir.path()).await;
    let url = format!("http://{}", engine.local_addr());
    let mut c = RawClient::connect(engine.local_addr(), ConnectOpts::new("ns", "host")).await;
    let a = c.get_or_create("crawler", "1").await;
    exec_ok(c.exec(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL)").await);

    // Writes in flight while the backup is taken.
    let mut rids = Vec::new();
    for i in 1..=3000i64 {
        rids.push(
            c.send_execute(
                &a,
                "INSERT INTO t(id, body) VALUES (?, ?)",
                vec![Value::Integer(i), Value::Text(format!("row {i} {}", "x".repeat((i % 50) as usize)))],
                true,
            )
            .await,
        );
        if i == 1500 {
            let (url, id) = (url.clone(), a.actor_id.clone());
            let backup =
                tokio::spawn(
                    async move { http_exchange(&url, "GET", &format!("/actors/{id}/backup"), None, None).await },
                );
            // Keep writing while it runs.
            rids.push(c.send_execute(&a, "SELECT 1", vec![], true).await);
            let (status, bytes) = backup.await.unwrap().unwrap();
            assert_eq!(status, 200);
            std::fs::write(dir.path().join("backup.sqlite"), &bytes).unwrap();
        }
    }
    for rid in rids {
        ok(c.execute_result(rid).await);
    }
    // The snapshot is consistent: integrity ok, and a prefix 1..=k of the writes, each exact.
    let backup = rows_of(&dir.path().join("backup.sqlite"));
    println!("the backup holds {} of 3000 rows", backup.len());
    for (n, (id, body)) in backup.iter().enumerate() {
        assert_eq!(*id, n as i64 + 1, "not a prefix");
        assert_eq!(*body, format!("row {id} {}", "x".repeat((id % 50) as usize)));
    }
    assert!(!backup.is_empty() && backup.len() < 3001);

    // A file that is not a database is refused; the actor keeps running.
    let (status, _) = http_exchange(
        &url,
        "POST",
        &format!("/actors/{}/restore", a.actor_id),
        None,
        Some(("application/octet-stream", b"not sqlite at all")),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert_eq!(ok(c.execute(&a, "SELECT count(*) FROM t", vec![]).await).rows, vec![vec![Value::Integer(3000)]]);

    // Restore: the actor stops, and its next start (a new generation) sees exactly the backup.
    let bytes = std::fs::read(dir.path().join("backup.sqlite")).unwrap();
    let (status, body) = http_exchange(
        &url,
        "POST",
        &format!("/actors/{}/restore", a.actor_id),
        None,
        Some(("application/vnd.sqlite3", &bytes)),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let b = c.get_or_create("crawler", "1").await;
    assert!(b.generation > a.generation);
    // The old generation is fenced.
    match c.execute(&a, "SELECT 1", vec![]).await {
        SqliteExecuteResult::SqliteFenceMismatch(f) => assert_eq!(f.current_generation, b.generation),
        other => panic!("the old generation was not fenced: {other:?}"),
    }
    let restored: Vec<(i64, String)> = ok(c.execute(&b, "SELECT id, body FROM t ORDER BY id", vec![]).await)
        .rows
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Integer(i), Value::Text(s)) => (*i, s.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(restored, backup, "every row of the backup, and nothing else");
    // And the restored database takes writes.
    ok(c.execute_write(&b, "INSERT INTO t(id, body) VALUES (100000, 'after')", vec![]).await);
    engine.shutdown().await;
}
