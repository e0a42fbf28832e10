//! METEOR 1.5 by driving the Java jar that ships in the pycocoevalcap wheel, exactly as
//! pycocoevalcap's `Meteor` wrapper does.
//!
//! Why a subprocess: METEOR's score depends on its WordNet synonym and paraphrase tables and
//! its tuned parameters; re-implementing it would never be bit-compatible, and papers report
//! the jar's numbers. The protocol (`java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`,
//! run in the jar's directory): one `SCORE ||| ref ||| hyp` line per pair, each answered by a
//! statistics line; then one `EVAL ||| stats ||| stats …` line, answered by one segment score
//! per pair and then the corpus score (aggregated from the statistics, not a mean).
//!
//! Like the wrapper, `|||` is removed from the hypothesis and one pass of `"  "` → `" "` is
//! applied to it; the reference is sent as is. One deliberate difference: line breaks inside a
//! text are sent as spaces, because a raw newline would desynchronise the line protocol (the
//! Python wrapper would hang or misalign scores on such input).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::MetricsError;

/// The jar's file name inside the pycocoevalcap wheel.
pub const JAR_NAME: &str = "meteor-1.5.jar";
/// Environment variable that points at a jar when `--meteor-jar` is not given.
pub const JAR_ENV: &str = "ITHN_METEOR_JAR";

/// How to run METEOR.
#[derive(Debug, Clone)]
pub struct MeteorOpts {
    /// Path of meteor-1.5.jar (its directory must also hold `data/paraphrase-en.gz`).
    pub jar: PathBuf,
    /// The Java launcher (default `java` from PATH).
    pub java: PathBuf,
}

impl MeteorOpts {
    /// Finds the jar: `explicit` if given, else `$ITHN_METEOR_JAR`, else the pycocoevalcap wheel
    /// in `./.venv`, else in the venv of the source tree this binary was built from.
    pub fn locate(explicit: Option<&Path>) -> Result<MeteorOpts, MetricsError> {
        let java = PathBuf::from("java");
        if let Some(jar) = explicit {
            return if jar.is_file() {
                Ok(MeteorOpts {
                    jar: jar.to_path_buf(),
                    java,
                })
            } else {
                Err(MetricsError::JarMissing {
                    searched: vec![jar.to_path_buf()],
                })
            };
        }
        let mut searched = Vec::new();
        if let Some(env) = std::env::var_os(JAR_ENV) {
            searched.push(PathBuf::from(env));
        }
        for root in [
            PathBuf::from("."),
            PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        ] {
            searched.extend(venv_jar_candidates(&root));
        }
        match searched.iter().find(|p| p.is_file()) {
            Some(jar) => Ok(MeteorOpts {
                jar: jar.clone(),
                java,
            }),
            None => Err(MetricsError::JarMissing { searched }),
        }
    }
}

/// `<root>/.venv/lib/python3*/site-packages/pycocoevalcap/meteor/meteor-1.5.jar`, for every
/// python3* directory present (or the generic pattern when there is none, for the message).
fn venv_jar_candidates(root: &Path) -> Vec<PathBuf> {
    let lib = root.join(".venv").join("lib");
    let tail = |py: PathBuf| {
        py.join("site-packages")
            .join("pycocoevalcap")
            .join("meteor")
            .join(JAR_NAME)
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| tail(e.path()))
        .collect();
    if found.is_empty() {
        found.push(tail(lib.join("python3.X")));
    }
    found.sort();
    found
}

/// The hypothesis as the wrapper sends it.
fn wrap_hyp(hyp: &str) -> String {
    one_line(&hyp.replace("|||", "").replace("  ", " "))
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Kills the jar when dropped, whatever happened.
struct Jar(Child);

impl Drop for Jar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the METEOR 1.5 jar in stdio mode (`-l en -norm`, as pycocoevalcap runs it), in the
/// jar's folder so that it finds its paraphrase tables.
fn spawn_jar(opts: &MeteorOpts) -> Result<Jar, MetricsError> {
    let jar_dir = opts
        .jar
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let jar_name = opts.jar.file_name().unwrap_or(opts.jar.as_os_str());
    let child = Command::new(&opts.java)
        .args(["-jar", "-Xmx2G"])
        .arg(jar_name)
        .args(["-", "-", "-stdio", "-l", "en", "-norm"])
        .current_dir(jar_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| MetricsError::Java {
            java: opts.java.clone(),
            source,
        })?;
    Ok(Jar(child))
}

/// Corpus METEOR and the per-pair segment scores.
pub fn meteor(
    refs: &[String],
    hyps: &[String],
    opts: &MeteorOpts,
) -> Result<(f64, Vec<f64>), MetricsError> {
    let mut jar = spawn_jar(opts)?;
    let mut stdin = jar.0.stdin.take().expect("stdin was piped");
    let mut stdout = BufReader::new(jar.0.stdout.take().expect("stdout was piped"));
    let mut stderr = jar.0.stderr.take().expect("stderr was piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let score_lines: String = refs
        .iter()
        .zip(hyps)
        .map(|(r, h)| format!("SCORE ||| {} ||| {}\n", one_line(r), wrap_hyp(h)))
        .collect();
    // A writer thread, so neither side blocks on a full pipe while the other waits.
    let writer = std::thread::spawn(move || -> std::io::Result<std::process::ChildStdin> {
        stdin.write_all(score_lines.as_bytes())?;
        stdin.flush()?;
        Ok(stdin)
    });

    let result = (|| {
        let mut stats = Vec::with_capacity(refs.len());
        for _ in 0..refs.len() {
            stats.push(read_line(&mut stdout)?);
        }
        let mut stdin = writer
            .join()
            .map_err(|_| protocol("the writer thread panicked".into()))?
            .map_err(MetricsError::MeteorIo)?;
        let eval: String = std::iter::once("EVAL")
            .chain(stats.iter().flat_map(|s| [" ||| ", s.as_str()]))
            .collect();
        stdin
            .write_all(format!("{eval}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(MetricsError::MeteorIo)?;
        let mut items = Vec::with_capacity(refs.len());
        for _ in 0..refs.len() {
            items.push(parse_score(&read_line(&mut stdout)?)?);
        }
        let corpus = parse_score(&read_line(&mut stdout)?)?;
        drop(stdin);
        Ok((corpus, items))
    })();
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            // Closing the pipes ends the jar, so its stderr explains what went wrong.
            drop(stdout);
            drop(jar);
            let err = stderr_reader.join().unwrap_or_default();
            Err(match e {
                MetricsError::MeteorProtocol { what, .. } => MetricsError::MeteorProtocol {
                    what,
                    stderr: tail(&err),
                },
                other => other,
            })
        }
    }
}

fn protocol(what: String) -> MetricsError {
    MetricsError::MeteorProtocol {
        what,
        stderr: String::new(),
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String, MetricsError> {
    let mut line = String::new();
    let n = r.read_line(&mut line).map_err(MetricsError::MeteorIo)?;
    if n == 0 {
        return Err(protocol("the METEOR jar closed its output early".into()));
    }
    Ok(line.trim().to_owned())
}

fn parse_score(line: &str) -> Result<f64, MetricsError> {
    line.parse::<f64>().map_err(|_| {
        protocol(format!(
            "expected a score from the METEOR jar, got {line:?}"
        ))
    })
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypothesis_is_wrapped_like_pycocoevalcap() {
        assert_eq!(wrap_hyp("a ||| b  c   d"), "a b c  d");
        assert_eq!(wrap_hyp("a\nb"), "a b");
    }

    #[test]
    fn missing_explicit_jar_names_the_path() {
        let err = MeteorOpts::locate(Some(Path::new("/nonexistent/meteor.jar"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/meteor.jar"), "{err}");
    }
}
