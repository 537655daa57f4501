//! A TCP proxy the test controls, between the server and a shared service it must not stop:
//! `cut` closes every connection through it and refuses new ones until `restore`.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on a free local port to `target`.
pub struct Proxy {
    /// `host:port` to connect to instead of the target.
    pub address: String,
    open: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (open, watching) = watch::channel(true);
        let target: Arc<str> = target.into();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut state = watching.clone();
                if !*state.borrow_and_update() {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(&*target).await else {
                        return;
                    };
                    let (mut client, mut upstream) = (client, upstream);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = state.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Proxy {
            address,
            open,
            task,
        }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
