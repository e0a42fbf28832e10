//! `ithn-dist plot RUN_DIR`: PNG charts of a run from its `metrics.jsonl`.
//!
//! The trainer appends one JSON object per line: `kind: "train"` (loss terms, λ, learning
//! rates, throughput per logged step), `kind: "val"` and `kind: "test"` (BLEU-1..4, optional
//! METEOR, ROUGE-L, CIDEr per evaluation). This module turns those into four fixed-size charts
//! ([`WIDTH`]×[`HEIGHT`] px, white background) so a run can be judged at a glance:
//!
//! | file | content |
//! |---|---|
//! | `loss.png` | total loss and its terms (`lm`, `l_cp`, `l_cs`) against the global step |
//! | `schedule.png` | λ (top) and both learning rates (bottom) against the step |
//! | `val_metrics.png` | validation metrics per epoch (left) and CIDEr (right); test figures in the title |
//! | `throughput.png` | samples/s and tokens/s against the step |
//! | `ce_per_observation.png` | with `--ce NAME=SCORES.json` (repeatable): CE F1 per observation, one bar per source (a model, a baseline), see [`ce`] |
//! | `test_phantoms.png` | with `--panel PREDICTIONS.jsonl --images DIR`: six test phantoms, each with what it shows, its generated and its reference report |
//!
//! Guarantees: a malformed line fails with the file and line number; unknown `kind`s are
//! ignored (forward compatible); missing or `null` metric values leave a gap rather than a
//! fake zero; charts whose records are absent (e.g. no validation yet) are skipped and the
//! returned list says which files were written. Files are written atomically.

use std::path::{Path, PathBuf};

use clap::Args;
use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

pub mod ce;

/// Chart width in pixels (every chart).
pub const WIDTH: u32 = 1200;
/// Chart height in pixels (every chart).
pub const HEIGHT: u32 = 800;

/// Everything that can go wrong while plotting a run.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: malformed metrics record: {source}")]
    Json {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{path}: no `train` records, nothing to plot")]
    Empty { path: PathBuf },
    #[error("{path}: {what}")]
    Bad { path: PathBuf, what: String },
    #[error("cannot draw {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `ithn-dist plot` arguments.
#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Run directory containing metrics.jsonl.
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Where to write the PNGs (default: RUN_DIR/plots).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A CE bar source: NAME=SCORES.json, an `evaluate` scores.json or `score --json --ce`
    /// output (its `ce_vs_labels` when present, else `ce`). Repeat for models and baselines.
    #[arg(long = "ce", value_name = "NAME=SCORES.json", value_parser = ce::parse_ce_source)]
    pub ce: Vec<ce::CeSource>,
    /// Predictions (`evaluate`'s predictions.jsonl) for the panel of test phantoms.
    #[arg(long, value_name = "PREDICTIONS.jsonl", requires = "images")]
    pub panel: Option<PathBuf>,
    /// `synth` output directory (findings.jsonl + PNGs) of the panel's phantoms.
    #[arg(long, value_name = "DIR", requires = "panel")]
    pub images: Option<PathBuf>,
}

/// One `train` line. Every value but the position may be absent or null.
#[derive(Debug, Clone, Deserialize)]
pub struct TrainRecord {
    pub epoch: u64,
    pub step: u64,
    pub loss: Option<f64>,
    pub lm: Option<f64>,
    pub l_cp: Option<f64>,
    pub l_cs: Option<f64>,
    pub lr_ve: Option<f64>,
    pub lr_ed: Option<f64>,
    pub lambda: Option<f64>,
    pub samples_per_s: Option<f64>,
    pub tokens_per_s: Option<f64>,
}

/// One `val` or `test` line.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalRecord {
    pub epoch: u64,
    pub step: u64,
    #[serde(rename = "BLEU_1")]
    pub bleu_1: Option<f64>,
    #[serde(rename = "BLEU_2")]
    pub bleu_2: Option<f64>,
    #[serde(rename = "BLEU_3")]
    pub bleu_3: Option<f64>,
    #[serde(rename = "BLEU_4")]
    pub bleu_4: Option<f64>,
    #[serde(rename = "METEOR")]
    pub meteor: Option<f64>,
    #[serde(rename = "ROUGE_L")]
    pub rouge_l: Option<f64>,
    #[serde(rename = "CIDEr")]
    pub cider: Option<f64>,
    /// Clinical efficacy, micro-F1 over the 13 findings (`crate::eval::ce`), when recorded.
    #[serde(rename = "CE_F1_findings", default)]
    pub ce_f1_findings: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Record {
    Train(TrainRecord),
    Val(EvalRecord),
    Test(EvalRecord),
    #[serde(other)]
    Other,
}

/// The parsed contents of a metrics file.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub train: Vec<TrainRecord>,
    pub val: Vec<EvalRecord>,
    pub test: Vec<EvalRecord>,
}

/// Parses metrics JSON lines; `path` only names the source in errors. Blank lines are skipped.
pub fn parse_metrics(text: &str, path: &Path) -> Result<Metrics, PlotError> {
    let mut m = Metrics::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(|source| PlotError::Json {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        match record {
            Record::Train(r) => m.train.push(r),
            Record::Val(r) => m.val.push(r),
            Record::Test(r) => m.test.push(r),
            Record::Other => {}
        }
    }
    Ok(m)
}

/// A named series of (x, y) points; `None` values are dropped.
/// One chart of a figure: title, y-axis title (with units), series.
type Panel<'a> = (&'a str, &'a str, Vec<Series<'a>>);

struct Series<'a> {
    name: &'a str,
    points: Vec<(f64, f64)>,
}

fn series<'a, T>(
    name: &'a str,
    rows: &[T],
    x: impl Fn(&T) -> f64,
    y: impl Fn(&T) -> Option<f64>,
) -> Series<'a> {
    let points = rows
        .iter()
        .filter_map(|r| y(r).filter(|v| v.is_finite()).map(|v| (x(r), v)))
        .collect();
    Series { name, points }
}

/// Padded (min, max) over all points of all series along one axis.
fn bounds(all: &[Series], axis: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let vals = all.iter().flat_map(|s| s.points.iter().map(&axis));
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5 * lo.abs().max(1e-3)
    };
    (lo - pad, hi + pad)
}

const COLORS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// Draws one line chart (with markers when the series are short) into `area`.
/// One panel. Series are told apart by colour, dash and marker shape, and the earlier ones
/// are drawn wider, so a series with the same values as a later one (lr_ve = lr_ed) still
/// shows around it instead of being hidden while the legend lists it (issue 19).
fn line_chart(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    all: &[Series],
) -> Result<(), String> {
    let (x0, x1) = bounds(all, |p| p.0);
    let (y0, y1) = bounds(all, |p| p.1);
    let y_span = y1 - y0;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 26))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(96)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style(("sans-serif", 18))
        .x_label_formatter(&|v| format_x(*v))
        .y_label_formatter(&|v| format_tick(*v, y_span))
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| e.to_string())?;
    let drawn: Vec<&Series> = all.iter().filter(|s| !s.points.is_empty()).collect();
    for (k, s) in drawn.iter().enumerate() {
        let covered_by = drawn[k + 1..].iter().filter(|t| coincide(s, t)).count();
        draw_series(&mut chart, k, covered_by, s)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend_corner(&drawn, (x0, x1), (y0, y1)))
        .draw()
        .map_err(|e| e.to_string())
}

/// The corner of the plot where the legend hides the fewest points (upper right first on a
/// tie). The box is taken as 45 % of the width and 7 % of the height per series (at the 18 px
/// legend font on these 600-px panels), so a legend never sits on top of the curves it names
/// when a free corner exists (issue 19: the validation legend covered ROUGE-L's last epochs).
fn legend_corner(
    drawn: &[&Series],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> SeriesLabelPosition {
    let (w, h) = (0.45, (0.07 * drawn.len() as f64).min(0.9));
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let hidden = |right: bool, upper: bool| {
        drawn
            .iter()
            .flat_map(|s| &s.points)
            .filter(|&&(x, y)| {
                let fx = (x - x0) / (x1 - x0).max(f64::MIN_POSITIVE);
                let fy = (y - y0) / (y1 - y0).max(f64::MIN_POSITIVE);
                (if right { fx >= 1.0 - w } else { fx <= w })
                    && (if upper { fy >= 1.0 - h } else { fy <= h })
            })
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|&(_, right, upper)| hidden(right, upper))
        .map_or(SeriesLabelPosition::UpperRight, |c| c.0)
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Whether two series have the same points (within 1e-9 relative): the later one, drawn on
/// top, would hide the earlier.
fn coincide(a: &Series, b: &Series) -> bool {
    a.points.len() == b.points.len()
        && a.points.iter().zip(&b.points).all(|(p, q)| {
            p.0 == q.0 && (p.1 - q.1).abs() <= 1e-9 * p.1.abs().max(q.1.abs()).max(1e-300)
        })
}

/// Series `k`, drawn under `covered_by` later series with the same points: width 2, plus 4
/// and bigger markers for each of those, so it shows as a band around them; solid for the
/// first series, dashed after; markers (≤ 60 points, and in the legend) circle, triangle,
/// cross, square in turn.
fn draw_series<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    k: usize,
    covered_by: usize,
    s: &Series,
) -> Result<(), String> {
    let color = COLORS[k % COLORS.len()];
    let width = 2 + 4 * covered_by as u32;
    let style = color.stroke_width(width);
    let pts = s.points.iter().copied();
    let anno = if k == 0 {
        chart.draw_series(LineSeries::new(pts, style))
    } else {
        chart.draw_series(DashedLineSeries::new(pts, 10, 6, style))
    }
    .map_err(|e| e.to_string())?;
    let line = move |(x, y): (i32, i32)| {
        PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(width.min(6)))
    };
    // One arm per shape: plotters' marker types differ, and each arm is drawn the same way.
    macro_rules! with_marker {
        ($shape:expr) => {{
            let shape = $shape;
            anno.label(s.name)
                .legend(move |(x, y)| EmptyElement::at((x, y)) + line((0, 0)) + shape((12, 0)));
            if s.points.len() <= 60 {
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|&p| EmptyElement::at(p) + shape((0, 0))),
                    )
                    .map_err(|e| e.to_string())?;
            }
        }};
    }
    let r = 5 + 3 * covered_by as i32;
    match k % 4 {
        0 => with_marker!(move |c| Circle::new(c, r, color.filled())),
        1 => with_marker!(move |c| TriangleMarker::new(c, r + 1, color.filled())),
        2 => with_marker!(move |c| Cross::new(c, r, color.stroke_width(2))),
        _ => with_marker!(move |(x, y): (i32, i32)| Rectangle::new(
            [(x - r, y - r), (x + r, y + r)],
            color.stroke_width(2)
        )),
    }
    Ok(())
}

/// An x tick label: integers only (steps and epochs are whole numbers).
fn format_x(v: f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// A y tick label with as many decimals as the axis span needs (≈10 ticks), trailing zeros
/// dropped, so integer ticks read `7`, not `7.000`; scientific for tiny or huge values.
fn format_tick(v: f64, span: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    let step = (span / 10.0).abs().max(1e-12);
    // One decimal more than the step's own, so half-steps (0.25 on a 0.1 grid) still read.
    let decimals = (1.0 - step.log10().floor()).clamp(0.0, 7.0) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// Renders panels (each a title + series) side by side or stacked, and writes the PNG.
fn render(
    path: &Path,
    title: &str,
    vertical: bool,
    x_desc: &str,
    panels: &[Panel],
) -> Result<(), PlotError> {
    let draw_err = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        let root = root
            .titled(title, ("sans-serif", 30))
            .map_err(|e| draw_err(e.to_string()))?;
        let n = panels.len();
        let areas = if vertical {
            root.split_evenly((n, 1))
        } else {
            root.split_evenly((1, n))
        };
        for (area, (name, y_desc, all)) in areas.iter().zip(panels) {
            line_chart(area, name, (x_desc, y_desc), all).map_err(draw_err)?;
        }
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, WIDTH, HEIGHT, image::ExtendedColorType::Rgb8)
        .map_err(|e| draw_err(e.to_string()))?;
    crate::fsutil::write_atomic(path, &png).map_err(|crate::fsutil::IoError { source, .. }| {
        PlotError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Writes the charts for `m` into `out`; returns the files written, in table order.
pub fn plot_metrics(m: &Metrics, source: &Path, out: &Path) -> Result<Vec<PathBuf>, PlotError> {
    if m.train.is_empty() {
        return Err(PlotError::Empty {
            path: source.to_path_buf(),
        });
    }
    let t = &m.train;
    let step = |r: &TrainRecord| r.step as f64;
    let mut written = Vec::new();
    let mut emit = |name: &str, title: &str, vertical: bool, x: &str, panels: &[Panel]| {
        let path = out.join(name);
        render(&path, title, vertical, x, panels).map(|_| written.push(path))
    };
    emit(
        "loss.png",
        "Training loss",
        false,
        "step",
        &[(
            "L = 0.7 lm + 0.1 l_cp + 0.2 l_cs",
            "loss (lm in nats per token)",
            vec![
                series("loss", t, step, |r| r.loss),
                series("lm", t, step, |r| r.lm),
                series("l_cp", t, step, |r| r.l_cp),
                series("l_cs", t, step, |r| r.l_cs),
            ],
        )],
    )?;
    emit(
        "schedule.png",
        "Schedules",
        true,
        "step",
        &[
            (
                "lambda = exp(-alpha * epoch)",
                "lambda (weight, 0 to 1)",
                vec![series("lambda", t, step, |r| r.lambda)],
            ),
            (
                "learning rates",
                "learning rate",
                vec![
                    series("lr_ve", t, step, |r| r.lr_ve),
                    series("lr_ed", t, step, |r| r.lr_ed),
                ],
            ),
        ],
    )?;
    emit(
        "throughput.png",
        "Throughput",
        true,
        "step",
        &throughput_panels(t),
    )?;
    if !m.val.is_empty() {
        emit(
            "val_metrics.png",
            &eval_title(m.test.last()),
            false,
            "epoch",
            &val_panels(&m.val),
        )?;
    }
    Ok(written)
}

/// `throughput.png`: samples and tokens per second against the step.
fn throughput_panels(t: &[TrainRecord]) -> Vec<Panel<'static>> {
    let step = |r: &TrainRecord| r.step as f64;
    vec![
        (
            "samples/s",
            "samples per second",
            vec![series("samples/s", t, step, |r| r.samples_per_s)],
        ),
        (
            "tokens/s",
            "tokens per second",
            vec![series("tokens/s", t, step, |r| r.tokens_per_s)],
        ),
    ]
}

/// `val_metrics.png`: the n-gram scores (0 to 1) and CIDEr per validated epoch.
fn val_panels(v: &[EvalRecord]) -> Vec<Panel<'static>> {
    let ep = |r: &EvalRecord| r.epoch as f64;
    vec![
        (
            "validation",
            "score (0 to 1)",
            vec![
                series("BLEU-1", v, ep, |r| r.bleu_1),
                series("BLEU-2", v, ep, |r| r.bleu_2),
                series("BLEU-3", v, ep, |r| r.bleu_3),
                series("BLEU-4", v, ep, |r| r.bleu_4),
                series("METEOR", v, ep, |r| r.meteor),
                series("ROUGE-L", v, ep, |r| r.rouge_l),
                series("CE F1 findings", v, ep, |r| r.ce_f1_findings),
            ],
        ),
        (
            "validation CIDEr",
            "CIDEr",
            vec![series("CIDEr", v, ep, |r| r.cider)],
        ),
    ]
}

fn eval_title(test: Option<&EvalRecord>) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    match test {
        Some(t) => format!(
            "Validation per epoch   |   test (epoch {}): BLEU-4 {}  ROUGE-L {}  CIDEr {}",
            t.epoch,
            f(t.bleu_4),
            f(t.rouge_l),
            f(t.cider)
        ),
        None => "Validation per epoch".to_string(),
    }
}

/// Reads `RUN_DIR/metrics.jsonl` and writes the charts; returns the files written.
pub fn run(args: &PlotArgs) -> Result<Vec<PathBuf>, PlotError> {
    let run = crate::run_dir::RunDir::new(&args.run_dir);
    let source = run.metrics();
    let text = std::fs::read_to_string(&source).map_err(|e| PlotError::Read {
        path: source.clone(),
        source: e,
    })?;
    let metrics = parse_metrics(&text, &source)?;
    let out = args.out.clone().unwrap_or_else(|| run.plots());
    // Read every extra input before writing anything, so a bad file leaves no half set.
    let bars = args
        .ce
        .iter()
        .map(ce::read_ce)
        .collect::<Result<Vec<_>, _>>()?;
    let panel = match (&args.panel, &args.images) {
        (Some(p), Some(i)) => Some(ce::panel_items(p, i, 6)?),
        _ => None,
    };
    let mut written = plot_metrics(&metrics, &source, &out)?;
    if !bars.is_empty() {
        let path = out.join("ce_per_observation.png");
        ce::ce_chart(&path, &bars)?;
        written.push(path);
    }
    if let Some(items) = panel {
        let path = out.join("test_phantoms.png");
        let title = "Test phantoms (SYNTHETIC): generated vs reference report";
        ce::phantom_panel(&path, title, &items)?;
        written.push(path);
    }
    Ok(written)
}

/// CLI entry: plots and lists the files written.
pub fn run_cli(args: PlotArgs) -> anyhow::Result<i32> {
    for path in run(&args)? {
        println!("wrote {} ({WIDTH}x{HEIGHT})", path.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legend_goes_to_the_emptiest_corner() {
        let high = Series {
            name: "ROUGE-L",
            points: vec![(1.0, 0.3), (2.0, 0.35), (3.0, 0.35), (4.0, 0.35)],
        };
        let low = Series {
            name: "CE",
            points: vec![(1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (4.0, 0.0)],
        };
        let corner = |all: &[&Series]| legend_corner(all, (0.9, 4.1), (0.0, 0.36));
        // Points at the top right and along the bottom: the upper left hides one, (2, 0.35).
        assert!(matches!(
            corner(&[&high, &low]),
            SeriesLabelPosition::UpperLeft
        ));
        // Nothing at the top right: the usual place.
        assert!(matches!(corner(&[&low]), SeriesLabelPosition::UpperRight));
    }

    fn line(kind: &str, epoch: u64, step: u64) -> String {
        match kind {
            "train" => format!(
                r#"{{"kind":"train","epoch":{epoch},"step":{step},"loss":{l},"lm":{lm},"l_cp":0.5,"l_cs":0.1,"lr_ve":1e-4,"lr_ed":5e-4,"lambda":{lam},"samples_per_s":120.0,"tokens_per_s":4000.0}}"#,
                l = 3.0 / (1.0 + step as f64),
                lm = 2.5 / (1.0 + step as f64),
                lam = (-0.01 * epoch as f64).exp()
            ),
            k => format!(
                r#"{{"kind":"{k}","epoch":{epoch},"step":{step},"BLEU_1":0.3,"BLEU_2":0.2,"BLEU_3":0.15,"BLEU_4":0.1,"ROUGE_L":0.3,"CIDEr":0.4}}"#
            ),
        }
    }

    #[test]
    fn parses_all_kinds_and_ignores_unknown_and_blank() {
        let text = [
            line("train", 1, 1),
            String::new(),
            line("val", 1, 1),
            r#"{"kind":"event","what":"x"}"#.into(),
            line("test", 1, 1),
        ]
        .join("\n");
        let m = parse_metrics(&text, Path::new("m.jsonl")).expect("parses");
        assert_eq!((m.train.len(), m.val.len(), m.test.len()), (1, 1, 1));
        assert_eq!(m.val[0].meteor, None);
        assert_eq!(m.val[0].bleu_4, Some(0.1));
        assert_eq!(m.train[0].lr_ed, Some(5e-4));
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let text = format!(
            "{}\n{{\"kind\":\"train\",\"epoch\":1,\n",
            line("train", 1, 1)
        );
        let err = parse_metrics(&text, Path::new("runs/x/metrics.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("runs/x/metrics.jsonl:2:"), "{err}");
        let text = r#"{"kind":"train","loss":1.0}"#;
        let err = parse_metrics(text, Path::new("m.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.jsonl:1:") && err.contains("epoch"), "{err}");
    }

    #[test]
    fn bounds_pad_and_handle_degenerate_ranges() {
        let s = [Series {
            name: "a",
            points: vec![(1.0, 2.0), (3.0, 2.0)],
        }];
        let (lo, hi) = bounds(&s, |p| p.1);
        assert!(lo < 2.0 && hi > 2.0);
        let (lo, hi) = bounds(&s, |p| p.0);
        assert!((lo - 0.9).abs() < 1e-12 && (hi - 3.1).abs() < 1e-12);
        assert_eq!(bounds(&[], |p| p.0), (0.0, 1.0));
    }

    #[test]
    fn tick_labels_switch_to_scientific_for_small_values() {
        assert_eq!(format_tick(0.25, 1.0), "0.25");
        assert_eq!(format_tick(5e-4, 1e-3), "5e-4");
        assert_eq!(format_tick(1.5e-4, 1e-3), "1.5e-4");
        assert_eq!(format_tick(0.0, 1.0), "0");
        // Integer ticks of a wide axis print without decimals (issue 19: `7.000`).
        assert_eq!(format_tick(7.0, 40.0), "7");
        assert_eq!(format_tick(120.0, 400.0), "120");
        assert_eq!(format_tick(3.3149, 2.0), "3.31");
        assert_eq!(format_x(150.0), "150");
        assert_eq!(format_x(1.5), "");
    }
}
