//! The image half of a row: read each view, resize its shorter side, and store it as JPEG
//! bytes or raw pixels. All pixel work goes through [`crate::data::image`] so that `prepare`
//! and the loader resample exactly alike (Pillow's antialiased bilinear).
//!
//! Storage: `--pixels jpeg` (default, quality 95) keeps the decoded channel count (grey
//! radiographs stay one-channel JPEGs). `--pixels raw` stores uint8 pixels row-major, HWC:
//! `raw_gray8` (1 byte per pixel) when every view of the sample is grey, otherwise `raw_rgb8`
//! (3 bytes per pixel, grey views replicated), so one `pixel_format` describes the whole row.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::image::{self, Channels, Image};

/// How pixels are stored in the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum PixelMode {
    Jpeg,
    Raw,
}

/// The resize and storage parameters (recorded in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageParams {
    /// Target of the shorter side; `None` keeps the original size.
    pub resize: Option<u32>,
    pub pixels: PixelMode,
    pub jpeg_quality: u8,
}

/// One stored view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// The stored views of one sample and their common format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredViews {
    pub format: &'static str,
    pub views: Vec<StoredImage>,
}

/// Reads, resizes and encodes every view of a sample; the error is the reason the row is
/// skipped (it names the file).
pub fn process(paths: &[impl AsRef<Path>], params: &ImageParams) -> Result<StoredViews, String> {
    let mut decoded = Vec::with_capacity(paths.len());
    for p in paths {
        let img = image::decode_file(p.as_ref()).map_err(|e| e.to_string())?;
        decoded.push(match params.resize {
            Some(side) => image::resize_shorter(&img, side),
            None => img,
        });
    }
    match params.pixels {
        PixelMode::Jpeg => {
            let views = decoded
                .iter()
                .map(|img| {
                    let bytes =
                        image::encode_jpeg(img, params.jpeg_quality).map_err(|e| e.to_string())?;
                    Ok(StoredImage {
                        bytes,
                        width: img.width(),
                        height: img.height(),
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(StoredViews {
                format: "jpeg",
                views,
            })
        }
        PixelMode::Raw => {
            let all_grey = decoded.iter().all(|i| i.channels() == Channels::Gray);
            let views = decoded
                .into_iter()
                .map(|img| {
                    let (width, height) = (img.width(), img.height());
                    let bytes = if all_grey {
                        img.into_pixels()
                    } else {
                        to_rgb(img)
                    };
                    StoredImage {
                        bytes,
                        width,
                        height,
                    }
                })
                .collect();
            Ok(StoredViews {
                format: if all_grey { "raw_gray8" } else { "raw_rgb8" },
                views,
            })
        }
    }
}

/// Grey replicated into three channels (what Pillow's `convert('RGB')` does).
fn to_rgb(img: Image) -> Vec<u8> {
    match img.channels() {
        Channels::Rgb => img.into_pixels(),
        Channels::Gray => img.pixels().iter().flat_map(|&v| [v, v, v]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(dir: &Path, name: &str, w: u32, h: u32, rgb: bool) -> std::path::PathBuf {
        let path = dir.join(name);
        if rgb {
            ::image::RgbImage::from_fn(w, h, |x, y| ::image::Rgb([x as u8, y as u8, 7])).save(&path)
        } else {
            ::image::GrayImage::from_fn(w, h, |x, y| ::image::Luma([(x + y) as u8])).save(&path)
        }
        .expect("write test PNG");
        path
    }

    #[test]
    fn jpeg_mode_resizes_the_shorter_side() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write_png(dir.path(), "a.png", 40, 20, false);
        let params = ImageParams {
            resize: Some(10),
            pixels: PixelMode::Jpeg,
            jpeg_quality: 95,
        };
        let out = process(&[p], &params).expect("valid image");
        assert_eq!(out.format, "jpeg");
        assert_eq!((out.views[0].width, out.views[0].height), (20, 10));
        assert_eq!(&out.views[0].bytes[..2], &[0xFF, 0xD8], "JPEG magic");
    }

    #[test]
    fn raw_mode_promotes_mixed_views_to_rgb() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = write_png(dir.path(), "g.png", 8, 6, false);
        let c = write_png(dir.path(), "c.png", 8, 6, true);
        let params = ImageParams {
            resize: None,
            pixels: PixelMode::Raw,
            jpeg_quality: 95,
        };
        let grey = process(&[&g, &g], &params).expect("grey");
        assert_eq!(grey.format, "raw_gray8");
        assert_eq!(grey.views[0].bytes.len(), 48);
        let mixed = process(&[&g, &c], &params).expect("mixed");
        assert_eq!(mixed.format, "raw_rgb8");
        assert_eq!(mixed.views[0].bytes.len(), 144);
        assert_eq!(
            &mixed.views[0].bytes[3..6],
            &[1, 1, 1],
            "grey (1,0) replicated"
        );
    }

    #[test]
    fn missing_file_is_a_reason_naming_it() {
        let params = ImageParams {
            resize: Some(8),
            pixels: PixelMode::Jpeg,
            jpeg_quality: 95,
        };
        let err = process(&[Path::new("/nonexistent/x.png")], &params).expect_err("missing");
        assert!(err.contains("/nonexistent/x.png"), "{err}");
    }
}
