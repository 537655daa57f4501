//! A TCP proxy the test controls, between the server and a shared service it must not stop:
//! `cut` closes every connection through it and refuses new ones; `blackhole` keeps every
//! connection open but passes nothing either way (a partition: no reset, no answer) and holds
//! new ones the same; `restore` lets new connections through again (those cut off or held in
//! the blackhole are closed, as a healed partition finds them dead).

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Blackhole,
    Cut,
}

/// A proxy on a free local port to `target`.
pub struct Proxy {
    /// `host:port` to connect to instead of the target.
    pub address: String,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (mode, watching) = watch::channel(Mode::Open);
        let target: Arc<str> = target.into();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = watching.clone();
                tokio::spawn(forward(client, target.clone(), state));
            }
        });
        Proxy {
            address,
            mode,
            task,
        }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Passes nothing, closes nothing: connections hang.
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

/// One connection: copied while the proxy is open; then held (blackhole) or closed (cut) until
/// the mode changes again, and closed.
async fn forward(mut client: TcpStream, target: Arc<str>, mut state: watch::Receiver<Mode>) {
    let mode = *state.borrow_and_update();
    if mode != Mode::Open {
        if mode == Mode::Blackhole {
            let _ = state.wait_for(|now| *now != Mode::Blackhole).await;
        }
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(&*target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
        _ = state.wait_for(|now| *now != Mode::Open) => {}
    }
    if *state.borrow() == Mode::Blackhole {
        // Hold both sockets, reading nothing, until the partition ends.
        let _ = state.wait_for(|now| *now != Mode::Blackhole).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
