//! Unit tests of decoding edge cases and the geometric operations. Pixel parity with Pillow on
//! real images is checked by `tests/it/image_resize_parity.rs`.

use super::*;

fn png(img: DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn gray(w: u32, h: u32) -> Image {
    let data = (0..w * h).map(|i| (i * 7 % 251) as u8).collect();
    Image::from_raw(w, h, Channels::Gray, data, "test").unwrap()
}

#[test]
fn decodes_every_png_layout_to_gray_or_rgb() {
    let p = Path::new("x.png");
    let l16 = image::ImageBuffer::from_fn(3, 2, |x, y| image::Luma([(x * 1000 + y * 300) as u16]));
    let img = decode(&png(DynamicImage::ImageLuma16(l16)), p).unwrap();
    assert_eq!(img.channels(), Channels::Gray);
    assert_eq!(img.pixels(), &[0, 3, 7, 1, 5, 8]); // value >> 8 (2300 >> 8 = 8)
    let la = image::ImageBuffer::from_fn(2, 1, |x, _| image::LumaA([x as u8 + 10, 0]));
    let img = decode(&png(DynamicImage::ImageLumaA8(la)), p).unwrap();
    assert_eq!(
        (img.channels(), img.pixels()),
        (Channels::Gray, &[10u8, 11][..])
    );
    let rgba = image::ImageBuffer::from_fn(1, 2, |_, y| image::Rgba([1, 2, y as u8, 9]));
    let img = decode(&png(DynamicImage::ImageRgba8(rgba)), p).unwrap();
    assert_eq!(
        (img.channels(), img.pixels()),
        (Channels::Rgb, &[1u8, 2, 0, 1, 2, 1][..])
    );
}

#[test]
fn dicom_is_refused_by_name() {
    let mut bytes = vec![0u8; 200];
    bytes[128..132].copy_from_slice(b"DICM");
    let err = decode(&bytes, Path::new("/d/scan.dcm")).unwrap_err();
    assert!(matches!(err, ImageError::Dicom { .. }));
    assert!(err.to_string().contains("/d/scan.dcm") && err.to_string().contains("DICOM"));
}

#[test]
fn truncated_and_garbage_files_name_the_file() {
    let bytes = png(DynamicImage::ImageLuma8(image::ImageBuffer::from_fn(
        40,
        40,
        |x, _| image::Luma([x as u8]),
    )));
    let err = decode(&bytes[..bytes.len() / 2], Path::new("cut.png")).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("cut.png"));
    let err = decode(b"hello world, not an image", Path::new("x.txt")).unwrap_err();
    assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err}");
}

#[test]
fn bomb_is_refused_from_the_header() {
    // A valid 1×1 PNG whose IHDR is rewritten to claim 30000×30000 (CRC fixed up): the guard
    // must trip before any decoding.
    let mut bytes = png(DynamicImage::ImageLuma8(image::ImageBuffer::new(1, 1)));
    bytes[16..20].copy_from_slice(&30_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&30_000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let err = decode(&bytes, Path::new("bomb.png")).unwrap_err();
    assert!(
        matches!(err, ImageError::TooLarge { width: 30_000, .. }),
        "{err}"
    );
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn torchvision_shorter_side_rounding() {
    // int(256 * 3000 / 2500) = 307 (307.2 truncated); portrait keeps orientation.
    assert_eq!(shorter_side_size(3000, 2500, 256), (307, 256));
    assert_eq!(shorter_side_size(2500, 3000, 256), (256, 307));
    assert_eq!(shorter_side_size(512, 512, 256), (256, 256));
    let r = resize_shorter(&gray(30, 20), 10);
    assert_eq!((r.width(), r.height()), (15, 10));
}

#[test]
fn crop_and_flip_move_the_right_pixels() {
    let img = gray(5, 4);
    let c = crop(&img, 1, 2, 3, 2).unwrap();
    let px = |i: &Image, x: u32, y: u32| i.pixels()[(y * i.width() + x) as usize];
    assert_eq!(px(&c, 0, 0), px(&img, 1, 2));
    assert_eq!(px(&c, 2, 1), px(&img, 3, 3));
    assert!(crop(&img, 3, 0, 3, 1).is_err());
    let f = hflip(&img);
    assert_eq!(px(&f, 0, 1), px(&img, 4, 1));
    assert_eq!(hflip(&f), img);
    let cc = center_crop(&img, 3, 3).unwrap();
    assert_eq!(px(&cc, 0, 0), px(&img, 1, 1)); // round(0.5) = 1 away from zero, round(1.0) = 1
}

#[test]
fn tensor_replicates_gray_and_normalises() {
    let img = Image::from_raw(2, 1, Channels::Gray, vec![0, 255], "t").unwrap();
    let t = to_tensor_normalized(&[img]);
    assert_eq!(t.size(), vec![1, 3, 1, 2]);
    let v: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap();
    for ch in 0..3 {
        assert_eq!(v[2 * ch], (0.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]);
        assert_eq!(v[2 * ch + 1], (1.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]);
    }
}

#[test]
fn jpeg_roundtrip_is_close() {
    let img = Image::from_raw(16, 16, Channels::Gray, vec![128; 256], "t").unwrap();
    let back = decode(&encode_jpeg(&img, 95).unwrap(), Path::new("m.jpg")).unwrap();
    assert_eq!(back.channels(), Channels::Gray);
    assert!(back.pixels().iter().all(|&v| v.abs_diff(128) <= 1));
}

#[test]
fn decoding_into_a_used_buffer_gives_the_fresh_decode() {
    // Grey and colour JPEGs, into an empty buffer, a larger one and a smaller one holding
    // stale bytes: the pixels are those of a fresh decode, and a buffer large enough keeps its
    // allocation (the point of decode_into).
    let p = Path::new("reuse.jpg");
    let rgb = (0..23 * 17 * 3).map(|i| (i * 53 % 256) as u8).collect();
    let rgb = Image::from_raw(23, 17, Channels::Rgb, rgb, "t").unwrap();
    for img in [gray(31, 12), rgb] {
        let jpeg = encode_jpeg(&img, 90).unwrap();
        let fresh = decode(&jpeg, p).unwrap();
        let n = fresh.pixels().len();
        for buffer in [Vec::new(), vec![0xAB; 2 * n], vec![0xCD; n / 3]] {
            let (ptr, roomy) = (buffer.as_ptr(), buffer.capacity() >= n);
            let got = decode_into(&jpeg, p, buffer).unwrap();
            assert_eq!(got, fresh);
            if roomy {
                assert_eq!(
                    got.pixels().as_ptr(),
                    ptr,
                    "a large enough buffer is reused"
                );
            }
        }
    }
}

#[test]
fn raw_size_mismatch_is_an_error() {
    let err = Image::from_raw(4, 4, Channels::Rgb, vec![0; 47], "row 3 image_0").unwrap_err();
    assert!(err.to_string().contains("row 3 image_0"));
}

#[test]
fn window_fuses_crop_flip_and_normalisation() {
    // The fused path must equal crop → hflip → normalise of the whole crop, for grey and RGB.
    for channels in [Channels::Gray, Channels::Rgb] {
        let c = channels as u32;
        let data = (0..9 * 7 * c).map(|i| (i * 37 % 256) as u8).collect();
        let img = Image::from_raw(9, 7, channels, data, "t").unwrap();
        for flip in [false, true] {
            let win = Window {
                x: 2,
                y: 1,
                w: 5,
                h: 4,
                flip,
            };
            let mut fused = vec![0f32; 3 * 5 * 4];
            write_normalized(&img, win, &mut fused).unwrap();
            let mut cut = crop(&img, 2, 1, 5, 4).unwrap();
            if flip {
                cut = hflip(&cut);
            }
            let want: Vec<f32> =
                Vec::try_from(to_tensor_normalized(&[cut]).flatten(0, -1)).unwrap();
            assert_eq!(fused, want, "{channels:?} flip={flip}");
        }
        let mut small = vec![0f32; 3 * 5 * 4];
        let off = Window {
            x: 5,
            y: 0,
            w: 5,
            h: 4,
            flip: false,
        };
        assert!(write_normalized(&img, off, &mut small).is_err());
    }
}

#[test]
fn normalisation_is_bit_identical_to_torchvision_arithmetic() {
    // Every byte value in every channel, grey and RGB, flipped or not, through the dispatched
    // path (AVX2 where the CPU has it) and the portable one. Expected values come from libtorch
    // itself (the library under torchvision): ToTensor = `byte.to(float32).div(255)`, Normalize =
    // `sub(mean).div(std)`.
    let bytes: Vec<u8> = (0..=255).collect();
    let scaled = Tensor::from_slice(&bytes)
        .to_kind(tch::Kind::Float)
        .divide_scalar(255);
    let torch: Vec<Vec<f32>> = (0..3)
        .map(|ch| {
            let mean = Tensor::from_slice(&[IMAGENET_MEAN[ch]]);
            let std = Tensor::from_slice(&[IMAGENET_STD[ch]]);
            Vec::try_from((&scaled - mean) / std).unwrap()
        })
        .collect();
    // RGB: each channel runs through all 256 values, shifted so that the channels differ.
    let rgb: Vec<u8> = bytes
        .iter()
        .flat_map(|&v| [v, v.wrapping_add(85), v.wrapping_add(170)])
        .collect();
    let images = [
        ImageView::from_raw(256, 1, Channels::Gray, &bytes, "grey").unwrap(),
        ImageView::from_raw(256, 1, Channels::Rgb, &rgb, "rgb").unwrap(),
    ];
    for img in images {
        for flip in [false, true] {
            let win = Window {
                x: 0,
                y: 0,
                w: 256,
                h: 1,
                flip,
            };
            let mut dispatched = vec![0f32; 3 * 256];
            write_normalized(img, win, &mut dispatched).unwrap();
            let mut portable = vec![0f32; 3 * 256];
            match img.channels() {
                Channels::Gray => write_planes_portable::<1>(img, win, &mut portable),
                Channels::Rgb => write_planes_portable::<3>(img, win, &mut portable),
            }
            let c = img.channels() as usize;
            for ch in 0..3 {
                for i in 0..256 {
                    let col = if flip { 255 - i } else { i };
                    let byte = img.pixels()[col * c + if c == 1 { 0 } else { ch }];
                    let want = torch[ch][usize::from(byte)].to_bits();
                    let at = format!("{:?} flip={flip} ch {ch} x {i} byte {byte}", img.channels());
                    assert_eq!(dispatched[ch * 256 + i].to_bits(), want, "{at}");
                    assert_eq!(portable[ch * 256 + i].to_bits(), want, "{at} (portable)");
                }
            }
        }
    }
}

#[test]
fn borrowed_and_owned_images_normalise_alike() {
    // The loader writes raw shard cells through `ImageView` without copying them into an
    // `Image`; both paths must give the same floats, and the view checks sizes the same way.
    let data: Vec<u8> = (0..6 * 5 * 3).map(|i| (i * 11 % 256) as u8).collect();
    let owned = Image::from_raw(6, 5, Channels::Rgb, data.clone(), "t").unwrap();
    let view = ImageView::from_raw(6, 5, Channels::Rgb, &data, "t").unwrap();
    assert_eq!(view, ImageView::from(&owned));
    assert_eq!(view.to_image(), owned);
    let win = Window {
        x: 1,
        y: 1,
        w: 4,
        h: 3,
        flip: true,
    };
    let (mut a, mut b) = (vec![0f32; 36], vec![0f32; 36]);
    write_normalized(&owned, win, &mut a).unwrap();
    write_normalized(view, win, &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(resize_exact(view, 3, 2), resize_exact(&owned, 3, 2));
    let err = ImageView::from_raw(6, 5, Channels::Rgb, &data[1..], "row 9 image_1").unwrap_err();
    assert!(err.to_string().contains("row 9 image_1"), "{err}");
}
