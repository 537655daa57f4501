//! The baseline: a raw tokio-tungstenite broadcaster inside the bench.

use super::*;

/// One baseline run: a raw broadcaster on a free port, the same number of clients and duration,
/// `rate` frames per second.
pub(super) async fn baseline_run(ctx: &Context, rate: f64) -> BenchResult<FanoutRun> {
    let n = ctx.subscribers;
    let events = (rate * ctx.duration.as_secs_f64()).ceil() as usize;
    // Room for every event of the run, so a slow client is never dropped behind: the server
    // catches lagging subscribers up from its log, and the baseline must not do less.
    let capacity = (events + 1024).next_power_of_two().min(1 << 22);
    let (sender, _) = broadcast::channel::<Message>(capacity);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("baseline listener: {e}"))?;
    let url = format!(
        "ws://{}/",
        listener
            .local_addr()
            .map_err(|e| format!("baseline listener: {e}"))?
    );
    let acceptor = tokio::spawn(accept(listener, sender.clone()));
    let sockets = open_all(n, |_| connect(url.clone(), None)).await;
    let sockets = match sockets {
        Ok(sockets) => sockets,
        Err(e) => {
            acceptor.abort();
            return Err(e);
        }
    };
    // Each connection subscribed to the channel before its handshake completed, so every
    // client is listening now.
    let audience = Audience::listen(sockets, 0);
    let started = Instant::now();
    let written = broadcast_frames(&sender, rate, ctx.duration).await;
    let write_secs = started.elapsed().as_secs_f64();
    audience.drain(written * n as u64).await;
    let received = audience.finish().await?;
    acceptor.abort();
    drop(sender);
    Ok(summarize(received, written, write_secs, started))
}

/// Sends one stamped frame per tick at `rate` for `duration`; returns how many.
pub(super) async fn broadcast_frames(
    sender: &broadcast::Sender<Message>,
    rate: f64,
    duration: Duration,
) -> u64 {
    let deadline = Instant::now() + duration;
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1)).max(Duration::from_micros(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut position = 0u64;
    loop {
        tick.tick().await;
        if Instant::now() >= deadline {
            return position;
        }
        position += 1;
        let _ = sender.send(Message::text(frame(position, Utc::now())));
    }
}

/// The baseline's frame: the pre-serialized template with a position and a send time.
pub(super) fn frame(position: u64, at: DateTime<Utc>) -> String {
    let at = stamp(at);
    let mut text = String::with_capacity(
        FRAME_HEAD.len() + FRAME_MID.len() + FRAME_TAIL.len() + at.len() + 20,
    );
    text.push_str(FRAME_HEAD);
    text.push_str(&position.to_string());
    text.push_str(FRAME_MID);
    text.push_str(&at);
    text.push_str(FRAME_TAIL);
    text
}

/// The baseline server's accept loop: each connection subscribes to the channel, then
/// completes its WebSocket handshake and forwards frames.
pub(super) async fn accept(listener: TcpListener, sender: broadcast::Sender<Message>) {
    let mut connections = Vec::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("  baseline accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let frames = sender.subscribe();
        connections.push(AbortOnDrop(tokio::spawn(forward(stream, frames))));
    }
}

/// Aborts a task when dropped (the accept loop's connections end with it).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One baseline connection: every frame from the channel to the socket; what is already queued
/// goes out in the same flush.
pub(super) async fn forward(stream: TcpStream, mut frames: broadcast::Receiver<Message>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if socket.feed(frame).await.is_err() {
                        return;
                    }
                    while let Ok(more) = frames.try_recv() {
                        if socket.feed(more).await.is_err() {
                            return;
                        }
                    }
                    if socket.flush().await.is_err() {
                        return;
                    }
                }
                // The client sees the gap and counts it as missing.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.close(None).await;
}
