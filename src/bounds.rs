//! Bounds of the numbers a user gives on the command line.
//!
//! Why it exists: a number that indexes or sizes something (a beam width, a thread count, an
//! image side, a row count) and is out of range must stop the command before any work, with a
//! message naming the option — not be taken as something else (`--beam 0` as greedy), nor reach
//! libtorch as a negative size (a C++ frame dump) or a Rust arithmetic panic (exit 101).
//!
//! These are clap value parsers, so a bad value is a usage error (exit 2) whose message is
//! clap's `invalid value 'V' for '--option <N>': REASON`. Bounds that depend on a file (a beam
//! width against a checkpoint's vocabulary) are checked where the file is read; see
//! [`crate::model::contract`].

/// A whole number in `min..=max`; `what` says why the bound exists when it is not obvious.
fn parse_in<T>(s: &str, min: u64, max: u64) -> Result<T, String>
where
    T: TryFrom<u64>,
{
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number ≥ {min}"))?;
    if v < min {
        return Err(format!("must be at least {min}"));
    }
    if v > max {
        return Err(format!("must be at most {max}"));
    }
    T::try_from(v).map_err(|_| format!("{v} does not fit this option"))
}

/// A whole number ≥ `min` (and representable in `T`): `#[arg(value_parser = bounds::at_least::<usize>(1))]`.
pub fn at_least<T>(min: u64) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |s| parse_in(s, min, u64::MAX)
}

/// A whole number in `min..=max`.
pub fn between<T>(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |s| parse_in(s, min, max)
}

/// The largest thread count any option accepts: far above any machine, far below what makes
/// libtorch or rayon fail to allocate thread stacks.
pub const MAX_THREADS: u64 = 4096;

/// A thread count in `1..=MAX_THREADS` (libtorch takes an `i32`).
pub fn threads<T>() -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    between(1, MAX_THREADS)
}

/// The largest image side (pixels) any option accepts; the decoder refuses larger images as
/// decompression bombs (docs/prepared-format.md), so no larger target can make sense.
pub const MAX_IMAGE_SIDE: u64 = 20_000;

/// The longest token sequence any option accepts: the model's positional encodings
/// (the reference's `max_len`; `model::transformer::PE_LEN` is defined from it, so a
/// foundation module does not import the model).
pub const MAX_SEQ_LEN: u64 = 5000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_limit() {
        let p = at_least::<usize>(1);
        assert_eq!(p("3"), Ok(3));
        assert_eq!(p("0"), Err("must be at least 1".to_string()));
        assert!(p("-1").unwrap_err().contains("not a whole number"));
        assert!(p("x").unwrap_err().contains("not a whole number"));
        let t = threads::<i32>();
        assert_eq!(t("8"), Ok(8));
        assert_eq!(t("5000"), Err("must be at most 4096".to_string()));
        let q = between::<u8>(1, 100);
        assert_eq!(q("100"), Ok(100));
        assert_eq!(q("101"), Err("must be at most 100".to_string()));
        let small = at_least::<u8>(0);
        assert!(small("300").unwrap_err().contains("does not fit"));
    }
}
