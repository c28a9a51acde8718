//! The etcd layer of cluster mode against a real etcd (tests/src/etcd.rs): the directory's transactions
//! under races between two nodes, and self-fencing when a node is cut from etcd (tests/src/proxy.rs).
//!
//! Each test starts its own etcd. Skipped with a message when etcd is not installed, unless
//! ENVOY_REQUIRE_ETCD is set (scripts/test.d sets it).

use envoy_engine::cluster::{ClusterError, ClusterSettings, DirActor, DirState, Directory, Membership};
use envoy_tests::etcd::EtcdProcess;
use envoy_tests::proxy::Proxy;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A node `id` on `endpoint` with lease TTL `ttl`.
async fn node(endpoint: &str, id: &str, ttl: Duration) -> (Arc<Membership>, Directory) {
    let mut settings = ClusterSettings::new(vec![endpoint.to_string()], id, format!("ws://{id}.test:6420"));
    settings.lease_ttl = ttl;
    let m = Membership::join(&settings).await.unwrap_or_else(|e| panic!("node {id} joins: {e}"));
    assert!(m.is_serving(), "{id} serves after joining");
    (m.clone(), Directory::new(m))
}

/// Polls `f` every 10 ms until it is true or `within` passes.
async fn until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

async fn read(dir: &Directory, actor: &DirActor) -> DirActor {
    dir.get(&actor.actor_id).await.expect("get").expect("the actor exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_get_or_create_makes_one_actor() {
    let Some(etcd) = EtcdProcess::start().await else { return };
    let (_a, da) = node(&etcd.endpoint(), "a", Duration::from_secs(10)).await;
    let (_b, db) = node(&etcd.endpoint(), "b", Duration::from_secs(10)).await;
    let mut ids = HashSet::new();
    for round in 0..40 {
        let key = format!("k/{round}");
        let (ra, rb) = tokio::join!(da.get_or_create("ns", "room", &key), db.get_or_create("ns", "room", &key));
        let ((x, x_created), (y, y_created)) = (ra.expect("a get_or_create"), rb.expect("b get_or_create"));
        assert_eq!(x.actor_id, y.actor_id, "round {round}: both nodes see one actor");
        assert!(x_created ^ y_created, "round {round}: exactly one creation ({x_created}, {y_created})");
        let creator = if x_created { "a" } else { "b" };
        assert_eq!((x.owner.as_str(), x.generation, x.state), (creator, 0, DirState::Active));
        assert_eq!(x, y, "round {round}: the loser reads the record the winner wrote");
        assert_eq!(x.actor_id.len(), 24);
        assert!(ids.insert(x.actor_id.clone()), "round {round}: a fresh id");
        let found = db.find("ns", "room", &key).await.expect("find").expect("found");
        assert_eq!(found, x);
        // Asking again creates nothing.
        let (again, created) = da.get_or_create("ns", "room", &key).await.expect("again");
        assert!(!created);
        assert_eq!(again, x);
    }
    assert_eq!(da.find("ns", "room", "nobody").await.expect("find"), None);
    assert_eq!(da.get("0123456789abcdef01234567").await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_bumps_and_generations_are_never_reused() {
    let Some(etcd) = EtcdProcess::start().await else { return };
    let (_a, da) = node(&etcd.endpoint(), "a", Duration::from_secs(10)).await;
    let (_b, db) = node(&etcd.endpoint(), "b", Duration::from_secs(10)).await;
    let (actor, created) = da.get_or_create("ns", "counter", "1").await.expect("create");
    assert!(created);

    // Six tasks of the owner and two of the other node bump the same actor, each from its own reads.
    const PER_TASK: usize = 8;
    let mut owners = Vec::new();
    for _ in 0..6 {
        let da = da.clone();
        let actor = actor.clone();
        owners.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut seen = actor;
            while mine.len() < PER_TASK {
                match da.bump(&seen).await {
                    Ok(next) => {
                        assert_eq!(next.generation, seen.generation + 1);
                        mine.push(next.generation);
                        seen = next;
                    }
                    Err(ClusterError::Conflict) => seen = read(&da, &seen).await,
                    Err(e) => panic!("owner bump failed: {e}"),
                }
            }
            mine
        }));
    }
    let mut others = Vec::new();
    for _ in 0..2 {
        let db = db.clone();
        let actor = actor.clone();
        others.push(tokio::spawn(async move {
            for _ in 0..10 {
                let seen = read(&db, &actor).await;
                match db.bump(&seen).await {
                    Err(ClusterError::NotOwner { owner }) => assert_eq!(owner, "a"),
                    other => panic!("a non-owner's bump must fail NotOwner, got {other:?}"),
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in owners {
        all.extend(t.await.expect("owner task"));
    }
    for t in others {
        t.await.expect("other task");
    }
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a generation was handed out twice: {all:?}");
    let last = read(&da, &actor).await;
    assert_eq!(last.generation as usize, all.len(), "every bump raised the generation by one");
    assert_eq!(distinct, (1..=all.len() as u64).collect(), "generations 1..=n, no gap, no repeat");

    // A decision from a stale read is refused.
    assert!(matches!(da.bump(&actor).await, Err(ClusterError::Conflict)));
    // The other node cannot change the state either.
    match db.set_state(&last, DirState::Moving).await {
        Err(ClusterError::NotOwner { owner }) => assert_eq!(owner, "a"),
        other => panic!("expected NotOwner, got {other:?}"),
    }
    let moving = da.set_state(&last, DirState::Moving).await.expect("owner sets the state");
    assert_eq!((moving.state, moving.generation), (DirState::Moving, last.generation));
    assert_eq!(read(&db, &actor).await, moving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_off_moves_ownership() {
    let Some(etcd) = EtcdProcess::start().await else { return };
    let (_a, da) = node(&etcd.endpoint(), "a", Duration::from_secs(10)).await;
    let (_b, db) = node(&etcd.endpoint(), "b", Duration::from_secs(10)).await;
    let (actor, _) = da.get_or_create("ns", "doc", "x").await.expect("create");
    let placed = da.bump(&actor).await.expect("placed on a");
    let moving = da.set_state(&placed, DirState::Moving).await.expect("moving");

    match da.hand_off(&moving, "c").await {
        Err(ClusterError::NotAlive { node }) => assert_eq!(node, "c"),
        other => panic!("handing to a node that is not alive must fail NotAlive, got {other:?}"),
    }
    match db.hand_off(&moving, "b").await {
        Err(ClusterError::NotOwner { owner }) => assert_eq!(owner, "a"),
        other => panic!("only the owner hands off, got {other:?}"),
    }
    let moved = da.hand_off(&moving, "b").await.expect("hand off to b");
    assert_eq!((moved.owner.as_str(), moved.generation, moved.state), ("b", placed.generation + 1, DirState::Active));
    assert_eq!(read(&da, &actor).await, moved);

    // The old owner can no longer act, from its stale read or from a fresh one.
    match da.bump(&moving).await {
        Err(ClusterError::NotOwner { owner }) => assert_eq!(owner, "b"),
        other => panic!("old owner, stale read: expected NotOwner, got {other:?}"),
    }
    match da.bump(&read(&da, &actor).await).await {
        Err(ClusterError::NotOwner { owner }) => assert_eq!(owner, "b"),
        other => panic!("old owner, fresh read: expected NotOwner, got {other:?}"),
    }
    assert!(matches!(da.remove(&moved).await, Err(ClusterError::NotOwner { .. })));
    let bumped = db.bump(&moved).await.expect("the new owner bumps");
    assert_eq!(bumped.generation, moved.generation + 1);

    assert_eq!(
        db.owned_by("b").await.expect("owned_by").iter().map(|a| &a.actor_id).collect::<Vec<_>>(),
        [&actor.actor_id]
    );
    assert!(da.owned_by("a").await.expect("owned_by").is_empty());
    let nodes = da.nodes().await.expect("nodes");
    let summary: Vec<_> = nodes.iter().map(|n| (n.node_id.as_str(), n.alive, n.actors, n.advertise.as_str())).collect();
    assert_eq!(summary, [("a", true, 0, "ws://a.test:6420"), ("b", true, 1, "ws://b.test:6420")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_waits_until_the_owner_is_gone() {
    let Some(etcd) = EtcdProcess::start().await else { return };
    let (a, da) = node(&etcd.endpoint(), "a", Duration::from_secs(10)).await;
    let (_b, db) = node(&etcd.endpoint(), "b", Duration::from_secs(10)).await;
    let (x, _) = da.get_or_create("ns", "doc", "x").await.expect("create x");
    let (y, _) = da.get_or_create("ns", "doc", "y").await.expect("create y");
    a.set_draining(true).await.expect("draining");
    assert!(db.node("a").await.expect("node").expect("a listed").draining);

    match db.adopt(&x).await {
        Err(ClusterError::OwnerAlive { owner }) => assert_eq!(owner, "a"),
        other => panic!("adopt while the owner lives must fail OwnerAlive, got {other:?}"),
    }
    a.leave().await;
    assert!(!a.is_serving());
    assert_eq!(*a.serving().borrow(), None);
    // a's key is gone with its lease; it still owns two actors.
    let gone = db.node("a").await.expect("node").expect("a listed through its actors");
    assert_eq!((gone.alive, gone.actors, gone.advertise.as_str()), (false, 2, ""));

    let adopted = db.adopt(&x).await.expect("adopt once a left");
    assert_eq!((adopted.owner.as_str(), adopted.generation, adopted.state), ("b", 1, DirState::Restoring));
    assert!(matches!(db.adopt(&x).await, Err(ClusterError::Conflict)), "adopting from a stale read");
    let active = db.set_state(&adopted, DirState::Active).await.expect("restored");
    assert_eq!(db.bump(&active).await.expect("b places it").generation, 2);
    // The node that left is fenced for good.
    assert!(matches!(da.bump(&y).await, Err(ClusterError::Fenced)));

    // Deleting: name and record go; the name can be created again, as a new actor.
    db.remove(&read(&db, &x).await).await.expect("remove");
    assert_eq!(db.get(&x.actor_id).await.expect("get"), None);
    assert_eq!(db.find("ns", "doc", "x").await.expect("find"), None);
    let (again, created) = db.get_or_create("ns", "doc", "x").await.expect("create again");
    assert!(created);
    assert_ne!(again.actor_id, x.actor_id);
    // A fenced node still finds existing actors but creates none.
    assert_eq!(da.get_or_create("ns", "doc", "y").await.expect("find y").0.actor_id, y.actor_id);
    assert!(matches!(da.get_or_create("ns", "doc", "z").await, Err(ClusterError::Fenced)));
}

/// How a test cuts node a from etcd.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Live links go silent (nothing closes: the client only learns by timing out); new ones are refused.
    Freeze,
    /// Live links are closed; new ones are refused.
    Kill,
}

/// Node a reaches etcd through a proxy, node b directly. Cutting a's link must stop a serving before its
/// lease's TTL is over (it could have been renewed at most at the cut); only after etcd expired the lease
/// may b adopt a's actor; once the link heals, a serves again under a new lease but the actor is b's.
async fn fenced_node_hands_over_safely(cut: Cut) {
    let Some(etcd) = EtcdProcess::start().await else { return };
    let proxy = Proxy::start(etcd.addr()).await;
    let via_proxy = proxy.endpoint().replace("ws://", "http://");
    let (a, da) = node(&via_proxy, "a", Duration::from_secs(2)).await;
    let (_b, db) = node(&etcd.endpoint(), "b", Duration::from_secs(10)).await;
    let ttl = a.lease_ttl();
    let first_lease = a.lease_id();
    let (x, _) = da.get_or_create("ns", "doc", "x").await.expect("create");
    let placed = da.bump(&x).await.expect("placed on a");
    // Several renewals go through before the cut.
    tokio::time::sleep(ttl).await;
    assert!(a.is_serving(), "{cut:?}: a serves while its link is fine");
    assert_eq!(a.lease_id(), first_lease);
    let mut serving = a.serving();
    serving.borrow_and_update();

    proxy.refuse(true);
    match cut {
        Cut::Freeze => proxy.freeze(),
        Cut::Kill => proxy.kill(),
    }
    let cut_at = Instant::now();

    // a stops serving on its own. The latest moment it still claimed to serve must come before the TTL
    // since the cut: etcd may expire the lease from then on.
    let mut last_true = cut_at;
    let fenced = until(ttl + Duration::from_secs(3), || {
        let up = a.is_serving();
        if up {
            last_true = Instant::now();
        }
        !up
    })
    .await;
    assert!(fenced, "{cut:?}: a never stopped serving");
    let claimed = last_true - cut_at;
    assert!(claimed < ttl, "{cut:?}: a claimed to serve {claimed:?} after the cut, past its lease TTL {ttl:?}");
    tokio::time::timeout(Duration::from_secs(2), serving.wait_for(|s| s.is_none()))
        .await
        .expect("the serving watch turns None")
        .expect("watch open");

    // b may adopt once etcd expired a's lease, and not before; by then a has long stopped serving.
    let (adopted, adopted_at) = loop {
        let seen = read(&db, &x).await;
        let sent = Instant::now();
        match db.adopt(&seen).await {
            Ok(adopted) => {
                assert!(last_true < sent, "{cut:?}: b adopted while a still served");
                assert!(!a.is_serving());
                break (adopted, sent - cut_at);
            }
            Err(ClusterError::OwnerAlive { owner }) => assert_eq!(owner, "a"),
            Err(e) => panic!("{cut:?}: adopt failed: {e}"),
        }
        assert!(cut_at.elapsed() < ttl + Duration::from_secs(8), "{cut:?}: etcd never expired a's lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((adopted.owner.as_str(), adopted.generation), ("b", placed.generation + 1));
    // Still cut off, a's own writes fail without reaching etcd.
    assert!(matches!(da.bump(&placed).await, Err(ClusterError::Fenced)));

    proxy.refuse(false);
    let healed_at = cut_at.elapsed();
    assert!(
        until(Duration::from_secs(15), || a.is_serving()).await,
        "{cut:?}: a never re-joined after the link healed"
    );
    let rejoined_at = cut_at.elapsed();
    eprintln!(
        "{cut:?}: ttl {ttl:?}; since the cut: a last claimed to serve at {claimed:?}, b adopted at {adopted_at:?}, \
         a served again at {rejoined_at:?} (healed at {healed_at:?})"
    );
    assert_ne!(a.lease_id(), first_lease, "{cut:?}: a re-joins with a new lease");
    assert_eq!(*a.serving().borrow(), Some(a.lease_id()));
    assert!(a.serves_under(a.lease_id()) && !a.serves_under(first_lease));
    match da.bump(&placed).await {
        Err(ClusterError::NotOwner { owner }) => assert_eq!(owner, "b"),
        other => panic!("{cut:?}: a's bump of the adopted actor must fail NotOwner, got {other:?}"),
    }
    let me = db.node("a").await.expect("node").expect("a listed");
    assert!(me.alive && me.actors == 0, "{cut:?}: {me:?}");
    // a works as a member again.
    let (mine, created) = da.get_or_create("ns", "doc", "after").await.expect("create after re-join");
    assert!(created);
    da.bump(&mine).await.expect("a bumps its own actor after re-joining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_link_fences_before_the_lease_can_expire() {
    fenced_node_hands_over_safely(Cut::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_link_fences_before_the_lease_can_expire() {
    fenced_node_hands_over_safely(Cut::Kill).await;
}

/// etcd forgetting the lease (revoked by someone else here; expired during a long pause in practice) fences
/// the node at its next renewal rather than at its deadline, and the node re-joins with a new lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_fences_at_once_and_rejoins() {
    let Some(etcd) = EtcdProcess::start().await else { return };
    let (a, da) = node(&etcd.endpoint(), "a", Duration::from_secs(6)).await;
    let (b, _db) = node(&etcd.endpoint(), "b", Duration::from_secs(6)).await;
    let (x, _) = da.get_or_create("ns", "doc", "x").await.expect("create");
    let old = a.lease_id();
    let mut serving = a.serving();
    assert_eq!(*serving.borrow_and_update(), Some(old));
    b.client().lease_revoke(old).await.expect("revoke a's lease");
    // The node key went with the lease: a's writes are refused by the transaction's guard.
    match da.bump(&x).await {
        Err(ClusterError::Fenced) => {}
        other => panic!("a write under a revoked lease must fail Fenced, got {other:?}"),
    }
    // Fenced at the next renewal (every ttl/3), then back with a new lease.
    assert!(
        until(Duration::from_secs(10), || a.lease_id() != old && a.is_serving()).await,
        "a did not re-join after losing its lease"
    );
    // A watcher that did not look in between still sees the change: the lease it served under is gone.
    assert!(serving.has_changed().expect("watch open"));
    assert_eq!(*serving.borrow_and_update(), Some(a.lease_id()));
    assert!(!a.serves_under(old));
    let bumped = da.bump(&x).await.expect("a is the owner again, under its new lease");
    assert_eq!(bumped.generation, 1);
}
