//! Child processes that die with the test.

use std::process::{Command, Stdio};

/// A spawned process killed (and reaped) on drop.
pub struct Child {
    inner: std::process::Child,
    name: String,
    /// Leads its own process group, killed as a whole on drop.
    group: bool,
}

impl Child {
    /// Spawns `cmd`, inheriting stderr so failures show in the test output.
    pub fn spawn(name: &str, mut cmd: Command) -> Child {
        cmd.stdin(Stdio::null());
        let inner = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Child {
            inner,
            name: name.to_string(),
            group: false,
        }
    }

    /// Like [`Child::spawn`], but the process leads a new process group and the whole group is
    /// killed on drop: whatever it started (a browser under its WebDriver server) goes with it.
    pub fn spawn_group(name: &str, mut cmd: Command) -> Child {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let mut child = Child::spawn(name, cmd);
        child.group = true;
        child
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

    /// Sends SIGTERM (to the whole group for [`Child::spawn_group`]) and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let target = if self.group {
            format!("-{}", self.inner.id())
        } else {
            self.inner.id().to_string()
        };
        let _ = Command::new("kill").args(["-TERM", "--", &target]).status();
        let status = self
            .inner
            .wait()
            .unwrap_or_else(|e| panic!("wait {}: {e}", self.name));
        // Reaped: the id may name another process group from now on.
        self.group = false;
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Before any wait: until the leader is reaped its id cannot name another group.
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.inner.id())])
                .stderr(Stdio::null())
                .status();
        }
        if let Ok(None) = self.inner.try_wait() {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
    }
}
