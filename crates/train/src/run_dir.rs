//! The run folder as a unit that no crash can leave half-written.
//!
//! - A new run works in a staging folder beside `--out` and moves in whole at
//!   its first checkpoint, so a run that fails early leaves `--out` as it was.
//! - A checkpoint is committed in three moves. The weights and the trainer
//!   state are written to `*.next` files (each complete before it gets that
//!   name); then `checkpoint.json` is replaced atomically with the new step,
//!   which is the commit; then the `.next` files are renamed over the old
//!   ones. `recover` finishes a committed checkpoint (renames what is left)
//!   or discards an uncommitted one, so a crash at any instant leaves the
//!   previous checkpoint or the new one, both whole.
//! - One process at a time writes a run: `RunLock` holds a lock file beside
//!   `--out` naming the process, so a second `attn train` into the same
//!   folder (fresh, `--overwrite` or `--resume`) is refused instead of
//!   deleting the first one's staging folder or interleaving checkpoints; a
//!   lock whose process is gone (a crash, SIGKILL) is taken over.

use std::path::{Path, PathBuf};

use attn_model::checkpoint::{tmp_path, write_atomic, TensorFile, WEIGHTS_FILE};
use attn_model::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};

use crate::error::{Result, TrainError};

/// Names the step of the last complete checkpoint: written last, so a
/// crash at any instant leaves the previous one loadable.
pub const COMMIT_FILE: &str = "checkpoint.json";
/// The optimizer's moments and step, for `--resume`.
pub const STATE_FILE: &str = "trainer_state.safetensors";

/// `NAME.next`, where a checkpoint file waits for its commit.
pub fn next_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".next");
    path.with_file_name(name)
}

/// The staging folder of a new run into `out`: a hidden sibling, on the same
/// file system so that moving it in is one rename.
pub fn staging_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    out.with_file_name(format!(".{name}.attn-new"))
}

/// Whether `dir` holds a run (or a model) that a new run would replace.
pub fn holds_run(dir: &Path) -> bool {
    ["config.json", WEIGHTS_FILE, ADAPTER_CONFIG, ADAPTER_WEIGHTS, STATE_FILE, COMMIT_FILE, "metrics.jsonl"].iter().any(|f| dir.join(f).exists())
}

fn sync_dir(dir: &Path) -> Result<()> {
    // A rename is durable once its folder is synced.
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(TrainError::io(dir))
}

fn step_of(path: &Path) -> Option<usize> {
    TensorFile::open(path).ok()?.metadata().ok()?.get("step")?.parse().ok()
}

/// The step `checkpoint.json` commits, if any.
pub fn committed_step(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join(COMMIT_FILE)).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64().map(|s| s as usize)
}

/// The files a checkpoint's weights may be: a model's, or a LoRA run's adapter.
const WEIGHT_FILES: [&str; 2] = [WEIGHTS_FILE, ADAPTER_WEIGHTS];

/// Writes a checkpoint as one unit. `write_next(weights_next, state_next)`
/// writes the two files (complete, then renamed into those names);
/// `weights` is `model.safetensors` or, for a LoRA run, the adapter's file.
pub fn commit(dir: &Path, step: usize, weights: &str, write_next: impl FnOnce(&Path, &Path) -> Result<()>) -> Result<()> {
    let (model, state) = (dir.join(weights), dir.join(STATE_FILE));
    write_next(&next_path(&model), &next_path(&state))?;
    sync_dir(dir)?;
    let commit = dir.join(COMMIT_FILE);
    let record = serde_json::json!({"step": step, "files": [weights, STATE_FILE]});
    write_atomic(&commit, record.to_string().as_bytes()).map_err(|e| {
        let _ = std::fs::remove_file(tmp_path(&commit));
        TrainError::io(&commit)(e)
    })?;
    sync_dir(dir)?;
    finish_pending(dir)
}

/// Renames committed `.next` files over their targets.
fn finish_pending(dir: &Path) -> Result<()> {
    for f in [WEIGHT_FILES[0], WEIGHT_FILES[1], STATE_FILE] {
        let (target, next) = (dir.join(f), next_path(&dir.join(f)));
        if next.exists() {
            std::fs::rename(&next, &target).map_err(TrainError::io(&target))?;
        }
    }
    sync_dir(dir)
}

/// Brings a run folder to its last committed checkpoint after a crash:
/// finishes the renames of a committed checkpoint, deletes the files of an
/// uncommitted one and any temporary file. Returns what it did, for a note.
pub fn recover(dir: &Path) -> Result<Option<String>> {
    let committed = committed_step(dir);
    let mut done = Vec::new();
    for f in [WEIGHT_FILES[0], WEIGHT_FILES[1], STATE_FILE] {
        let next = next_path(&dir.join(f));
        if !next.exists() {
            continue;
        }
        match (step_of(&next), committed) {
            (Some(s), Some(c)) if s == c => {
                std::fs::rename(&next, dir.join(f)).map_err(TrainError::io(&next))?;
                done.push(format!("completed the step-{s} {f}"));
            }
            _ => {
                std::fs::remove_file(&next).map_err(TrainError::io(&next))?;
                done.push(format!("discarded an uncommitted {f}"));
            }
        }
    }
    for entry in std::fs::read_dir(dir).map_err(TrainError::io(dir))?.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "tmp") {
            let _ = std::fs::remove_file(&p);
        }
    }
    if done.is_empty() {
        return Ok(None);
    }
    sync_dir(dir)?;
    Ok(Some(done.join("; ")))
}

/// Refuses an `--out` a new run must not touch: one that holds a run
/// (unless `overwrite`), or a non-empty folder that holds something else.
pub fn check_new_target(out: &Path, overwrite: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        return Err(TrainError::Config(format!("--out {} is a file, not a folder; choose another --out", out.display())));
    }
    if holds_run(out) {
        if overwrite {
            return Ok(());
        }
        let step = committed_step(out).or_else(|| step_of(&out.join(STATE_FILE)));
        return Err(TrainError::Config(format!(
            "--out {} already holds a run{}; continue it with --resume, replace it with --overwrite, or choose another --out",
            out.display(),
            step.map_or(String::new(), |s| format!(" (checkpoint at step {s})"))
        )));
    }
    let empty = std::fs::read_dir(out).map_err(TrainError::io(out))?.next().is_none();
    if !empty {
        return Err(TrainError::Config(format!(
            "--out {} is a folder with other files in it and no attn run; a run needs a new or empty folder, choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// Moves a new run's staging folder to `out`. A run already in `out` (only
/// with --overwrite) is moved aside first and deleted once the new one is in
/// place; an empty folder is replaced.
pub fn publish(staging: &Path, out: &Path) -> Result<()> {
    let aside = out.with_file_name(format!(".{}.attn-old", out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let had_old = out.exists() && holds_run(out);
    if out.exists() && !had_old {
        std::fs::remove_dir(out).map_err(TrainError::io(out))?;
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(out, &aside).map_err(TrainError::io(out))?;
    }
    std::fs::rename(staging, out).map_err(TrainError::io(out))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    if had_old {
        std::fs::remove_dir_all(&aside).map_err(TrainError::io(&aside))?;
    }
    Ok(())
}

/// The lock on a run folder, released when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock on `out`, refusing while another live process holds it.
    pub fn acquire(out: &Path) -> Result<RunLock> {
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        let path = out.with_file_name(format!(".{name}.attn-lock"));
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(TrainError::io(parent))?;
        }
        let me = std::process::id();
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(format!("{me}\n").as_bytes()).map_err(TrainError::io(&path))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok());
                    if let Some(pid) = holder.filter(|&p| p != me && process_alive(p)) {
                        return Err(TrainError::Config(format!(
                            "--out {} is being written by another attn process (pid {pid}, lock {}); wait for it to finish or stop it, or choose another --out",
                            out.display(),
                            path.display()
                        )));
                    }
                    // Left by a process that is gone: take it over.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(TrainError::io(&path)(e)),
            }
        }
        Err(TrainError::Config(format!("could not take the lock {} on --out {}", path.display(), out.display())))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    // Signal 0 checks that the process exists without touching it; EPERM
    // means it exists but belongs to someone else.
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 sends nothing.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    // Without a way to ask, a lock file is trusted to be live.
    true
}
