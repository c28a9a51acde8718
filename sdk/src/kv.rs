//! The actor's key-value store.

use crate::client::Client;
use crate::core::{Request, RequestOptions, Response};
use crate::error::{Error, Result};
use envoy_protocol as p;

pub use envoy_protocol::{KvEntry, KvQuery};

/// KV operations of one actor generation. Reads (get, list) are retried once
/// if their answer is lost to a disconnect (see `ClientConfig::retry_idempotent_reads`);
/// writes never are.
#[derive(Clone, Debug)]
pub struct Kv {
    client: Client,
    actor_id: String,
    generation: u64,
    /// Applied to every request made through this handle.
    opts: RequestOptions,
}

impl Kv {
    pub(crate) fn new(client: Client, actor_id: String, generation: u64) -> Self {
        Kv { client, actor_id, generation, opts: RequestOptions::default() }
    }

    /// The same handle with a per-request deadline.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.opts.timeout_ms = Some(timeout.as_millis().min(u128::from(u64::MAX)) as u64);
        self
    }

    async fn run(&self, data: p::KvRequestData) -> Result<Response> {
        let request = Request::Kv { actor_id: self.actor_id.clone(), generation: self.generation, data };
        self.client.submit(request, self.opts).await
    }

    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        match self.run(p::KvRequestData::KvGet(p::KvGet { key: key.as_ref().to_vec() })).await? {
            Response::KvValue(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let data = p::KvRequestData::KvPut(p::KvPut { key: key.as_ref().to_vec(), value: value.as_ref().to_vec() });
        done(self.run(data).await?)
    }

    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        done(self.run(p::KvRequestData::KvDelete(p::KvDelete { key: key.as_ref().to_vec() })).await?)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub async fn list_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<KvEntry>> {
        let data = p::KvRequestData::KvListPrefix(p::KvListPrefix { prefix: prefix.as_ref().to_vec() });
        entries(self.run(data).await?)
    }

    /// Entries matching `query`, optionally reversed and limited (v2+).
    pub async fn list(&self, query: KvQuery, reverse: bool, limit: Option<u32>) -> Result<Vec<KvEntry>> {
        entries(self.run(p::KvRequestData::KvList(p::KvList { query, reverse, limit })).await?)
    }

    /// Entries with `start <= key < end`, in key order (v2+).
    pub async fn list_range(&self, start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Result<Vec<KvEntry>> {
        let query = KvQuery::Range(p::KvQueryRange { start: start.as_ref().to_vec(), end: end.as_ref().to_vec() });
        self.list(query, false, None).await
    }

    /// Values of several keys, in the order given (v2+).
    pub async fn get_batch<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys = keys.iter().map(|k| k.as_ref().to_vec()).collect();
        match self.run(p::KvRequestData::KvGetBatch(p::KvGetBatch { keys })).await? {
            Response::KvValues(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Writes several entries at once (v2+).
    pub async fn put_batch<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, entries: &[(K, V)]) -> Result<()> {
        let entries =
            entries.iter().map(|(k, v)| KvEntry { key: k.as_ref().to_vec(), value: v.as_ref().to_vec() }).collect();
        done(self.run(p::KvRequestData::KvPutBatch(p::KvPutBatch { entries })).await?)
    }

    /// Deletes several keys at once (v2+).
    pub async fn delete_batch<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<()> {
        let keys = keys.iter().map(|k| k.as_ref().to_vec()).collect();
        done(self.run(p::KvRequestData::KvDeleteBatch(p::KvDeleteBatch { keys })).await?)
    }

    /// Deletes every key with `start <= key < end` (v2+).
    pub async fn delete_range(&self, start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Result<()> {
        let data = p::KvRequestData::KvDeleteRange(p::KvDeleteRange {
            start: start.as_ref().to_vec(),
            end: end.as_ref().to_vec(),
        });
        done(self.run(data).await?)
    }
}

fn unexpected(r: Response) -> Error {
    Error::Protocol(format!("unexpected KV answer {}", r.kind()))
}

fn done(r: Response) -> Result<()> {
    match r {
        Response::KvDone => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn entries(r: Response) -> Result<Vec<KvEntry>> {
    match r {
        Response::KvEntries(e) => Ok(e),
        other => Err(unexpected(other)),
    }
}
