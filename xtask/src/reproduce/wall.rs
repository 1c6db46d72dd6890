//! The reproduction's wall time summed over its sessions: each invocation adds the seconds
//! it ran, however it ended (finished, interrupted, failed), to `<out>/sessions.json`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

const FILE: &str = "sessions.json";

/// The seconds each earlier session of this reproduction ran, oldest first.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Sessions {
    seconds: Vec<f64>,
}

/// The whole command's wall time so far: the earlier sessions and this one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WallTime {
    pub seconds: f64,
    pub sessions: usize,
}

/// Times this session; dropping it records the session (also when the command fails or a
/// Ctrl-C stops it; a killed process records nothing).
pub struct WallClock {
    path: PathBuf,
    earlier: Vec<f64>,
    started: Instant,
}

impl WallClock {
    /// Starts timing a session of the reproduction in `out`; `fresh` (a `--force` run, which
    /// trains everything again) forgets the earlier sessions. An unreadable record counts as
    /// none, with a warning.
    pub fn start(out: &Path, fresh: bool) -> Self {
        let path = out.join(FILE);
        let earlier = match std::fs::read_to_string(&path) {
            Ok(_) if fresh => Vec::new(),
            Ok(text) => match serde_json::from_str::<Sessions>(&text) {
                Ok(s) => s.seconds,
                Err(e) => {
                    eprintln!(
                        "reproduce: {}: {e}; the earlier sessions' time is not counted",
                        path.display()
                    );
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        };
        WallClock {
            path,
            earlier,
            started: Instant::now(),
        }
    }

    /// The earlier sessions' seconds and this one's until now.
    pub fn so_far(&self) -> WallTime {
        WallTime {
            seconds: self.earlier.iter().sum::<f64>() + self.started.elapsed().as_secs_f64(),
            sessions: self.earlier.len() + 1,
        }
    }
}

impl Drop for WallClock {
    fn drop(&mut self) {
        let mut seconds = std::mem::take(&mut self.earlier);
        seconds.push(self.started.elapsed().as_secs_f64());
        let text = serde_json::to_string_pretty(&Sessions { seconds }).expect("plain numbers");
        if let Err(e) = std::fs::write(&self.path, text) {
            eprintln!(
                "reproduce: cannot record this session's time in {}: {e}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_add_up_and_force_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let record = |s: &[f64]| {
            let text = serde_json::to_string(&Sessions {
                seconds: s.to_vec(),
            })
            .unwrap();
            std::fs::write(dir.path().join(FILE), text).unwrap();
        };
        record(&[100.0, 20.5]);
        let clock = WallClock::start(dir.path(), false);
        let t = clock.so_far();
        assert_eq!(t.sessions, 3);
        assert!(t.seconds >= 120.5 && t.seconds < 130.0, "{t:?}");
        drop(clock);
        let kept: Sessions =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(FILE)).unwrap()).unwrap();
        assert_eq!(kept.seconds.len(), 3);
        assert_eq!(&kept.seconds[..2], &[100.0, 20.5]);

        let fresh = WallClock::start(dir.path(), true);
        assert_eq!(fresh.so_far().sessions, 1);
        assert!(fresh.so_far().seconds < 10.0);
        drop(fresh);

        std::fs::write(dir.path().join(FILE), "not json").unwrap();
        assert_eq!(WallClock::start(dir.path(), false).so_far().sessions, 1);
    }
}
