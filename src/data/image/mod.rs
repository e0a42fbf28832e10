//! Chest X-ray images: decoding (PNG, JPEG), Pillow-identical resizing, crops, flips, JPEG
//! encoding and the conversion to the normalised float tensors the visual extractor eats.
//!
//! Why it exists: the reference pipeline is PIL + torchvision (SPEC §1); both `prepare` and the
//! loader must produce the same pixels, so every geometric operation here is defined by what
//! Pillow/torchvision do, and `tests/it/image_resize_parity.rs` checks it against Pillow.
//!
//! Guarantees:
//! - grey images stay grey (one byte per pixel) until [`to_tensor_normalized`] replicates them
//!   into three channels, exactly like `convert('RGB')` would, at a third of the resize cost;
//! - alpha is dropped (Pillow's `convert('RGB')`); 16-bit samples become `value >> 8` (the
//!   reference's handling of 16-bit PNGs is not specified; this keeps the full dynamic range
//!   instead of clipping everything above 255);
//! - DICOM, truncated files and decompression bombs are refused with an error naming the file,
//!   and absurd sizes are refused *before* any pixel buffer is allocated.

mod jpeg;
mod resample;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader, Limits};
use tch::Tensor;

/// Largest accepted side, in pixels (MIMIC-CXR's largest images are about 4,300 px).
pub const MAX_SIDE: u32 = 20_000;
/// Largest accepted pixel count (decompression-bomb guard).
pub const MAX_PIXELS: u64 = 400_000_000;

/// ImageNet normalisation used by the reference (SPEC §1).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read image file: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: DICOM is not supported, convert it to PNG first")]
    Dicom { path: PathBuf },
    #[error("{path}: unknown image format (expected PNG or JPEG)")]
    UnknownFormat { path: PathBuf },
    /// A format recognised by its signature that this build does not decode (TIFF, WebP, …):
    /// the file may be fine, so it is not called corrupt.
    #[error(
        "{path}: {format} images are not supported (PNG or JPEG only); convert it to PNG first"
    )]
    OtherFormat { path: PathBuf, format: String },
    #[error("{path}: image of {width}×{height} px refused (limit {MAX_SIDE} px per side, {MAX_PIXELS} px in all)")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    #[error("{path}: corrupt or truncated image: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: unsupported pixel layout {layout}")]
    Unsupported { path: PathBuf, layout: String },
    #[error("{what}: raw pixels of {width}×{height}×{channels} need {expected} bytes, got {got}")]
    RawSize {
        what: String,
        width: u32,
        height: u32,
        channels: usize,
        expected: usize,
        got: usize,
    },
    #[error("crop {w}×{h} at ({x},{y}) does not fit an image of {width}×{height}")]
    Crop {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        width: u32,
        height: u32,
    },
    #[error("cannot encode JPEG: {0}")]
    Encode(String),
}

/// Samples per pixel of an [`Image`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Gray = 1,
    Rgb = 3,
}

/// An owned 8-bit image, rows top to bottom, interleaved samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    width: u32,
    height: u32,
    channels: Channels,
    data: Vec<u8>,
}

impl Image {
    /// Wrap raw pixels (e.g. a `raw_rgb8` / `raw_gray8` shard cell); `what` names the source in
    /// the error when the byte count does not match.
    pub fn from_raw(
        width: u32,
        height: u32,
        channels: Channels,
        data: Vec<u8>,
        what: &str,
    ) -> Result<Image, ImageError> {
        check_raw_size(width, height, channels, data.len(), what)?;
        Ok(Image {
            width,
            height,
            channels,
            data,
        })
    }

    pub fn width(&self) -> u32 {
        ImageView::from(self).width()
    }
    pub fn height(&self) -> u32 {
        ImageView::from(self).height()
    }
    pub fn channels(&self) -> Channels {
        ImageView::from(self).channels()
    }
    /// Interleaved samples, `width * height * channels` bytes.
    pub fn pixels(&self) -> &[u8] {
        ImageView::from(self).pixels()
    }
    pub fn into_pixels(self) -> Vec<u8> {
        self.data
    }
}

/// A borrowed 8-bit image: the same layout as [`Image`], over bytes someone else owns (a
/// `raw_*8` shard cell inside an Arrow buffer, or an [`Image`]). The loader reads raw-pixel
/// shards through it so that pixels go from the Parquet page to the batch tensor without an
/// intermediate copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageView<'a> {
    width: u32,
    height: u32,
    channels: Channels,
    data: &'a [u8],
}

impl<'a> ImageView<'a> {
    /// Borrow raw pixels; the same checks and error as [`Image::from_raw`].
    pub fn from_raw(
        width: u32,
        height: u32,
        channels: Channels,
        data: &'a [u8],
        what: &str,
    ) -> Result<ImageView<'a>, ImageError> {
        check_raw_size(width, height, channels, data.len(), what)?;
        Ok(ImageView {
            width,
            height,
            channels,
            data,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn channels(&self) -> Channels {
        self.channels
    }
    pub fn pixels(&self) -> &'a [u8] {
        self.data
    }
    pub fn to_image(&self) -> Image {
        Image {
            width: self.width,
            height: self.height,
            channels: self.channels,
            data: self.data.to_vec(),
        }
    }
}

impl<'a> From<&'a Image> for ImageView<'a> {
    fn from(img: &'a Image) -> ImageView<'a> {
        ImageView {
            width: img.width,
            height: img.height,
            channels: img.channels,
            data: &img.data,
        }
    }
}

fn check_raw_size(
    width: u32,
    height: u32,
    channels: Channels,
    got: usize,
    what: &str,
) -> Result<(), ImageError> {
    let expected = width as usize * height as usize * channels as usize;
    if got != expected || width == 0 || height == 0 {
        return Err(ImageError::RawSize {
            what: what.to_string(),
            width,
            height,
            channels: channels as usize,
            expected,
            got,
        });
    }
    Ok(())
}

/// Decode a PNG or JPEG held in memory; `origin` names it in errors.
pub fn decode(bytes: &[u8], origin: &Path) -> Result<Image, ImageError> {
    decode_into(bytes, origin, Vec::new())
}

/// [`decode`], writing the pixels of a JPEG into `buffer` (its old contents are overwritten,
/// its allocation kept): a decode thread that hands back [`Image::into_pixels`] of its last
/// image neither allocates nor zeroes a fresh buffer per image, which was ~3 % of the loader's
/// CPU on JPEG shards (the allocator's memset and the kernel's page zeroing under `perf`).
/// PNGs and the JPEGs left to the general decoder allocate their own buffer. A thread that
/// keeps handing its buffer back holds on to the largest image it has decoded.
pub fn decode_into(bytes: &[u8], origin: &Path, buffer: Vec<u8>) -> Result<Image, ImageError> {
    let path = || origin.to_path_buf();
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        return Err(ImageError::Dicom { path: path() });
    }
    let open = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| ImageError::Io {
                path: path(),
                source,
            })
    };
    let header = open()?;
    match header.format() {
        None => return Err(ImageError::UnknownFormat { path: path() }),
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(other) => {
            let format = other
                .extensions_str()
                .first()
                .map_or_else(|| format!("{other:?}"), |e| e.to_uppercase());
            return Err(ImageError::OtherFormat {
                path: path(),
                format,
            });
        }
    }
    if header.format() == Some(image::ImageFormat::Jpeg) {
        if let Some(img) = jpeg::decode(bytes, origin, buffer)? {
            return Ok(img);
        }
    }
    // Header first: refuse bombs before the decoder allocates anything.
    let (width, height) = header.into_dimensions().map_err(|e| corrupt(origin, e))?;
    check_dimensions(width, height, origin)?;
    let mut reader = open()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // 16-bit RGBA is the widest layout we accept: 8 bytes per pixel.
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| corrupt(origin, e))?;
    from_dynamic(img, origin)
}

/// Read and decode a file.
pub fn decode_file(path: &Path) -> Result<Image, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

fn corrupt(origin: &Path, e: image::ImageError) -> ImageError {
    ImageError::Corrupt {
        path: origin.to_path_buf(),
        reason: e.to_string(),
    }
}

pub(crate) fn check_dimensions(width: u32, height: u32, origin: &Path) -> Result<(), ImageError> {
    if width == 0
        || height == 0
        || width > MAX_SIDE
        || height > MAX_SIDE
        || u64::from(width) * u64::from(height) > MAX_PIXELS
    {
        return Err(ImageError::TooLarge {
            path: origin.to_path_buf(),
            width,
            height,
        });
    }
    Ok(())
}

/// Reduce any decoded layout to 8-bit grey or RGB (alpha dropped, 16-bit → `>> 8`).
fn from_dynamic(img: DynamicImage, origin: &Path) -> Result<Image, ImageError> {
    let (width, height) = (img.width(), img.height());
    let (channels, data) = match img {
        DynamicImage::ImageLuma8(b) => (Channels::Gray, b.into_raw()),
        DynamicImage::ImageLumaA8(b) => (Channels::Gray, take_every(b.as_raw(), 2, 1)),
        DynamicImage::ImageRgb8(b) => (Channels::Rgb, b.into_raw()),
        DynamicImage::ImageRgba8(b) => (Channels::Rgb, take_every(b.as_raw(), 4, 3)),
        DynamicImage::ImageLuma16(b) => (Channels::Gray, high_bytes(b.as_raw(), 1, 1)),
        DynamicImage::ImageLumaA16(b) => (Channels::Gray, high_bytes(b.as_raw(), 2, 1)),
        DynamicImage::ImageRgb16(b) => (Channels::Rgb, high_bytes(b.as_raw(), 3, 3)),
        DynamicImage::ImageRgba16(b) => (Channels::Rgb, high_bytes(b.as_raw(), 4, 3)),
        other => {
            return Err(ImageError::Unsupported {
                path: origin.to_path_buf(),
                layout: format!("{:?}", other.color()),
            })
        }
    };
    Ok(Image {
        width,
        height,
        channels,
        data,
    })
}

/// Keep the first `keep` samples of every `stride`-sample pixel.
fn take_every(src: &[u8], stride: usize, keep: usize) -> Vec<u8> {
    src.chunks_exact(stride)
        .flat_map(|p| p[..keep].iter().copied())
        .collect()
}

fn high_bytes(src: &[u16], stride: usize, keep: usize) -> Vec<u8> {
    src.chunks_exact(stride)
        .flat_map(|p| p[..keep].iter().map(|v| (v >> 8) as u8))
        .collect()
}

/// Pillow's antialiased bilinear resize to exactly `width × height`.
pub fn resize_exact<'a>(img: impl Into<ImageView<'a>>, width: u32, height: u32) -> Image {
    let img = img.into();
    let data = resample::resize_u8(
        img.data,
        img.width as usize,
        img.height as usize,
        img.channels as usize,
        width as usize,
        height as usize,
    );
    Image {
        width,
        height,
        channels: img.channels,
        data,
    }
}

/// The size torchvision's `Resize(side)` picks: the shorter side becomes `side`, the longer
/// `int(side * long / short)` (Python float division, truncated).
pub fn shorter_side_size(width: u32, height: u32, side: u32) -> (u32, u32) {
    let (short, long) = (width.min(height), width.max(height));
    let new_long = (f64::from(side) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (side, new_long)
    } else {
        (new_long, side)
    }
}

/// torchvision `Resize(side)` on a PIL image.
pub fn resize_shorter<'a>(img: impl Into<ImageView<'a>>, side: u32) -> Image {
    let img = img.into();
    let (w, h) = shorter_side_size(img.width, img.height, side);
    resize_exact(img, w, h)
}

/// Cut the `w × h` window whose top-left corner is `(x, y)`.
pub fn crop(img: &Image, x: u32, y: u32, w: u32, h: u32) -> Result<Image, ImageError> {
    if w == 0 || h == 0 || x + w > img.width || y + h > img.height {
        return Err(ImageError::Crop {
            x,
            y,
            w,
            h,
            width: img.width,
            height: img.height,
        });
    }
    let c = img.channels as usize;
    let stride = img.width as usize * c;
    let mut data = Vec::with_capacity(w as usize * h as usize * c);
    for row in y as usize..(y + h) as usize {
        let start = row * stride + x as usize * c;
        data.extend_from_slice(&img.data[start..start + w as usize * c]);
    }
    Ok(Image {
        width: w,
        height: h,
        channels: img.channels,
        data,
    })
}

/// torchvision `CenterCrop`: offsets `round((W - w) / 2)`, `round((H - h) / 2)`.
pub fn center_crop(img: &Image, w: u32, h: u32) -> Result<Image, ImageError> {
    let x = ((f64::from(img.width) - f64::from(w)) / 2.0)
        .round()
        .max(0.0) as u32;
    let y = ((f64::from(img.height) - f64::from(h)) / 2.0)
        .round()
        .max(0.0) as u32;
    crop(img, x, y, w, h)
}

/// Mirror left to right.
pub fn hflip(img: &Image) -> Image {
    let c = img.channels as usize;
    let mut data = Vec::with_capacity(img.data.len());
    for row in img.data.chunks_exact(img.width as usize * c) {
        for px in row.chunks_exact(c).rev() {
            data.extend_from_slice(px);
        }
    }
    Image {
        data,
        ..img.clone()
    }
}

/// A window of an image to normalise: `w × h` pixels at `(x, y)`, optionally mirrored left to
/// right. Writing a window directly fuses crop, flip and normalisation into one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub flip: bool,
}

impl Window {
    /// The whole image, unflipped.
    pub fn full<'a>(img: impl Into<ImageView<'a>>) -> Window {
        let img = img.into();
        Window {
            x: 0,
            y: 0,
            w: img.width,
            h: img.height,
            flip: false,
        }
    }
}

/// Write window `win` of `img` as `[3, h, w]` f32 planes: `/255` then ImageNet normalisation,
/// grey replicated into the three channels. `out` must hold `3 * w * h` values.
pub fn write_normalized<'a>(
    img: impl Into<ImageView<'a>>,
    win: Window,
    out: &mut [f32],
) -> Result<(), ImageError> {
    let img = img.into();
    if win.w == 0 || win.h == 0 || win.x + win.w > img.width || win.y + win.h > img.height {
        return Err(ImageError::Crop {
            x: win.x,
            y: win.y,
            w: win.w,
            h: win.h,
            width: img.width,
            height: img.height,
        });
    }
    let (w, h) = (win.w as usize, win.h as usize);
    assert_eq!(
        out.len(),
        3 * w * h,
        "output buffer does not match the window"
    );
    match img.channels {
        Channels::Gray => write_planes::<1>(img, win, out),
        Channels::Rgb => write_planes::<3>(img, win, out),
    }
    Ok(())
}

/// [`write_planes_portable`], compiled for AVX2 when the CPU has it (checked once by std and
/// cached). This is the loader's hottest loop. Measured on a 224² window of a grey 256-px image
/// (release build, shared 2-core VM): ~50–60 µs with AVX2, ~100 µs with SSE2, and 200–450 µs for
/// the per-byte table lookup it replaced (one scalar load and store per value, which cannot be
/// vectorised without slow gathers; its flipped path was the slower one).
fn write_planes<const C: usize>(img: ImageView<'_>, win: Window, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the only requirement of a `#[target_feature(enable = "avx2")]` function is a
        // CPU with AVX2, which was detected just above.
        unsafe { write_planes_avx2::<C>(img, win, out) };
        return;
    }
    write_planes_portable::<C>(img, win, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn write_planes_avx2<const C: usize>(img: ImageView<'_>, win: Window, out: &mut [f32]) {
    write_planes_portable::<C>(img, win, out);
}

/// Crop, flip and normalise in one pass, writing the three planes side by side. The arithmetic
/// is torchvision's, operation for operation in f32 — ToTensor's `byte / 255`, then
/// Normalize's `(x - mean) / std` — and IEEE division and subtraction are exactly rounded, so
/// the values are bit-identical to the reference whatever the vector width (Rust never fuses or
/// reorders float operations). For grey images `byte / 255` is computed once for the three
/// channels, exactly what `convert('RGB')` followed by ToTensor computes three times.
#[inline(always)]
fn write_planes_portable<const C: usize>(img: ImageView<'_>, win: Window, out: &mut [f32]) {
    let (w, h) = (win.w as usize, win.h as usize);
    let stride = img.width as usize * C;
    let (p0, rest) = out.split_at_mut(w * h);
    let (p1, p2) = rest.split_at_mut(w * h);
    let rows = p0
        .chunks_exact_mut(w)
        .zip(p1.chunks_exact_mut(w))
        .zip(p2.chunks_exact_mut(w));
    for (r, ((d0, d1), d2)) in rows.enumerate() {
        let start = (win.y as usize + r) * stride + win.x as usize * C;
        let src = src_row::<C>(&img.data[start..start + w * C]);
        let dst = d0.iter_mut().zip(d1.iter_mut()).zip(d2.iter_mut());
        // Flipping reads the source row backwards, so the stores stay sequential.
        if win.flip {
            dst.zip(src.rev()).for_each(normalize_pixel::<C>);
        } else {
            dst.zip(src).for_each(normalize_pixel::<C>);
        }
    }
}

/// The pixels of one source row as `C`-sample arrays (so indexing a sample needs no check).
#[inline(always)]
fn src_row<const C: usize>(row: &[u8]) -> std::slice::Iter<'_, [u8; C]> {
    row.as_chunks::<C>().0.iter()
}

/// One output value per plane, in plane order.
type PlaneValues<'a> = ((&'a mut f32, &'a mut f32), &'a mut f32);

#[inline(always)]
fn normalize_pixel<const C: usize>((((d0, d1), d2), px): (PlaneValues<'_>, &[u8; C])) {
    let sample = |ch: usize| f32::from(px[if C == 1 { 0 } else { ch }]) / 255.0;
    *d0 = (sample(0) - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
    *d1 = (sample(1) - IMAGENET_MEAN[1]) / IMAGENET_STD[1];
    *d2 = (sample(2) - IMAGENET_MEAN[2]) / IMAGENET_STD[2];
}

/// Stack same-sized images into a `[n, 3, H, W]` f32 tensor (see [`write_normalized`]).
pub fn to_tensor_normalized(imgs: &[Image]) -> Tensor {
    let (w, h) = imgs.first().map_or((0, 0), |i| (i.width, i.height));
    let plane = 3 * w as usize * h as usize;
    let mut buf = vec![0f32; imgs.len() * plane];
    for (img, out) in imgs.iter().zip(buf.chunks_exact_mut(plane.max(1))) {
        assert_eq!((img.width, img.height), (w, h), "images differ in size");
        write_normalized(img, Window::full(img), out).expect("the full window always fits");
    }
    Tensor::from_slice(&buf).view([imgs.len() as i64, 3, i64::from(h), i64::from(w)])
}

/// The largest per-channel difference between `ours` and an RGB image `theirs` of the same
/// size, in grey levels, comparing a grey `ours` the way Pillow's `convert('RGB')` replicates
/// grey into three channels. Used by the decoding and resizing parity checks against Pillow.
///
/// Panics when the sizes differ or `theirs` is not RGB (a test's precondition).
pub fn max_diff_as_rgb(ours: &Image, theirs: &Image) -> u8 {
    assert_eq!(
        (ours.width(), ours.height()),
        (theirs.width(), theirs.height()),
        "images of different sizes"
    );
    assert_eq!(theirs.channels(), Channels::Rgb, "the reference is RGB");
    let c = ours.channels() as usize;
    let mut worst = 0;
    for (i, t) in theirs.pixels().chunks_exact(3).enumerate() {
        for (ch, &theirs) in t.iter().enumerate() {
            let o = ours.pixels()[i * c + if c == 1 { 0 } else { ch }];
            worst = worst.max(o.abs_diff(theirs));
        }
    }
    worst
}

/// Encode as baseline JPEG (`quality` 1..=100); grey stays one channel.
pub fn encode_jpeg(img: &Image, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let color = match img.channels {
        Channels::Gray => image::ExtendedColorType::L8,
        Channels::Rgb => image::ExtendedColorType::Rgb8,
    };
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode(&img.data, img.width, img.height, color)
        .map_err(|e| ImageError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests;
