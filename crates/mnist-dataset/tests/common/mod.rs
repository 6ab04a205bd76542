//! Test support: a fault-injecting HTTP/1.1 server on 127.0.0.1, and the real files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mnist_dataset::{DataSources, Mirror, Progress};

/// What the server does for one request path.
#[derive(Clone)]
pub enum Reply {
    /// 200 with these bytes.
    Bytes(Vec<u8>),
    /// 200 with a text/html page.
    Html,
    /// A bare status code.
    Status(u16),
    /// 302 to this path on the same server.
    Redirect(String),
    /// Announces `bytes.len()` bytes, sends the first `sent`, then closes the connection.
    CutAfter(Vec<u8>, usize),
    /// Sends headers and a few bytes, then goes silent for this long.
    Stall(Vec<u8>, Duration),
}

/// A server that answers each request with `handler(path)`; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: a test makes a handful of requests; 200 is far past any of them.
            for stream in listener.incoming().take(200) {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                requests2.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                std::thread::spawn(move || serve(stream, &*handler));
            }
        });
        TestServer {
            addr,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mnist/", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, handler: &(dyn Fn(&str) -> Reply + Send + Sync)) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let head = |status: &str, extra: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
    };
    let _ = match handler(&path) {
        Reply::Bytes(b) => stream
            .write_all(
                head(
                    "200 OK",
                    "Content-Type: application/octet-stream\r\n",
                    b.len(),
                )
                .as_bytes(),
            )
            .and_then(|_| stream.write_all(&b)),
        Reply::Html => {
            let page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>";
            stream
                .write_all(
                    head(
                        "200 OK",
                        "Content-Type: text/html; charset=utf-8\r\n",
                        page.len(),
                    )
                    .as_bytes(),
                )
                .and_then(|_| stream.write_all(page))
        }
        Reply::Status(code) => stream.write_all(head(&format!("{code} Oops"), "", 0).as_bytes()),
        Reply::Redirect(to) => {
            stream.write_all(head("302 Found", &format!("Location: {to}\r\n"), 0).as_bytes())
        }
        Reply::CutAfter(b, sent) => stream
            .write_all(head("200 OK", "", b.len()).as_bytes())
            .and_then(|_| stream.write_all(&b[..sent])),
        Reply::Stall(b, pause) => {
            let _ = stream.write_all(head("200 OK", "", b.len()).as_bytes());
            let _ = stream.write_all(&b[..b.len().min(100)]);
            let _ = stream.flush();
            std::thread::sleep(pause);
            Ok(())
        }
    };
    let _ = stream.flush();
}

/// The repository's copy of the real MNIST files.
pub fn real_dir() -> PathBuf {
    mnist_dataset::source::bundled_dir()
}

/// The real `.gz` bytes of `name` (e.g. "t10k-labels-idx1-ubyte").
pub fn real_gz(name: &str) -> Vec<u8> {
    std::fs::read(real_dir().join(format!("{name}.gz"))).unwrap()
}

/// Sources that only use `mirrors`, caching into `cache`: no env, no repository copy.
pub fn mirrors_only(mirrors: Vec<Mirror>, cache: Option<PathBuf>) -> DataSources {
    DataSources {
        data_dir: None,
        cache_dir: cache,
        bundled_dir: None,
        mirrors,
        timeout: Duration::from_secs(2),
        max_bytes: mnist_dataset::idx::DEFAULT_MAX_BYTES,
        progress: Progress::LogOnly,
    }
}

/// Names of the entries in `dir` (sorted).
pub fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use flate2::{Compression, write::GzEncoder};
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}
