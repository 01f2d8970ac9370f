//! `metrics.jsonl` (one JSON object per logged step) and the loss-curve picture.

use std::io::Write;
use std::path::{Path, PathBuf};

use attn_inspect::curves::{plot_curves, Curve, RGBColor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

#[derive(Clone, Debug, Serialize, Deserialize)]
/// One line of `metrics.jsonl`.
pub struct StepRecord {
    /// The step (1-based).
    pub step: usize,
    /// Its mean training loss.
    pub train_loss: f32,
    /// The learning rate it used.
    pub lr: f32,
    /// Training tokens a second in that step.
    pub tok_per_s: f64,
    /// The gradients' global norm, before clipping.
    pub grad_norm: f32,
    /// Seconds since the run (or its resumption) started.
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// The validation loss, on eval steps.
    pub val_loss: Option<f32>,
}

/// `metrics.jsonl`: every step's record, appended as it happens.
pub struct MetricsLog {
    /// The file.
    pub path: PathBuf,
    /// Every record so far.
    pub records: Vec<StepRecord>,
}

impl MetricsLog {
    /// Opens the log, keeping records up to `keep_through` (the resumed step)
    /// and dropping any later ones an interrupted run wrote after its last
    /// checkpoint; with `None` the log starts empty.
    pub fn open(path: &Path, keep_through: Option<usize>) -> Result<Self> {
        let mut records = Vec::new();
        if let Some(last) = keep_through {
            if let Ok(text) = std::fs::read_to_string(path) {
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                for (i, line) in lines.iter().enumerate() {
                    let r: StepRecord = match serde_json::from_str(line) {
                        Ok(r) => r,
                        // A line cut short by a crash can only be the last,
                        // written after the checkpoint being resumed.
                        Err(_) if i + 1 == lines.len() => break,
                        Err(e) => return Err(TrainError::Data(format!("{}: line {}: {e}; the metrics log is damaged", path.display(), i + 1))),
                    };
                    if r.step <= last {
                        records.push(r);
                    }
                }
            }
        }
        let log = MetricsLog { path: path.to_path_buf(), records };
        log.rewrite()?;
        Ok(log)
    }

    fn rewrite(&self) -> Result<()> {
        let mut text = String::new();
        for r in &self.records {
            text.push_str(&serde_json::to_string(r).expect("serializes"));
            text.push('\n');
        }
        attn_model::checkpoint::write_atomic(&self.path, text.as_bytes()).map_err(TrainError::io(&self.path))
    }

    /// Appends `r` to the file and to `records`.
    pub fn push(&mut self, r: StepRecord) -> Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&self.path).map_err(TrainError::io(&self.path))?;
        writeln!(f, "{}", serde_json::to_string(&r).expect("serializes")).map_err(TrainError::io(&self.path))?;
        self.records.push(r);
        Ok(())
    }
}

/// The run's own loss curve: train loss (thin) and val loss (bold).
pub fn plot_run(path: &Path, title: &str, records: &[StepRecord]) -> Result<()> {
    let train = records.iter().map(|r| (r.step as f64, r.train_loss as f64)).collect();
    let val = records.iter().filter_map(|r| r.val_loss.map(|v| (r.step as f64, v as f64))).collect();
    let curves = [
        Curve { label: "train", points: train, color: RGBColor(120, 160, 220), width: 1 },
        Curve { label: "val", points: val, color: RGBColor(200, 60, 40), width: 3 },
    ];
    plot_curves(path, title, &curves).map_err(TrainError::io(path))
}
