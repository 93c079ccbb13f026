//! Child processes that die with the test.

use std::process::{Command, Stdio};

/// A spawned process killed (and reaped) on drop.
pub struct Child {
    inner: std::process::Child,
    name: String,
}

impl Child {
    /// Spawns `cmd`, inheriting stderr so failures show in the test output.
    pub fn spawn(name: &str, mut cmd: Command) -> Child {
        cmd.stdin(Stdio::null());
        let inner = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Child {
            inner,
            name: name.to_string(),
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// Whether the process has exited (and with what status).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.inner
            .try_wait()
            .unwrap_or_else(|e| panic!("wait {}: {e}", self.name))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.inner.id().to_string())
            .status();
        self.inner
            .wait()
            .unwrap_or_else(|e| panic!("wait {}: {e}", self.name))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.inner.try_wait() {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
    }
}
