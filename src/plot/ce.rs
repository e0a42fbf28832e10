//! Clinical-efficacy pictures: a per-observation CE F1 bar chart (several models and
//! baselines side by side) and a panel of test phantoms, each with its generated and
//! reference report.
//!
//! Inputs are the files other commands write: `scores.json` of `evaluate` or the JSON of
//! `score --json --ce [--ce-labels]` (their `ce_vs_labels` object when present, i.e. scored
//! against what the phantoms show, else `ce`, against the reference reports), `evaluate`'s
//! `predictions.jsonl`, and `synth`'s `findings.jsonl` with the images next to it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::ImageEncoder;
use plotters::prelude::*;
use serde_json::Value;

use super::{PlotError, COLORS, HEIGHT, WIDTH};
use crate::eval::ce::{Observation, N_OBS};

/// One bar group's source: a display name and a scores file.
#[derive(Debug, Clone)]
pub struct CeSource {
    pub name: String,
    pub path: PathBuf,
}

/// Parses `NAME=FILE` (the `--ce` argument).
pub fn parse_ce_source(s: &str) -> Result<CeSource, String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(CeSource {
            name: name.to_string(),
            path: PathBuf::from(path),
        }),
        _ => Err(format!("`{s}`: expected NAME=SCORES.json")),
    }
}

/// Per-observation F1 and the findings micro-F1 of one scores file, and what they were
/// scored against ("phantom labels" or "reference reports").
#[derive(Debug, Clone, PartialEq)]
pub struct CeBars {
    pub name: String,
    pub f1: [f64; N_OBS],
    pub findings_f1: f64,
    pub support: [u64; N_OBS],
    pub against: &'static str,
}

/// Reads the CE object of a scores file (`ce_vs_labels`, else `ce`). Errors name the file
/// and the missing key.
pub fn read_ce(src: &CeSource) -> Result<CeBars, PlotError> {
    let text = std::fs::read_to_string(&src.path).map_err(|source| PlotError::Read {
        path: src.path.clone(),
        source,
    })?;
    let bad = |what: String| PlotError::Bad {
        path: src.path.clone(),
        what,
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        // predictions.jsonl / hypotheses files are the likeliest wrong file: say what is wanted.
        let first_line_is_object = text
            .lines()
            .next()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .is_some_and(|v| v.is_object());
        if first_line_is_object {
            bad(
                "is JSON lines (one object per line, like predictions.jsonl), not a scores \
                 file: --ce wants the scores.json that `evaluate` or `score --ce` writes"
                    .into(),
            )
        } else {
            bad(format!("not JSON: {e}"))
        }
    })?;
    let (ce, against) = match (v.get("ce_vs_labels"), v.get("ce")) {
        (Some(ce), _) => (ce, "phantom labels"),
        (None, Some(ce)) => (ce, "reference reports"),
        _ => {
            return Err(bad(
                "no `ce` or `ce_vs_labels` object (run score with --ce)".into(),
            ))
        }
    };
    let num = |x: &Value, what: String| x.as_f64().ok_or_else(|| bad(what));
    let mut out = CeBars {
        name: src.name.clone(),
        f1: [0.0; N_OBS],
        findings_f1: num(&ce["micro_findings"]["f1"], "micro_findings.f1".into())?,
        support: [0; N_OBS],
        against,
    };
    for o in Observation::ALL {
        let per = &ce["per_observation"][o.name()];
        out.f1[o.index()] = num(&per["f1"], format!("per_observation.{}.f1", o.name()))?;
        out.support[o.index()] = per["support"].as_u64().unwrap_or(0);
    }
    Ok(out)
}

/// "CE F1 per observation vs REFERENCE | findings micro-F1: NAME F1, ...".
fn ce_caption(bars: &[CeBars]) -> String {
    let summary: Vec<String> = bars
        .iter()
        .map(|b| format!("{} {:.2}", b.name, b.findings_f1))
        .collect();
    let against = bars.first().map_or("", |b| b.against);
    format!(
        "CE F1 per observation vs {against} | findings micro-F1: {}",
        summary.join(", ")
    )
}

/// Horizontal grouped bars: one row per observation with reference positives, one bar per
/// source; the title gives each source's findings micro-F1.
pub fn ce_chart(path: &Path, bars: &[CeBars]) -> Result<(), PlotError> {
    let draw_err = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let first = bars
        .first()
        .ok_or_else(|| draw_err("no CE sources".into()))?;
    // Observations that occur in the reference set, most frequent at the top.
    let mut rows: Vec<Observation> = Observation::ALL
        .into_iter()
        .filter(|o| first.support[o.index()] > 0)
        .collect();
    rows.sort_by_key(|o| std::cmp::Reverse(first.support[o.index()]));
    let n = rows.len().max(1) as f64;
    let k = bars.len() as f64;
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(ce_caption(bars), ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(260)
            .build_cartesian_2d(0.0..1.0f64, 0.0..n)
            .map_err(|e| draw_err(e.to_string()))?;
        let label = |y: &f64| {
            let i = (n - y - 0.5).round();
            rows.get(i as usize)
                .filter(|_| (n - y - 0.5 - i).abs() < 1e-6)
                .map(|o| format!("{} (n={})", o.name(), first.support[o.index()]))
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .y_labels(2 * rows.len() + 1)
            .y_label_formatter(&label)
            .x_labels(11)
            .x_desc("F1 (positive-only labels)")
            .light_line_style(WHITE)
            .label_style(("sans-serif", 16))
            .disable_y_mesh()
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        for (b, src) in bars.iter().enumerate() {
            let color = COLORS[b % COLORS.len()];
            let rects = rows.iter().enumerate().map(|(r, o)| {
                let top = n - r as f64 - 0.1 - 0.8 * b as f64 / k;
                let f1 = src.f1[o.index()];
                Rectangle::new([(0.0, top - 0.8 / k), (f1, top)], color.filled())
            });
            chart
                .draw_series(rects)
                .map_err(|e| draw_err(e.to_string()))?
                .label(src.name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 18))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    write_png(path, &rgb)
}

/// One study of the phantom panel.
#[derive(Debug, Clone)]
pub struct PanelItem {
    pub id: String,
    /// Grey pixels of the frontal phantom, `size`×`size`.
    pub pixels: Vec<u8>,
    pub size: u32,
    /// Observations the phantom shows (its labels), for the caption.
    pub drawn: Vec<Observation>,
    pub generated: String,
    pub reference: String,
}

fn read_text(path: &Path) -> Result<String, PlotError> {
    std::fs::read_to_string(path).map_err(|source| PlotError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Per study of synth's `findings.jsonl`: the observations drawn and the frontal image's path.
fn read_drawn(
    findings_path: &Path,
) -> Result<HashMap<String, (Vec<Observation>, String)>, PlotError> {
    let mut drawn = HashMap::new();
    for (i, line) in read_text(findings_path)?.lines().enumerate() {
        let v: Value = serde_json::from_str(line).map_err(|e| PlotError::Bad {
            path: findings_path.to_path_buf(),
            what: format!("line {}: {e}", i + 1),
        })?;
        let obs = Observation::ALL
            .into_iter()
            .filter(|o| o.is_pathology() || *o == Observation::SupportDevices)
            .filter(|o| v["chexpert"][o.name()].as_i64() == Some(1))
            .collect();
        let image = v["images"][0].as_str().unwrap_or_default().to_string();
        drawn.insert(
            v["id"].as_str().unwrap_or_default().to_string(),
            (obs, image),
        );
    }
    Ok(drawn)
}

/// Picks up to `n` test studies for the panel: first one study per observation the phantoms
/// show (so findings are on display, in CheXpert order), then normal ones, all in the
/// predictions' order. Reads `images/findings.jsonl` and the frontal PNGs.
pub fn panel_items(
    predictions: &Path,
    images: &Path,
    n: usize,
) -> Result<Vec<PanelItem>, PlotError> {
    let findings_path = images.join("findings.jsonl");
    let drawn = read_drawn(&findings_path)?;
    let mut preds = Vec::new();
    for (i, line) in read_text(predictions)?.lines().enumerate() {
        let v: Value = serde_json::from_str(line).map_err(|e| PlotError::Bad {
            path: predictions.to_path_buf(),
            what: format!("line {}: {e}", i + 1),
        })?;
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let Some((obs, image)) = drawn.get(&id) else {
            return Err(PlotError::Bad {
                path: findings_path.clone(),
                what: format!("no study `{id}` (named in {})", predictions.display()),
            });
        };
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        preds.push((
            id,
            obs.clone(),
            image.clone(),
            text("prediction"),
            text("reference"),
        ));
    }
    // One study per observation on display (CheXpert order), keeping a slot for a normal one.
    let mut chosen: Vec<usize> = Vec::new();
    for o in Observation::ALL {
        let free = |i: &usize| preds[*i].1.first() == Some(&o) && !chosen.contains(i);
        if chosen.len() + 1 < n {
            if let Some(i) = (0..preds.len()).find(free) {
                chosen.push(i);
            }
        }
    }
    let normals: Vec<usize> = (0..preds.len())
        .filter(|&i| preds[i].1.is_empty())
        .collect();
    chosen.extend(normals.into_iter().take(n.saturating_sub(chosen.len())));
    chosen
        .into_iter()
        .map(|i| {
            let (id, obs, image, generated, reference) = preds[i].clone();
            let png = images.join(&image);
            let img = image::open(&png)
                .map_err(|e| PlotError::Bad {
                    path: png.clone(),
                    what: format!("cannot read image: {e}"),
                })?
                .to_luma8();
            let size = img.width().min(img.height());
            Ok(PanelItem {
                id,
                pixels: image::imageops::crop_imm(&img, 0, 0, size, size)
                    .to_image()
                    .into_raw(),
                size,
                drawn: obs,
                generated,
                reference,
            })
        })
        .collect()
}

/// Greedy word wrap to `width` characters, at most `lines` lines (the last one ends in "…"
/// when the text is longer).
fn wrap(text: &str, width: usize, lines: usize) -> Vec<String> {
    let mut out: Vec<String> = vec![String::new()];
    for word in text.split_whitespace() {
        let cur = out.last_mut().expect("non-empty");
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            out.push(word.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    if out.len() > lines {
        out.truncate(lines);
        out[lines - 1].push_str(" …");
    }
    out
}

/// A 3×2 grid of phantoms, each with what it shows, the generated and the reference report.
pub fn phantom_panel(path: &Path, title: &str, items: &[PanelItem]) -> Result<(), PlotError> {
    let draw_err = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let (cols, rows) = (3usize, items.len().div_ceil(3).max(1));
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        let root = root
            .titled(title, ("sans-serif", 24))
            .map_err(|e| draw_err(e.to_string()))?;
        for (cell, item) in root.split_evenly((rows, cols)).iter().zip(items) {
            draw_cell(cell, item).map_err(draw_err)?;
        }
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    write_png(path, &rgb)
}

fn draw_cell(
    cell: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    item: &PanelItem,
) -> Result<(), String> {
    let (w, h) = cell.dim_in_pixel();
    let side = (h as f64 * 0.5).min(w as f64 * 0.45) as u32;
    let scaled = image::imageops::resize(
        &image::GrayImage::from_raw(item.size, item.size, item.pixels.clone())
            .ok_or("bad image")?,
        side,
        side,
        image::imageops::FilterType::Nearest,
    );
    let rgb: Vec<u8> = scaled
        .into_raw()
        .into_iter()
        .flat_map(|g| [g, g, g])
        .collect();
    let elem: BitMapElement<(i32, i32)> =
        BitMapElement::with_owned_buffer((6, 6), (side, side), rgb).ok_or("bitmap size")?;
    cell.draw(&elem).map_err(|e| e.to_string())?;
    let style = ("sans-serif", 15).into_font();
    let drawn = if item.drawn.is_empty() {
        "normal".to_string()
    } else {
        item.drawn
            .iter()
            .map(|o| o.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let x = side as i32 + 14;
    let mut y = 8;
    for line in wrap(&format!("{} | shows: {drawn}", item.id), 24, 4) {
        cell.draw_text(&line, &style.color(&BLACK), (x, y))
            .map_err(|e| e.to_string())?;
        y += 18;
    }
    let mut y = side as i32 + 14;
    let chars = (w as usize / 8).max(20);
    for (label, text, color) in [
        ("generated", &item.generated, RGBColor(31, 119, 180)),
        ("reference", &item.reference, RGBColor(90, 90, 90)),
    ] {
        for line in wrap(&format!("{label}: {text}"), chars, 4) {
            cell.draw_text(&line, &style.color(&color), (6, y))
                .map_err(|e| e.to_string())?;
            y += 17;
        }
        y += 4;
    }
    Ok(())
}

fn write_png(path: &Path, rgb: &[u8]) -> Result<(), PlotError> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(rgb, WIDTH, HEIGHT, image::ExtendedColorType::Rgb8)
        .map_err(|e| PlotError::Draw {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    crate::fsutil::write_atomic(path, &png).map_err(|crate::fsutil::IoError { source, .. }| {
        PlotError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_respects_width_and_line_limit() {
        let w = wrap("the heart is normal in size . the lungs are clear .", 16, 2);
        assert_eq!(w.len(), 2);
        assert!(w[0].chars().count() <= 16, "{w:?}");
        assert!(w[1].ends_with('…'), "{w:?}");
        assert_eq!(wrap("short", 16, 3), vec!["short".to_string()]);
    }

    #[test]
    fn ce_source_needs_a_name_and_a_file() {
        let s = parse_ce_source("ITHN=runs/x/scores.json").unwrap();
        assert_eq!(
            (s.name.as_str(), s.path.as_path()),
            ("ITHN", Path::new("runs/x/scores.json"))
        );
        assert!(parse_ce_source("runs/x/scores.json").is_err());
        assert!(parse_ce_source("=x").is_err());
    }

    #[test]
    fn a_predictions_file_is_named_as_the_wrong_kind_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let read = |text: &str| {
            let path = dir.path().join("f.json");
            std::fs::write(&path, text).unwrap();
            let src = CeSource {
                name: "x".into(),
                path,
            };
            read_ce(&src).unwrap_err().to_string()
        };
        let m = read("{\"id\":\"a\",\"prediction\":\"p\"}\n{\"id\":\"b\",\"prediction\":\"q\"}\n");
        assert!(m.contains("JSON lines") && m.contains("f.json"), "{m}");
        assert!(read("{oops").contains("not JSON"));
        assert!(read("{}").contains("--ce"));
    }
}
