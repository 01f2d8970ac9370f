//! Pictures: attention heatmaps (one head with its tokens, or every layer by
//! every head) and labelled scatter plots of embedding projections.
//!
//! Heatmaps are laid out by hand in pixels, not on a chart's axes, so that
//! every token gets exactly one label centred on its row and column. Colours
//! run from 0 to 1 on a fixed viridis scale, so pictures of different heads
//! compare directly. PNG or SVG by the file's extension; files are written to
//! a temporary name and renamed, so a reader never sees half a picture.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{InspectError, Result, Trace};

type Draw<DB> = DrawingArea<DB, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// What a token looks like on an axis: spaces and line breaks made visible,
/// long tokens shortened.
pub fn label(token: &str) -> String {
    let s: String = token
        .chars()
        .map(|c| match c {
            ' ' => '·',
            '\n' => '↵',
            '\t' => '→',
            c if c.is_control() => '�',
            c => c,
        })
        .collect();
    if s.chars().count() > 14 {
        s.chars().take(13).chain(std::iter::once('…')).collect()
    } else {
        s
    }
}

fn heat(p: f32) -> RGBColor {
    ViridisRGB.get_color(p.clamp(0.0, 1.0))
}

/// Renders with `draw` to `path` (PNG or SVG by extension) of `size` pixels.
/// (`f` and `g` are the same drawing code, instantiated for each backend.)
fn render(path: &Path, size: (u32, u32), f: &dyn Fn(Draw<BitMapBackend>) -> DrawResult, g: &dyn Fn(Draw<SVGBackend>) -> DrawResult) -> Result<()> {
    crate::curves::register_font();
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    // plotters reports a missing folder as an opaque backend error, found
    // only after all the drawing; name it up front.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        let msg = format!("the folder {} does not exist; create it or choose another --out", dir.display());
        return Err(InspectError::Output { path: path.into(), msg });
    }
    let tmp = path.with_extension(format!("tmp.{ext}"));
    let res = match ext.as_str() {
        "png" => f(BitMapBackend::new(&tmp, size).into_drawing_area()),
        "svg" => g(SVGBackend::new(&tmp, size).into_drawing_area()),
        other => return Err(InspectError::Output { path: path.into(), msg: format!("unknown picture type {other:?}; use .png, .svg or .json") }),
    };
    res.map_err(|e| InspectError::Output { path: path.into(), msg: format!("cannot draw: {e}") })?;
    std::fs::rename(&tmp, path).map_err(|e| InspectError::Output { path: path.into(), msg: e.to_string() })
}

/// A vertical colour bar for [0, 1] at (x, y) of height `h`, ticks at quarters.
fn colour_bar<DB: DrawingBackend>(root: &Draw<DB>, x: i32, y: i32, h: i32, font: u32) -> DrawResult
where
    DB::ErrorType: 'static,
{
    for i in 0..h {
        let v = 1.0 - i as f32 / (h - 1) as f32;
        root.draw(&Rectangle::new([(x, y + i), (x + 18, y + i + 1)], heat(v).filled()))?;
    }
    root.draw(&Rectangle::new([(x, y), (x + 18, y + h)], BLACK.stroke_width(1)))?;
    let style = TextStyle::from(("sans-serif", font).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for k in 0..=4 {
        let v = k as f32 / 4.0;
        let yy = y + ((1.0 - v) * (h - 1) as f32) as i32;
        root.draw(&PathElement::new(vec![(x + 18, yy), (x + 23, yy)], BLACK))?;
        root.draw(&Text::new(format!("{v:.2}"), (x + 26, yy), style.clone()))?;
    }
    let vstyle = TextStyle::from(("sans-serif", font).into_font().transform(FontTransform::Rotate270)).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new("attention probability", (x + 78, y + h / 2), vstyle))?;
    Ok(())
}

/// Layout of one head's heatmap with its tokens on both axes.
struct HeadLayout {
    cell: i32,
    font: u32,
    label_w: i32,
    top: i32,
}

impl HeadLayout {
    fn new(trace: &Trace) -> Self {
        let t = trace.len() as i32;
        let cell = (960 / t).clamp(14, 48);
        let font = ((cell as f32 * 0.75) as u32).clamp(10, 16);
        let longest = trace.tokens.iter().map(|s| label(s).chars().count()).max().unwrap_or(1) as i32;
        let label_w = (longest * font as i32 * 6 / 10 + 14).min(170);
        HeadLayout { cell, font, label_w, top: 56 }
    }

    fn size(&self, t: i32) -> (u32, u32) {
        let side = self.cell * t;
        ((self.label_w + side + 150) as u32, (self.top + side + self.label_w + 16) as u32)
    }
}

/// One head as a large heatmap: row = query token, column = key token.
pub fn attention_head(path: &Path, trace: &Trace, model: &str, l: usize, h: usize, causal: bool) -> Result<()> {
    let lay = HeadLayout::new(trace);
    let size = lay.size(trace.len() as i32);
    let title = format!("{model} — layer {l}, head {h}");
    render(path, size, &|root| draw_head(root, trace, &lay, &title, l, h, causal), &|root| draw_head(root, trace, &lay, &title, l, h, causal))
}

fn draw_head<DB: DrawingBackend>(root: Draw<DB>, trace: &Trace, lay: &HeadLayout, title: &str, l: usize, h: usize, causal: bool) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let t = trace.len();
    let (x0, y0, c) = (lay.label_w, lay.top, lay.cell);
    let side = c * t as i32;
    root.draw(&Text::new(title, (x0, 16), ("sans-serif", 20).into_font()))?;
    let att = trace.attention(l, h);
    for q in 0..t {
        for k in 0..t {
            if causal && k > q {
                continue; // masked: left empty
            }
            let (x, y) = (x0 + k as i32 * c, y0 + q as i32 * c);
            root.draw(&Rectangle::new([(x, y), (x + c, y + c)], heat(att[q * t + k]).filled()))?;
        }
    }
    root.draw(&Rectangle::new([(x0, y0), (x0 + side, y0 + side)], BLACK.mix(0.6).stroke_width(1)))?;
    let ystyle = TextStyle::from(("sans-serif", lay.font).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let xstyle = TextStyle::from(("sans-serif", lay.font).into_font().transform(FontTransform::Rotate90)).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, tok) in trace.tokens.iter().enumerate() {
        let mid = i as i32 * c + c / 2;
        root.draw(&Text::new(label(tok), (x0 - 6, y0 + mid), ystyle.clone()))?;
        root.draw(&Text::new(label(tok), (x0 + mid, y0 + side + 6), xstyle.clone()))?;
    }
    root.draw(&Text::new("query ↓  key →", (x0, y0 - 14), ("sans-serif", 13).into_font()))?;
    colour_bar(&root, x0 + side + 20, y0, side.min(400), 13)?;
    root.present()?;
    Ok(())
}

/// Every layer (rows) by every head (columns), with one shared colour bar.
pub fn attention_grid(path: &Path, trace: &Trace, model: &str, causal: bool) -> Result<()> {
    let (nl, nh) = (trace.n_layer as i32, trace.n_head as i32);
    let panel = (1500 / nh.max(nl)).clamp(60, 200);
    let size = ((70 + nh * panel + 140) as u32, (70 + nl * panel + 10) as u32);
    let title = format!("{model} — attention, every layer × head ({} tokens)", trace.len());
    render(path, size, &|root| draw_grid(root, trace, panel, &title, causal), &|root| draw_grid(root, trace, panel, &title, causal))
}

fn draw_grid<DB: DrawingBackend>(root: Draw<DB>, trace: &Trace, panel: i32, title: &str, causal: bool) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let t = trace.len();
    let (x0, y0) = (70, 70);
    let inner = panel - 8;
    root.draw(&Text::new(title, (x0, 14), ("sans-serif", 20).into_font()))?;
    let font = (panel / 8).clamp(10, 15) as u32;
    let centred = TextStyle::from(("sans-serif", font).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    let right = TextStyle::from(("sans-serif", font).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for h in 0..trace.n_head {
        root.draw(&Text::new(format!("head {h}"), (x0 + h as i32 * panel + inner / 2, y0 - 6), centred.clone()))?;
    }
    for l in 0..trace.n_layer {
        let py = y0 + l as i32 * panel;
        root.draw(&Text::new(format!("layer {l}"), (x0 - 8, py + inner / 2), right.clone()))?;
        for h in 0..trace.n_head {
            let px = x0 + h as i32 * panel;
            let att = trace.attention(l, h);
            for q in 0..t {
                for k in 0..t {
                    if causal && k > q {
                        continue;
                    }
                    // Cell edges by rounding, so cells tile the panel with no gaps.
                    let (xa, xb) = (px + (k as i32 * inner) / t as i32, px + ((k as i32 + 1) * inner) / t as i32);
                    let (ya, yb) = (py + (q as i32 * inner) / t as i32, py + ((q as i32 + 1) * inner) / t as i32);
                    root.draw(&Rectangle::new([(xa, ya), (xb, yb)], heat(att[q * t + k]).filled()))?;
                }
            }
            root.draw(&Rectangle::new([(px, py), (px + inner, py + inner)], BLACK.mix(0.4).stroke_width(1)))?;
        }
    }
    let grid_h = trace.n_layer as i32 * panel;
    colour_bar(&root, x0 + trace.n_head as i32 * panel + 14, y0, grid_h.clamp(120, 400), 13)?;
    root.present()?;
    Ok(())
}

/// Labelled points in 2D (e.g. a PCA projection of word embeddings).
pub fn scatter(path: &Path, title: &str, labels: &[String], points: &[(f64, f64)], axes: (&str, &str)) -> Result<()> {
    render(path, (900, 720), &|root| draw_scatter(root, title, labels, points, axes), &|root| draw_scatter(root, title, labels, points, axes))
}

fn draw_scatter<DB: DrawingBackend>(root: Draw<DB>, title: &str, labels: &[String], points: &[(f64, f64)], axes: (&str, &str)) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let span = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = points.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let pad = ((hi - lo) * 0.12).max(1e-6);
        (lo - pad)..(hi + pad)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(span(|p| p.0), span(|p| p.1))?;
    // Snaps tiny values to zero so the axis never reads "-0.00".
    let fmt = |v: &f64| format!("{:.2}", if v.abs() < 1e-9 { 0.0 } else { *v });
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .x_label_formatter(&fmt)
        .y_label_formatter(&fmt)
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let colour = RGBColor(31, 119, 180);
    chart.draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 5, colour.filled())))?;
    // Labels go beside their point, on the first side where they overlap no
    // label placed before them (text boxes estimated at 9 px per character).
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    for (&(x, y), name) in points.iter().zip(labels) {
        let (px, py) = chart.backend_coord(&(x, y));
        let w = 9 * name.chars().count() as i32;
        let options = [(8, -18), (8, 4), (-8 - w, -18), (-8 - w, 4), (8, -34), (8, 20)];
        let boxes = options.map(|(dx, dy)| (px + dx, py + dy, px + dx + w, py + dy + 16));
        let free = |b: &(i32, i32, i32, i32)| placed.iter().all(|p| b.2 <= p.0 || b.0 >= p.2 || b.3 <= p.1 || b.1 >= p.3);
        let b = boxes.iter().copied().find(free).unwrap_or(boxes[0]);
        root.draw(&Text::new(name.clone(), (b.0, b.1), ("sans-serif", 16).into_font()))?;
        placed.push(b);
    }
    root.present()?;
    Ok(())
}

/// Labelled points in 3D, drawn in a fixed oblique projection with the three
/// axes and their names.
pub fn scatter3d(path: &Path, title: &str, labels: &[String], points: &[(f64, f64, f64)]) -> Result<()> {
    render(path, (900, 760), &|root| draw_scatter3d(root, title, labels, points), &|root| draw_scatter3d(root, title, labels, points))
}

fn draw_scatter3d<DB: DrawingBackend>(root: Draw<DB>, title: &str, labels: &[String], points: &[(f64, f64, f64)]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    // One symmetric range for all axes keeps the projection's distances honest.
    let m = points.iter().fold(1e-9f64, |m, p| m.max(p.0.abs()).max(p.1.abs()).max(p.2.abs())) * 1.1;
    let mut chart = ChartBuilder::on(&root).caption(title, ("sans-serif", 20)).margin(20).build_cartesian_3d(-m..m, -m..m, -m..m)?;
    chart.with_projection(|mut p| {
        p.yaw = 0.6;
        p.pitch = 0.35;
        p.scale = 0.85;
        p.into_matrix()
    });
    chart.configure_axes().label_style(("sans-serif", 12)).max_light_lines(4).draw()?;
    let colour = RGBColor(31, 119, 180);
    chart.draw_series(points.iter().zip(labels).map(|(&(x, y, z), name)| {
        EmptyElement::at((x, y, z)) + Circle::new((0, 0), 5, colour.filled()) + Text::new(name.clone(), (8, -10), ("sans-serif", 15).into_font())
    }))?;
    let style = ("sans-serif", 14).into_font();
    for (name, at) in [("PC1", (m, 0.0, 0.0)), ("PC2", (0.0, m, 0.0)), ("PC3", (0.0, 0.0, m))] {
        chart.draw_series(std::iter::once(Text::new(name, at, style.clone())))?;
    }
    root.present()?;
    Ok(())
}

/// A rectangular map, e.g. cross-attention: row = target token, column =
/// source token; `probs` is (rows, cols).
pub fn alignment(path: &Path, title: &str, rows: &[String], cols: &[String], probs: &[f32]) -> Result<()> {
    assert_eq!(probs.len(), rows.len() * cols.len());
    let longest = rows.iter().chain(cols).map(|s| label(s).chars().count()).max().unwrap_or(1) as i32;
    let cell = (960 / rows.len().max(cols.len()) as i32).clamp(14, 48);
    let font = ((cell as f32 * 0.75) as u32).clamp(10, 16);
    let label_w = (longest * font as i32 * 6 / 10 + 14).min(170);
    let size = ((label_w + cell * cols.len() as i32 + 150) as u32, (56 + cell * rows.len() as i32 + label_w + 16) as u32);
    render(path, size, &|root| draw_alignment(root, title, rows, cols, probs, cell, font, label_w), &|root| {
        draw_alignment(root, title, rows, cols, probs, cell, font, label_w)
    })
}

#[allow(clippy::too_many_arguments)]
fn draw_alignment<DB: DrawingBackend>(root: Draw<DB>, title: &str, rows: &[String], cols: &[String], probs: &[f32], c: i32, font: u32, x0: i32) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let y0 = 56;
    let (w, h) = (c * cols.len() as i32, c * rows.len() as i32);
    root.draw(&Text::new(title, (x0, 16), ("sans-serif", 20).into_font()))?;
    for (r, row) in probs.chunks(cols.len()).enumerate() {
        for (k, &p) in row.iter().enumerate() {
            let (x, y) = (x0 + k as i32 * c, y0 + r as i32 * c);
            root.draw(&Rectangle::new([(x, y), (x + c, y + c)], heat(p).filled()))?;
        }
    }
    root.draw(&Rectangle::new([(x0, y0), (x0 + w, y0 + h)], BLACK.mix(0.6).stroke_width(1)))?;
    let ystyle = TextStyle::from(("sans-serif", font).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let xstyle = TextStyle::from(("sans-serif", font).into_font().transform(FontTransform::Rotate90)).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, tok) in rows.iter().enumerate() {
        root.draw(&Text::new(label(tok), (x0 - 6, y0 + i as i32 * c + c / 2), ystyle.clone()))?;
    }
    for (i, tok) in cols.iter().enumerate() {
        root.draw(&Text::new(label(tok), (x0 + i as i32 * c + c / 2, y0 + h + 6), xstyle.clone()))?;
    }
    root.draw(&Text::new("target ↓  source →", (x0, y0 - 14), ("sans-serif", 13).into_font()))?;
    colour_bar(&root, x0 + w + 20, y0, h.clamp(120, 400), 13)?;
    root.present()?;
    Ok(())
}

/// A classifier's confusion matrix: row = true label, column = predicted
/// label; each cell shows its count, coloured by its share of the row.
pub fn confusion(path: &Path, title: &str, labels: &[String], counts: &[Vec<usize>]) -> Result<()> {
    let k = labels.len();
    let cell = (480 / k.max(1) as i32).clamp(40, 140);
    let longest = labels.iter().map(|s| label(s).chars().count()).max().unwrap_or(1) as i32;
    let label_w = (longest * 9 + 40).min(200);
    let width = (label_w + cell * k as i32 + 40).max(title.chars().count() as i32 * 10 + 20);
    let size = (width as u32, (80 + cell * k as i32 + label_w) as u32);
    render(path, size, &|root| draw_confusion(root, title, labels, counts, cell, label_w), &|root| draw_confusion(root, title, labels, counts, cell, label_w))
}

fn draw_confusion<DB: DrawingBackend>(root: Draw<DB>, title: &str, labels: &[String], counts: &[Vec<usize>], c: i32, x0: i32) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (y0, k) = (72, labels.len() as i32);
    root.draw(&Text::new(title, (10, 14), ("sans-serif", 18).into_font()))?;
    root.draw(&Text::new("true ↓   predicted →", (x0, y0 - 20), ("sans-serif", 14).into_font()))?;
    let centered = TextStyle::from(("sans-serif", (c / 4).clamp(12, 24)).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    for (r, row) in counts.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f32;
        for (p, &n) in row.iter().enumerate() {
            let (x, y) = (x0 + p as i32 * c, y0 + r as i32 * c);
            let share = n as f32 / total;
            root.draw(&Rectangle::new([(x, y), (x + c, y + c)], heat(share).filled()))?;
            let ink = if share > 0.5 { BLACK } else { WHITE };
            root.draw(&Text::new(n.to_string(), (x + c / 2, y + c / 2), centered.clone().color(&ink)))?;
        }
    }
    root.draw(&Rectangle::new([(x0, y0), (x0 + c * k, y0 + c * k)], BLACK.mix(0.6).stroke_width(1)))?;
    let ystyle = TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let xstyle = TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, l) in labels.iter().enumerate() {
        root.draw(&Text::new(label(l), (x0 - 8, y0 + i as i32 * c + c / 2), ystyle.clone()))?;
        root.draw(&Text::new(label(l), (x0 + i as i32 * c + c / 2, y0 + k * c + 8), xstyle.clone()))?;
    }
    root.present()?;
    Ok(())
}
