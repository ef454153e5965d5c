//! Transcoding benchmark (docs/benchmarks.md "Transcoding"; B8 in BENCHMARKS.md):
//! real-time factor per core of `transcoder::transcode_file` (decode → 48 kHz →
//! EBU R128 normalise to −14 LUFS under −1 dBTP → Opus 96 kb/s in Ogg) on a
//! 10-minute 44.1 kHz stereo FLAC, against FFmpeg doing the same job in the same run:
//!
//! - **ours**: `transcode_file` called on this thread; it spreads its true-peak
//!   scans over the cores and decodes beside the encoder, so CPU time is the whole
//!   process's utime + stime (`/proc/self/stat`, 10 ms ticks), and wall time is
//!   reported beside it: CPU per core against FFmpeg's, and wall against FFmpeg's.
//! - **ffmpeg, single pass**: `ffmpeg -threads 1 -filter_threads 1 -i IN
//!   -af loudnorm=I=-14:TP=-1,aresample=48000 -c:a libopus -b:a 96k OUT.ogg`
//!   (loudnorm in one pass is its dynamic mode; it works at 192 kHz inside).
//! - **ffmpeg, two pass** (unless `--no-two-pass`): loudnorm's documented two-pass
//!   use, a measuring pass to `-f null` and then the encode with the measured values
//!   and `linear=true` (loudnorm falls back to dynamic when a linear gain would break
//!   the true-peak target; the run prints which it used).
//!
//! FFmpeg's CPU time is the children's utime + stime of this process
//! (`/proc/self/stat` cutime + cstime, 10 ms ticks) around each wait, startup
//! included. RTF = audio seconds / CPU seconds. The repeats alternate the order of
//! the jobs. Afterwards, once: FFmpeg without loudnorm, and FFmpeg decoding only (where
//! its time goes), our stages as the progress callback reports them and the
//! normalise stage replayed step by step (where ours goes), and every output measured
//! by FFmpeg's `ebur128` (`scripts/interop/loudness.py`).
//!
//! `sc-transcodebench [--input FLAC] [--seconds 600] [--repeats 3] [--ffmpeg PATH]
//! [--python PATH] [--workdir DIR] [--no-two-pass] [--json FILE]`; `taskset -c 1`
//! measures it on one core (no parallel wall-time gain). Without `--input` the fixture is written once by
//! `scripts/interop/bench_audio.py` (PyAV) into the work dir (default
//! `target/sc-transcodebench`). FFmpeg: `--ffmpeg`, else `ffmpeg` on PATH
//! (`scripts/ensure-ffmpeg.sh` installs Debian's). Python: `--python`, else `$PY`,
//! else `scripts/ensure-venv.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use streamcore_benches::{Summary, procfs};
use transcoder::normalize::Prepared;
use transcoder::{Target, TranscodeOptions};

/// Opus bitrate of both jobs (the transcoder's stereo default).
const BITRATE: &str = "96k";
/// libopus's own default complexity, which the transcoder's encoder keeps; FFmpeg's
/// libopus wrapper would use 10.
const OPUS_COMPLEXITY: &str = "9";

struct Args {
    input: Option<PathBuf>,
    seconds: u32,
    repeats: usize,
    ffmpeg: Option<PathBuf>,
    python: Option<PathBuf>,
    workdir: PathBuf,
    two_pass: bool,
    json: Option<PathBuf>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        input: None,
        seconds: 600,
        repeats: 3,
        ffmpeg: None,
        python: None,
        workdir: root().join("target/sc-transcodebench"),
        two_pass: true,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--no-two-pass" {
            a.two_pass = false;
            continue;
        }
        if k == "--help" || k == "-h" {
            println!(
                "sc-transcodebench [--input FLAC] [--seconds 600] [--repeats 3] [--ffmpeg PATH] \
                 [--python PATH] [--workdir DIR] [--no-two-pass] [--json FILE]"
            );
            std::process::exit(0);
        }
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--input" => a.input = Some(v.into()),
            "--seconds" => a.seconds = v.parse()?,
            "--repeats" => a.repeats = v.parse()?,
            "--ffmpeg" => a.ffmpeg = Some(v.into()),
            "--python" => a.python = Some(v.into()),
            "--workdir" => a.workdir = v.into(),
            "--json" => a.json = Some(v.into()),
            _ => bail!("unknown argument {k}"),
        }
    }
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    Ok(a)
}

/// The last line of a command's stdout, if it ran and succeeded.
fn last_line(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok().filter(|o| o.status.success())?;
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .map(|s| s.trim().to_owned())
}

fn python(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.python {
        return Ok(p.clone());
    }
    if let Ok(p) = std::env::var("PY")
        && !p.is_empty()
    {
        return Ok(p.into());
    }
    last_line(&mut Command::new(root().join("scripts/ensure-venv.sh")))
        .map(PathBuf::from)
        .context("no Python with PyAV: pass --python or set PY (scripts/ensure-venv.sh)")
}

fn ffmpeg(args: &Args) -> anyhow::Result<(PathBuf, String)> {
    let ff = args.ffmpeg.clone().unwrap_or_else(|| "ffmpeg".into());
    let version = Command::new(&ff)
        .arg("-version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .with_context(|| {
            format!(
                "no ffmpeg at {}: pass --ffmpeg or run scripts/ensure-ffmpeg.sh",
                ff.display()
            )
        })?;
    Ok((ff, version))
}

/// utime + stime of this process's waited-for children, in ticks
/// (`/proc/self/stat` fields 16 and 17).
fn children_ticks() -> anyhow::Result<u64> {
    let s = std::fs::read_to_string("/proc/self/stat")?;
    let rest = &s[s.rfind(')').context("/proc/self/stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ", field 3 (state) is index 0: cutime (16) is index 13.
    let cutime: u64 = f.get(13).context("cutime")?.parse()?;
    let cstime: u64 = f.get(14).context("cstime")?.parse()?;
    Ok(cutime + cstime)
}

fn thread_ns() -> u64 {
    procfs::thread_sched_ns().expect("/proc/thread-self/schedstat")
}

/// utime + stime of this process, all threads (10 ms ticks), in ns.
fn process_ns() -> u64 {
    let ticks = procfs::stat_ticks(&std::process::id().to_string()).unwrap_or(0);
    ticks * 1_000_000_000 / procfs::clk_tck().max(1)
}

/// One timed job.
#[derive(Debug, Clone, Default)]
struct Run {
    cpu_s: f64,
    wall_s: f64,
}

/// What the FFmpeg job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FfJob {
    /// loudnorm in one pass (dynamic mode), resample, libopus.
    SinglePass,
    /// A loudnorm measuring pass, then the encode with its figures and `linear=true`.
    TwoPass,
    /// Resample and libopus only: what FFmpeg spends around loudnorm.
    NoLoudnorm,
    /// FLAC decode to `-f null`.
    DecodeOnly,
}

impl FfJob {
    fn name(self) -> &'static str {
        match self {
            FfJob::SinglePass => "ffmpeg, loudnorm single pass (dynamic)",
            FfJob::TwoPass => "ffmpeg, loudnorm two pass",
            FfJob::NoLoudnorm => "ffmpeg without loudnorm (aresample + libopus)",
            FfJob::DecodeOnly => "ffmpeg FLAC decode only (-f null)",
        }
    }
}

/// The JSON block loudnorm prints with `print_format=json`, as strings.
fn loudnorm_json(stderr: &str) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let start = stderr
        .rfind('{')
        .context("no loudnorm JSON in ffmpeg's output")?;
    let end = stderr[start..]
        .find('}')
        .context("unterminated loudnorm JSON")?
        + start;
    Ok(serde_json::from_str(&stderr[start..=end])?)
}

fn field(m: &serde_json::Map<String, serde_json::Value>, k: &str) -> anyhow::Result<String> {
    m.get(k)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .with_context(|| format!("loudnorm JSON has no {k}"))
}

/// Runs one ffmpeg invocation to completion; its stderr.
fn run_ffmpeg(ff: &Path, args: &[String]) -> anyhow::Result<String> {
    let o = Command::new(ff)
        .args(["-hide_banner", "-nostdin", "-nostats", "-y"])
        .args(["-filter_threads", "1", "-threads", "1"])
        .args(args)
        .output()
        .with_context(|| format!("running {}", ff.display()))?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        bail!("ffmpeg failed ({}): {err}", o.status);
    }
    Ok(err)
}

/// The encode half: FILTER → 48 kHz → stereo → libopus into Ogg at `output`.
fn encode_args(input: &Path, filter: &str, output: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["-i".into(), input.display().to_string()];
    a.extend(["-af".into(), filter.into()]);
    // FFmpeg 5.1's libopus wrapper cannot negotiate a layout with this input's
    // (unset mask) unless asked for one.
    a.extend(["-ac", "2", "-c:a", "libopus", "-b:a", BITRATE].map(String::from));
    a.extend(["-compression_level", OPUS_COMPLEXITY, "-threads", "1"].map(String::from));
    a.extend(["-f".into(), "ogg".into(), output.display().to_string()]);
    a
}

/// Times one FFmpeg job; the run and, for loudnorm jobs, what loudnorm reported.
fn ffmpeg_job(
    ff: &Path,
    job: FfJob,
    input: &Path,
    output: &Path,
) -> anyhow::Result<(Run, Option<String>)> {
    let base = "loudnorm=I=-14:TP=-1";
    let t0 = Instant::now();
    let c0 = children_ticks()?;
    let note = match job {
        FfJob::SinglePass => {
            let f = format!("{base}:print_format=json,aresample=48000");
            let err = run_ffmpeg(ff, &encode_args(input, &f, output))?;
            let m = loudnorm_json(&err)?;
            Some(format!(
                "{}, input {} LUFS / LRA {}",
                field(&m, "normalization_type")?,
                field(&m, "input_i")?,
                field(&m, "input_lra")?
            ))
        }
        FfJob::TwoPass => {
            let measure = vec![
                "-i".into(),
                input.display().to_string(),
                "-af".into(),
                format!("{base}:print_format=json"),
                "-f".into(),
                "null".into(),
                "-".into(),
            ];
            let m = loudnorm_json(&run_ffmpeg(ff, &measure)?)?;
            let f = format!(
                "{base}:measured_I={}:measured_TP={}:measured_LRA={}:measured_thresh={}:\
                 offset={}:linear=true:print_format=json,aresample=48000",
                field(&m, "input_i")?,
                field(&m, "input_tp")?,
                field(&m, "input_lra")?,
                field(&m, "input_thresh")?,
                field(&m, "target_offset")?,
            );
            let m2 = loudnorm_json(&run_ffmpeg(ff, &encode_args(input, &f, output))?)?;
            Some(field(&m2, "normalization_type")?)
        }
        FfJob::NoLoudnorm => {
            run_ffmpeg(ff, &encode_args(input, "aresample=48000", output))?;
            None
        }
        FfJob::DecodeOnly => {
            let a: Vec<String> = vec![
                "-i".into(),
                input.display().to_string(),
                "-f".into(),
                "null".into(),
                "-".into(),
            ];
            run_ffmpeg(ff, &a)?;
            None
        }
    };
    let ticks = children_ticks()? - c0;
    Ok((
        Run {
            cpu_s: ticks as f64 / procfs::clk_tck() as f64,
            wall_s: t0.elapsed().as_secs_f64(),
        },
        note,
    ))
}

/// One run of ours, with the CPU and wall time of each stage the progress callback
/// names.
#[derive(Debug, Clone, Default)]
struct OursRun {
    run: Run,
    /// The calling thread's own CPU over the run (the rest ran on helper threads).
    thread_cpu_s: f64,
    /// (stage, process CPU s, wall s).
    stages: Vec<(String, f64, f64)>,
    report: Option<transcoder::TranscodeReport>,
}

fn ours(input: &Path, output: &Path) -> anyhow::Result<OursRun> {
    let pid = std::process::id().to_string();
    let tck = procfs::clk_tck() as f64;
    let p0 = procfs::stat_ticks(&pid).context("/proc/self/stat")?;
    let (t0, c0) = (Instant::now(), thread_ns());
    let mut marks: Vec<(String, u64, Instant)> = Vec::new();
    let report = transcoder::transcode_file(input, output, &TranscodeOptions::default(), |s, _| {
        marks.push((
            s.to_owned(),
            procfs::stat_ticks(&pid).unwrap_or(0),
            Instant::now(),
        ));
    })
    .context("transcode_file")?;
    let (c1, t1) = (thread_ns(), Instant::now());
    let p1 = procfs::stat_ticks(&pid).context("/proc/self/stat")?;
    let stages = marks
        .windows(2)
        .map(|w| {
            (
                w[0].0.clone(),
                w[1].1.saturating_sub(w[0].1) as f64 / tck,
                (w[1].2 - w[0].2).as_secs_f64(),
            )
        })
        .collect();
    Ok(OursRun {
        run: Run {
            cpu_s: (p1 - p0) as f64 / tck,
            wall_s: (t1 - t0).as_secs_f64(),
        },
        thread_cpu_s: (c1 - c0) as f64 / 1e9,
        stages,
        report: Some(report),
    })
}

/// "<LUFS> <dBTP>" of a file by FFmpeg's ebur128 filter (through PyAV).
fn ffmpeg_loudness(py: &Path, file: &Path) -> String {
    last_line(
        Command::new(py)
            .arg(root().join("scripts/interop/loudness.py"))
            .arg(file),
    )
    .unwrap_or_else(|| "? ?".into())
}

fn fixture(args: &Args, py: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.input {
        return Ok(p.clone());
    }
    let p = args
        .workdir
        .join(format!("music-{}s-44k1-stereo.flac", args.seconds));
    if !p.exists() {
        println!("writing the fixture {} (PyAV) …", p.display());
        let tmp = p.with_extension("tmp.flac");
        let st = Command::new(py)
            .arg(root().join("scripts/interop/bench_audio.py"))
            .arg(&tmp)
            .arg(args.seconds.to_string())
            .arg("44100")
            .status()?;
        if !st.success() {
            bail!("bench_audio.py failed: {st}");
        }
        std::fs::rename(&tmp, &p)?;
    }
    Ok(p)
}

/// The normalise stage's pieces, each timed by the process's CPU (they run on
/// several threads).
#[derive(Debug, Clone, Default)]
struct Steps {
    /// Input loudness, detected frame peaks and K-weighted energy.
    prepare_s: f64,
    /// One gain search at the music target (tries on the prepared input).
    plan_s: f64,
    limited_frames: usize,
    estimated_lufs: f64,
    /// The whole file rendered under the search's gains.
    render_s: f64,
    /// Its exact integrated loudness.
    check_s: f64,
    lufs: f64,
    /// One whole encode, its decode beside it.
    encode_s: f64,
    /// The decoded file's loudness and true peak.
    measure_decoded_s: f64,
}

/// `transcoder::normalize_to_opus`'s pieces once, with the public API: no probe and
/// one encode (what a file that holds its ceiling at the first try costs).
fn normalise_steps(samples: &[f32], channels: usize, rate: u32) -> anyhow::Result<Steps> {
    let target = Target::MUSIC;
    let secs = |from: u64| (process_ns() - from) as f64 / 1e9;
    let c = process_ns();
    let prepared = Prepared::new(samples, channels, rate)?;
    let prepare_s = secs(c);
    let c = process_ns();
    let plan = prepared.plan(target, None);
    let plan_s = secs(c);
    let c = process_ns();
    let out = prepared.render(&plan, 0..samples.len() / channels);
    let render_s = secs(c);
    let c = process_ns();
    let lufs = transcoder::loudness::integrated(&out, channels, rate)?;
    let check_s = secs(c);
    let c = process_ns();
    let bitrate = transcoder::encode::default_bitrate(channels);
    let (_, decoded) =
        transcoder::encode::encode_ogg_opus_decoded(&out, channels, bitrate, Vec::new())?;
    let encode_s = secs(c);
    let c = process_ns();
    transcoder::measure(&decoded, channels, rate)?;
    let measure_decoded_s = secs(c);
    Ok(Steps {
        prepare_s,
        plan_s,
        limited_frames: plan.limited_frames,
        estimated_lufs: plan.estimated_lufs,
        render_s,
        check_s,
        lufs,
        encode_s,
        measure_decoded_s,
    })
}

fn rtf(audio_s: f64, runs: &[Run]) -> Summary {
    Summary::of(&runs.iter().map(|r| audio_s / r.cpu_s).collect::<Vec<_>>())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.workdir)?;
    let py = python(&args)?;
    let (ff, ff_version) = ffmpeg(&args)?;
    let pid = std::process::id().to_string();
    println!(
        "sc-transcodebench  git {}  {}  CPUs allowed {}",
        procfs::git_sha(&root()),
        procfs::machine(),
        procfs::cpus_allowed(&pid).unwrap_or_default()
    );
    println!("{ff_version}");
    let input = fixture(&args, &py)?;
    println!(
        "input {} ({:.1} MB), FFmpeg's meter: {}",
        input.display(),
        std::fs::metadata(&input)?.len() as f64 / 1e6,
        ffmpeg_loudness(&py, &input)
    );
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average before: {}", l.trim());
    }

    let out_ours = args.workdir.join("ours.opus");
    let out_ff1 = args.workdir.join("ffmpeg-1pass.opus");
    let out_ff2 = args.workdir.join("ffmpeg-2pass.opus");
    let mut runs_ours: Vec<OursRun> = Vec::new();
    let mut runs_ff1: Vec<Run> = Vec::new();
    let mut runs_ff2: Vec<Run> = Vec::new();
    let mut notes_ff1 = Vec::new();
    let mut notes_ff2 = Vec::new();
    for r in 0..args.repeats {
        // Alternate the order, so a drift in the machine's load hits both sides.
        let mut order = vec!["ours", "ff1"];
        if args.two_pass {
            order.push("ff2");
        }
        if r % 2 == 1 {
            order.reverse();
        }
        for job in order {
            match job {
                "ours" => {
                    let o = ours(&input, &out_ours)?;
                    println!(
                        "repeat {r}: ours {:.2} s CPU ({:.2} s on the calling thread), {:.2} s wall",
                        o.run.cpu_s, o.thread_cpu_s, o.run.wall_s
                    );
                    runs_ours.push(o);
                }
                "ff1" => {
                    let (run, note) = ffmpeg_job(&ff, FfJob::SinglePass, &input, &out_ff1)?;
                    println!(
                        "repeat {r}: {} {:.2} s CPU, {:.2} s wall ({})",
                        FfJob::SinglePass.name(),
                        run.cpu_s,
                        run.wall_s,
                        note.clone().unwrap_or_default()
                    );
                    notes_ff1.push(note.unwrap_or_default());
                    runs_ff1.push(run);
                }
                _ => {
                    let (run, note) = ffmpeg_job(&ff, FfJob::TwoPass, &input, &out_ff2)?;
                    println!(
                        "repeat {r}: {} {:.2} s CPU, {:.2} s wall ({})",
                        FfJob::TwoPass.name(),
                        run.cpu_s,
                        run.wall_s,
                        note.clone().unwrap_or_default()
                    );
                    notes_ff2.push(note.unwrap_or_default());
                    runs_ff2.push(run);
                }
            }
        }
    }
    let report = runs_ours
        .last()
        .and_then(|o| o.report.clone())
        .context("no run")?;
    let audio_s = report.duration_ms / 1000.0;

    // Where FFmpeg's time goes, once.
    let out_ff0 = args.workdir.join("ffmpeg-no-loudnorm.opus");
    let (ff_plain, _) = ffmpeg_job(&ff, FfJob::NoLoudnorm, &input, &out_ff0)?;
    let (ff_decode, _) = ffmpeg_job(&ff, FfJob::DecodeOnly, &input, Path::new("-"))?;
    // Where ours goes: the normalise stage's pieces once, each timed.
    let pcm = transcoder::to_48k(transcoder::decode_file(&input)?)?;
    let steps = normalise_steps(&pcm.samples, pcm.channels, pcm.rate)?;
    drop(pcm);

    let ours_runs: Vec<Run> = runs_ours.iter().map(|o| o.run.clone()).collect();
    let r_ours = rtf(audio_s, &ours_runs);
    let r_ff1 = rtf(audio_s, &runs_ff1);
    let r_ff2 = rtf(audio_s, &runs_ff2);
    let ratio = |ff: &[Run]| {
        Summary::of(
            &ours_runs
                .iter()
                .zip(ff)
                .map(|(o, f)| f.cpu_s / o.cpu_s)
                .collect::<Vec<_>>(),
        )
    };
    let wall = |runs: &[Run]| Summary::of(&runs.iter().map(|r| r.wall_s).collect::<Vec<_>>());
    let cpu = |runs: &[Run]| Summary::of(&runs.iter().map(|r| r.cpu_s).collect::<Vec<_>>());
    let loud_ours = ffmpeg_loudness(&py, &out_ours);
    let loud_ff1 = ffmpeg_loudness(&py, &out_ff1);
    let loud_ff2 = if args.two_pass {
        ffmpeg_loudness(&py, &out_ff2)
    } else {
        "– –".into()
    };
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| format!("{:.0} kb/s", m.len() as f64 * 8.0 / audio_s / 1000.0))
            .unwrap_or_else(|_| "–".into())
    };

    println!(
        "\n## Transcoding, {audio_s:.0} s of {} Hz, {} channels → Opus 96 kb/s ({} repeats)\n",
        report.input_rate, report.channels, args.repeats
    );
    println!(
        "| job | CPU s | wall s | × real time per core | ours ÷ this (RTF) | output LUFS / dBTP (ebur128) | file |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row =
        |name: &str, runs: &[Run], r: &Summary, ratio: Option<Summary>, loud: &str, f: &Path| {
            let (lufs, tp) = loud.split_once(' ').unwrap_or((loud, ""));
            println!(
                "| {name} | {} | {} | {} | {} | {lufs} / {tp} | {} |",
                cpu(runs).show(2),
                wall(runs).show(2),
                r.show(1),
                ratio.map_or("–".into(), |x| x.show(2)),
                size(f)
            );
        };
    row(
        "ours (`transcode_file`)",
        &ours_runs,
        &r_ours,
        None,
        &loud_ours,
        &out_ours,
    );
    row(
        FfJob::SinglePass.name(),
        &runs_ff1,
        &r_ff1,
        Some(ratio(&runs_ff1)),
        &loud_ff1,
        &out_ff1,
    );
    if args.two_pass {
        row(
            FfJob::TwoPass.name(),
            &runs_ff2,
            &r_ff2,
            Some(ratio(&runs_ff2)),
            &loud_ff2,
            &out_ff2,
        );
    }
    println!("\nloudnorm single pass: {}", notes_ff1.join("; "));
    if args.two_pass {
        println!("loudnorm two pass, second pass: {}", notes_ff2.join("; "));
    }
    println!(
        "ours: input {:.2} LUFS / {:.2} dBTP, gain {:+.2} dB, {} frames limited; before \
         the encode {:.2} LUFS / {:.2} dBTP",
        report.loudness.input.integrated_lufs,
        report.loudness.input.true_peak_dbtp,
        report.loudness.gain_db,
        report.loudness.limited_frames,
        report.loudness.output.integrated_lufs,
        report.loudness.output.true_peak_dbtp
    );

    println!("\n### Where the time goes (CPU s)\n");
    println!("| ours: stage | CPU s | share |");
    println!("|---|---:|---:|");
    let n_stages = runs_ours[0].stages.len();
    let mut stage_json = Vec::new();
    for i in 0..n_stages {
        let name = runs_ours[0].stages[i].0.clone();
        let s = Summary::of(&runs_ours.iter().map(|o| o.stages[i].1).collect::<Vec<_>>());
        let share = s.median / cpu(&ours_runs).median * 100.0;
        println!("| {name} | {} | {share:.0} % |", s.show(2));
        stage_json.push(json!({"stage": name, "cpu_s": s.median, "min": s.min, "max": s.max}));
    }
    println!(
        "\nof normalise, piece by piece: prepare the input (loudness, frame peaks, \
         K-weighted energy) {:.2} s; one gain search {:.2} s ({} frames limited, \
         estimated {:.2} LUFS); render {:.2} s; exact loudness {:.2} s ({:.2} LUFS); \
         one whole encode + decode {:.2} s; measure the decoded file {:.2} s",
        steps.prepare_s,
        steps.plan_s,
        steps.limited_frames,
        steps.estimated_lufs,
        steps.render_s,
        steps.check_s,
        steps.lufs,
        steps.encode_s,
        steps.measure_decoded_s,
    );
    println!("\n| ffmpeg, once | CPU s | wall s |");
    println!("|---|---:|---:|");
    for (job, r) in [
        (FfJob::NoLoudnorm, &ff_plain),
        (FfJob::DecodeOnly, &ff_decode),
    ] {
        println!("| {} | {:.2} | {:.2} |", job.name(), r.cpu_s, r.wall_s);
    }
    println!(
        "(loudnorm single pass ≈ {:.2} s of FFmpeg's {:.2} s)",
        cpu(&runs_ff1).median - ff_plain.cpu_s,
        cpu(&runs_ff1).median
    );
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average after: {}", l.trim());
    }

    if let Some(path) = &args.json {
        let runs = |v: &[Run]| {
            v.iter()
                .map(|r| json!({"cpu_s": r.cpu_s, "wall_s": r.wall_s}))
                .collect::<Vec<_>>()
        };
        let doc = json!({
            "git": procfs::git_sha(&root()),
            "machine": procfs::machine(),
            "ffmpeg": ff_version,
            "input": input.display().to_string(),
            "audio_s": audio_s,
            "ours": runs(&ours_runs),
            "ours_thread_cpu_s": runs_ours.iter().map(|o| o.thread_cpu_s).collect::<Vec<_>>(),
            "ours_stages": stage_json,
            "ours_normalise_steps": {
                "prepare_s": steps.prepare_s, "plan_s": steps.plan_s,
                "limited_frames": steps.limited_frames, "estimated_lufs": steps.estimated_lufs,
                "render_s": steps.render_s, "check_s": steps.check_s, "lufs": steps.lufs,
                "encode_s": steps.encode_s, "measure_decoded_s": steps.measure_decoded_s,
            },
            "ffmpeg_single_pass": runs(&runs_ff1),
            "ffmpeg_two_pass": runs(&runs_ff2),
            "ffmpeg_no_loudnorm": runs(std::slice::from_ref(&ff_plain)),
            "ffmpeg_decode_only": runs(std::slice::from_ref(&ff_decode)),
            "rtf": {"ours": r_ours.median, "ffmpeg_single_pass": r_ff1.median,
                    "ffmpeg_two_pass": r_ff2.median},
            "loudness": {"ours": loud_ours, "ffmpeg_single_pass": loud_ff1,
                         "ffmpeg_two_pass": loud_ff2},
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
