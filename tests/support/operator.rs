//! Run the real operator binary as a child process against the fake API server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running operator process; killed (by PID) when dropped.
pub struct Operator {
    pub child: Child,
    pub http_port: u16,
    pub identity: String,
    pub log: PathBuf,
}

/// Egress rules that let the operator reach the tests' loopback servers (but not the API server,
/// whose port a rule must name).
pub const LOOPBACK_ALLOWED: &str = "*,127.0.0.1,localhost";

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until `child` holds a listening socket on 127.0.0.1:`port`: a server started on a port
/// from [`free_port`] may find it taken by another test's server meanwhile, and a plain connect
/// would then reach the wrong one. `false`: it exited (the port was taken) or did not listen
/// within `within`.
pub fn wait_listening(child: &mut Child, port: u16, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if listens(child.id(), port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Start a server on a free port: `spawn(port)` starts it, and it must be seen holding the port
/// within `within` (see [`wait_listening`]); one that is not is ended with `end` and started
/// again on another port. `None` after five tries.
pub fn spawn_on_free_port(
    within: Duration,
    mut spawn: impl FnMut(u16) -> Child,
    end: impl Fn(&mut Child),
) -> Option<(u16, Child)> {
    for _ in 0..5 {
        let port = free_port();
        let mut child = spawn(port);
        if wait_listening(&mut child, port, within) {
            return Some((port, child));
        }
        end(&mut child);
    }
    None
}

/// Whether process `pid` owns the listening TCP socket on 127.0.0.1:`port` (from
/// /proc/net/tcp and the process's file descriptors).
fn listens(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let Some(inode) = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].to_string())
    }) else {
        return false;
    };
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == socket))
}

impl Operator {
    /// Start `image-replication-operator run` with the kubeconfig; `extra` args are appended.
    pub fn start(kubeconfig: &Path, dir: &Path, identity: &str, extra: &[&str]) -> Self {
        Self::start_on(free_port(), kubeconfig, dir, identity, extra, &[])
    }

    /// Start on a given HTTP port with extra environment variables.
    pub fn start_on(
        http_port: u16,
        kubeconfig: &Path,
        dir: &Path,
        identity: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let log = dir.join(format!("{identity}.log"));
        let out = std::fs::File::create(&log).unwrap();
        // A wrapper (for example `heaptrack -o /tmp/op`) to profile the operator under a test.
        let wrapper = std::env::var("IMGREP_TEST_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(words).arg(env!("CARGO_BIN_EXE_image-replication-operator"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_image-replication-operator")),
        };
        let child = cmd
            .args([
                "run",
                "--http-addr",
                &format!("127.0.0.1:{http_port}"),
                "--crd-wait-seconds",
                "30",
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", "operators")
            .env("RUST_LOG", "info,image_replication_operator=debug")
            .env_remove("KUBERNETES_SERVICE_HOST")
            // The test registries and stand-ins listen on loopback, which the default egress
            // policy refuses; a test may override these.
            .env("EGRESS_REGISTRY_HOSTS", LOOPBACK_ALLOWED)
            .env("EGRESS_CLOUD_HOSTS", LOOPBACK_ALLOWED)
            .envs(envs.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the operator binary");
        Self {
            child,
            http_port,
            identity: identity.to_string(),
            log,
        }
    }

    /// GET a path of the operator's HTTP server: (status, body), or None if not reachable.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Send SIGTERM and wait for the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL (kill -9): no cleanup, no lease handed over.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of operator {} ----\n{}", self.identity, self.logs());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns Some, or panic after `within` with `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
