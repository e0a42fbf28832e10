//! JPEG decoding with libjpeg-turbo, the library Pillow decodes JPEG with, through the
//! maintained `turbojpeg` binding (its vendored libjpeg-turbo 3.1, built with SIMD).
//!
//! Why: the reference pipeline decodes with Pillow, so decoding with the same library and the
//! same defaults (accurate integer IDCT, "fancy" triangular chroma upsampling, libjpeg's
//! YCbCr→RGB tables) gives Pillow's exact pixels for grey and for 4:4:4 / 4:2:2 / 4:2:0 colour
//! JPEGs (issue 14 case 6: the `image` crate's decoder was up to 3 levels off on colour), and
//! libjpeg-turbo's SIMD decoder is several times faster than the `image` crate's, which is what
//! the loader spends its time on for JPEG shards (issue 20 item 5).
//!
//! What it leaves to the general decoder ([`super::decode`]): CMYK/YCCK JPEGs (TurboJPEG does
//! not convert them to RGB) and files libjpeg-turbo reports any error or warning for (truncated
//! or corrupt data): those go through the `image` crate, which decodes what it can and refuses
//! the rest with the file named, as before.

use std::cell::RefCell;
use std::path::Path;

use turbojpeg::{Colorspace, Decompressor, PixelFormat};

use super::{check_dimensions, Channels, Image, ImageError};

thread_local! {
    /// One decompressor per thread (loader workers, rayon threads): a TurboJPEG handle is
    /// reusable but not shareable, and creating one per image costs an allocation of its state.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Decodes a JPEG held in memory to 8-bit grey (grey JPEGs) or RGB (YCbCr/RGB JPEGs), into
/// `buffer` (resized to the image; bytes it already holds are overwritten, not zeroed first).
/// `Ok(None)`: not for this decoder (CMYK/YCCK, or libjpeg-turbo reported an error or a
/// warning); the caller falls back. Errors: [`ImageError::TooLarge`] from the header alone,
/// before the buffer grows.
pub(super) fn decode(
    bytes: &[u8],
    origin: &Path,
    buffer: Vec<u8>,
) -> Result<Option<Image>, ImageError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Decompressor::new().ok();
        }
        match slot.as_mut() {
            Some(d) => decode_with(d, bytes, origin, buffer),
            None => Ok(None),
        }
    })
}

fn decode_with(
    d: &mut Decompressor,
    bytes: &[u8],
    origin: &Path,
    mut pixels: Vec<u8>,
) -> Result<Option<Image>, ImageError> {
    let Ok(header) = d.read_header(bytes) else {
        return Ok(None);
    };
    let (format, channels) = match header.colorspace {
        Colorspace::Gray => (PixelFormat::GRAY, Channels::Gray),
        Colorspace::YCbCr | Colorspace::RGB => (PixelFormat::RGB, Channels::Rgb),
        _ => return Ok(None),
    };
    let (width, height) = (
        u32::try_from(header.width).unwrap_or(u32::MAX),
        u32::try_from(header.height).unwrap_or(u32::MAX),
    );
    check_dimensions(width, height, origin)?;
    let pitch = header.width * channels as usize;
    // Only growth is zeroed: libjpeg-turbo writes every byte of the image it decodes.
    pixels.resize(pitch * header.height, 0);
    let out = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: header.width,
        pitch,
        height: header.height,
        format,
    };
    if d.decompress(bytes, out).is_err() {
        return Ok(None);
    }
    Ok(Some(Image {
        width,
        height,
        channels,
        data: pixels,
    }))
}
