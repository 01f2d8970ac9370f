//! `metrics.jsonl` (one JSON object per logged step) and the loss-curve picture.

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    pub train_loss: f32,
    pub lr: f32,
    pub tok_per_s: f64,
    pub grad_norm: f32,
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f32>,
}

pub struct MetricsLog {
    pub path: PathBuf,
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
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let r: StepRecord = serde_json::from_str(line).map_err(|e| TrainError::Data(format!("{}: bad line: {e}", path.display())))?;
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

    pub fn push(&mut self, r: StepRecord) -> Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&self.path).map_err(TrainError::io(&self.path))?;
        writeln!(f, "{}", serde_json::to_string(&r).expect("serializes")).map_err(TrainError::io(&self.path))?;
        self.records.push(r);
        Ok(())
    }
}

static FONT: std::sync::Once = std::sync::Once::new();

/// Registers the bundled DejaVu Sans (free licence, assets/) so plots need no
/// system fonts.
pub fn register_font() {
    FONT.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf"));
    });
}

/// A named series of (step, loss) points.
pub struct Curve<'a> {
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub width: u32,
}

/// Draws loss curves to a PNG (or SVG, by extension), written atomically.
pub fn plot_curves(path: &Path, title: &str, curves: &[Curve]) -> Result<()> {
    register_font();
    let all = curves.iter().flat_map(|c| c.points.iter());
    let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !y0.is_finite() {
        return Ok(()); // nothing to draw yet
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    // The image encoder picks the format from the extension, so the temp file keeps it.
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_extension(format!("tmp.{ext}"));
    let is_svg = path.extension().is_some_and(|e| e == "svg");
    let area = (0f64..x1, (y0 - pad)..(y1 + pad));
    let res = if is_svg {
        draw_chart(SVGBackend::new(&tmp, (900, 560)).into_drawing_area(), title, area, curves)
    } else {
        draw_chart(BitMapBackend::new(&tmp, (900, 560)).into_drawing_area(), title, area, curves)
    };
    res.map_err(|e| TrainError::Data(format!("{}: cannot draw the loss curve: {e}", path.display())))?;
    std::fs::rename(&tmp, path).map_err(TrainError::io(path))
}

type Area = (std::ops::Range<f64>, std::ops::Range<f64>);

fn draw_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    area: Area,
    curves: &[Curve],
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let mut chart =
        ChartBuilder::on(&root).caption(title, ("sans-serif", 22)).margin(16).x_label_area_size(40).y_label_area_size(56).build_cartesian_2d(area.0, area.1)?;
    chart.configure_mesh().x_desc("step").y_desc("loss (nats/token)").label_style(("sans-serif", 14)).draw()?;
    for c in curves {
        let style = ShapeStyle { color: c.color.to_rgba(), filled: false, stroke_width: c.width };
        chart
            .draw_series(LineSeries::new(c.points.iter().cloned(), style))?
            .label(c.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", 14)).draw()?;
    root.present()?;
    Ok(())
}

/// The run's own loss curve: train loss (thin) and val loss (bold).
pub fn plot_run(path: &Path, title: &str, records: &[StepRecord]) -> Result<()> {
    let train = records.iter().map(|r| (r.step as f64, r.train_loss as f64)).collect();
    let val = records.iter().filter_map(|r| r.val_loss.map(|v| (r.step as f64, v as f64))).collect();
    plot_curves(
        path,
        title,
        &[
            Curve { label: "train", points: train, color: RGBColor(120, 160, 220), width: 1 },
            Curve { label: "val", points: val, color: RGBColor(200, 60, 40), width: 3 },
        ],
    )
}
