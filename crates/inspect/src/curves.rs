//! Loss curves as PNG or SVG pictures (a training run's `loss.png`, and
//! learning comparisons), drawn with the bundled font so that no system font
//! is needed.

use std::path::Path;

use plotters::prelude::*;
pub use plotters::style::RGBColor;

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
    /// The legend's text.
    pub label: &'a str,
    /// (step, loss), in order of step.
    pub points: Vec<(f64, f64)>,
    /// The line's colour.
    pub color: RGBColor,
    /// The line's width in pixels.
    pub width: u32,
}

/// Draws loss curves to a PNG (or SVG, by extension), written atomically.
pub fn plot_curves(path: &Path, title: &str, curves: &[Curve]) -> std::io::Result<()> {
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
    res.map_err(|e| std::io::Error::other(format!("cannot draw the loss curve: {e}")))?;
    std::fs::rename(&tmp, path)
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
