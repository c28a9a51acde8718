//! Every open executor, by actor and generation.

use super::*;

/// Every open executor.
pub struct Executors {
    /// By actor id, then generation (nested so a lookup by `&str` allocates nothing).
    map: Mutex<HashMap<String, HashMap<u64, Arc<Executor>>>>,
    /// The engine's open-database cap, handed to every executor created.
    open_dbs: Arc<OpenDbs>,
}

impl Executors {
    pub fn new(open_dbs: Arc<OpenDbs>) -> Self {
        Self { map: Mutex::new(HashMap::new()), open_dbs }
    }

    /// The engine's open-database cap.
    pub fn open_dbs(&self) -> &Arc<OpenDbs> {
        &self.open_dbs
    }

    /// The executor of (actor, generation), created (without opening files) if new.
    /// `dir` is only called when the executor is new (no path is built per request).
    pub fn get_or_create(
        &self,
        actor_id: &str,
        generation: u64,
        dir: impl FnOnce() -> PathBuf,
        settings: &ExecSettings,
    ) -> Arc<Executor> {
        let mut map = self.map.lock();
        if let Some(x) = map.get(actor_id).and_then(|g| g.get(&generation)) {
            return x.clone();
        }
        map.entry(actor_id.to_string())
            .or_default()
            .entry(generation)
            .or_insert_with(|| self.new_executor(actor_id, generation, dir(), settings))
            .clone()
    }

    /// An executor that is not registered: for an operator's inspection of an
    /// actor that is not running (closed by the caller when done).
    pub fn detached(&self, actor_id: &str, generation: u64, dir: PathBuf, settings: &ExecSettings) -> Arc<Executor> {
        self.new_executor(actor_id, generation, dir, settings)
    }

    fn new_executor(&self, actor_id: &str, generation: u64, dir: PathBuf, settings: &ExecSettings) -> Arc<Executor> {
        Arc::new(Executor {
            actor_id: actor_id.to_string(),
            generation,
            dir,
            settings: settings.clone(),
            writer: Mutex::new(None),
            writer_opened: AtomicBool::new(false),
            readers: Mutex::new(Vec::new()),
            kv: Mutex::new(None),
            interrupts: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            in_txn: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            turned_away: AtomicUsize::new(0),
            writer_local: Arc::new(AtomicBool::new(false)),
            interrupted: AtomicUsize::new(0),
            in_use: RwLock::new(()),
            open_slot: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(self.open_dbs.now_ms()),
            open_dbs: self.open_dbs.clone(),
            txns: Default::default(),
        })
    }

    pub fn get(&self, actor_id: &str, generation: u64) -> Option<Arc<Executor>> {
        self.map.lock().get(actor_id).and_then(|g| g.get(&generation)).cloned()
    }

    pub fn remove(&self, actor_id: &str, generation: u64) -> Option<Arc<Executor>> {
        let mut map = self.map.lock();
        let gens = map.get_mut(actor_id)?;
        let x = gens.remove(&generation);
        if gens.is_empty() {
            map.remove(actor_id);
        }
        x
    }
}
