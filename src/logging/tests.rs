use super::*;
use std::sync::{Arc, Mutex};

#[test]
fn floats_keep_a_few_significant_digits() {
    assert_eq!(short_float(4.481494479972988, 4), "4.481");
    assert_eq!(short_float(0.0001, 4), "0.0001");
    assert_eq!(short_float(5e-5, 4), "5e-5");
    assert_eq!(short_float(0.99004983374, 4), "0.99");
    assert_eq!(short_float(123456.7, 4), "1.235e5");
    assert_eq!(short_float(-12.34567, 4), "-12.35");
    assert_eq!(short_float(3.0, 4), "3");
    assert_eq!(short_float(0.0, 4), "0");
    assert_eq!(short_float(f64::NAN, 4), "NaN");
}

#[test]
fn no_colour_off_a_terminal() {
    assert!(!colour_wanted(false));
}

/// A writer capturing what the terminal layer would print.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn terminal_fields_print_short_floats_and_plain_text() {
    let cap = Capture::default();
    let sink = cap.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .fmt_fields(ShortFloats)
        .without_time()
        .with_target(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(
            step = 3u64,
            loss = 4.481494479972988f64,
            what = "x",
            "train"
        );
    });
    let text = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("train step=3 loss=4.481 what=\"x\""),
        "{text:?}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open {0}")]
struct Outer(&'static str, #[source] std::io::Error);

#[test]
fn each_cause_is_printed_once() {
    let os = std::io::Error::from_raw_os_error(2);
    let e = anyhow::Error::new(Outer("/x", os)).context("error: training data");
    let m = error_message(&e);
    assert_eq!(m.matches("os error 2").count(), 1, "{m}");
    assert!(m.starts_with("training data: cannot open /x: "), "{m}");
}
