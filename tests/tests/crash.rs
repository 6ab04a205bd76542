//! Crash safety of `mnist train`, as a user's machine would see it: the process killed with
//! SIGKILL at arbitrary moments (some of them in the middle of a checkpoint write), and a
//! filesystem that fills up. After every kill the latest checkpoint must load (checksum
//! verified) and resuming must finish with exactly the parameters of an uninterrupted run;
//! a full disk must give a clear error and leave the previous checkpoint whole.
//!
//! The kill moments come from a seeded generator (`CRASH_SEED` overrides the seed, which is
//! printed), so a failing sequence can be replayed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use mnist_e2e::{mnist_command, quick_config, text, write_config};
use mnist_train::ExperimentConfig;
use mnist_train::config::BatchSize;

/// How many SIGKILLs the chained run must survive.
const KILLS: usize = 24;
const EPOCHS: usize = 36;

/// SplitMix64: a tiny seeded generator (the e2e crate has no rand dependency).
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Tiny epochs (200 examples, 4 batches) with a wide first layer and Adam: an ~11 MB
/// checkpoint written every ~0.15 s, so kills often land inside a write. Dropout and
/// per-epoch shuffling make every RNG stream part of the state that must survive.
fn crash_config(name: &str, epochs: usize) -> ExperimentConfig {
    let mut c = quick_config("adam_dropout.json", 200, epochs);
    c.name = name.to_string();
    c.model.hidden[0].size = 1024;
    c.training.batch_size = BatchSize::Examples(50);
    c.data.test_limit = Some(200);
    c.evaluation.every_epoch = Vec::new();
    c.checkpoint.every_epochs = 1;
    c
}

fn train(config: &Path, out: &Path, resume: Option<&Path>) -> Command {
    let mut args = vec![
        "train",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--threads",
        "1",
    ];
    if let Some(r) = resume {
        args.extend(["--resume", r.to_str().unwrap()]);
    }
    let mut cmd = mnist_command(&args);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

fn temp_files(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // mnist_dataset::atomic: `.<target name>.<random>.tmp` beside the target.
                .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Identity of the current checkpoint file (changes when a new one is renamed into place).
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// When to kill the child.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// As soon as the n-th checkpoint temp file of this process appears: inside a write.
    DuringCheckpointWrite(usize),
    /// As soon as a new checkpoint has been renamed into place (before the directory sync).
    RightAfterCheckpoint,
    /// After this many milliseconds: data loading, a batch, evaluation, the final outputs.
    After(u64),
}

/// Waits for the moment, then SIGKILLs. Returns false if the child finished first.
fn kill_at(child: &mut Child, at: KillAt, out: &Path, before: &HashSet<String>) -> bool {
    let started = Instant::now();
    let checkpoint = out.join("checkpoint.safetensors");
    let stamp = file_stamp(&checkpoint);
    let mut seen = before.clone();
    let mut new_temps = 0usize;
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let fire = match at {
            KillAt::DuringCheckpointWrite(n) => {
                for t in temp_files(out) {
                    if t.starts_with(".checkpoint.safetensors.") && seen.insert(t) {
                        new_temps += 1;
                    }
                }
                new_temps >= n
            }
            KillAt::RightAfterCheckpoint => file_stamp(&checkpoint) != stamp,
            KillAt::After(ms) => started.elapsed() >= Duration::from_millis(ms),
        };
        if fire {
            // Child::kill is SIGKILL on Unix: no handler runs, nothing is flushed.
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{at:?} never happened"
        );
        std::thread::sleep(Duration::from_micros(300));
    }
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_uninterrupted_parameters() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C0DE_u64);
    println!("CRASH_SEED={seed}");
    let mut rng = SplitMix(seed);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &crash_config("crash", EPOCHS));

    // The reference: the same config, never interrupted (in parallel with the chain).
    let whole = dir.path().join("whole");
    let reference = {
        let (config, whole) = (config.clone(), whole.clone());
        std::thread::spawn(move || train(&config, &whole, None).output().unwrap())
    };

    let run = dir.path().join("run");
    let checkpoint = run.join("checkpoint.safetensors");
    let (mut kills, mut mid_write, mut last_epoch) = (0usize, 0usize, 0usize);
    let mut log = Vec::new();
    let finished = loop {
        let resume = checkpoint.is_file().then_some(checkpoint.as_path());
        let before = temp_files(&run);
        let mut child = train(&config, &run, resume).spawn().unwrap();
        let at = if kills >= KILLS {
            None
        } else {
            Some(match rng.below(3) {
                0 => KillAt::DuringCheckpointWrite(1 + rng.below(2) as usize),
                1 => KillAt::RightAfterCheckpoint,
                _ => KillAt::After(rng.below(600)),
            })
        };
        let killed = at.is_some_and(|at| kill_at(&mut child, at, &run, &before));
        if !killed {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{:?}", text(&out));
            break kills;
        }
        kills += 1;
        // A temp file left behind by this process: the kill landed inside a write.
        let left = temp_files(&run);
        let interrupted_write = left.difference(&before).count() > 0;
        mid_write += usize::from(interrupted_write);
        // Whatever the moment, the checkpoint in place is whole and verified, and never
        // older than the one before the kill. Temp files are never read as checkpoints.
        let epoch = if checkpoint.exists() {
            let ck = mnist_train::checkpoint::load(&checkpoint).unwrap_or_else(|e| {
                panic!("kill {kills} ({at:?}) left an unreadable checkpoint: {e}")
            });
            assert_eq!(ck.state.next_batch, 0, "checkpoints are written per epoch");
            ck.state.epoch
        } else {
            0
        };
        assert!(
            epoch >= last_epoch,
            "kill {kills}: checkpoint went back from epoch {last_epoch} to {epoch}"
        );
        last_epoch = epoch;
        log.push(format!(
            "kill {kills:2}: {:?}{} -> checkpoint at epoch {epoch}",
            at.unwrap(),
            if interrupted_write {
                " (inside a write)"
            } else {
                ""
            }
        ));
    };
    println!("{}", log.join("\n"));
    assert!(
        finished >= 20,
        "the run finished after only {finished} kills; more epochs needed:\n{}",
        log.join("\n")
    );
    assert!(
        mid_write >= 3,
        "only {mid_write} kills landed inside a checkpoint write:\n{}",
        log.join("\n")
    );

    // Each resumed run removes the temp files its killed predecessors left.
    assert_eq!(
        temp_files(&run),
        HashSet::new(),
        "temp files left after the last run"
    );

    let out = reference.join().unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let a = mnist_core::load_model::<f32>(whole.join("model.safetensors")).unwrap();
    let b = mnist_core::load_model::<f32>(run.join("model.safetensors")).unwrap();
    assert!(
        a.network.bit_identical(&b.network),
        "{finished} kills + resumes ended with different parameters than the uninterrupted run"
    );
    let a = mnist_train::checkpoint::load(&whole.join("checkpoint.safetensors")).unwrap();
    let b = mnist_train::checkpoint::load(&checkpoint).unwrap();
    assert_eq!(b.state.epoch, EPOCHS);
    assert!(a.network.bit_identical(&b.network));
    assert_eq!(
        a.optimizer.state(),
        b.optimizer.state(),
        "optimizer moments"
    );
}

/// A tmpfs mounted for the test, unmounted when dropped (also on panic).
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_filesystem_fails_clearly_and_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("small");
    std::fs::create_dir(&mount_point).unwrap();
    // One ~11 MB checkpoint fits in 16 MB; a second one (written beside it before the
    // rename) does not.
    let _tmpfs = match Tmpfs::mount(&mount_point, "16m") {
        Ok(t) => t,
        Err(e) => {
            println!("SKIPPED full_filesystem test: cannot mount a tmpfs here ({e}); needs root");
            return;
        }
    };
    let config = write_config(dir.path(), &crash_config("full-disk", 3));
    let run = mount_point.join("run");
    let out = train(&config, &run, None).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let checkpoint = run.join("checkpoint.safetensors");
    assert!(
        stderr.contains("No space left on device")
            && stderr.contains("free space")
            && stderr.contains(checkpoint.to_str().unwrap()),
        "the error names the file and the cause: {stderr}"
    );
    // The previous checkpoint is whole, verified, and continues the run; no temp file is left.
    let ck = mnist_train::checkpoint::load(&checkpoint).unwrap();
    assert_eq!((ck.state.epoch, ck.state.next_batch), (1, 0));
    assert!(
        temp_files(&run).is_empty(),
        "failed write left {:?}",
        temp_files(&run)
    );
    // With space again (a bigger directory), the run resumes from it and finishes.
    let elsewhere = dir.path().join("elsewhere");
    let out = train(&config, &elsewhere, Some(&checkpoint))
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let ck = mnist_train::checkpoint::load(&elsewhere.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.state.epoch, 3);
}
