//! The README example: `cargo run -p envoy-client --example quickstart` against
//! `cargo run --release -p envoy-engine -- serve`.
use envoy_client::{params, Client, ClientConfig};

#[tokio::main]
async fn main() -> envoy_client::Result<()> {
    let client = Client::connect(ClientConfig { endpoint: "ws://127.0.0.1:6420".into(), ..Default::default() }).await?;
    let actor = client.get_or_create_actor("notes", "alice").await?;
    let db = actor.sql();
    db.exec("CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT)").await?;
    db.execute("INSERT INTO notes(body) VALUES (?)", params!["hello"]).await?;
    for row in &db.query("SELECT id, body FROM notes", ()).await? {
        println!("{} {}", row.get::<i64>("id")?, row.get::<String>("body")?);
    }
    client.close().await;
    Ok(())
}
