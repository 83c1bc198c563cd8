//! `nova-live-migration status --watch`: the running evacuation as a table
//! (instance, state, destination, a progress bar, elapsed), redrawn in
//! place on a terminal, as plain lines (one per change) otherwise. It reads
//! only the journal, as `status` does for the run (no Nova call): the drain
//! writes the journal every tick. Ends when the run ends (or is found
//! interrupted), or on Ctrl-C (the default SIGINT: nothing to restore, the
//! cursor is never hidden).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use crate::plan::{InstanceRecord, Millis, Phase, ResultKind};
use crate::state::{LastRun, last_run};

/// One instance's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub index: usize,
    pub name: String,
    pub state: String,
    pub destination: String,
    pub percent: Option<u8>,
    /// Seconds since its first start (to its end when done).
    pub elapsed_s: Option<u64>,
}

impl Row {
    pub fn of(r: &InstanceRecord, now: Millis) -> Row {
        let migration = r.track.migration.as_ref();
        let state = match &r.phase {
            Phase::Pending => "pending".to_string(),
            Phase::Waiting { .. } => "waiting".to_string(),
            Phase::Starting { .. } => "starting".to_string(),
            Phase::Started { .. } => migration
                .map(|m| m.status.as_str().to_string())
                .unwrap_or_else(|| "started".into()),
            Phase::Stopping { .. } => "stopping".to_string(),
            Phase::Restarting { .. } => "starting-again".to_string(),
            Phase::Done { outcome } => ResultKind::from(*outcome).as_str().to_string(),
        };
        let percent = match r.outcome().map(ResultKind::from) {
            Some(ResultKind::Migrated | ResultKind::ColdMigrated) => Some(100),
            Some(_) => None,
            None => migration.and_then(|m| m.percent()),
        };
        let destination = r
            .destination
            .clone()
            .or_else(|| migration.and_then(|m| m.dest_compute.clone()))
            .or_else(|| r.target.clone())
            .unwrap_or_else(|| "-".into());
        let elapsed_s = r
            .first_started_at
            .map(|t| r.ended_at.unwrap_or(now).saturating_sub(t) / 1000);
        Row {
            index: r.index,
            name: r.name.clone(),
            state,
            destination,
            percent,
            elapsed_s,
        }
    }

    /// The plain line: `[2/3] focal-2 running → node4.maas 45% 12 s`.
    pub fn line(&self, total: usize) -> String {
        let pct = self.percent.map(|p| format!(" {p}%")).unwrap_or_default();
        let el = self
            .elapsed_s
            .map(|s| format!(" {s} s"))
            .unwrap_or_default();
        format!(
            "[{}/{total}] {} {} → {}{pct}{el}",
            self.index, self.name, self.state, self.destination
        )
    }
}

/// The rows of a run, in its order.
pub fn rows(run: &LastRun, now: Millis) -> Vec<Row> {
    let mut rows: Vec<Row> = run
        .record
        .drain
        .instances
        .iter()
        .map(|r| Row::of(r, now))
        .collect();
    rows.sort_by_key(|r| r.index);
    rows
}

/// `[########............]  40%`
fn bar(percent: Option<u8>) -> String {
    const WIDTH: usize = 20;
    match percent {
        Some(p) => {
            let full = usize::from(p.min(100)) * WIDTH / 100;
            format!("[{}{}] {p:>3}%", "#".repeat(full), ".".repeat(WIDTH - full))
        }
        None => format!("[{}]     ", " ".repeat(WIDTH)),
    }
}

/// The table a terminal shows: the run's line, a header, one row each.
pub fn table(run: &LastRun, rows: &[Row]) -> Vec<String> {
    let w = |f: &dyn Fn(&Row) -> usize, head: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(head.len())
    };
    let (wn, ws, wd) = (
        w(&|r| r.name.chars().count(), "INSTANCE"),
        w(&|r| r.state.chars().count(), "STATE"),
        w(&|r| r.destination.chars().count(), "DESTINATION"),
    );
    let mut out = vec![
        format!(
            "{} on {}: {}",
            run.record.kind.as_str(),
            run.record.host,
            run.line()
        ),
        format!(
            "{:<wn$}  {:<ws$}  {:<wd$}  {:<27}  ELAPSED",
            "INSTANCE", "STATE", "DESTINATION", "PROGRESS"
        ),
    ];
    for r in rows {
        let el = r
            .elapsed_s
            .map(|s| format!("{}:{:02}", s / 60, s % 60))
            .unwrap_or_else(|| "-".into());
        out.push(format!(
            "{:<wn$}  {:<ws$}  {:<wd$}  {}  {el}",
            r.name,
            r.state,
            r.destination,
            bar(r.percent)
        ));
    }
    out
}

/// How the frames go out.
pub enum Mode {
    /// Redrawn in place: the cursor goes back up over the last frame.
    Terminal { drawn: usize },
    /// A line per row that changed since the last frame.
    Plain { last: BTreeMap<usize, Row> },
}

impl Mode {
    pub fn new(terminal: bool) -> Mode {
        if terminal {
            Mode::Terminal { drawn: 0 }
        } else {
            Mode::Plain {
                last: BTreeMap::new(),
            }
        }
    }

    /// Writes one frame.
    pub fn frame(&mut self, run: &LastRun, now: Millis, out: &mut dyn Write) {
        let rows = rows(run, now);
        match self {
            Mode::Terminal { drawn } => {
                let mut s = String::new();
                if *drawn > 0 {
                    // Up over the last frame, then clear to the end.
                    s.push_str(&format!("\x1b[{}A\r\x1b[J", *drawn));
                }
                let lines = table(run, &rows);
                for l in &lines {
                    s.push_str(l);
                    s.push('\n');
                }
                *drawn = lines.len();
                let _ = out.write_all(s.as_bytes());
            }
            Mode::Plain { last } => {
                let total = rows.len();
                for r in rows {
                    // Elapsed alone does not make a new line.
                    let key = Row {
                        elapsed_s: None,
                        ..r.clone()
                    };
                    if last.get(&r.index) != Some(&key) {
                        let _ = writeln!(out, "{}", r.line(total));
                        last.insert(r.index, key);
                    }
                }
            }
        }
        let _ = out.flush();
    }
}

/// Watches until the run is no longer running: 0, or 1 when there is no
/// journal to watch (or it cannot be read).
pub fn watch(
    state_dir: &std::path::Path,
    terminal: bool,
    every: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut mode = Mode::new(terminal);
    loop {
        let run = match last_run(state_dir) {
            Ok(Some(run)) => run,
            Ok(None) => {
                let _ = writeln!(err, "no evacuation in the journal: nothing to watch");
                return 1;
            }
            Err(e) => {
                let _ = writeln!(err, "{e}");
                return 1;
            }
        };
        mode.frame(&run, crate::time::now_ms(), out);
        if !(run.running && run.record.in_flight()) {
            if let Mode::Plain { .. } = mode {
                let _ = writeln!(out, "{}", run.line());
            }
            return 0;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended_run() -> LastRun {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("journal.json"),
            include_str!("state/testdata/journal-v1-evacuate-ended.json"),
        )
        .unwrap();
        last_run(dir.path()).unwrap().unwrap()
    }

    #[test]
    fn a_terminal_frame_is_redrawn_over_the_last_one() {
        let run = ended_run();
        let mut mode = Mode::new(true);
        let mut first = Vec::new();
        mode.frame(&run, 0, &mut first);
        let first = String::from_utf8(first).unwrap();
        let lines: Vec<&str> = first.lines().collect();
        assert_eq!(lines.len(), 2 + 4, "{first}");
        assert!(
            lines[1].starts_with("INSTANCE    STATE     DESTINATION  PROGRESS"),
            "{first}"
        );
        assert_eq!(
            lines[2],
            "scale-0000  migrated  node2.maas   [####################] 100%  0:00"
        );
        assert!(!first.contains('\x1b'), "the first frame only draws");
        let mut second = Vec::new();
        mode.frame(&run, 0, &mut second);
        let second = String::from_utf8(second).unwrap();
        assert!(second.starts_with("\x1b[6A\r\x1b[J"), "{second:?}");
        assert_eq!(&second["\x1b[6A\r\x1b[J".len()..], first);
    }

    #[test]
    fn plain_mode_prints_only_what_changed_then_the_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("journal.json"),
            include_str!("state/testdata/journal-v1-evacuate-ended.json"),
        )
        .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = watch(
            dir.path(),
            false,
            Duration::from_millis(1),
            &mut out,
            &mut err,
        );
        assert_eq!(code, 0);
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "[1/4] scale-0000 migrated → node2.maas 100% 0 s");
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[4].ends_with("(ended)"), "{out}");
        let empty = tempfile::tempdir().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            watch(
                empty.path(),
                false,
                Duration::from_millis(1),
                &mut out,
                &mut err
            ),
            1
        );
        assert!(String::from_utf8(err).unwrap().contains("nothing to watch"));
    }

    #[test]
    fn bars_fill_with_the_percent() {
        assert_eq!(bar(Some(0)), "[....................]   0%");
        assert_eq!(bar(Some(45)), "[#########...........]  45%");
        assert_eq!(bar(Some(100)), "[####################] 100%");
        assert_eq!(bar(None).chars().count(), bar(Some(5)).chars().count());
    }

    #[test]
    fn a_plain_line_names_state_destination_progress_and_time() {
        let r = Row {
            index: 2,
            name: "focal-2".into(),
            state: "running".into(),
            destination: "node4.maas".into(),
            percent: Some(45),
            elapsed_s: Some(12),
        };
        assert_eq!(r.line(3), "[2/3] focal-2 running → node4.maas 45% 12 s");
        let p = Row {
            percent: None,
            elapsed_s: None,
            state: "pending".into(),
            destination: "-".into(),
            ..r
        };
        assert_eq!(p.line(3), "[2/3] focal-2 pending → -");
    }
}
