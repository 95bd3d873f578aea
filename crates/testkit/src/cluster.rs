//! Starting real supernode, dfdaemon and dfget processes on 127.0.0.1 (or inside a network
//! namespace) for tests, benchmarks and the demo. Every process is killed by PID when its
//! handle drops, so a failing test leaves nothing running.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Directory holding the workspace's built binaries (`ODONATA_BIN_DIR`, else next to the
/// running test or program: target/<profile>/).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ODONATA_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one of the workspace's binaries; fails clearly when it has not been built.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.exists() {
        bail!(
            "{} not found: build the binaries first (cargo build --workspace --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests on one machine).
pub fn free_port() -> anyhow::Result<u16> {
    let l = StdListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts `cmd` with its output sent to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        // Append, so a restarted process's log follows the killed one's.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it with SIGKILL (as a crash would) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks it to stop with SIGTERM and waits up to `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_tcp(addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr} after {limit:?}")
}

/// Waits until a unix socket accepts connections.
pub fn wait_unix(path: &Path, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("no daemon on {} after {limit:?}", path.display())
}

/// A supernode process on 127.0.0.1.
pub struct Supernode {
    /// The process.
    pub proc: Proc,
    /// Control address.
    pub addr: SocketAddr,
    /// Upload address.
    pub upload: SocketAddr,
    /// Its home.
    pub home: PathBuf,
    config: PathBuf,
}

impl Supernode {
    /// Starts a supernode with its home under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_in(dir.join("supernode"), PathBuf::from("/dev/null"))
    }

    /// Starts a supernode with its home under `dir` and `yaml` as its config file.
    pub fn start_with_config(dir: &Path, yaml: &str) -> anyhow::Result<Self> {
        let config = dir.join("supernode.yml");
        std::fs::write(&config, yaml)?;
        Self::start_in(dir.join("supernode"), config)
    }

    /// Starts a supernode with this exact home and config file.
    pub fn start_in(home: PathBuf, config: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&home)?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let upload: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let proc = Self::spawn(&home, addr, upload, &config)?;
        Ok(Self {
            proc,
            addr,
            upload,
            home,
            config,
        })
    }

    fn spawn(
        home: &Path,
        addr: SocketAddr,
        upload: SocketAddr,
        config: &Path,
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(bin("supernode")?);
        cmd.arg("--home")
            .arg(home)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--upload-listen")
            .arg(upload.to_string())
            .arg("--config")
            .arg(config);
        let p = Proc::spawn("supernode", cmd, &home.join("supernode.log"))?;
        wait_tcp(addr, Duration::from_secs(20))?;
        Ok(p)
    }

    /// Restarts the process on the same addresses and home.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill();
        self.proc = Self::spawn(&self.home, self.addr, self.upload, &self.config)?;
        Ok(())
    }
}

/// A dfdaemon process on 127.0.0.1.
pub struct Daemon {
    /// The process.
    pub proc: Proc,
    /// Its home (the socket is inside).
    pub home: PathBuf,
    /// Upload address.
    pub upload: SocketAddr,
    supernodes: Vec<String>,
    extra: Vec<String>,
}

impl Daemon {
    /// Starts a daemon named `name` under `dir`, using `supernodes`.
    pub fn start(
        dir: &Path,
        name: &str,
        supernodes: &[String],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let home = dir.join(name);
        std::fs::create_dir_all(&home)?;
        let upload: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let proc = Self::spawn(&home, upload, supernodes, &extra)?;
        Ok(Self {
            proc,
            home,
            upload,
            supernodes: supernodes.to_vec(),
            extra,
        })
    }

    fn spawn(
        home: &Path,
        upload: SocketAddr,
        supernodes: &[String],
        extra: &[String],
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(bin("dfdaemon")?);
        cmd.arg("--home")
            .arg(home)
            .arg("--upload-listen")
            .arg(upload.to_string());
        // A test may bring its own config file; otherwise none is read.
        if !extra.iter().any(|a| a == "--config") {
            cmd.arg("--config").arg("/dev/null");
        }
        cmd.args(extra);
        for s in supernodes {
            cmd.arg("--supernode").arg(s);
        }
        let p = Proc::spawn("dfdaemon", cmd, &home.join("dfdaemon.log"))?;
        wait_unix(&home.join("dfdaemon.sock"), Duration::from_secs(20))?;
        wait_tcp(upload, Duration::from_secs(20))?;
        Ok(p)
    }

    /// Restarts the process on the same address and home.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill();
        self.proc = Self::spawn(&self.home, self.upload, &self.supernodes, &self.extra)?;
        Ok(())
    }

    /// A `dfget` command bound to this daemon (add -u/-o and flags).
    pub fn dfget(&self) -> anyhow::Result<Command> {
        let mut cmd = Command::new(bin("dfget")?);
        cmd.arg("--home")
            .arg(&self.home)
            .arg("--config")
            .arg("/dev/null");
        Ok(cmd)
    }
}

/// A `dfget` command with no daemon: it runs a peer in-process with its home in `home`.
pub fn dfget_standalone(home: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin("dfget")?);
    cmd.arg("--home").arg(home).arg("--config").arg("/dev/null");
    Ok(cmd)
}

/// Runs a command to its end with a time limit; kills it past the limit.
pub fn run_with_limit(mut cmd: Command, limit: Duration) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting command")?;
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "command did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
