//! `--run CMD…`: the proxy supervises the app. It starts the command in a
//! process group of its own, restarts it when it exits (with a growing
//! pause, so a crashing app does not spin), stops it for a restore and
//! starts it again on the restored home, and stops it when the proxy exits.
//! After every start the app's socket is marked replaced, so each CometBFT
//! connection opens a fresh app connection.

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::link::AppSocket;

/// How long the app has to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The pause before restarting an app that exited, doubled per quick exit.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);
/// An app that ran this long before exiting is restarted without delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The supervised app.
pub struct AppProcess {
    command: Vec<String>,
    socket: Arc<AppSocket>,
    state: Mutex<State>,
}

struct State {
    child: Option<Child>,
    started: Instant,
    /// Set while a restore or shutdown holds the app down.
    held: bool,
    pause: Duration,
    starts: u64,
}

impl AppProcess {
    /// Starts `command` and a thread that restarts it when it exits.
    pub fn start(command: Vec<String>, socket: Arc<AppSocket>) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(!command.is_empty(), "--run needs a command");
        let process = Arc::new(AppProcess {
            command,
            socket,
            state: Mutex::new(State {
                child: None,
                started: Instant::now(),
                held: false,
                pause: FIRST_PAUSE,
                starts: 0,
            }),
        });
        {
            let mut state = process.lock();
            process.spawn(&mut state)?;
        }
        let watched = Arc::downgrade(&process);
        std::thread::Builder::new()
            .name("app-supervisor".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                let Some(process) = watched.upgrade() else { return };
                process.restart_if_exited();
            })
            .context("starting the app supervisor")?;
        Ok(process)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many times the app has been started.
    pub fn starts(&self) -> u64 {
        self.lock().starts
    }

    /// The running app's process id.
    pub fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(Child::id)
    }

    fn spawn(&self, state: &mut State) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the app: {}", self.command.join(" ")))?;
        tracing::info!(pid = child.id(), command = %self.command.join(" "), "app: started");
        state.child = Some(child);
        state.started = Instant::now();
        state.starts += 1;
        self.socket.replaced();
        Ok(())
    }

    fn restart_if_exited(&self) {
        let mut state = self.lock();
        if state.held {
            return;
        }
        let Some(child) = state.child.as_mut() else { return };
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("app: cannot tell whether it is running: {e}");
                return;
            }
        };
        let ran = state.started.elapsed();
        state.child = None;
        state.pause = if ran >= HEALTHY_RUN {
            FIRST_PAUSE
        } else {
            (state.pause * 2).min(LONGEST_PAUSE)
        };
        let pause = state.pause;
        tracing::warn!(%status, ran_seconds = ran.as_secs(), "app: exited; restarting it in {pause:?}");
        drop(state);
        std::thread::sleep(pause);
        let mut state = self.lock();
        if state.held || state.child.is_some() {
            return;
        }
        if let Err(e) = self.spawn(&mut state) {
            tracing::error!("app: {e:#}; trying again later");
        }
    }

    /// Stops the app, runs `change` (a restore's swap of its home), and
    /// starts the app again whatever `change` returned.
    pub fn with_app_stopped<T>(&self, change: impl FnOnce() -> T) -> anyhow::Result<T> {
        let mut state = self.lock();
        state.held = true;
        if let Some(child) = state.child.take() {
            stop(child);
        }
        let result = change();
        state.held = false;
        state.pause = FIRST_PAUSE;
        self.spawn(&mut state)?;
        Ok(result)
    }

    /// Stops the app for good (the proxy is exiting).
    pub fn shutdown(&self) {
        let mut state = self.lock();
        state.held = true;
        if let Some(child) = state.child.take() {
            stop(child);
        }
    }
}

/// SIGTERM to the app's process group, then SIGKILL after the grace period.
fn stop(mut child: Child) {
    let group = child.id() as i32;
    // SAFETY: kill(2) with a negative pid signals the process group the
    // child leads (it was started with process_group(0)); it reads no memory.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            tracing::info!(%status, "app: stopped");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!("app: still running {STOP_GRACE:?} after SIGTERM; killing it");
    // SAFETY: as above, with SIGKILL.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
}
