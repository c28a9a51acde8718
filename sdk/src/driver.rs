//! The one async driver: runs the sans-IO core over any [`Runtime`].
//!
//! A single task owns the core. It wakes on: commands from `Client` handles,
//! frames from the socket, the end of a connect attempt, or the core's next
//! deadline. Each wake-up takes everything already waiting (up to a batch
//! limit), feeds it to the core, then writes every frame the core produced in
//! one `send` (one flush), and dispatches the core's events.

use crate::actor::ActorContext;
use crate::client::Shared;
use crate::core::{ConnectFailure, ConnectionState, Core, Event, Request, RequestId, RequestOptions, Response};
use crate::error::{Error, Result};
use crate::runtime::{boxed, make_request_key, BoxFuture, BoxStream, FrameSender, Handler, Incoming, Runtime, Socket};
use crate::stream::{StreamItem, StreamToken};
use envoy_protocol::negotiation::parse_version_subprotocol;
use futures_channel::{mpsc, oneshot};
use futures_util::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::Weak;
use std::task::{Context, Poll};

/// Most items taken from one source per wake-up, so one busy source cannot starve the others.
const MAX_BATCH: usize = 1024;

/// What `Client` handles ask the driver.
pub(crate) enum Command {
    Submit {
        request: Request,
        opts: RequestOptions,
        reply: oneshot::Sender<Result<Response>>,
    },
    /// The stop handler of an actor returned.
    ActorStopped {
        actor_id: String,
        generation: u64,
        error: Option<String>,
    },
    ActorIntent {
        actor_id: String,
        generation: u64,
        intent: envoy_protocol::ActorIntent,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Opens a v5 result stream; its rows and end go to `items`.
    OpenStream {
        request: Request,
        opts: RequestOptions,
        token: StreamToken,
        items: mpsc::UnboundedSender<StreamItem>,
    },
    /// The stream's consumer took `bytes` of its rows (credit to return).
    StreamConsumed {
        token: StreamToken,
        bytes: u64,
    },
    /// The stream was dropped before its end.
    StreamCancel {
        token: StreamToken,
    },
    SetStartHandler(Handler),
    SetStopHandler(Handler),
    Close {
        done: oneshot::Sender<()>,
    },
}

enum Wake {
    Cmd(Command),
    /// Every `Client` handle is gone.
    ClientGone,
    In(Incoming),
    Connected(std::result::Result<Socket, ConnectFailure>),
    Timer,
}

pub(crate) struct Driver<R: Runtime> {
    rt: R,
    core: Core,
    /// Full connect URL (query included).
    url: String,
    /// Offered as `envoy.token.<token>`.
    token: Option<String>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    /// Set when the command channel ended (every `Client` dropped).
    cmd_closed: bool,
    /// To build `ActorContext`s for handlers without keeping the client alive.
    shared: Weak<Shared>,
    /// Where each request's answer goes.
    replies: HashMap<RequestId, oneshot::Sender<Result<Response>>>,
    /// Where each open stream's rows and end go, by its request id.
    streams: HashMap<RequestId, (StreamToken, mpsc::UnboundedSender<StreamItem>)>,
    /// The request id of each open stream, by the token its consumer knows it by.
    stream_ids: HashMap<StreamToken, RequestId>,
    sender: Option<Box<dyn FrameSender>>,
    incoming: Option<BoxStream<'static, Incoming>>,
    connecting: Option<BoxFuture<'static, std::result::Result<Socket, ConnectFailure>>>,
    /// The armed sleep and the deadline it was armed for.
    timer: Option<(u64, BoxFuture<'static, ()>)>,
    on_start: Option<Handler>,
    on_stop: Option<Handler>,
    /// Actors started before a start handler was registered: delivered on registration.
    undelivered_starts: Vec<crate::core::ActorInfo>,
    /// Resolved with the first Init (or the first fatal error).
    ready: Option<oneshot::Sender<Result<()>>>,
    /// Resolved once the core is closed.
    close_waiters: Vec<oneshot::Sender<()>>,
}

impl<R: Runtime> Driver<R> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rt: R,
        core: Core,
        url: String,
        token: Option<String>,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        shared: Weak<Shared>,
        ready: oneshot::Sender<Result<()>>,
    ) -> Self {
        Driver {
            rt,
            core,
            url,
            token,
            cmd_rx,
            cmd_closed: false,
            shared,
            replies: HashMap::new(),
            streams: HashMap::new(),
            stream_ids: HashMap::new(),
            sender: None,
            incoming: None,
            connecting: None,
            timer: None,
            on_start: None,
            on_stop: None,
            undelivered_starts: Vec::new(),
            ready: Some(ready),
            close_waiters: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let now = self.rt.now_ms();
        self.core.start(now);
        loop {
            self.pump();
            if self.core.is_closed() {
                break;
            }
            self.arm_timer();
            let wakes = futures_util::future::poll_fn(|cx| self.poll_wakes(cx)).await;
            let now = self.rt.now_ms();
            for wake in wakes {
                self.handle(wake, now);
            }
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
            }
        }
        if let Some(mut s) = self.sender.take() {
            s.close(envoy_protocol::close::NORMAL, "client closed");
        }
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
        tracing::debug!("envoy client driver finished");
    }

    fn poll_wakes(&mut self, cx: &mut Context<'_>) -> Poll<Vec<Wake>> {
        let mut wakes = Vec::new();
        if !self.cmd_closed {
            while wakes.len() < MAX_BATCH {
                match self.cmd_rx.poll_next_unpin(cx) {
                    Poll::Ready(Some(c)) => wakes.push(Wake::Cmd(c)),
                    Poll::Ready(None) => {
                        self.cmd_closed = true;
                        wakes.push(Wake::ClientGone);
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if let Some(incoming) = self.incoming.as_mut() {
            let mut n = 0;
            while n < MAX_BATCH {
                match incoming.poll_next_unpin(cx) {
                    Poll::Ready(Some(i @ Incoming::Frame(_))) => {
                        n += 1;
                        wakes.push(Wake::In(i));
                    }
                    Poll::Ready(Some(i @ Incoming::Closed { .. })) => {
                        self.incoming = None;
                        wakes.push(Wake::In(i));
                        break;
                    }
                    Poll::Ready(None) => {
                        self.incoming = None;
                        wakes.push(Wake::In(Incoming::Closed { code: None, reason: "stream ended".into() }));
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if let Some(c) = self.connecting.as_mut() {
            if let Poll::Ready(r) = c.poll_unpin(cx) {
                self.connecting = None;
                wakes.push(Wake::Connected(r));
            }
        }
        if let Some((_, t)) = self.timer.as_mut() {
            if t.poll_unpin(cx).is_ready() {
                self.timer = None;
                wakes.push(Wake::Timer);
            }
        }
        if wakes.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(wakes)
        }
    }

    fn arm_timer(&mut self) {
        match self.core.poll_timeout() {
            None => self.timer = None,
            Some(deadline) => {
                // A timer armed for an earlier deadline is kept: it fires early, the
                // core finds nothing due, and the timer is armed again. This avoids a
                // new timer per received frame (each one pushes the liveness deadline).
                if self.timer.as_ref().is_some_and(|(d, _)| *d <= deadline) {
                    return;
                }
                let now = self.rt.now_ms();
                self.timer = Some((deadline, self.rt.sleep(deadline.saturating_sub(now))));
            }
        }
    }

    fn handle(&mut self, wake: Wake, now: u64) {
        match wake {
            Wake::Cmd(cmd) => self.command(cmd, now),
            Wake::ClientGone => self.core.close(now),
            Wake::In(Incoming::Frame(bytes)) => self.core.frame_received(&bytes, now),
            Wake::In(Incoming::Closed { code, reason }) => {
                self.sender = None;
                self.incoming = None;
                self.core.disconnected(code, &reason, now);
            }
            Wake::Connected(Ok(socket)) => {
                let version = socket.protocol.as_deref().and_then(parse_version_subprotocol).unwrap_or(0);
                self.sender = Some(socket.sender);
                self.incoming = Some(socket.incoming);
                self.core.connected(version, now);
            }
            Wake::Connected(Err(failure)) => self.core.connect_failed(failure, now),
            Wake::Timer => self.core.handle_timeout(now),
        }
    }

    fn command(&mut self, cmd: Command, now: u64) {
        match cmd {
            Command::Submit { request, opts, reply } => {
                // A write-capable request gets its key now, when it is made: the
                // same key goes with every send (v5 exactly-once writes).
                let key = request.wants_key().then(|| make_request_key(&self.rt));
                // Register the reply first: the core may answer at once.
                let id = self.core.submit_keyed(request, opts, key, now);
                self.replies.insert(id, reply);
            }
            Command::OpenStream { request, opts, token, items } => {
                let id = self.core.submit(request, opts, now);
                self.stream_ids.insert(token, id);
                self.streams.insert(id, (token, items));
            }
            Command::StreamConsumed { token, bytes } => {
                if let Some(id) = self.stream_ids.get(&token) {
                    self.core.stream_consumed(*id, bytes);
                }
            }
            Command::StreamCancel { token } => {
                if let Some(id) = self.stream_ids.get(&token) {
                    self.core.stream_cancel(*id);
                }
            }
            Command::ActorStopped { actor_id, generation, error } => {
                self.core.actor_stopped(&actor_id, generation, error)
            }
            Command::ActorIntent { actor_id, generation, intent, reply } => {
                let _ = reply.send(self.core.actor_intent(&actor_id, generation, intent));
            }
            Command::SetStartHandler(h) => {
                self.on_start = Some(h);
                for info in std::mem::take(&mut self.undelivered_starts) {
                    self.run_start(info);
                }
            }
            Command::SetStopHandler(h) => self.on_stop = Some(h),
            Command::Close { done } => {
                self.close_waiters.push(done);
                self.core.close(now);
            }
        }
    }

    /// Drains the core: frames to the socket (one send), then events.
    fn pump(&mut self) {
        loop {
            let mut frames = Vec::new();
            while let Some(f) = self.core.poll_transmit() {
                frames.push(f);
            }
            if !frames.is_empty() {
                match self.sender.as_mut() {
                    Some(s) => s.send(frames),
                    None => tracing::debug!(count = frames.len(), "frames for a socket that is gone dropped"),
                }
            }
            let Some(ev) = self.core.poll_event() else { break };
            self.event(ev);
        }
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Connect => {
                self.drop_socket(envoy_protocol::close::NORMAL, "reconnecting");
                let protocols = self.core.subprotocols(self.token.as_deref());
                self.connecting = Some(self.rt.connect(self.url.clone(), protocols));
            }
            Event::CloseSocket { code, reason } => {
                self.drop_socket(code, &reason);
                self.connecting = None;
            }
            Event::Response { id, result } => {
                if let Some((token, items)) = self.streams.remove(&id) {
                    self.stream_ids.remove(&token);
                    let _ = items.unbounded_send(StreamItem::End(result));
                } else if let Some(reply) = self.replies.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            Event::StreamRows { id, columns, rows, bytes } => {
                let delivered = self
                    .streams
                    .get(&id)
                    .is_some_and(|(_, items)| items.unbounded_send(StreamItem::Rows { columns, rows, bytes }).is_ok());
                if !delivered {
                    // Its consumer is gone: stop the engine.
                    self.core.stream_cancel(id);
                }
            }
            Event::ActorStart(info) => self.run_start(info),
            Event::ActorStop { actor, reason } => {
                tracing::debug!(actor_id = %actor.actor_id, generation = actor.generation, ?reason, "actor stop");
                match (self.on_stop.clone(), self.context(actor.clone())) {
                    (Some(h), Some(ctx)) => {
                        let ctx = ctx.stopping_because(reason);
                        let shared = self.shared.clone();
                        self.rt.spawn(boxed(async move {
                            // A panicking handler still lets the engine finish the stop.
                            let outcome = std::panic::AssertUnwindSafe(h(ctx)).catch_unwind().await;
                            let error = outcome.err().map(|_| "the stop handler panicked".to_string());
                            if let Some(s) = shared.upgrade() {
                                let _ = s.commands.unbounded_send(Command::ActorStopped {
                                    actor_id: actor.actor_id,
                                    generation: actor.generation,
                                    error,
                                });
                            }
                        }));
                    }
                    (None, _) | (_, None) => {
                        self.undelivered_starts.retain(|a| a.actor_id != actor.actor_id);
                        self.core.actor_stopped(&actor.actor_id, actor.generation, None);
                    }
                }
            }
            Event::State(state) => {
                if let Some(s) = self.shared.upgrade() {
                    *s.state.lock().unwrap_or_else(|e| e.into_inner()) = state.clone();
                }
                match state {
                    ConnectionState::Connected(_) => {
                        if let Some(r) = self.ready.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    ConnectionState::Closed { error } => {
                        if let Some(r) = self.ready.take() {
                            let _ = r.send(Err(error.unwrap_or(Error::Closed)));
                        }
                    }
                    ConnectionState::Connecting { .. } | ConnectionState::Reconnecting { .. } => {}
                }
            }
        }
    }

    fn run_start(&mut self, info: crate::core::ActorInfo) {
        match (self.on_start.clone(), self.context(info.clone())) {
            (Some(h), Some(ctx)) => self.rt.spawn(h(ctx)),
            (None, _) | (_, None) => self.undelivered_starts.push(info),
        }
    }

    fn context(&self, info: crate::core::ActorInfo) -> Option<ActorContext> {
        self.shared.upgrade().map(|s| ActorContext::new(crate::Client::from_shared(s), info))
    }

    fn drop_socket(&mut self, code: u16, reason: &str) {
        if let Some(mut s) = self.sender.take() {
            s.close(code, reason);
        }
        self.incoming = None;
    }
}
