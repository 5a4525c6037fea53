//! Network links a test can cut and restore. [`Link`] is what a test
//! needs; [`TcpLink`] implements it on loopback with a TCP proxy of the
//! test's own between two servers (for example an edge site's leaf
//! connection and the centre's leaf-node listener): cutting it closes
//! every connection through it and refuses new ones, so the link really
//! drops, as a pulled cable or a firewall would make it; restoring lets
//! connections through again. Network namespaces (`ip link set … down`)
//! can implement the same trait.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A link between two parts of a test's network.
pub trait Link {
    /// Cuts the link: open connections drop, new ones fail.
    fn cut(&self);
    /// Restores the link: connections may be made again.
    fn restore(&self);
    /// Whether the link is up.
    fn is_up(&self) -> bool;
}

/// A TCP proxy on `127.0.0.1`, forwarding to one target address.
#[derive(Debug)]
pub struct TcpLink {
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    down: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every open connection, to shut them down on a cut.
    open: Mutex<Vec<TcpStream>>,
}

impl State {
    fn drop_all(&self) {
        let mut open = self.open.lock().expect("the link's connections");
        for stream in open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl TcpLink {
    /// A proxy on a free loopback port forwarding to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the link");
        let addr = listener.local_addr().expect("the link's address");
        let state = Arc::new(State::default());
        let accepting = state.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if accepting.down.load(Ordering::SeqCst) {
                    // A cut link: the connection is made and dropped at once.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                forward(&accepting, client, server);
            }
        });
        TcpLink { addr, state }
    }

    /// The proxy's address: connect here instead of to the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Copies bytes both ways between `client` and `server` until either
/// side closes or the link is cut.
fn forward(state: &Arc<State>, client: TcpStream, server: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut open = state.open.lock().expect("the link's connections");
        for s in [&client, &server] {
            if let Ok(clone) = s.try_clone() {
                open.push(clone);
            }
        }
    }
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
            continue;
        };
        thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
}

impl Link for TcpLink {
    fn cut(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.state.drop_all();
    }

    fn restore(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }

    fn is_up(&self) -> bool {
        !self.state.down.load(Ordering::SeqCst)
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.state.drop_all();
        // Wake the accept loop so it sees `stopped` and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(conn: &mut TcpStream) -> bool {
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4];
        conn.write_all(b"ping").is_ok() && conn.read_exact(&mut buf).is_ok() && &buf == b"ping"
    }

    #[test]
    fn a_cut_drops_open_connections_and_refuses_new_ones_until_restored() {
        let link = TcpLink::start(echo());
        let mut conn = TcpStream::connect(link.addr()).unwrap();
        assert!(round_trip(&mut conn), "through the link");
        link.cut();
        assert!(!link.is_up());
        assert!(!round_trip(&mut conn), "an open connection drops");
        let mut new = TcpStream::connect(link.addr()).unwrap();
        assert!(!round_trip(&mut new), "a new one is dropped at once");
        link.restore();
        let mut again = TcpStream::connect(link.addr()).unwrap();
        assert!(round_trip(&mut again), "restored");
    }
}
